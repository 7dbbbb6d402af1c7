#pragma once
// Wiring of the VRRP instance into a Node: kept apart so node.cpp stays a list of services.
#include <memory>

namespace halb::vrrp {
class Instance;
}

namespace halb::app {

class Node;

// When the configuration enables VRRP: raises the control thread's scheduling priority,
// creates and starts the instance, and registers its /status object, its metrics, a stop
// hook (priority 0 + VIP release) and POST /handover. Returns null when VRRP is disabled; a
// failure to start is logged and stops the node (a node that cannot hold the VIP must not
// pretend to be part of the pair).
std::unique_ptr<vrrp::Instance> wireVrrp(Node& node);

}  // namespace halb::app
