// Sharded stick tables (see stick_table.h).
//
// Layout: 16 shards, each with its own mutex. A large table spreads its keys over all
// shards, each shard holding an exact share of the size bound (so the bound is exact and LRU
// is approximate, per shard); a small table (under kSpreadThreshold entries) lives in one
// shard, so its LRU order is exact. Which shards a table uses is a Layout published through
// an atomic pointer: workers read it without locking, configure() replaces it while it
// holds every shard lock, and a worker that raced with it notices (the pointer changed under
// its shard lock) and retries.
#include "balancer/stick_table.h"

#include <algorithm>
#include <array>
#include <atomic>
#include <cmath>
#include <mutex>
#include <optional>
#include <unordered_map>

#include "balancer/hash.h"

namespace halb::balancer {
namespace {

constexpr size_t kShards = 16;
constexpr uint64_t kSpreadThreshold = kShards * 64;
constexpr int kRelinkDivisor = 16;

struct TableInfo {
  uint64_t backendId = 0;
  Duration ttl{};
  uint64_t maxEntries = 0;
  uint32_t firstShard = 0;
  uint32_t shardsUsed = 1;

  uint32_t shardFor(std::string_view key) const {
    if (shardsUsed == 1) return firstShard;
    return static_cast<uint32_t>((firstShard + hashString(key, backendId) % shardsUsed) % kShards);
  }
  // This table's share of the bound in shard `shard` (exact: the shares add up).
  uint64_t capacityIn(uint32_t shard) const {
    uint32_t rel = static_cast<uint32_t>((shard + kShards - firstShard) % kShards);
    if (rel >= shardsUsed) return 0;
    return maxEntries / shardsUsed + (rel < maxEntries % shardsUsed ? 1 : 0);
  }
};

struct Layout {
  std::vector<TableInfo> tables;  // sorted by backendId
  const TableInfo* find(uint64_t backendId) const {
    auto it = std::lower_bound(tables.begin(), tables.end(), backendId,
                               [](const TableInfo& t, uint64_t id) { return t.backendId < id; });
    return it != tables.end() && it->backendId == backendId ? &*it : nullptr;
  }
};

struct Entry {
  uint64_t serverId = 0;
  TimePoint expires{};
  TimePoint announced{};  // when the peer was last told about this entry
  TimePoint linked{};     // when it was last moved to the front of the LRU list
  repl::Version version;
  const std::string* key = nullptr;  // the map node's key (node-stable)
  Entry* newer = nullptr;            // LRU list: head = most recently used
  Entry* older = nullptr;
};

struct StringHash {
  using is_transparent = void;
  size_t operator()(std::string_view s) const { return hashString(s); }
};

// One table's entries within one shard.
struct Part {
  std::unordered_map<std::string, Entry, StringHash, std::equal_to<>> map;
  Entry* head = nullptr;
  Entry* tail = nullptr;

  void unlink(Entry* e) {
    (e->newer ? e->newer->older : head) = e->older;
    (e->older ? e->older->newer : tail) = e->newer;
    e->newer = e->older = nullptr;
  }
  void pushFront(Entry* e) {
    e->older = head;
    e->newer = nullptr;
    (head ? head->newer : tail) = e;
    head = e;
  }
  void touch(Entry* e) {
    if (head == e) return;
    unlink(e);
    pushFront(e);
  }
  void erase(Entry* e) {
    unlink(e);
    map.erase(map.find(*e->key));
  }
  // Inserts (or finds) `key`; returns the entry, linked at the front.
  Entry* insert(std::string_view key, bool& fresh) {
    auto [it, inserted] = map.try_emplace(std::string(key));
    fresh = inserted;
    Entry* e = &it->second;
    if (inserted) {
      e->key = &it->first;
      pushFront(e);
    } else {
      touch(e);
    }
    return e;
  }
  void evictTo(uint64_t cap) {
    while (map.size() > cap && tail) erase(tail);
  }
};

struct Shard {
  mutable std::mutex mu;
  std::unordered_map<uint64_t, Part> parts;  // by backendId
};

class StickTablesImpl final : public StickTables {
 public:
  StickTablesImpl(std::vector<TableSpec> specs, Options options) : options_(std::move(options)) {
    if (!options_.clock) options_.clock = [] { return SteadyClock::now(); };
    options_.touchFraction = std::clamp(options_.touchFraction, 0.0, 1.0);
    auto layout = makeLayout(specs);
    layout_.store(layout.get(), std::memory_order_release);
    layouts_.push_back(std::move(layout));
  }

  std::optional<uint64_t> lookup(uint64_t backendId, std::string_view key, TimePoint now,
                                 const Emit& emit) override {
    std::optional<repl::Change> change;
    std::optional<uint64_t> result;
    withShard(backendId, key, [&](const TableInfo& t, Part& p) {
      auto it = p.map.find(key);
      if (it == p.map.end()) return;
      Entry* e = &it->second;
      if (e->expires <= now) {
        p.erase(e);  // expired: as if absent (the peer expires its copy on its own clock)
        return;
      }
      result = e->serverId;
      e->expires = now + t.ttl;
      // Approximate LRU: a hit moves the entry to the front only if it has not been moved
      // in the last ttl/16. A busy user's requests then cost no list writes (three cache
      // lines of other entries each); eviction and the tail scan of expire() are off by at
      // most ttl/16.
      if (now - e->linked >= t.ttl / kRelinkDivisor) {
        p.touch(e);
        e->linked = now;
      }
      if (emit && now - e->announced >= touchInterval(t)) {
        e->version = nextVersion(e->version);
        e->announced = now;
        change = makeChange(repl::ChangeKind::StickTouch, backendId, *e, t.ttl, now);
      }
    });
    if (change) emit(std::move(*change));
    return result;
  }

  void record(uint64_t backendId, std::string_view key, uint64_t serverId, TimePoint now,
              const Emit& emit) override {
    std::optional<repl::Change> change;
    withShard(backendId, key, [&](const TableInfo& t, Part& p) {
      uint64_t cap = t.capacityIn(shardIndex(t, key));
      if (cap == 0) return;
      bool fresh = false;
      Entry* e = p.insert(key, fresh);
      e->linked = now;
      bool expired = !fresh && e->expires <= now;
      bool same = !fresh && !expired && e->serverId == serverId;
      e->expires = now + t.ttl;
      if (same && now - e->announced < touchInterval(t)) return;  // a coalesced touch
      e->serverId = serverId;
      e->version = nextVersion(fresh ? repl::Version{} : e->version);
      e->announced = now;
      if (emit)
        change = makeChange(same ? repl::ChangeKind::StickTouch : repl::ChangeKind::StickUpsert,
                            backendId, *e, t.ttl, now);
      p.evictTo(cap);  // never evicts `e`: it is the most recent
    });
    if (change) emit(std::move(*change));
  }

  void erase(uint64_t backendId, std::string_view key, const Emit& emit) override {
    std::optional<repl::Change> change;
    withShard(backendId, key, [&](const TableInfo&, Part& p) {
      auto it = p.map.find(key);
      if (it == p.map.end()) return;
      Entry* e = &it->second;
      if (emit) {
        change.emplace();
        change->kind = repl::ChangeKind::StickDelete;
        change->stick.backendId = backendId;
        change->stick.key = *e->key;
        change->stick.serverId = e->serverId;
        change->stick.version = nextVersion(e->version);
      }
      p.erase(e);
    });
    if (change) emit(std::move(*change));
  }

  size_t expire(TimePoint now) override {
    size_t n = 0;
    for (auto& s : shards_) {
      std::lock_guard lock(s.mu);
      for (auto& [id, p] : s.parts) {
        // Local use keeps the LRU order in expiry order (one TTL per table, up to the
        // ttl/16 of approximate LRU), so expired entries gather at the tail. An entry
        // applied from the peer with a short ttlLeft may sit further up; it is dropped when
        // looked up or when it reaches the tail.
        while (p.tail && p.tail->expires <= now) {
          p.erase(p.tail);
          ++n;
        }
      }
    }
    return n;
  }

  size_t size() const override {
    size_t n = 0;
    for (const auto& s : shards_) {
      std::lock_guard lock(s.mu);
      for (const auto& [id, p] : s.parts) n += p.map.size();
    }
    return n;
  }

  size_t size(uint64_t backendId) const override {
    size_t n = 0;
    for (const auto& s : shards_) {
      std::lock_guard lock(s.mu);
      if (auto it = s.parts.find(backendId); it != s.parts.end()) n += it->second.map.size();
    }
    return n;
  }

  void configure(std::vector<TableSpec> specs) override {
    auto layout = makeLayout(specs);
    std::array<std::unique_lock<std::mutex>, kShards> locks;
    for (size_t i = 0; i < kShards; ++i) locks[i] = std::unique_lock(shards_[i].mu);
    const Layout* old = layout_.load(std::memory_order_relaxed);
    // Take every entry of every table out, then put back those whose table remains, in
    // LRU order (oldest first) so that the new bounds evict the least recently used.
    struct Moved {
      uint64_t backendId;
      std::string key;
      Entry e;
    };
    std::vector<Moved> moved;
    for (auto& s : shards_) {
      for (auto& [id, p] : s.parts) {
        const TableInfo* nt = layout->find(id);
        const TableInfo* ot = old->find(id);
        bool keep = nt != nullptr;
        bool relocate =
            keep && (!ot || ot->shardsUsed != nt->shardsUsed || ot->maxEntries != nt->maxEntries);
        if (keep && !relocate) continue;
        if (keep)
          for (Entry* e = p.tail; e; e = e->newer) moved.push_back({id, *e->key, *e});
        p = Part{};
      }
      std::erase_if(s.parts, [&](auto& kv) { return kv.second.map.empty(); });
    }
    for (auto& m : moved) {
      const TableInfo* t = layout->find(m.backendId);
      uint32_t si = shardIndex(*t, m.key);
      Part& p = shards_[si].parts[m.backendId];
      bool fresh = false;
      Entry* e = p.insert(m.key, fresh);
      e->serverId = m.e.serverId;
      e->expires = m.e.expires;
      e->announced = m.e.announced;
      e->linked = m.e.linked;
      e->version = m.e.version;
      p.evictTo(t->capacityIn(si));
    }
    layout_.store(layout.get(), std::memory_order_release);
    layouts_.push_back(std::move(layout));  // readers may still hold the old ones
  }

  void setEpoch(uint32_t epoch) override { epoch_.store(epoch, std::memory_order_relaxed); }
  uint32_t epoch() const override { return epoch_.load(std::memory_order_relaxed); }
  uint32_t maxEpochSeen() const override { return maxEpochSeen_.load(std::memory_order_relaxed); }

  // ---------------------------------------------------------------- repl::TableSource

  void forEachStick(const std::function<void(const repl::StickEntry&)>& fn) const override {
    const TimePoint now = options_.clock();
    std::vector<repl::StickEntry> batch;
    for (const auto& s : shards_) {
      batch.clear();
      {
        // Copy one shard out and call `fn` unlocked: a slow consumer must not stall workers.
        std::lock_guard lock(s.mu);
        for (const auto& [id, p] : s.parts) {
          for (const auto& [key, e] : p.map) {
            if (e.expires <= now) continue;
            batch.push_back({id, key, e.serverId, e.expires - now, e.version});
          }
        }
      }
      for (const auto& e : batch) fn(e);
    }
  }

  // ---------------------------------------------------------------- repl::TableSink

  bool applyStick(const repl::StickEntry& in, TimePoint now) override {
    if (in.ttlLeft <= Duration::zero()) return false;
    noteEpoch(in.version.epoch);
    bool applied = false;
    withShard(in.backendId, in.key, [&](const TableInfo& t, Part& p) {
      uint64_t cap = t.capacityIn(shardIndex(t, in.key));
      if (cap == 0) return;
      auto it = p.map.find(in.key);
      if (it != p.map.end() && it->second.version >= in.version) return;  // we hold newer
      bool fresh = false;
      Entry* e = p.insert(in.key, fresh);
      e->serverId = in.serverId;
      e->expires = now + std::min<Duration>(in.ttlLeft, t.ttl);
      e->announced = now;  // what the peer sent needs no echo
      e->linked = now;
      e->version = in.version;
      p.evictTo(cap);
      applied = true;
    });
    return applied;
  }

  bool removeStick(uint64_t backendId, const std::string& key, repl::Version v) override {
    noteEpoch(v.epoch);
    bool removed = false;
    withShard(backendId, key, [&](const TableInfo&, Part& p) {
      auto it = p.map.find(key);
      if (it == p.map.end() || it->second.version >= v) return;
      p.erase(&it->second);
      removed = true;
    });
    return removed;
  }

 private:
  static std::unique_ptr<Layout> makeLayout(const std::vector<TableSpec>& specs) {
    auto l = std::make_unique<Layout>();
    for (const auto& s : specs) {
      if (s.maxEntries == 0) continue;
      TableInfo t;
      t.backendId = s.backendId;
      t.ttl = s.ttl;
      t.maxEntries = s.maxEntries;
      t.firstShard = static_cast<uint32_t>(mix64(s.backendId) % kShards);
      t.shardsUsed = s.maxEntries >= kSpreadThreshold ? kShards : 1;
      l->tables.push_back(t);
    }
    std::sort(l->tables.begin(), l->tables.end(),
              [](const TableInfo& a, const TableInfo& b) { return a.backendId < b.backendId; });
    l->tables.erase(std::unique(l->tables.begin(), l->tables.end(),
                                [](const TableInfo& a, const TableInfo& b) {
                                  return a.backendId == b.backendId;
                                }),
                    l->tables.end());
    return l;
  }

  static uint32_t shardIndex(const TableInfo& t, std::string_view key) { return t.shardFor(key); }

  // Runs fn(table, part) under the key's shard lock; nothing when the table is unknown.
  template <class Fn>
  void withShard(uint64_t backendId, std::string_view key, Fn&& fn) {
    for (;;) {
      const Layout* l = layout_.load(std::memory_order_acquire);
      const TableInfo* t = l->find(backendId);
      if (!t) return;
      Shard& s = shards_[t->shardFor(key)];
      std::lock_guard lock(s.mu);
      if (layout_.load(std::memory_order_acquire) != l) continue;  // configure() raced us
      fn(*t, s.parts[backendId]);
      return;
    }
  }

  Duration touchInterval(const TableInfo& t) const {
    return std::chrono::duration_cast<Duration>(t.ttl * options_.touchFraction);
  }

  // A version newer than both this node's clock and what the entry holds, so a local change
  // always supersedes what both nodes have (even an entry from a higher epoch).
  repl::Version nextVersion(repl::Version held) {
    repl::Version v{epoch_.load(std::memory_order_relaxed),
                    seq_.fetch_add(1, std::memory_order_relaxed) + 1};
    if (v <= held) v = {held.epoch, held.seq + 1};
    return v;
  }

  static repl::Change makeChange(repl::ChangeKind kind, uint64_t backendId, const Entry& e,
                                 Duration ttl, TimePoint now) {
    repl::Change c;
    c.kind = kind;
    c.at = now;
    c.stick.backendId = backendId;
    c.stick.key = *e.key;
    c.stick.serverId = e.serverId;
    c.stick.ttlLeft = ttl;
    c.stick.version = e.version;
    return c;
  }

  void noteEpoch(uint32_t e) {
    uint32_t cur = maxEpochSeen_.load(std::memory_order_relaxed);
    while (e > cur && !maxEpochSeen_.compare_exchange_weak(cur, e, std::memory_order_relaxed)) {
    }
  }

  Options options_;
  std::array<Shard, kShards> shards_;
  std::atomic<const Layout*> layout_{nullptr};
  std::vector<std::unique_ptr<Layout>> layouts_;  // control thread only (configure)
  std::atomic<uint32_t> epoch_{1};
  std::atomic<uint64_t> seq_{0};
  std::atomic<uint32_t> maxEpochSeen_{0};
};

}  // namespace

std::unique_ptr<StickTables> makeStickTables(std::vector<StickTables::TableSpec> tables) {
  return makeStickTables(std::move(tables), StickTables::Options{});
}

std::unique_ptr<StickTables> makeStickTables(std::vector<StickTables::TableSpec> tables,
                                             StickTables::Options options) {
  return std::make_unique<StickTablesImpl>(std::move(tables), std::move(options));
}

std::vector<StickTables::TableSpec> stickTableSpecs(const config::Config& config) {
  std::vector<StickTables::TableSpec> out;
  for (const auto& b : config.backends) {
    switch (b.sticky.mode) {
      case config::StickyMode::Source:
      case config::StickyMode::AppCookie:
      case config::StickyMode::Header:
        out.push_back({b.id, b.sticky.ttl, b.sticky.tableSize});
        break;
      case config::StickyMode::None:
      case config::StickyMode::Cookie:
        break;
    }
  }
  return out;
}

}  // namespace halb::balancer
