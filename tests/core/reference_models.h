// Reference models of the six algorithms for the tests: each written from the
// algorithm's textbook statement, with exact rationals and full event lists, and
// slow on purpose. A model only answers "would a request of this cost fit at time t"
// and records admissions; the numbers in a Decision (remaining, reset_after,
// retry_after) are derived from that one question by search, so they do not share a
// formula with the code under test.
#ifndef SLUICE_TESTS_CORE_REFERENCE_MODELS_H_
#define SLUICE_TESTS_CORE_REFERENCE_MODELS_H_

#include <algorithm>
#include <cstdint>
#include <memory>
#include <numeric>
#include <vector>

#include "sluice/decision.h"
#include "sluice/limiter.h"

namespace sluice::testing {

// An exact fraction; the models' magnitudes stay far inside 128 bits.
struct Rational {
  __int128 num = 0;
  __int128 den = 1;

  Rational() = default;
  Rational(__int128 n, __int128 d = 1) : num(n), den(d) { Normalize(); }
  void Normalize() {
    if (den < 0) num = -num, den = -den;
    __int128 a = num < 0 ? -num : num, b = den;
    while (b != 0) a %= b, std::swap(a, b);
    if (a > 1) num /= a, den /= a;
  }
  friend Rational operator+(Rational a, Rational b) {
    return {a.num * b.den + b.num * a.den, a.den * b.den};
  }
  friend Rational operator-(Rational a, Rational b) {
    return {a.num * b.den - b.num * a.den, a.den * b.den};
  }
  friend Rational operator*(Rational a, Rational b) { return {a.num * b.num, a.den * b.den}; }
  friend Rational operator/(Rational a, Rational b) { return {a.num * b.den, a.den * b.num}; }
  friend bool operator<(Rational a, Rational b) { return a.num * b.den < b.num * a.den; }
  friend bool operator<=(Rational a, Rational b) { return !(b < a); }
  friend Rational Min(Rational a, Rational b) { return b < a ? b : a; }
  friend Rational Max(Rational a, Rational b) { return a < b ? b : a; }
};

class Model {
 public:
  virtual ~Model() = default;
  // Would a request of `cost` pass at time t (t >= every earlier time)?
  virtual bool Fits(int64_t t, uint64_t cost) const = 0;
  // Records that a request of `cost` passed at time t.
  virtual void Take(int64_t t, uint64_t cost) = 0;
  // How long the whole quota can take to come back, an upper bound for searches.
  virtual int64_t Horizon() const = 0;
};

// Tokens refill at limit/period per ns up to burst; a request spends `cost` tokens.
class TokenBucketModel : public Model {
 public:
  explicit TokenBucketModel(Limit l) : l_(l), tokens_(l.burst) {}
  Rational TokensAt(int64_t t) const {
    Rational refill = Rational(t - last_) * Rational(l_.limit, l_.period.count());
    return Min(Rational(l_.burst), tokens_ + refill);
  }
  bool Fits(int64_t t, uint64_t cost) const override { return Rational(cost) <= TokensAt(t); }
  void Take(int64_t t, uint64_t cost) override {
    tokens_ = TokensAt(t) - Rational(cost);
    last_ = t;
  }
  int64_t Horizon() const override {
    return static_cast<int64_t>(l_.burst * l_.period.count() / l_.limit + 2);
  }

 private:
  Limit l_;
  Rational tokens_;
  int64_t last_ = 0;
};

// Requests pour into a bucket of size burst that leaks limit/period per ns.
class LeakyBucketModel : public Model {
 public:
  explicit LeakyBucketModel(Limit l) : l_(l) {}
  Rational LevelAt(int64_t t) const {
    Rational leaked = Rational(t - last_) * Rational(l_.limit, l_.period.count());
    return Max(Rational(0), level_ - leaked);
  }
  bool Fits(int64_t t, uint64_t cost) const override {
    return LevelAt(t) + Rational(cost) <= Rational(l_.burst);
  }
  void Take(int64_t t, uint64_t cost) override {
    level_ = LevelAt(t) + Rational(cost);
    last_ = t;
  }
  int64_t Horizon() const override {
    return static_cast<int64_t>(l_.burst * l_.period.count() / l_.limit + 2);
  }

 private:
  Limit l_;
  Rational level_;
  int64_t last_ = 0;
};

// Virtual scheduling: emission interval T = period/limit, tolerance burst*T.
class GcraModel : public Model {
 public:
  explicit GcraModel(Limit l) : l_(l), interval_(l.period.count(), l.limit) {}
  bool Fits(int64_t t, uint64_t cost) const override {
    Rational next = Max(tat_, Rational(t)) + Rational(cost) * interval_;
    return next - Rational(t) <= Rational(l_.burst) * interval_;
  }
  void Take(int64_t t, uint64_t cost) override {
    tat_ = Max(tat_, Rational(t)) + Rational(cost) * interval_;
  }
  int64_t Horizon() const override {
    return static_cast<int64_t>(l_.burst * l_.period.count() / l_.limit + 2);
  }

 private:
  Limit l_;
  Rational interval_;
  Rational tat_;
};

// The window models keep every admission (time, cost) and count them afresh.
class EventModel : public Model {
 public:
  explicit EventModel(Limit l) : l_(l) {}
  void Take(int64_t t, uint64_t cost) override {
    events_.push_back({t, cost});
    // Nothing older than two periods can matter to any window model.
    while (!events_.empty() && t - events_.front().t >= 3 * l_.period.count()) {
      events_.erase(events_.begin());
    }
  }
  int64_t Horizon() const override { return 2 * l_.period.count() + 2; }

 protected:
  struct Event {
    int64_t t;
    uint64_t cost;
  };
  int64_t Window(int64_t t) const { return t / l_.period.count(); }
  Limit l_;
  std::vector<Event> events_;
};

class FixedWindowModel : public EventModel {
 public:
  using EventModel::EventModel;
  bool Fits(int64_t t, uint64_t cost) const override {
    uint64_t in_window = 0;
    for (const Event& e : events_) in_window += Window(e.t) == Window(t) ? e.cost : 0;
    return in_window + cost <= l_.limit;
  }
};

class SlidingWindowLogModel : public EventModel {
 public:
  using EventModel::EventModel;
  bool Fits(int64_t t, uint64_t cost) const override {
    uint64_t in_window = 0;  // admissions in (t - period, t]
    for (const Event& e : events_) in_window += t - e.t < l_.period.count() ? e.cost : 0;
    return in_window + cost <= l_.limit;
  }
};

class SlidingWindowCounterModel : public EventModel {
 public:
  using EventModel::EventModel;
  bool Fits(int64_t t, uint64_t cost) const override {
    uint64_t previous = 0, current = 0;
    for (const Event& e : events_) {
      if (Window(e.t) == Window(t)) current += e.cost;
      if (Window(e.t) == Window(t) - 1) previous += e.cost;
    }
    const int64_t p = l_.period.count();
    Rational overlap(p - t % p, p);  // share of the previous window still in view
    return Rational(previous) * overlap + Rational(current + cost) <= Rational(l_.limit);
  }
};

inline std::unique_ptr<Model> MakeModel(Algorithm a, Limit l) {
  switch (a) {
    case Algorithm::kTokenBucket:
      return std::make_unique<TokenBucketModel>(l);
    case Algorithm::kLeakyBucket:
      return std::make_unique<LeakyBucketModel>(l);
    case Algorithm::kGcra:
      return std::make_unique<GcraModel>(l);
    case Algorithm::kFixedWindow:
      return std::make_unique<FixedWindowModel>(l);
    case Algorithm::kSlidingWindowLog:
      return std::make_unique<SlidingWindowLogModel>(l);
    case Algorithm::kSlidingWindowCounter:
      return std::make_unique<SlidingWindowCounterModel>(l);
  }
  return nullptr;
}

// Drives a model like a limiter (REQUIRES: limit >= 1): applies the clock-regression rule, decides,
// and derives every number of the Decision from Fits().
class ModelLimiter {
 public:
  ModelLimiter(Algorithm a, Limit l) : capacity_(Capacity(a, l)), model_(MakeModel(a, l)) {}

  Decision Decide(int64_t now, uint64_t cost) {
    const int64_t t = std::max({now, latest_, int64_t{0}});
    latest_ = t;
    Decision d;
    d.limit = capacity_;
    d.allowed = Fits(t, cost);
    if (d.allowed) model_->Take(t, cost);
    d.remaining = Remaining(t);
    d.reset_after = Duration(FirstTime(t, [&](int64_t u) { return Remaining(u) == capacity_; }));
    if (!d.allowed) {
      d.retry_after = cost > capacity_
                          ? Decision::kNever
                          : Duration(FirstTime(t, [&](int64_t u) { return Fits(u, cost); }));
    }
    return d;
  }

 private:
  bool Fits(int64_t t, uint64_t cost) const { return cost <= capacity_ && model_->Fits(t, cost); }
  // The largest cost that fits now: what is left.
  uint64_t Remaining(int64_t t) const {
    uint64_t k = 0;
    while (k < capacity_ && model_->Fits(t, k + 1)) ++k;
    return k;
  }
  // Smallest d >= 0 with pred(t + d), for a predicate that stays true once true.
  template <typename Pred>
  int64_t FirstTime(int64_t t, Pred pred) const {
    if (pred(t)) return 0;
    int64_t lo = 0, hi = model_->Horizon();  // pred(t + lo) false, pred(t + hi) true
    while (hi - lo > 1) {
      int64_t mid = lo + (hi - lo) / 2;
      (pred(t + mid) ? hi : lo) = mid;
    }
    return hi;
  }

  uint64_t capacity_;
  std::unique_ptr<Model> model_;
  int64_t latest_ = 0;
};

}  // namespace sluice::testing

#endif  // SLUICE_TESTS_CORE_REFERENCE_MODELS_H_
