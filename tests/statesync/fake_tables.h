#pragma once
// Stick and connection tables with the behaviour statesync relies on (last writer wins by
// version, expiry, sharded iteration), small enough to read at a glance. Tests write "local"
// changes through upsert()/touch()/... which stamp versions like the balancer does and return
// the Change the data plane would queue.
#include <map>
#include <string>
#include <utility>

#include "common/replication.h"

namespace halb::statesync::test {

class FakeTables : public repl::TableSource, public repl::TableSink {
 public:
  struct Stick {
    repl::StickEntry entry;
    TimePoint expires{};
  };

  explicit FakeTables(size_t shards = 1) : shards_(shards) {}

  uint32_t epoch = 1;
  uint64_t seq = 0;
  size_t forEachCalls = 0;

  repl::Version nextVersion() { return {epoch, ++seq}; }

  // ---- local writes (as the data plane makes them)
  repl::Change upsert(uint64_t backend, const std::string& key, uint64_t server, Duration ttl,
                      TimePoint now) {
    repl::Change c;
    c.kind = repl::ChangeKind::StickUpsert;
    c.at = now;
    c.stick = {backend, key, server, ttl, nextVersion()};
    sticks[{backend, key}] = Stick{c.stick, now + ttl};
    return c;
  }
  repl::Change touch(uint64_t backend, const std::string& key, Duration ttl, TimePoint now) {
    Stick& s = sticks.at({backend, key});
    s.expires = now + ttl;
    repl::Change c;
    c.kind = repl::ChangeKind::StickTouch;
    c.at = now;
    c.stick = s.entry;
    c.stick.ttlLeft = ttl;
    c.stick.version = nextVersion();
    s.entry.version = c.stick.version;
    return c;
  }
  repl::Change erase(uint64_t backend, const std::string& key, TimePoint now) {
    repl::Change c;
    c.kind = repl::ChangeKind::StickDelete;
    c.at = now;
    c.stick.backendId = backend;
    c.stick.key = key;
    c.stick.version = nextVersion();
    sticks.erase({backend, key});
    return c;
  }
  repl::Change openConn(uint64_t id, TimePoint now,
                        repl::ChangeKind kind = repl::ChangeKind::ConnOpen) {
    repl::Change c;
    c.kind = kind;
    c.at = now;
    repl::ConnEntry& e = conns[id];
    e.id = id;
    e.backendId = 7;
    e.serverId = 70 + id % 3;
    e.client = SocketAddress{IpAddress::fromV4(0x0a000000u + static_cast<uint32_t>(id)), 40000};
    e.bytesIn += 100;
    e.version = nextVersion();
    c.conn = e;
    return c;
  }
  repl::Change closeConn(uint64_t id, TimePoint now) {
    repl::Change c;
    c.kind = repl::ChangeKind::ConnClose;
    c.at = now;
    c.conn.id = id;
    c.conn.phase = repl::ConnPhase::Closed;
    c.conn.version = nextVersion();
    conns.erase(id);
    return c;
  }

  const repl::StickEntry* stick(uint64_t backend, const std::string& key) const {
    auto it = sticks.find({backend, key});
    return it == sticks.end() ? nullptr : &it->second.entry;
  }

  // ---- TableSource
  void forEachStick(const std::function<void(const repl::StickEntry&)>& fn) const override {
    for (size_t s = 0; s < shards_; ++s) forEachStickInShard(s, fn);
  }
  void forEachConn(const std::function<void(const repl::ConnEntry&)>& fn) const override {
    for (const auto& [id, e] : conns) fn(e);
  }
  size_t stickShards() const override { return shards_; }
  void forEachStickInShard(size_t shard,
                           const std::function<void(const repl::StickEntry&)>& fn) const override {
    ++const_cast<FakeTables*>(this)->forEachCalls;
    for (const auto& [k, s] : sticks) {
      if (std::hash<std::string>{}(k.second) % shards_ != shard) continue;
      repl::StickEntry e = s.entry;
      if (clock) e.ttlLeft = std::max(Duration::zero(), s.expires - clock->now());
      fn(e);
    }
  }

  // ---- TableSink (the peer's entries)
  bool applyStick(const repl::StickEntry& e, TimePoint now) override {
    auto [it, inserted] = sticks.try_emplace({e.backendId, e.key});
    if (!inserted && e.version < it->second.entry.version) return false;
    it->second.entry = e;
    it->second.expires = now + e.ttlLeft;
    ++applied;
    return true;
  }
  bool removeStick(uint64_t backendId, const std::string& key, repl::Version v) override {
    auto it = sticks.find({backendId, key});
    if (it == sticks.end() || v < it->second.entry.version) return false;
    sticks.erase(it);
    ++applied;
    return true;
  }

  std::map<std::pair<uint64_t, std::string>, Stick> sticks;
  std::map<uint64_t, repl::ConnEntry> conns;
  uint64_t applied = 0;
  const ManualClock* clock = nullptr;  // "now" for the TTLs a snapshot reports

 private:
  size_t shards_;
};

}  // namespace halb::statesync::test
