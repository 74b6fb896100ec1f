#include "store/memory_store.h"

#include <sys/mman.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <bit>
#include <cstring>
#include <limits>
#include <mutex>
#include <new>

#include "core/algorithms.h"
#include "core/check.h"
#include "store/key_hash.h"

namespace sluice::store {
namespace {

// Entry indices are 1-based so that zeroed memory means "no entry".
constexpr uint32_t kNil = 0;
constexpr uint32_t kWheelSlots = 64;  // one-second slots; a power of two
// Due entries each call reclaims in passing: enough to keep up with any steady
// stream of expiries, small enough to be invisible in a request's latency.
constexpr uint32_t kSweepPerCall = 4;
// How far a full shard looks through due entries for one to reclaim before it evicts
// a live one instead: a bound on the worst request's extra work (tens of microseconds).
constexpr uint32_t kSweepWhenFull = 1024;
// Set in the stored fingerprint of an entry whose state holds a log ring.
constexpr uint32_t kHasRing = 0x8000'0000u;
constexpr size_t kHugePage = size_t{2} << 20;

// One tracked key. All-zero is a free entry with an empty state.
struct Entry {
  uint64_t fingerprint_lo;
  uint32_t fingerprint_hi;  // 31 bits of fingerprint + kHasRing
  uint32_t expires_s;       // second at which the state is whole again (rounded up)
  uint32_t chain_next;      // next entry in the same hash bucket, or in the free list
  uint32_t wheel_next;      // next entry in the same timer-wheel list
  uint32_t lru_prev;        // towards the most recently used
  uint32_t lru_next;        // towards the least recently used
  core::CompactState state;
};
static_assert(sizeof(Entry) == 56);
static_assert(std::is_trivially_copyable_v<Entry>);

// How the sliding window log keeps its state in an entry: the ring lives on the heap,
// ring[0] holding its capacity and the timestamps following.
struct LogSlot {
  int64_t* ring;
  core::SlidingWindowLogState log;
};
static_assert(sizeof(LogSlot) <= sizeof(core::CompactState));

LogSlot LoadLog(const core::CompactState& s) {
  LogSlot slot;
  std::memcpy(static_cast<void*>(&slot), &s, sizeof(slot));
  return slot;
}
void StoreLog(const LogSlot& slot, core::CompactState& s) {
  std::memcpy(static_cast<void*>(&s), &slot, sizeof(slot));
}

// Entries keep times as 32-bit seconds since the store's epoch (the second of the
// first decision it makes): 136 years of range from whenever the clock starts.
uint32_t ToStoreSecond(__int128 second, int64_t epoch_s) {
  const __int128 s = second - epoch_s;
  if (s <= 0) return 0;
  return static_cast<uint32_t>(std::min<__int128>(s, std::numeric_limits<uint32_t>::max()));
}
uint32_t SecondOf(Timestamp now, int64_t epoch_s) {
  return ToStoreSecond(ToNanos(now) / 1'000'000'000, epoch_s);
}
// The first whole second at or after now + after (saturating: 64-bit division is a
// single instruction where 128-bit is a library call).
uint32_t ExpirySecond(Timestamp now, Duration after, int64_t epoch_s) {
  constexpr int64_t kMax = std::numeric_limits<int64_t>::max();
  const int64_t t = std::max<int64_t>(ToNanos(now), 0);
  const int64_t ns = after.count() > kMax - t ? kMax : t + after.count();
  return ToStoreSecond(ns / 1'000'000'000 + (ns % 1'000'000'000 != 0 ? 1 : 0), epoch_s);
}

// Zeroed memory straight from the kernel: pages are mapped on first touch, so an
// untouched tail costs no resident memory. The arrays of all shards share one mapping
// that asks for transparent huge pages, because a decision's random accesses into
// tens of megabytes would otherwise miss the TLB on nearly every access
// (docs/architecture.md has the measurement).
void* MapZeroed(size_t bytes) {
  void* p = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  SLUICE_CHECK(p != MAP_FAILED);
  if (bytes >= kHugePage) madvise(p, bytes, MADV_HUGEPAGE);  // advice; failure is harmless
  return p;
}

constexpr uint32_t kChunk = 64;  // entries a shard takes from the arena at a time

size_t BucketsFor(size_t capacity) {
  // At most two keys per bucket on average when full: chains stay short and the
  // bucket array costs 2 to 4 bytes per key.
  return std::bit_floor(capacity);
}

}  // namespace

// Entries are handed to shards from one array in chunks, so the memory in use grows
// with the keys tracked, in one place, however unevenly keys fall on shards.
struct MemoryStore::EntryArena {
  Entry* entries = nullptr;  // entry i (1-based) is entries[i - 1]
  std::atomic<uint32_t> handed_out{0};
  uint32_t size = 0;
};

class MemoryStore::Shard {
 public:
  Shard() = default;
  Shard(const Shard&) = delete;
  Shard& operator=(const Shard&) = delete;
  // Frees the log rings of this shard's keys.
  ~Shard() {
    for (uint32_t i = lru_head_; i != kNil; i = At(i).lru_next) FreeRing(At(i));
  }

  // `buckets` is a zeroed array of BucketsFor(capacity) elements; both it and the
  // arena belong to the store.
  void Init(EntryArena* arena, uint32_t* buckets, size_t capacity) {
    SLUICE_CHECK(capacity > 0 && capacity < std::numeric_limits<uint32_t>::max() / 2);
    capacity_ = static_cast<uint32_t>(capacity);
    arena_ = arena;
    buckets_ = buckets;
    bucket_mask_ = static_cast<uint32_t>(BucketsFor(capacity) - 1);
  }

  Decision Decide(const KeyFingerprint& fp, const StoreRequest& request, Timestamp now,
                  int64_t epoch_s) {
    const bool log = request.algorithm == Algorithm::kSlidingWindowLog;
    const uint32_t stored_hi = (static_cast<uint32_t>(fp.hi) & ~kHasRing) | (log ? kHasRing : 0);
    const uint32_t bucket = static_cast<uint32_t>(fp.lo) & bucket_mask_;

    // Start the bucket's cache miss while the lock is taken.
    __builtin_prefetch(&buckets_[bucket]);
    std::lock_guard<std::mutex> lock(mu_);
    // The shard's time never runs backwards: threads read the clock before they
    // queue on the lock, so a reading can arrive a little late, and a late reading
    // decided as it is would compute an expiry too early. It is decided at the latest
    // time the shard has seen instead (no time passes, as the algorithms do per key).
    now = std::max(now, latest_);
    latest_ = now;
    const uint32_t now_s = SecondOf(now, epoch_s);
    Sweep(now_s, kSweepPerCall, /*stop_when_freed=*/false);
    uint32_t index = Find(fp.lo, stored_hi, bucket);
    bool in_wheel = true;
    Decision decision;
    if (index == kNil) {
      // Decide on an empty state first: a request that leaves it whole (denied for
      // good, or a query) needs no entry, so it cannot push out live keys.
      core::CompactState fresh;
      if (!log) {
        decision = core::DecideCompact(request.algorithm, request.limit, fresh, now, request.cost);
        if (decision.reset_after == Duration(0)) return decision;
      } else if (!TakesFromLog(request)) {
        core::SlidingWindowLogState empty;
        return core::DecideSlidingWindowLog(request.limit, empty, {}, now, request.cost);
      }
      index = Allocate(now_s, in_wheel);
      Entry& e = At(index);
      e.fingerprint_lo = fp.lo;
      e.fingerprint_hi = stored_hi;
      e.state = fresh;
      e.chain_next = buckets_[bucket];
      buckets_[bucket] = index;
      LinkFront(index);
      ++size_;
      if (log) decision = DecideLog(e, request, now);
    } else {
      Entry& e = At(index);
      // The LRU neighbours are two more random cache lines; fetch them while the
      // algorithm runs rather than after.
      if (e.lru_prev != kNil) __builtin_prefetch(&At(e.lru_prev), 1);
      if (e.lru_next != kNil) __builtin_prefetch(&At(e.lru_next), 1);
      decision =
          log ? DecideLog(e, request, now)
              : core::DecideCompact(request.algorithm, request.limit, e.state, now, request.cost);
      MoveToFront(index);
    }
    // Never earlier than before: under one policy the time a state is whole again only
    // moves later, and a request denied by a brief limit of 0 must not cut it short.
    Entry& e = At(index);
    e.expires_s = std::max(e.expires_s, ExpirySecond(now, decision.reset_after, epoch_s));
    if (!in_wheel) WheelPush(index);
    return decision;
  }

  void AddStats(Stats& stats) const {
    std::lock_guard<std::mutex> lock(mu_);
    stats.keys += size_;
    stats.expired += expired_;
    stats.evicted += evicted_;
  }

 private:
  Entry& At(uint32_t index) { return arena_->entries[index - 1]; }

  uint32_t Find(uint64_t lo, uint32_t hi, uint32_t bucket) {
    for (uint32_t i = buckets_[bucket]; i != kNil; i = At(i).chain_next) {
      if (At(i).fingerprint_lo == lo && At(i).fingerprint_hi == hi) return i;
    }
    return kNil;
  }

  // Whether a log request can add timestamps (else it needs no ring).
  static bool TakesFromLog(const StoreRequest& r) {
    return r.cost > 0 && r.limit.limit > 0 && r.cost <= r.limit.limit;
  }

  // The sliding window log's ring must hold `limit` timestamps; a reload that changes
  // the limit keeps the newest ones that still fit. A limit of 0 denies without
  // touching the log, so a brief block keeps its history.
  Decision DecideLog(Entry& e, const StoreRequest& request, Timestamp now) {
    SLUICE_CHECK(request.limit.limit <= kMaxLogLimit);
    LogSlot slot = LoadLog(e.state);
    if (request.limit.limit == 0) {
      return core::DecideSlidingWindowLog(request.limit, slot.log, {}, now, request.cost);
    }
    const uint64_t want = std::max<uint64_t>(request.limit.limit, 1);
    if (slot.ring == nullptr || static_cast<uint64_t>(slot.ring[0]) != want) {
      int64_t* ring = new (std::nothrow) int64_t[want + 1];
      SLUICE_CHECK(ring != nullptr);
      ring[0] = static_cast<int64_t>(want);
      core::SlidingWindowLogState moved{.head = 0, .count = 0, .last = slot.log.last};
      if (slot.ring != nullptr) {
        const uint64_t old_size = static_cast<uint64_t>(slot.ring[0]);
        const uint32_t keep = static_cast<uint32_t>(std::min<uint64_t>(slot.log.count, want));
        for (uint32_t k = 0; k < keep; ++k) {
          ring[1 + k] = slot.ring[1 + (slot.log.head + slot.log.count - keep + k) % old_size];
        }
        moved.count = keep;
        delete[] slot.ring;
      }
      slot = LogSlot{.ring = ring, .log = moved};
    }
    const Decision d = core::DecideSlidingWindowLog(
        request.limit, slot.log, std::span<int64_t>(slot.ring + 1, want), now, request.cost);
    StoreLog(slot, e.state);
    return d;
  }

  void FreeRing(Entry& e) {
    if ((e.fingerprint_hi & kHasRing) == 0) return;
    delete[] LoadLog(e.state).ring;
  }

  // An entry for a new key. `in_wheel` says whether it already sits on the timer wheel
  // (a recycled live entry does; a free one does not).
  uint32_t Allocate(uint32_t now_s, bool& in_wheel) {
    in_wheel = false;
    if (free_head_ == kNil && size_ < capacity_) {
      if (chunk_next_ == chunk_end_) {
        // A shard takes a new chunk only when all it took is live and it is below
        // capacity, so it never holds more than capacity + kChunk - 1 entries; the
        // arena is sized for that.
        const uint32_t base = arena_->handed_out.fetch_add(kChunk, std::memory_order_relaxed);
        SLUICE_CHECK(base + kChunk <= arena_->size);
        chunk_next_ = base + 1;
        chunk_end_ = base + 1 + kChunk;
      }
      return chunk_next_++;
    }
    if (free_head_ == kNil) Sweep(now_s, kSweepWhenFull, /*stop_when_freed=*/true);
    if (free_head_ != kNil) {
      const uint32_t index = free_head_;
      free_head_ = At(index).chain_next;
      At(index).chain_next = kNil;
      return index;
    }
    // Full, and nothing is due: evict the least recently used key. Its entry stays
    // where it is on the wheel and serves the new key.
    const uint32_t victim = lru_tail_;
    SLUICE_CHECK(victim != kNil);
    Forget(victim);
    const uint32_t wheel_next = At(victim).wheel_next;
    At(victim) = Entry{};
    At(victim).wheel_next = wheel_next;
    ++evicted_;
    in_wheel = true;
    return victim;
  }

  // Unlinks a key from its bucket and the LRU list and frees its ring.
  void Forget(uint32_t index) {
    Entry& e = At(index);
    uint32_t* link = &buckets_[static_cast<uint32_t>(e.fingerprint_lo) & bucket_mask_];
    while (*link != index) link = &At(*link).chain_next;
    *link = e.chain_next;
    Unlink(index);
    FreeRing(e);
    --size_;
  }

  // Timer wheel. Slot s % kWheelSlots lists entries that expire at second s, or at a
  // later second of the same residue, or later than first placed (an entry is not
  // moved when its expiry changes; it is looked at again when its slot comes round).
  // Every live entry is on exactly one list: a slot's, or `sweeping_`, the slot
  // being worked through.
  void WheelPush(uint32_t index) {
    Entry& e = At(index);
    uint32_t& head = e.expires_s <= wheel_second_ ? sweeping_ : wheel_[e.expires_s % kWheelSlots];
    e.wheel_next = head;
    head = index;
  }

  void Sweep(uint32_t now_s, uint32_t budget, bool stop_when_freed) {
    if (!wheel_started_) {
      wheel_second_ = now_s;
      wheel_started_ = true;
    }
    // Decide() keeps the shard's time monotonic; this keeps the wheel safe even so.
    now_s = std::max(now_s, wheel_second_);
    for (; budget > 0; --budget) {
      if (sweeping_ != kNil) {
        const uint32_t index = sweeping_;
        sweeping_ = At(index).wheel_next;
        if (At(index).expires_s <= now_s) {
          Forget(index);
          At(index) = Entry{};
          At(index).chain_next = free_head_;
          free_head_ = index;
          ++expired_;
          if (stop_when_freed) return;
        } else {
          WheelPush(index);
        }
      } else if (wheel_second_ < now_s) {
        // After a long gap each slot needs looking at only once.
        wheel_second_ =
            now_s - wheel_second_ > kWheelSlots ? now_s - kWheelSlots + 1 : wheel_second_ + 1;
        uint32_t& slot = wheel_[wheel_second_ % kWheelSlots];
        sweeping_ = slot;
        slot = kNil;
      } else {
        return;
      }
    }
  }

  void LinkFront(uint32_t index) {
    Entry& e = At(index);
    e.lru_prev = kNil;
    e.lru_next = lru_head_;
    if (lru_head_ != kNil) At(lru_head_).lru_prev = index;
    lru_head_ = index;
    if (lru_tail_ == kNil) lru_tail_ = index;
  }
  void Unlink(uint32_t index) {
    Entry& e = At(index);
    (e.lru_prev != kNil ? At(e.lru_prev).lru_next : lru_head_) = e.lru_next;
    (e.lru_next != kNil ? At(e.lru_next).lru_prev : lru_tail_) = e.lru_prev;
  }
  void MoveToFront(uint32_t index) {
    if (lru_head_ == index) return;
    Unlink(index);
    LinkFront(index);
  }

  // Each shard has its own cache lines: two threads working different shards never
  // write the same line.
  alignas(64) mutable std::mutex mu_;
  EntryArena* arena_ = nullptr;
  uint32_t* buckets_ = nullptr;
  uint32_t bucket_mask_ = 0;
  uint32_t capacity_ = 0;
  uint32_t chunk_next_ = kNil;  // the rest of this shard's current chunk of the arena
  uint32_t chunk_end_ = kNil;
  uint32_t free_head_ = kNil;
  uint32_t size_ = 0;
  uint32_t lru_head_ = kNil;
  uint32_t lru_tail_ = kNil;
  std::array<uint32_t, kWheelSlots> wheel_{};
  uint32_t sweeping_ = kNil;
  Timestamp latest_{};         // the latest time a call has been decided at
  uint32_t wheel_second_ = 0;  // slots up to this second have been taken up
  bool wheel_started_ = false;
  uint64_t expired_ = 0;
  uint64_t evicted_ = 0;
};

namespace {
size_t DefaultShards(size_t max_keys) {
  // About a thousand keys per shard or more, at most 64 shards: enough stripes that
  // a handful of worker threads rarely meet on one lock, few enough that per-shard
  // LRU stays close to global LRU.
  const size_t wanted = std::clamp<size_t>(max_keys / 1024, 1, 64);
  return std::bit_floor(wanted);
}
}  // namespace

MemoryStore::MemoryStore(const Options& options)
    : seed_(options.hash_seed != 0 ? options.hash_seed : RandomSeed()),
      shard_count_(options.shards != 0 ? options.shards : DefaultShards(options.max_keys)) {
  SLUICE_CHECK(options.max_keys > 0);
  shard_count_ = std::min(shard_count_, options.max_keys);
  // Shards share max_keys exactly: the first max_keys % shards get one more.
  const size_t largest_shard = (options.max_keys + shard_count_ - 1) / shard_count_;
  const size_t buckets = BucketsFor(largest_shard);
  const size_t entries = options.max_keys + shard_count_ * kChunk;
  SLUICE_CHECK(entries < std::numeric_limits<uint32_t>::max());
  arena_bytes_ = entries * sizeof(Entry) + shard_count_ * buckets * sizeof(uint32_t);
  arena_ = MapZeroed(arena_bytes_);
  entry_arena_ = std::make_unique<EntryArena>();
  entry_arena_->entries = static_cast<Entry*>(arena_);
  entry_arena_->size = static_cast<uint32_t>(entries);
  auto* bucket_arrays = reinterpret_cast<uint32_t*>(entry_arena_->entries + entries);
  shards_ = std::make_unique<Shard[]>(shard_count_);
  for (size_t i = 0; i < shard_count_; ++i) {
    const size_t capacity =
        options.max_keys / shard_count_ + (i < options.max_keys % shard_count_ ? 1 : 0);
    shards_[i].Init(entry_arena_.get(), bucket_arrays + i * buckets, capacity);
  }
}

MemoryStore::~MemoryStore() {
  shards_.reset();  // frees the log rings, which live outside the arena
  munmap(arena_, arena_bytes_);
}

Decision MemoryStore::Decide(const StoreRequest& request, Timestamp now) {
  const KeyFingerprint fp = FingerprintKey(request.key, request.algorithm, request.limit, seed_);
  // The first decision fixes the epoch of the entries' 32-bit seconds.
  int64_t epoch_s = epoch_s_.load(std::memory_order_relaxed);
  if (epoch_s == kNoEpoch) {
    const int64_t first = std::max<int64_t>(ToNanos(now), 0) / 1'000'000'000;
    if (epoch_s_.compare_exchange_strong(epoch_s, first, std::memory_order_relaxed)) {
      epoch_s = first;
    }
  }
  // Multiply-shift maps the high bits onto [0, shard_count_) for any shard count;
  // the low bits pick the bucket inside the shard.
  const size_t shard =
      static_cast<size_t>((static_cast<unsigned __int128>(fp.hi) * shard_count_) >> 64);
  return shards_[shard].Decide(fp, request, now, epoch_s);
}

MemoryStore::Stats MemoryStore::GetStats() const {
  Stats stats;
  for (size_t i = 0; i < shard_count_; ++i) shards_[i].AddStats(stats);
  return stats;
}

}  // namespace sluice::store
