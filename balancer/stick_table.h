#pragma once
// Stick tables: user key -> server, per backend, with a TTL after last use and an LRU size
// bound. Shared by all workers (a user's connections land on any worker), so the table is
// sharded with one short mutex per shard; lookups touch one shard.
//
// Every change is reported to a ChangeSink so state-sync can replicate it; entries from the
// peer come back through repl::TableSink (implemented here).
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "common/replication.h"
#include "common/time.h"
#include "config/config.h"

namespace halb::balancer {

class StickTables : public repl::TableSource, public repl::TableSink {
 public:
  // `emit` receives every local change (called on the worker thread that made it; it must
  // not block: the data plane pushes into its per-worker repl::ChangeQueue).
  using Emit = std::function<void(repl::Change&&)>;

  struct TableSpec {
    uint64_t backendId;
    Duration ttl;
    uint64_t maxEntries;
  };

  struct Options {
    // Touch coalescing: a lookup re-announces an entry to the peer only once this share of
    // the TTL has passed since the entry was last announced. An entry used 1000 times a
    // second is then sent 1/touchFraction times per TTL; the price is that the peer's copy
    // may expire up to touchFraction x TTL before ours.
    double touchFraction = 0.25;
    // Read only by forEachStick (the TableSource interface has no `now`) to compute
    // ttlLeft. Default: SteadyClock::now. Tests pass a ManualClock.
    std::function<TimePoint()> clock;
  };

  virtual ~StickTables() = default;
  // The server stuck to `key`, refreshing its TTL; nullopt when none or expired.
  virtual std::optional<uint64_t> lookup(uint64_t backendId, std::string_view key, TimePoint now,
                                         const Emit& emit) = 0;
  // Sticks `key` to `serverId` (insert or replace).
  virtual void record(uint64_t backendId, std::string_view key, uint64_t serverId, TimePoint now,
                      const Emit& emit) = 0;
  virtual void erase(uint64_t backendId, std::string_view key, const Emit& emit) = 0;
  // Drops expired entries; call periodically from the control thread.
  virtual size_t expire(TimePoint now) = 0;
  virtual size_t size() const = 0;

  // Reload: tables of backends that stay keep their entries (a smaller size bound evicts
  // the least recently used), new tables start empty, tables of removed backends go.
  // Control thread; workers may keep using the tables meanwhile.
  virtual void configure(std::vector<TableSpec> tables) = 0;
  // Local changes are versioned {epoch, seq}; the app raises the epoch when this node
  // becomes master (above maxEpochSeen(), so its writes win against the old master's).
  virtual void setEpoch(uint32_t epoch) = 0;
  virtual uint32_t epoch() const = 0;
  // The highest epoch among entries applied from the peer.
  virtual uint32_t maxEpochSeen() const = 0;
  // Entries in one backend's table.
  virtual size_t size(uint64_t backendId) const = 0;

  // Connection entries live in the data plane's connection table: this yields none.
  void forEachConn(const std::function<void(const repl::ConnEntry&)>&) const override {}
};

std::unique_ptr<StickTables> makeStickTables(std::vector<StickTables::TableSpec> tables);
std::unique_ptr<StickTables> makeStickTables(std::vector<StickTables::TableSpec> tables,
                                             StickTables::Options options);

// One table per backend whose sticky mode needs one (source, app_cookie, header; cookie
// mode keeps the server in the cookie itself).
std::vector<StickTables::TableSpec> stickTableSpecs(const config::Config& config);

}  // namespace halb::balancer
