// The in-memory store: limiter state for one process, shared by all its workers.
//
// Limits hold per process, not per thread, so every worker decides against this one
// table. It is bounded by `max_keys` and never grows past it.
//
// Synchronisation (striped locks): the table is split into `shards` independent
// shards, each a small hash table behind its own std::mutex. A key's shard comes from
// its fingerprint, so a decision locks exactly one shard for the few hundred
// nanoseconds of a lookup and an algorithm step; different keys rarely contend and one
// hot key is serialised, which is what makes it exact. Nothing is shared between
// shards. docs/architecture.md gives the measurements behind this choice.
//
// Memory: a key costs one 56-byte entry (fingerprint, state, expiry, links) plus 2 to
// 4 bytes of hash bucket, whatever the key's length; the sliding window log adds
// 8 bytes per unit of `limit` for its ring of timestamps. Entries live in one arena
// of zeroed memory that the kernel maps on first touch, handed to shards in small
// chunks, so resident memory follows the keys actually tracked.
//
// Expiry and eviction: a decision reports when the state will be whole again
// (reset_after); from then on the state is the same as an empty one, so the entry can
// go without changing any future decision. Each shard keeps its entries on a timer
// wheel of one-second slots and, on every call, reclaims a few entries whose time has
// come: no background thread, no scan that stalls a request. A shard that is full
// looks through what is due (up to 1024 entries) for an entry to reclaim before it
// evicts its least recently used live key. Two cases are found late, when the wheel
// slot the entry sits on comes round (within 64 s): a key that took over the entry
// of an evicted key, and a key whose policy changed to expire sooner.
//
// Thread-safety: all methods may be called from any thread at any time.
#ifndef SLUICE_STORE_MEMORY_STORE_H_
#define SLUICE_STORE_MEMORY_STORE_H_

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string_view>

#include "sluice/store.h"

namespace sluice::store {

class MemoryStore final : public Store {
 public:
  struct Options {
    // The most keys tracked at once, across all shards.
    size_t max_keys = 1'000'000;
    // Independent lock stripes; 0 picks a number from max_keys. Each shard holds
    // ceil(max_keys / shards) keys, so eviction order is least-recently-used within
    // a shard.
    size_t shards = 0;
    // Fingerprint seed; 0 draws a random one (tests may fix it).
    uint64_t hash_seed = 0;
  };

  struct Stats {
    size_t keys = 0;       // tracked now
    uint64_t expired = 0;  // entries reclaimed because their state was whole again
    uint64_t evicted = 0;  // live entries evicted, least recently used first
  };

  explicit MemoryStore(const Options& options);
  ~MemoryStore() override;
  MemoryStore(const MemoryStore&) = delete;
  MemoryStore& operator=(const MemoryStore&) = delete;

  // The synchronous form, for callers that hold a MemoryStore.
  Decision Decide(const StoreRequest& request, Timestamp now);
  void Decide(const StoreRequest& request, Timestamp now, Completion& done) override {
    done.OnDecision(Decide(request, now));
  }

  Stats GetStats() const;

 private:
  class Shard;
  struct EntryArena;

  uint64_t seed_;
  size_t shard_count_;
  static constexpr int64_t kNoEpoch = -1;
  std::atomic<int64_t> epoch_s_{kNoEpoch};
  std::unique_ptr<EntryArena> entry_arena_;
  std::unique_ptr<Shard[]> shards_;
  // One mapping holds every shard's entries, then every shard's buckets.
  void* arena_ = nullptr;
  size_t arena_bytes_ = 0;
};

}  // namespace sluice::store

#endif  // SLUICE_STORE_MEMORY_STORE_H_
