// The limiter algorithms as one Redis Lua script, for the Redis store (issue 4).
//
// The script decides n requests in order in one atomic call (Redis runs a script
// alone), with the Redis server's clock, so every gateway instance decides against the
// same state and the same time, and a batch of requests costs one round trip and one
// script start instead of n. The rules are those of src/core/algorithms.h, line for
// line, in whole microseconds: Lua 5.1 numbers are doubles, exact for integers below
// 2^53, and every product here is at most 3 * limit * period_us, which the Redis backend
// keeps below 2^53 (docs/architecture.md). Divisions floor the double quotient, which
// is exact for numerators below 2^53 (the script says why).
//
//   KEYS[1..n]  the state keys. A key may appear several times: the entries are decided
//               strictly in order, each seeing the state the previous one left, so the
//               answers equal n separate calls at the same time. A key is always used
//               with the same algorithm.
//   ARGV[1]     now in microseconds for tests, or "" for the server's TIME (read once
//               per call). With TIME each key also has a TTL that lasts at least until
//               its state is whole again and at most about twice that long, and is
//               deleted when its state equals an empty one; with a test's time it gets
//               no TTL.
//   ARGV[1 + i] decision i's policy and cost, 33 bytes (AppendRedisDecisionArg):
//               RedisAlgorithmCode as one byte, then limit, period in microseconds,
//               burst and cost as little-endian 64-bit integers.
// Reply: a flat array of kRedisReplyPerDecision * n integers, decision i's at
// 3 * (i - 1) + 1...: remaining when allowed or -1 - remaining when refused,
// reset_after_us, retry_after_us or -1 for never (the limit a decision reports follows
// from its policy). n is bounded by Lua's stack (the script unpacks KEYS for one MGET):
// up to 7,990 keys pass, 8,000 fail; the store sends at most 256. n = 0 answers an
// empty array.
//
// Each key's state is one string of little-endian doubles (struct.pack('<d...'); read
// with struct.unpack), every one an integer below 2^53, so exact; doubles pack and
// unpack faster than struct's 64-bit integers. `expires` is when the key's TTL
// ends, in ms of the server's clock (0: no TTL), times 8 plus the algorithm's code, so
// that a state left by another algorithm (a reload changed the rule's) reads as none;
// `last` is the latest time the state has seen, in microseconds. Quantities are in units of
// 1/period_us of a request:
//   token_bucket            {expires, last, tokens left x period_us}
//   leaky_bucket            {expires, last, level x period_us}
//   gcra                    {expires, last, backlog x period_us}
//   fixed_window            {expires, last, count}
//   sliding_window_counter  {expires, last, previous, current}
//   sliding_window_log      {expires, last, units in the log}, then runs {time, units}
//                           of requests at equal times, oldest first (16 bytes a run)
// A call reads every key with one MGET and writes each distinct key once (SET with PX
// when the key's TTL must grow, SET KEEPTTL when it already lasts long enough, or
// DEL), so n decisions on distinct keys make n + 1 redis.call (n + 2 with TIME). A key
// of another type or size (a hash, an older format) reads as no state and is replaced
// when its state is next written.
//
// Thread-safety: constant text and pure functions.
#ifndef SLUICE_STORE_REDIS_SCRIPTS_H_
#define SLUICE_STORE_REDIS_SCRIPTS_H_

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "sluice/decision.h"
#include "sluice/limiter.h"

namespace sluice::store {

// The scripts' exact range: limit x period_us and burst x period_us below 2^51, so
// that every sum they form (at most three such products) stays below 2^53.
inline constexpr uint64_t kRedisMaxUnits = uint64_t{1} << 51;
// Whether `limit` is decided exactly by the scripts (periods count in whole
// microseconds, so a period must also be a whole number of them).
bool FitsRedisArithmetic(const Limit& limit);

// The one script: decides n requests in order, in one atomic call.
std::string_view RedisDecideScript();
// The algorithm's code in the script's arguments (0..5).
int RedisAlgorithmCode(Algorithm algorithm);
inline constexpr size_t kRedisDecisionArgSize = 33;
// Appends decision's argument (ARGV[1 + i]): the algorithm's code, the limit, the
// period in microseconds, the burst and the cost. REQUIRES: FitsRedisArithmetic(limit).
void AppendRedisDecisionArg(std::string& out, Algorithm algorithm, const Limit& limit,
                            uint64_t cost);
// remaining if allowed, else -1 - remaining; reset_after_us; retry_after_us or -1.
inline constexpr int kRedisReplyPerDecision = 3;
// One decision from its three reply integers (retry_after -1 means Decision::kNever)
// and its request's policy, which gives the limit the decision reports.
Decision DecisionFromRedisReply(const long long* three, Algorithm algorithm, const Limit& limit);

}  // namespace sluice::store

#endif  // SLUICE_STORE_REDIS_SCRIPTS_H_
