#pragma once
// The VRRPv3 state machine of one virtual router (RFC 9568 §6), pure: events and `now` in,
// Actions out. No sockets, no timers, no clock: the caller arms one timer at
// Actions::nextDeadline and calls onTimer() when it is due.
//
// RFC behaviour (section numbers of RFC 9568):
//  - Initialize → Master for the address owner (priority 255), else → Backup (§6.4.1).
//  - Backup: Master_Down_Timer = Master_Down_Interval = 3 × Master_Adver_Interval + Skew_Time,
//    Skew_Time = ((256 − Priority) × Master_Adver_Interval) / 256 (§6.1), computed exactly
//    (nanoseconds, not truncated centiseconds). An advert with priority 0 sets the timer to
//    Skew_Time; one with priority ≥ ours, or any advert when preemption is off, resets it and
//    teaches us its Max Adver Int; a lower one is discarded, so the timer runs out and we
//    preempt (§6.4.2).
//  - Master: adverts every Advertisement_Interval; priority 0 received → advert at once; a
//    higher priority, or an equal one from a greater primary address, → Backup; shutdown sends
//    priority 0 (§6.4.3).
//
// Extensions, each off the RFC's path only where named:
//  (a) Tracking: effective priority = configured − penalty, at least 1 (keepalived's track
//      weights). A master whose priority changes advertises at once so the peer can act.
//  (b) Handover: a master gives up cleanly (priority 0, VIPs released, → Backup) and does not
//      preempt back for `handoverHold`. Taking over from a *dead* master is never held back.
//  (c) Fast death detection (state-sync, issue 5 §6): onPeerLost() in Backup arms a timer of
//      Master_Adver_Interval + margin; any advert from the master disarms it. Only when the
//      master stays silent does the backup take over — so a broken sync link with live adverts
//      never makes two masters.
//  (d) Preemption gate: a backup that would preempt first waits for preempt_delay and for
//      setSyncReady(true) (or `syncWait`, whichever first), both counted from the first advert
//      it wanted to preempt. While waiting it accepts the lower master's adverts (as keepalived's
//      preempt_delay does); afterwards it discards them and the RFC timer takes it over.
//  (e) Split-brain repair: a master hearing a lower-priority master advertises at once and
//      re-announces its VIPs (once per incident, and at most once per kForcedGarpSpacing while
//      lower adverts keep coming), so neighbours that followed the other node's GARPs come back
//      (keepalived#20, #160). A master that yields to a better
//      one sends one parting advert with its own priority, so the winner hears of the split
//      and re-announces even when the loser stepped down before its next regular advert.
//  (f) Fault: setLinkUp(false) (the VRRP interface lost its link) releases the VIPs and stays
//      silent until the link returns, then starts over in Backup.
#include <cstdint>
#include <optional>

#include "common/net.h"
#include "common/time.h"
#include "vrrp/packet.h"

namespace halb::vrrp {

using namespace std::chrono_literals;

enum class State : uint8_t { Initialize, Backup, Master, Fault };
const char* toString(State s);  // "INIT", "BACKUP", "MASTER", "FAULT" (notify hooks get these)

struct MachineConfig {
  uint8_t vrid = 1;
  uint8_t priority = 100;           // configured; 255 = address owner
  Duration advertInterval = 100ms;  // Advertisement_Interval, a multiple of 10 ms
  bool preempt = true;
  Duration preemptDelay = 0s;
  IpAddress primaryAddress;      // the source of our adverts: the §6.4.3 tie-breaker
  bool syncGate = false;         // (d): state-sync enabled, gate preemption on it
  Duration syncWait = 5s;        // (d): the gate's bound
  Duration handoverHold = 300s;  // (b)
  Duration peerLostMargin = 0s;  // (c): 0 = max(Master_Adver_Interval / 2, 20 ms)
};

// Re-announcing VIPs while lower-priority adverts keep arriving is limited to this spacing (e).
inline constexpr Duration kForcedGarpSpacing = 1s;

struct Actions {
  std::optional<uint8_t> sendAdvert;  // send one advert now with this priority
  std::optional<State> newState;      // the machine changed state (to this one)
  bool claimVips = false;             // order: claimVips, then the advert, then garp
  bool releaseVips = false;
  bool garp = false;                      // gratuitous ARP / unsolicited NA burst for the VIPs
  std::optional<TimePoint> nextDeadline;  // call onTimer() then; nullopt = no timer
  const char* reason = "";                // why, when something happened (for logs)
};

class Machine {
 public:
  explicit Machine(const MachineConfig& config);

  Actions start(TimePoint now);
  Actions onAdvert(const Advert& advert, const IpAddress& source, TimePoint now);
  Actions onTimer(TimePoint now);
  Actions shutdown(TimePoint now);
  Actions handover(TimePoint now);  // no-op unless Master
  Actions setPenalty(uint32_t penalty, TimePoint now);
  Actions onPeerLost(TimePoint now);
  Actions setSyncReady(bool ready, TimePoint now);
  Actions setLinkUp(bool up, TimePoint now);

  State state() const { return state_; }
  uint8_t configuredPriority() const { return config_.priority; }
  uint8_t effectivePriority() const;
  // The node believed to be master: our own address in Master, the last accepted advert's
  // source in Backup; nullopt when unknown.
  std::optional<IpAddress> masterAddress() const;
  Duration masterAdverInterval() const { return masterAdverInterval_; }
  Duration skewTime() const;
  Duration masterDownInterval() const;
  std::optional<TimePoint> deadline() const;
  bool syncReady() const { return syncReady_; }
  bool holding(TimePoint now) const { return holdUntil_ && now < *holdUntil_; }
  const MachineConfig& config() const { return config_; }

 private:
  Actions becomeMaster(TimePoint now, const char* reason);
  Actions becomeBackup(TimePoint now, const char* reason);
  bool preemptAllowed(TimePoint now) const;
  Duration peerLostWindow() const;
  Actions finish(Actions a) const;

  MachineConfig config_;
  State state_ = State::Initialize;
  bool started_ = false;
  bool linkUp_ = true;
  uint32_t penalty_ = 0;
  bool syncReady_ = false;
  Duration masterAdverInterval_;
  std::optional<TimePoint> adverTimer_;       // Master
  std::optional<TimePoint> masterDownTimer_;  // Backup
  std::optional<TimePoint> peerLostTimer_;    // Backup, (c)
  std::optional<TimePoint> preemptSince_;     // Backup, (d)
  std::optional<TimePoint> holdUntil_;        // (b)
  std::optional<TimePoint> lastForcedGarp_;   // Master, (e)
  std::optional<TimePoint> lastLowerAdvert_;  // Master, (e)
  std::optional<IpAddress> masterAddress_;    // Backup: who we follow
};

}  // namespace halb::vrrp
