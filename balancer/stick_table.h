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
};

std::unique_ptr<StickTables> makeStickTables(std::vector<StickTables::TableSpec> tables);

}  // namespace halb::balancer
