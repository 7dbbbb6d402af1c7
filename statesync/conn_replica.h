#pragma once
// The peer's connection table as received, held inside statesync: the balancer only needs it
// when this node becomes master (app/ calls Service::takeConnections() then and re-creates
// the restorable ones). Keyed by connection id, last writer wins by (epoch, seq).
#include <cstdint>
#include <unordered_map>
#include <vector>

#include "common/replication.h"

namespace halb::statesync {

class ConnReplica {
 public:
  // Stores `e` unless a newer version is held. Equal versions replace (the stream is ordered,
  // so a later frame is the later state). A Closed entry removes. Returns whether it applied.
  bool apply(const repl::ConnEntry& e);
  bool remove(uint64_t id, repl::Version v);

  // Mark and sweep around a full snapshot: entries neither re-sent by the snapshot nor updated
  // while it ran belong to connections that ended while the link was down.
  void beginSweep() { ++generation_; }
  size_t sweep();

  std::vector<repl::ConnEntry> take();
  size_t size() const { return entries_.size(); }
  const repl::ConnEntry* find(uint64_t id) const;
  void clear() { entries_.clear(); }

 private:
  struct Held {
    repl::ConnEntry entry;
    uint64_t generation = 0;
  };
  std::unordered_map<uint64_t, Held> entries_;
  uint64_t generation_ = 0;
};

}  // namespace halb::statesync
