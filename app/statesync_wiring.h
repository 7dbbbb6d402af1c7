#pragma once
// State sync on a halb node: creates statesync::Service from the configuration, registers its
// metrics, its /status section ("statesync"), its stop and reload hooks with the Node, and
// connects it to the balancer's tables and to VRRP:
//
//   statesync onPeerLost      -> vrrp::Instance::onPeerLost (fast death hint, confirmed by adverts)
//   statesync onSyncComplete  -> vrrp::Instance::setSyncReady(true) (preemption gate; vrrp
//                                bounds the wait by statesync.sync_wait itself)
//   vrrp became master        -> becameMaster(): a new epoch for the stick tables
//                                (StickTables::setEpoch), and the peer's connections to
//                                re-create (issue 9)
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "common/replication.h"
#include "statesync/service.h"

namespace halb::app {

class Node;

// What state sync needs from the rest of the node; each part may be left empty until the
// component behind it exists.
struct StateSyncPorts {
  repl::TableSource* source = nullptr;     // the balancer's tables; null = empty tables
  repl::TableSink* sink = nullptr;         // null = the peer's entries are discarded
  std::vector<repl::ChangeQueue*> queues;  // one per data-plane worker
  std::function<void(std::string_view reason)> onPeerLost;  // -> vrrp::Instance::onPeerLost
  std::function<void(bool ready)> setSyncReady;             // -> vrrp::Instance::setSyncReady
  // The highest epoch the local tables have seen (StickTables::maxEpochSeen), so a new epoch
  // is above it even before the peer's heartbeat said so; null = statesync's view only.
  std::function<uint32_t()> maxEpochSeen;
  std::function<void()> onPeerUp;
};

class StateSyncNode {
 public:
  // Null when the configuration has no (enabled) statesync section; null with `error` set when
  // the service cannot start (key unreadable, address in use).
  static std::unique_ptr<StateSyncNode> start(Node& node, StateSyncPorts ports, std::string& error);
  ~StateSyncNode();

  struct Takeover {
    uint32_t epoch = 0;                        // stamp local changes with this from now on
    std::vector<repl::ConnEntry> connections;  // the peer's, as last replicated
  };
  // Call when VRRP makes this node master.
  Takeover becameMaster();

  statesync::Service& service() { return *service_; }

 private:
  StateSyncNode() = default;
  struct EmptyTables;
  std::unique_ptr<EmptyTables> empty_;
  std::unique_ptr<statesync::Service> service_;
  StateSyncPorts ports_;
  uint32_t epoch_ = 0;
};

}  // namespace halb::app
