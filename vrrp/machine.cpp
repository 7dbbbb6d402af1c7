#include "vrrp/machine.h"

#include <algorithm>

namespace halb::vrrp {

const char* toString(State s) {
  switch (s) {
    case State::Initialize:
      return "INIT";
    case State::Backup:
      return "BACKUP";
    case State::Master:
      return "MASTER";
    case State::Fault:
      return "FAULT";
  }
  return "?";
}

Machine::Machine(const MachineConfig& config)
    : config_(config), masterAdverInterval_(config.advertInterval) {}

uint8_t Machine::effectivePriority() const {
  int p = static_cast<int>(config_.priority) - static_cast<int>(std::min<uint32_t>(penalty_, 255));
  return static_cast<uint8_t>(std::clamp(p, 1, 255));
}

std::optional<IpAddress> Machine::masterAddress() const {
  if (state_ == State::Master) return config_.primaryAddress;
  if (state_ == State::Backup) return masterAddress_;
  return std::nullopt;
}

// §6.1: Skew_Time = ((256 - Priority) * Master_Adver_Interval) / 256, exact in nanoseconds.
Duration Machine::skewTime() const {
  return (256 - effectivePriority()) * masterAdverInterval_ / 256;
}

// §6.1: Master_Down_Interval = (3 * Master_Adver_Interval) + Skew_Time.
Duration Machine::masterDownInterval() const {
  return 3 * masterAdverInterval_ + skewTime();
}

Duration Machine::peerLostWindow() const {
  Duration margin = config_.peerLostMargin;
  if (margin <= Duration::zero()) margin = std::max<Duration>(masterAdverInterval_ / 2, 20ms);
  return masterAdverInterval_ + margin;
}

std::optional<TimePoint> Machine::deadline() const {
  std::optional<TimePoint> d;
  auto consider = [&d](const std::optional<TimePoint>& t) {
    if (t && (!d || *t < *d)) d = t;
  };
  consider(adverTimer_);
  consider(masterDownTimer_);
  consider(peerLostTimer_);
  return d;
}

Actions Machine::finish(Actions a) const {
  a.nextDeadline = deadline();
  return a;
}

bool Machine::preemptAllowed(TimePoint now) const {
  if (!config_.preempt) return false;
  if (holding(now)) return false;
  if (!preemptSince_) return false;
  if (now < *preemptSince_ + config_.preemptDelay) return false;
  bool gateOpen = !config_.syncGate || syncReady_ || now >= *preemptSince_ + config_.syncWait;
  return gateOpen;
}

Actions Machine::becomeMaster(TimePoint now, const char* reason) {
  state_ = State::Master;
  masterDownTimer_.reset();
  peerLostTimer_.reset();
  preemptSince_.reset();
  masterAddress_.reset();
  // §6.4.2 "Master_Down_Timer fires": send an ADVERTISEMENT, announce the VIPs, set the
  // Adver_Timer to Advertisement_Interval.
  adverTimer_ = now + config_.advertInterval;
  Actions a;
  a.claimVips = true;
  a.sendAdvert = effectivePriority();
  a.garp = true;
  a.newState = State::Master;
  a.reason = reason;
  return finish(a);
}

Actions Machine::becomeBackup(TimePoint now, const char* reason) {
  bool wasMaster = state_ == State::Master;
  state_ = State::Backup;
  adverTimer_.reset();
  peerLostTimer_.reset();
  preemptSince_.reset();
  masterDownTimer_ = now + masterDownInterval();
  Actions a;
  a.releaseVips = wasMaster;
  a.newState = State::Backup;
  a.reason = reason;
  return finish(a);
}

Actions Machine::start(TimePoint now) {
  if (state_ != State::Initialize) return finish({});
  started_ = true;
  if (!linkUp_) {
    state_ = State::Fault;
    Actions a;
    a.newState = State::Fault;
    a.reason = "interface down at start";
    return finish(a);
  }
  // §6.4.1
  if (effectivePriority() == kPriorityOwner) return becomeMaster(now, "address owner");
  masterAdverInterval_ = config_.advertInterval;
  return becomeBackup(now, "start");
}

Actions Machine::onAdvert(const Advert& advert, const IpAddress& source, TimePoint now) {
  Actions a;
  const uint8_t mine = effectivePriority();
  if (state_ == State::Backup) {
    if (advert.priority == kPriorityShutdown) {
      // §6.4.2: the master is leaving; take over after Skew_Time only.
      masterDownTimer_ = now + skewTime();
      peerLostTimer_.reset();
      preemptSince_.reset();
      a.reason = "master sent priority 0";
      return finish(a);
    }
    // Any advert from the node we follow proves it alive: (c) never takes over then.
    peerLostTimer_.reset();
    bool higherOrEqual = advert.priority >= mine;
    if (higherOrEqual) {
      preemptSince_.reset();
    } else if (config_.preempt && !preemptSince_) {
      preemptSince_ = now;  // (d): we would preempt; the delay and the gate count from here
    }
    if (!config_.preempt || higherOrEqual || !preemptAllowed(now)) {
      // §6.4.2: adopt the master's interval, recompute, reset Master_Down_Timer.
      masterAdverInterval_ = advert.interval();
      masterDownTimer_ = now + masterDownInterval();
      masterAddress_ = source;
      return finish(a);
    }
    // Preempt: discard, so that Master_Down_Timer runs out (§6.4.2).
    a.reason = "discarding lower-priority advert to preempt";
    return finish(a);
  }
  if (state_ == State::Master) {
    if (advert.priority == kPriorityShutdown) {
      // §6.4.3: another router thinks it is master and is leaving; re-assert at once.
      a.sendAdvert = mine;
      adverTimer_ = now + config_.advertInterval;
      a.reason = "priority 0 received while master";
      return finish(a);
    }
    if (advert.priority > mine || (advert.priority == mine && config_.primaryAddress < source)) {
      // §6.4.3: a better master exists.
      masterAdverInterval_ = advert.interval();
      masterAddress_ = source;
      Actions b = becomeBackup(now, advert.priority > mine ? "higher priority advert"
                                                           : "equal priority from greater address");
      // (e): two masters means neighbours may have followed our announcements. One parting
      // advert (sent after our VIPs are gone) makes the winner re-announce them.
      b.sendAdvert = mine;
      return b;
    }
    // (e): the other node thinks it is master too (healed partition). Advertise now so it
    // steps down, and re-announce the VIPs to neighbours that followed it.
    a.sendAdvert = mine;
    adverTimer_ = now + config_.advertInterval;
    // Re-announce once per incident: a lower advert after a quiet spell is a new split (its
    // sender may just have sent GARPs); a continuous stream is limited to one per spacing.
    bool newIncident = !lastLowerAdvert_ || now - *lastLowerAdvert_ > 3 * config_.advertInterval;
    lastLowerAdvert_ = now;
    if (newIncident || !lastForcedGarp_ || now - *lastForcedGarp_ >= kForcedGarpSpacing) {
      a.garp = true;
      lastForcedGarp_ = now;
    }
    a.reason = "lower priority advert while master";
    return finish(a);
  }
  return finish(a);  // Initialize, Fault: not listening
}

Actions Machine::onTimer(TimePoint now) {
  if (state_ == State::Master) {
    if (adverTimer_ && *adverTimer_ <= now) {
      Actions a;
      a.sendAdvert = effectivePriority();
      adverTimer_ = now + config_.advertInterval;
      return finish(a);
    }
  } else if (state_ == State::Backup) {
    if (masterDownTimer_ && *masterDownTimer_ <= now) return becomeMaster(now, "master down timer");
    if (peerLostTimer_ && *peerLostTimer_ <= now)
      return becomeMaster(now, "peer process lost and no advert since");
  }
  return finish({});
}

Actions Machine::shutdown(TimePoint now) {
  (void)now;
  Actions a;
  if (state_ == State::Master) {
    // §6.4.3: send priority 0 so the backup takes over after Skew_Time.
    a.sendAdvert = kPriorityShutdown;
    a.releaseVips = true;
  }
  if (state_ != State::Initialize) {
    a.newState = State::Initialize;
    a.reason = "shutdown";
  }
  state_ = State::Initialize;
  started_ = false;
  adverTimer_.reset();
  masterDownTimer_.reset();
  peerLostTimer_.reset();
  preemptSince_.reset();
  masterAddress_.reset();
  return finish(a);
}

Actions Machine::handover(TimePoint now) {
  if (state_ != State::Master) return finish({});
  holdUntil_ = now + config_.handoverHold;
  Actions a = becomeBackup(now, "handover");
  a.sendAdvert = kPriorityShutdown;  // the peer takes over after its Skew_Time
  return a;
}

Actions Machine::setPenalty(uint32_t penalty, TimePoint now) {
  uint8_t before = effectivePriority();
  penalty_ = penalty;
  Actions a;
  if (effectivePriority() != before && state_ == State::Master) {
    // (a): tell the peer now rather than at the next interval, so a preempting backup starts
    // counting at once.
    a.sendAdvert = effectivePriority();
    adverTimer_ = now + config_.advertInterval;
    a.reason = "priority changed";
  }
  return finish(a);
}

Actions Machine::onPeerLost(TimePoint now) {
  // (c): only a backup that follows a known master can use this; a node that never heard a
  // master keeps the RFC timer.
  if (state_ != State::Backup || !masterAddress_) return finish({});
  peerLostTimer_ = now + peerLostWindow();
  Actions a;
  a.reason = "peer process lost; waiting for one more advert";
  return finish(a);
}

Actions Machine::setSyncReady(bool ready, TimePoint now) {
  (void)now;
  syncReady_ = ready;
  return finish({});
}

Actions Machine::setLinkUp(bool up, TimePoint now) {
  if (up == linkUp_) return finish({});
  linkUp_ = up;
  if (!started_) return finish({});
  if (!up) {
    Actions a;
    a.releaseVips = state_ == State::Master;
    a.newState = State::Fault;
    a.reason = "interface link down";
    state_ = State::Fault;
    adverTimer_.reset();
    masterDownTimer_.reset();
    peerLostTimer_.reset();
    preemptSince_.reset();
    masterAddress_.reset();
    return finish(a);
  }
  if (state_ != State::Fault) return finish({});
  masterAdverInterval_ = config_.advertInterval;
  if (effectivePriority() == kPriorityOwner) return becomeMaster(now, "interface link up (owner)");
  return becomeBackup(now, "interface link up");
}

}  // namespace halb::vrrp
