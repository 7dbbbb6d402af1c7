// The balancing algorithms behind makeSelector (pool.h). Each selector belongs to one worker
// and one backend, so it keeps plain (non-atomic) state; the only shared data it reads are the
// ServerStats counters (relaxed loads) and the snapshot, which is immutable.
#include <algorithm>
#include <cmath>
#include <limits>

#include "balancer/algorithm_state.h"
#include "balancer/hash.h"
#include "balancer/pool.h"

namespace halb::balancer {
namespace {

// splitmix64: tiny, fast and good enough to spread picks; reproducible from a seed.
class Rng {
 public:
  explicit Rng(uint64_t seed) : state_(seed) {}
  uint64_t next() { return mix64(state_ += 0x9e3779b97f4a7c15ULL); }
  // Uniform in [0, n), n > 0 (Lemire's multiply-shift; the bias is < n / 2^64).
  uint64_t below(uint64_t n) {
    return static_cast<uint64_t>((static_cast<unsigned __int128>(next()) * n) >> 64);
  }

 private:
  uint64_t state_;
};

bool excluded(const PickContext& ctx, uint64_t id) {
  for (uint64_t e : ctx.exclude)
    if (e == id) return true;
  return false;
}

bool eligible(const ServerView& s, const PickContext& ctx) {
  return s.acceptsNew() && !excluded(ctx, s.id);
}

// In-flight load; clamped so that load x weight cannot overflow.
uint64_t activeOf(const ServerView& s) {
  if (!s.stats) return 0;
  int64_t a = s.stats->active.load(std::memory_order_relaxed);
  return a <= 0 ? 0 : std::min<uint64_t>(static_cast<uint64_t>(a), uint64_t{1} << 48);
}

// a.load / a.weight < b.load / b.weight, without division.
bool lessLoaded(uint64_t loadA, uint32_t weightA, uint64_t loadB, uint32_t weightB) {
  return loadA * weightB < loadB * weightA;
}

// ------------------------------------------------------------------------ round robin

// Plain rotation over the usable servers; weights only matter as 0 (drained) or not.
class RoundRobin final : public Selector {
 public:
  // Workers start at different servers, so N workers do not all hit server 0 first.
  explicit RoundRobin(uint64_t seed) : next_(static_cast<size_t>(seed)) {}
  const ServerView* select(const BackendView& b, const PickContext& ctx) override {
    const size_t n = b.servers.size();
    if (n == 0) return nullptr;
    const size_t start = next_ % n;
    for (size_t k = 0; k < n; ++k) {
      size_t i = start + k < n ? start + k : start + k - n;
      if (eligible(b.servers[i], ctx)) {
        next_ = i + 1;
        return &b.servers[i];
      }
    }
    return nullptr;
  }

 private:
  size_t next_;
};

// ------------------------------------------------------------------------ smooth WRR

// nginx's smooth weighted round robin: every pick, each eligible server's `current` grows by
// its weight, the largest wins and loses the total. Weights {5,1,1} give a a b a c a a:
// the heavy server is interleaved, never bursty.
class SmoothWeightedRoundRobin final : public Selector {
 public:
  const ServerView* select(const BackendView& b, const PickContext& ctx) override {
    const size_t n = b.servers.size();
    // Same servers as last time? (A new snapshot usually has the same list.)
    bool same = state_.size() == n;
    for (size_t i = 0; same && i < n; ++i) same = state_[i].id == b.servers[i].id;
    if (!same) rekey(b);
    int64_t total = 0;
    size_t best = n;
    for (size_t i = 0; i < n; ++i) {
      const ServerView& s = b.servers[i];
      if (!eligible(s, ctx)) continue;
      state_[i].current += s.weight;
      total += s.weight;
      if (best == n || state_[i].current > state_[best].current) best = i;
    }
    if (best == n) return nullptr;
    state_[best].current -= total;
    return &b.servers[best];
  }

 private:
  struct Slot {
    uint64_t id;
    int64_t current;
  };
  // The server list changed (new snapshot): keep each surviving server's position in the
  // cycle, start newcomers at 0.
  void rekey(const BackendView& b) {
    std::vector<Slot> next;
    next.reserve(b.servers.size());
    for (const auto& s : b.servers) {
      int64_t cur = 0;
      for (const auto& old : state_)
        if (old.id == s.id) cur = old.current;
      next.push_back({s.id, cur});
    }
    state_ = std::move(next);
  }
  std::vector<Slot> state_;
};

// ------------------------------------------------------------------------ least_conn

// Fewest in-flight connections per unit of weight. The scan starts one server further each
// call, so ties (an idle pool) rotate instead of piling onto the first server.
class LeastConn final : public Selector {
 public:
  explicit LeastConn(uint64_t seed) : rotation_(static_cast<size_t>(seed)) {}
  const ServerView* select(const BackendView& b, const PickContext& ctx) override {
    const size_t n = b.servers.size();
    if (n == 0) return nullptr;
    const size_t start = rotation_++ % n;
    const ServerView* best = nullptr;
    uint64_t bestLoad = 0;
    for (size_t k = 0; k < n; ++k) {
      size_t i = start + k < n ? start + k : start + k - n;
      const ServerView& s = b.servers[i];
      if (!eligible(s, ctx)) continue;
      uint64_t load = activeOf(s);
      if (!best || lessLoaded(load, s.weight, bestLoad, best->weight)) {
        best = &s;
        bestLoad = load;
      }
    }
    return best;
  }

 private:
  size_t rotation_;
};

// ------------------------------------------------------------------------ weighted draws

// Servers with cumulative weights: either precomputed with the snapshot (AlgorithmState,
// O(log N) per draw) or collected per call into reused storage (O(N)) when the precomputed
// list cannot serve the pick (a server in it is excluded for this retry).
class WeightedCandidates {
 public:
  // The snapshot's precomputed list.
  bool usePrebuilt(const BackendView& b) {
    const AlgorithmState* st = algorithmStateOf(b);
    if (!st || st->index.empty()) return false;
    idx_ = st->index.data();
    cum_ = st->cumulative.data();
    n_ = st->index.size();
    return true;
  }
  // The servers eligible for this pick, scanned now.
  void collect(const BackendView& b, const PickContext& ctx) {
    ownIdx_.clear();
    ownCum_.clear();
    uint64_t total = 0;
    for (size_t i = 0; i < b.servers.size(); ++i) {
      const ServerView& s = b.servers[i];
      if (!eligible(s, ctx)) continue;
      total += s.weight;
      ownIdx_.push_back(static_cast<uint32_t>(i));
      ownCum_.push_back(total);
    }
    idx_ = ownIdx_.data();
    cum_ = ownCum_.data();
    n_ = ownIdx_.size();
  }
  size_t count() const { return n_; }
  uint64_t total() const { return n_ ? cum_[n_ - 1] : 0; }
  // The candidate (position in the list) whose weight interval holds r, r < total.
  size_t at(uint64_t r) const {
    return static_cast<size_t>(std::upper_bound(cum_, cum_ + n_, r) - cum_);
  }
  uint64_t weightOf(size_t c) const { return cum_[c] - (c ? cum_[c - 1] : 0); }
  uint64_t startOf(size_t c) const { return c ? cum_[c - 1] : 0; }
  size_t server(size_t c) const { return idx_[c]; }

 private:
  const uint32_t* idx_ = nullptr;
  const uint64_t* cum_ = nullptr;
  size_t n_ = 0;
  std::vector<uint32_t> ownIdx_;
  std::vector<uint64_t> ownCum_;
};

class WeightedRandom final : public Selector {
 public:
  explicit WeightedRandom(uint64_t seed) : rng_(seed) {}
  const ServerView* select(const BackendView& b, const PickContext& ctx) override {
    if (c_.usePrebuilt(b)) {
      const ServerView& s = b.servers[c_.server(c_.at(rng_.below(c_.total())))];
      if (eligible(s, ctx)) return &s;
    }
    c_.collect(b, ctx);
    if (c_.count() == 0) return nullptr;
    return &b.servers[c_.server(c_.at(rng_.below(c_.total())))];
  }

 private:
  Rng rng_;
  WeightedCandidates c_;
};

// Power of two choices (Mitzenmacher): draw two distinct servers in proportion to their
// weights, keep the one with fewer in-flight connections per unit of weight. Near
// least_conn's balance without scanning shared counters of every server, and no herd on the
// single least-loaded server when workers decide at the same time.
class PowerOfTwo final : public Selector {
 public:
  explicit PowerOfTwo(uint64_t seed) : rng_(seed) {}
  const ServerView* select(const BackendView& b, const PickContext& ctx) override {
    if (c_.usePrebuilt(b)) {
      if (const ServerView* s = pick(b, ctx)) return s;
    }
    c_.collect(b, ctx);  // every candidate now eligible
    return pick(b, ctx);
  }

 private:
  const ServerView* pick(const BackendView& b, const PickContext& ctx) {
    const size_t n = c_.count();
    if (n == 0) return nullptr;
    if (n == 1) {
      const ServerView& s = b.servers[c_.server(0)];
      return eligible(s, ctx) ? &s : nullptr;
    }
    size_t first = c_.at(rng_.below(c_.total()));
    // Second draw from the other candidates: a draw over total - w(first), shifted past
    // first's interval.
    uint64_t r = rng_.below(c_.total() - c_.weightOf(first));
    if (r >= c_.startOf(first)) r += c_.weightOf(first);
    size_t second = c_.at(r);
    const ServerView& a = b.servers[c_.server(first)];
    const ServerView& d = b.servers[c_.server(second)];
    if (!eligible(a, ctx) || !eligible(d, ctx)) return nullptr;  // caller rescans
    uint64_t la = activeOf(a), ld = activeOf(d);
    if (lessLoaded(ld, d.weight, la, a.weight)) return &d;
    return &a;
  }

  Rng rng_;
  WeightedCandidates c_;
};

// ------------------------------------------------------------------------ hashing

// Weighted rendezvous (highest random weight) hashing: every server scores the key
// independently and the best score wins, so a server leaving moves only its own keys, and a
// retry (exclude) lands on the key's second-best server, the same on every node.
// Score for weight w and uniform u in (0,1): w / -ln(u) (Schindelhauer & Schomaker); with
// equal weights the raw hash orders the same way and the logarithm is skipped.
const ServerView* rendezvous(const BackendView& b, const PickContext& ctx, uint64_t key) {
  bool sameWeight = true;
  uint32_t w0 = 0;
  for (const auto& s : b.servers) {
    if (!eligible(s, ctx)) continue;
    if (w0 == 0)
      w0 = s.weight;
    else if (s.weight != w0)
      sameWeight = false;
  }
  if (w0 == 0) return nullptr;
  const ServerView* best = nullptr;
  if (sameWeight) {
    uint64_t bestH = 0;
    for (const auto& s : b.servers) {
      if (!eligible(s, ctx)) continue;
      uint64_t h = hashCombine(key, s.id);
      if (!best || h > bestH) best = &s, bestH = h;
    }
    return best;
  }
  double bestScore = 0;
  for (const auto& s : b.servers) {
    if (!eligible(s, ctx)) continue;
    // u in (0,1): 53 random bits, never 0 or 1.
    double u = (static_cast<double>(hashCombine(key, s.id) >> 11) + 0.5) * 0x1p-53;
    double score = s.weight / -std::log(u);
    if (!best || score > bestScore) best = &s, bestScore = score;
  }
  return best;
}

class SourceHash final : public Selector {
 public:
  const ServerView* select(const BackendView& b, const PickContext& ctx) override {
    return rendezvous(b, ctx, pickHash(ctx));
  }
};

// Maglev: one table lookup. A slot whose server cannot take this pick (excluded on retry,
// or changed state since the table was built) falls through to the following slots, which
// name servers in table proportions, so the fallback is deterministic and weighted too.
class Maglev final : public Selector {
 public:
  const ServerView* select(const BackendView& b, const PickContext& ctx) override {
    const uint64_t key = pickHash(ctx);
    const MaglevTable* t = maglevTableOf(b);
    if (!t) return rendezvous(b, ctx, key);
    if (t->empty()) return nullptr;
    uint64_t slot = key % t->size;
    for (int probe = 0; probe < kMaxProbes; ++probe) {
      const ServerView& s = b.servers[t->entries[slot]];
      if (eligible(s, ctx)) return &s;
      if (++slot == t->size) slot = 0;
    }
    return rendezvous(b, ctx, key);
  }

 private:
  static constexpr int kMaxProbes = 32;
};

}  // namespace

std::unique_ptr<Selector> makeSelector(config::Algorithm algorithm, uint64_t seed) {
  using config::Algorithm;
  switch (algorithm) {
    case Algorithm::RoundRobin:
      return std::make_unique<RoundRobin>(seed);
    case Algorithm::WeightedRoundRobin:
      return std::make_unique<SmoothWeightedRoundRobin>();
    case Algorithm::LeastConn:
      return std::make_unique<LeastConn>(seed);
    case Algorithm::P2C:
      return std::make_unique<PowerOfTwo>(seed);
    case Algorithm::Random:
      return std::make_unique<WeightedRandom>(seed);
    case Algorithm::SourceHash:
      return std::make_unique<SourceHash>();
    case Algorithm::Maglev:
      return std::make_unique<Maglev>();
  }
  return std::make_unique<RoundRobin>(seed);
}

}  // namespace halb::balancer
