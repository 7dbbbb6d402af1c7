#pragma once
// Wiring of the VRRP instance into a Node: kept apart so node.cpp stays a list of services.
#include <memory>
#include <string>

#include "vrrp/instance.h"

namespace halb::app {

class Node;

// When the configuration enables VRRP: raises the control thread's scheduling priority,
// creates and starts the instance with the node's `hooks`, and registers its /status object,
// its metrics, a stop hook (priority 0 + VIP release) and POST /handover. `out` stays null
// when VRRP is disabled. Returns false with `error` when it cannot start: a node that cannot
// hold the VIP must not pretend to be part of the pair.
bool wireVrrp(Node& node, vrrp::Hooks hooks, std::unique_ptr<vrrp::Instance>& out, std::string& error);

}  // namespace halb::app
