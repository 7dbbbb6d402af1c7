#pragma once
// One VRRP virtual router on the control loop: the pure Machine plus everything around it —
// the raw-socket transport, VIP ownership (rtnetlink, finite lifetimes renewed while master),
// gratuitous ARP / unsolicited NA bursts, optional HMAC authentication, link tracking, notify
// hooks, metrics and status. app/ owns it and talks to it only through this header.
//
// Order on becoming master: Hooks::beforeMaster (connections restored there), VIPs added,
// advert sent, GARP/NA burst. On leaving: VIPs removed first, then the state change reported.
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>

#include "common/net.h"
#include "vrrp/machine.h"

namespace halb {
class JsonWriter;
class PromWriter;
namespace uv {
class Loop;
}
namespace config {
struct Config;
}
}  // namespace halb

namespace halb::vrrp {

// Both run on the control loop, also from stop() and from the destructor (a master that stops
// reports MASTER -> INIT), so what they capture must outlive the Instance.
struct Hooks {
  std::function<void(State oldState, State newState)> onStateChange;
  // Called synchronously right before the VIPs are claimed.
  std::function<void()> beforeMaster;
};

class Instance {
 public:
  // The config must have vrrp.enabled; it is copied.
  Instance(uv::Loop& loop, const config::Config& config, Hooks hooks);
  ~Instance();
  Instance(const Instance&) = delete;
  Instance& operator=(const Instance&) = delete;

  // Opens the sockets, removes leftover VIPs of ours, then starts the machine (Backup). Returns
  // an error text (nothing is running then) or an empty string.
  std::string start();
  // graceful: a master sends priority 0 so the backup takes over after Skew_Time. Either way
  // the VIPs are removed and the sockets closed.
  void stop(bool graceful = true);
  // Calls `done` when the notify hooks started so far have finished (a hook still running
  // after 5 s is killed), so a stopping node does not cut its last hook short.
  void whenHooksIdle(std::function<void()> done);
  // Gives mastership up cleanly (priority 0, VIPs released, no preemption back for
  // vrrp.handover_hold). False when this node is not master.
  bool handover();
  // The application's tracking penalty (unhealthy backends, stuck workers). Interfaces listed
  // in vrrp.track.interfaces add vrrp.track.penalty each while down.
  void setPenalty(uint32_t penalty);
  // From state-sync: the peer's process is gone (its connection closed). See Machine (c).
  void onPeerLost();
  // From state-sync: the replicated tables are complete. See Machine (d).
  void setSyncReady(bool ready);

  State state() const;
  uint8_t effectivePriority() const;
  std::optional<IpAddress> masterAddress() const;

  // The "vrrp" object of /status.
  void writeStatus(JsonWriter& j) const;
  // halb_vrrp_* metric families.
  void writeMetrics(PromWriter& w) const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// Keeps the control thread's adverts on schedule while the data plane saturates every core
// (keepalived#2191, #2469): SCHED_FIFO priority 1 with SCHED_RESET_ON_FORK (notify hooks and
// other children start as normal tasks), falling back to nice -10. Call it from the thread
// that runs the control loop, before the data-plane threads start. Returns what was applied.
std::string raiseControlThreadPriority();

}  // namespace halb::vrrp
