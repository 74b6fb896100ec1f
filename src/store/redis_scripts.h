// The limiter algorithms as Redis Lua scripts, for the Redis store (issue 4).
//
// Each script applies one request to the state under KEYS[1] atomically (Redis runs a
// script alone), with the Redis server's clock, so every gateway instance decides
// against the same state and the same time. The rules are those of
// src/core/algorithms.h, line for line, in whole microseconds: Lua 5.1 numbers are
// doubles, exact for integers below 2^53, and every product here is at most
// 3 * limit * period_us, which the Redis backend keeps below 2^53 (docs/architecture.md).
// Divisions go through an exact integer division, since a double quotient can round
// up to the next integer.
//
//   KEYS[1]  the state key
//   ARGV[1]  limit          ARGV[2]  period in microseconds
//   ARGV[3]  burst          ARGV[4]  cost
//   ARGV[5]  now in microseconds for tests, or "" for the server's TIME (then the key
//            also gets a TTL until its state is whole again)
// Reply: {allowed (0/1), limit, remaining, reset_after_us, retry_after_us or -1 for
// never}.
//
// Thread-safety: constant text.
#ifndef SLUICE_STORE_REDIS_SCRIPTS_H_
#define SLUICE_STORE_REDIS_SCRIPTS_H_

#include <cstdint>
#include <string_view>

#include "sluice/limiter.h"

namespace sluice::store {

// The scripts' exact range: limit x period_us and burst x period_us below 2^51, so
// that every sum they form (at most three such products) stays below 2^53.
inline constexpr uint64_t kRedisMaxUnits = uint64_t{1} << 51;
// Whether `limit` is decided exactly by the scripts (periods count in whole
// microseconds, so a period must also be a whole number of them).
bool FitsRedisArithmetic(const Limit& limit);

// The script for `algorithm`.
std::string_view RedisScript(Algorithm algorithm);

}  // namespace sluice::store

#endif  // SLUICE_STORE_REDIS_SCRIPTS_H_
