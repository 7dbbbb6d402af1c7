#pragma once
// TLS on a halb node: the session-ticket keys (made and rotated on the control loop, shared by
// every worker, exchanged with the peer through state sync) and the TLS contexts of each
// configuration (built at start and on reload, handed to the data plane).
//
//   rotation timer / peer keys -> balancer::TicketKeys (workers read its snapshot)
//   keys changed               -> statesync::Service::setTicketKeys (to the peer)
//   statesync onTicketKeys     -> merge; changed -> send our merged set back
//   reload                     -> new TlsContexts -> data plane (new handshakes only)
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "balancer/tls.h"
#include "common/replication.h"
#include "common/uv.h"

namespace halb::statesync {
class Service;
}

namespace halb::app {

class Node;

class TlsNode {
 public:
  // Builds the first contexts; null with `error` when a certificate or key cannot be used.
  // `apply` receives the contexts of every later configuration (reload).
  static std::unique_ptr<TlsNode> start(Node& node,
                                        std::function<void(balancer::TlsContextsPtr)> apply,
                                        std::string& error);
  ~TlsNode();

  balancer::TlsContextsPtr contexts() const { return contexts_; }
  const std::shared_ptr<balancer::TicketKeys>& keys() const { return keys_; }

  // State sync: our keys go to `service` now and whenever they change.
  void attach(statesync::Service* service);
  // The peer's keys arrived (statesync Hooks::onTicketKeys).
  void onPeerKeys(std::vector<repl::TicketKey> keys);

 private:
  TlsNode(Node& node) : node_(node) {}
  void rotate();
  void schedule();
  void publishToPeer();

  Node& node_;
  std::shared_ptr<balancer::TicketKeys> keys_;
  balancer::TlsContextsPtr contexts_;
  std::function<void(balancer::TlsContextsPtr)> apply_;
  std::unique_ptr<uv::Timer> timer_;
  statesync::Service* statesync_ = nullptr;
  uint64_t rotations_ = 0, peerMerges_ = 0, reloadFailures_ = 0;
};

}  // namespace halb::app
