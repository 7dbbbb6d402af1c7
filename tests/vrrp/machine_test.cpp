#include "vrrp/machine.h"

#include <gtest/gtest.h>

#include <deque>
#include <memory>
#include <vector>

namespace halb::vrrp {
namespace {

using namespace std::chrono_literals;
using std::chrono::nanoseconds;

IpAddress ip(const char* s) {
  return IpAddress::parse(s).value();
}

const IpAddress kSelf = ip("192.0.2.11");
const IpAddress kPeer = ip("192.0.2.12");  // greater than kSelf

MachineConfig cfg(uint8_t priority, Duration interval = 100ms) {
  return MachineConfig{
      .vrid = 51, .priority = priority, .advertInterval = interval, .primaryAddress = kSelf};
}

Advert advert(uint8_t priority, Duration interval = 100ms) {
  return Advert{.vrid = 51,
                .priority = priority,
                .intervalCs = static_cast<uint16_t>(interval / 10ms),
                .addresses = {ip("192.0.2.100")}};
}

// ---------------------------------------------------------------- single machine, exact timers

class MachineTest : public ::testing::Test {
 protected:
  ManualClock clock_;
  TimePoint t0_ = clock_.now();

  // Advances to t0 + offset and fires the timer if it is due.
  Actions at(Machine& m, Duration offset) {
    clock_.set(t0_ + offset);
    return m.onTimer(clock_.now());
  }
};

TEST_F(MachineTest, FormulasMatchTheRfc) {
  Machine m(cfg(100));
  // Skew = (256 - 100) * 100 ms / 256 = 60.9375 ms; MDI = 300 ms + skew.
  EXPECT_EQ(m.skewTime(), nanoseconds(60'937'500));
  EXPECT_EQ(m.masterDownInterval(), nanoseconds(360'937'500));
  Machine fast(cfg(100, 10ms));
  EXPECT_EQ(fast.skewTime(), nanoseconds(6'093'750));
  EXPECT_EQ(fast.masterDownInterval(), nanoseconds(36'093'750));
  Machine high(cfg(254, 1s));
  EXPECT_EQ(high.skewTime(), nanoseconds(7'812'500));
  EXPECT_EQ(high.masterDownInterval(), nanoseconds(3'007'812'500));
}

TEST_F(MachineTest, StartsBackupAndTakesOverAfterMasterDownInterval) {
  Machine m(cfg(100));
  Actions a = m.start(t0_);
  EXPECT_EQ(a.newState, State::Backup);
  EXPECT_FALSE(a.sendAdvert);
  EXPECT_EQ(a.nextDeadline, t0_ + nanoseconds(360'937'500));

  a = at(m, 360ms);
  EXPECT_EQ(m.state(), State::Backup);
  EXPECT_FALSE(a.newState);

  a = at(m, 361ms);
  EXPECT_EQ(a.newState, State::Master);
  EXPECT_TRUE(a.claimVips);
  EXPECT_TRUE(a.garp);
  EXPECT_EQ(a.sendAdvert, 100);
  EXPECT_EQ(a.nextDeadline, t0_ + 461ms);
  EXPECT_EQ(m.masterAddress(), kSelf);
}

TEST_F(MachineTest, MasterAdvertisesEveryInterval) {
  Machine m(cfg(100));
  m.start(t0_);
  at(m, 361ms);
  for (int i = 1; i <= 5; ++i) {
    Actions early = at(m, 361ms + i * 100ms - 1ms);
    EXPECT_FALSE(early.sendAdvert) << i;
    Actions a = at(m, 361ms + i * 100ms);
    EXPECT_EQ(a.sendAdvert, 100) << i;
    EXPECT_EQ(a.nextDeadline, t0_ + 361ms + (i + 1) * 100ms);
  }
}

TEST_F(MachineTest, TenMillisecondIntervals) {
  Machine m(cfg(100, 10ms));
  m.start(t0_);
  EXPECT_FALSE(at(m, 36ms).newState);  // MDI = 36.09375 ms
  EXPECT_EQ(at(m, 37ms).newState, State::Master);
  EXPECT_FALSE(at(m, 46ms).sendAdvert);
  EXPECT_EQ(at(m, 47ms).sendAdvert, 100);
  EXPECT_EQ(at(m, 57ms).sendAdvert, 100);

  // A 10 ms backup following a 10 ms master: the master's adverts keep it down.
  Machine b(cfg(100, 10ms));
  clock_.set(t0_);
  b.start(t0_);
  for (int i = 1; i <= 100; ++i) {
    clock_.set(t0_ + i * 10ms);
    b.onAdvert(advert(200, 10ms), kPeer, clock_.now());
    EXPECT_EQ(b.onTimer(clock_.now()).newState, std::nullopt);
  }
  EXPECT_FALSE(at(b, 1000ms + 36ms).newState);
  EXPECT_EQ(at(b, 1000ms + 37ms).newState, State::Master);
}

TEST_F(MachineTest, BackupResetsTimerAndLearnsTheMastersInterval) {
  Machine m(cfg(100));
  m.start(t0_);
  clock_.set(t0_ + 200ms);
  // A master advertising every second: Master_Adver_Interval becomes 1 s (§6.4.2), so
  // MDI = 3 s + (156 * 1 s) / 256 = 3609.375 ms.
  Actions a = m.onAdvert(advert(150, 1s), kPeer, clock_.now());
  EXPECT_EQ(m.masterAdverInterval(), 1s);
  EXPECT_EQ(a.nextDeadline, t0_ + 200ms + nanoseconds(3'609'375'000));
  EXPECT_EQ(m.masterAddress(), kPeer);
  EXPECT_FALSE(at(m, 200ms + 3609ms).newState);
  EXPECT_EQ(at(m, 200ms + 3610ms).newState, State::Master);
}

TEST_F(MachineTest, PriorityZeroMakesBackupWaitOnlySkewTime) {
  Machine m(cfg(100));
  m.start(t0_);
  clock_.set(t0_ + 100ms);
  m.onAdvert(advert(150), kPeer, clock_.now());
  clock_.set(t0_ + 150ms);
  Actions a = m.onAdvert(advert(0), kPeer, clock_.now());
  EXPECT_EQ(a.nextDeadline, t0_ + 150ms + nanoseconds(60'937'500));
  EXPECT_FALSE(at(m, 210ms).newState);
  EXPECT_EQ(at(m, 211ms).newState, State::Master);
}

TEST_F(MachineTest, MasterAnswersPriorityZeroAtOnce) {
  Machine m(cfg(100));
  m.start(t0_);
  at(m, 361ms);
  clock_.set(t0_ + 400ms);
  Actions a = m.onAdvert(advert(0), kPeer, clock_.now());
  EXPECT_EQ(a.sendAdvert, 100);
  EXPECT_EQ(a.nextDeadline, t0_ + 500ms);
  EXPECT_EQ(m.state(), State::Master);
}

TEST_F(MachineTest, MasterYieldsToHigherPriority) {
  Machine m(cfg(100));
  m.start(t0_);
  at(m, 361ms);
  clock_.set(t0_ + 400ms);
  Actions a = m.onAdvert(advert(101, 200ms), kPeer, clock_.now());
  EXPECT_EQ(a.newState, State::Backup);
  EXPECT_TRUE(a.releaseVips);
  EXPECT_EQ(a.sendAdvert, 100);  // the parting advert of extension (e)
  // MDI from the new master's 200 ms: 600 + 156*200/256 = 721.875 ms.
  EXPECT_EQ(a.nextDeadline, t0_ + 400ms + nanoseconds(721'875'000));
}

TEST_F(MachineTest, EqualPriorityTieBrokenByGreaterPrimaryAddress) {
  Machine m(cfg(100));
  m.start(t0_);
  at(m, 361ms);
  clock_.set(t0_ + 400ms);
  // From a smaller address: we stay master and re-assert.
  Actions a = m.onAdvert(advert(100), ip("192.0.2.10"), clock_.now());
  EXPECT_EQ(m.state(), State::Master);
  EXPECT_EQ(a.sendAdvert, 100);
  // From a greater one: we yield (§6.4.3).
  a = m.onAdvert(advert(100), kPeer, clock_.now());
  EXPECT_EQ(a.newState, State::Backup);
}

TEST_F(MachineTest, LowerPriorityMasterIsPreemptedWhenItsAdvertsAreDiscarded) {
  Machine m(cfg(150));
  m.start(t0_);
  // Adverts of a priority-100 master every 100 ms: discarded (§6.4.2), so our timer from
  // start runs out: MDI(150) = 300 + 106*100/256 = 341.40625 ms.
  for (Duration t = 50ms; t < 340ms; t += 100ms) {
    clock_.set(t0_ + t);
    m.onAdvert(advert(100), kPeer, clock_.now());
  }
  EXPECT_FALSE(at(m, 341ms).newState);
  EXPECT_EQ(at(m, 342ms).newState, State::Master);
}

TEST_F(MachineTest, NoPreemptKeepsFollowingALowerMaster) {
  MachineConfig c = cfg(150);
  c.preempt = false;
  Machine m(c);
  m.start(t0_);
  for (Duration t = 50ms; t < 10s; t += 100ms) {
    clock_.set(t0_ + t);
    m.onAdvert(advert(100), kPeer, clock_.now());
    ASSERT_FALSE(m.onTimer(clock_.now()).newState);
  }
  EXPECT_EQ(m.state(), State::Backup);
}

TEST_F(MachineTest, PreemptDelayHoldsPreemptionBack) {
  MachineConfig c = cfg(150);
  c.preemptDelay = 1s;
  Machine m(c);
  m.start(t0_);
  std::optional<TimePoint> becameMaster;
  for (Duration t = 50ms; t < 3s && !becameMaster; t += 1ms) {
    clock_.set(t0_ + t);
    if ((t - 50ms) % 100ms == 0ms) m.onAdvert(advert(100), kPeer, clock_.now());
    if (m.onTimer(clock_.now()).newState == State::Master) becameMaster = clock_.now();
  }
  // The first lower advert at 50 ms starts the delay; adverts up to 950 ms are accepted, the
  // one at 1050 ms is discarded; 950 ms + MDI 341.40625 ms = 1291.40625 ms → 1292 ms.
  ASSERT_TRUE(becameMaster);
  EXPECT_EQ(*becameMaster - t0_, 1292ms);
}

TEST_F(MachineTest, SyncGateWaitsForSyncReady) {
  MachineConfig c = cfg(150);
  c.syncGate = true;
  c.syncWait = 5s;
  Machine m(c);
  m.start(t0_);
  std::optional<TimePoint> becameMaster;
  for (Duration t = 50ms; t < 3s && !becameMaster; t += 1ms) {
    clock_.set(t0_ + t);
    if (t == 500ms) m.setSyncReady(true, clock_.now());
    if ((t - 50ms) % 100ms == 0ms) m.onAdvert(advert(100), kPeer, clock_.now());
    if (m.onTimer(clock_.now()).newState == State::Master) becameMaster = clock_.now();
  }
  // Ready at 500 ms; the advert at 450 ms was the last accepted: 450 + 341.40625 → 792 ms.
  ASSERT_TRUE(becameMaster);
  EXPECT_EQ(*becameMaster - t0_, 792ms);
}

TEST_F(MachineTest, SyncGateIsBoundedBySyncWait) {
  MachineConfig c = cfg(150);
  c.syncGate = true;
  c.syncWait = 2s;
  Machine m(c);
  m.start(t0_);
  std::optional<TimePoint> becameMaster;
  for (Duration t = 50ms; t < 5s && !becameMaster; t += 1ms) {
    clock_.set(t0_ + t);
    if ((t - 50ms) % 100ms == 0ms) m.onAdvert(advert(100), kPeer, clock_.now());
    if (m.onTimer(clock_.now()).newState == State::Master) becameMaster = clock_.now();
  }
  // Gate opens at 50 ms + 2 s; last accepted advert 1950 ms; + 341.40625 → 2292 ms.
  ASSERT_TRUE(becameMaster);
  EXPECT_EQ(*becameMaster - t0_, 2292ms);
}

TEST_F(MachineTest, SyncGateNeverDelaysTakeoverFromADeadMaster) {
  MachineConfig c = cfg(100);
  c.syncGate = true;
  c.syncWait = 1h;
  Machine m(c);
  m.start(t0_);
  clock_.set(t0_ + 100ms);
  m.onAdvert(advert(150), kPeer, clock_.now());
  EXPECT_FALSE(at(m, 100ms + 360ms).newState);
  EXPECT_EQ(at(m, 100ms + 361ms).newState, State::Master);
}

TEST_F(MachineTest, PeerLostTakesOverAfterOneMissingAdvert) {
  Machine m(cfg(100));
  m.start(t0_);
  for (Duration t = 0ms; t <= 1000ms; t += 100ms) {
    clock_.set(t0_ + t);
    m.onAdvert(advert(150), kPeer, clock_.now());
  }
  clock_.set(t0_ + 1020ms);
  Actions a = m.onPeerLost(clock_.now());
  // Window = Master_Adver_Interval + max(interval / 2, 20 ms) = 150 ms.
  EXPECT_EQ(a.nextDeadline, t0_ + 1170ms);
  EXPECT_FALSE(at(m, 1169ms).newState);
  Actions t = at(m, 1170ms);
  EXPECT_EQ(t.newState, State::Master);  // far sooner than the RFC's 1000 + 361 ms
  EXPECT_TRUE(t.claimVips);
}

TEST_F(MachineTest, PeerLostNeverTakesOverWhileAdvertsArrive) {
  Machine m(cfg(100));
  m.start(t0_);
  clock_.set(t0_ + 1000ms);
  m.onAdvert(advert(150), kPeer, clock_.now());
  clock_.set(t0_ + 1020ms);
  m.onPeerLost(clock_.now());
  // The master is alive (only the sync link broke): adverts keep coming.
  for (Duration t = 1100ms; t < 5s; t += 100ms) {
    clock_.set(t0_ + t);
    m.onAdvert(advert(150), kPeer, clock_.now());
    for (Duration d = 1ms; d < 100ms; d += 1ms) ASSERT_FALSE(at(m, t + d).newState);
  }
  EXPECT_EQ(m.state(), State::Backup);
}

TEST_F(MachineTest, PeerLostAtTenMilliseconds) {
  Machine m(cfg(100, 10ms));
  m.start(t0_);
  clock_.set(t0_ + 10ms);
  m.onAdvert(advert(150, 10ms), kPeer, clock_.now());
  clock_.set(t0_ + 12ms);
  Actions a = m.onPeerLost(clock_.now());
  EXPECT_EQ(a.nextDeadline, t0_ + 12ms + 30ms);  // 10 ms + the 20 ms floor of the margin
}

TEST_F(MachineTest, PeerLostIgnoredWithoutAKnownMasterOrWhenMaster) {
  Machine m(cfg(100));
  m.start(t0_);
  EXPECT_EQ(m.onPeerLost(t0_ + 10ms).nextDeadline, t0_ + nanoseconds(360'937'500));
  at(m, 361ms);
  Actions a = m.onPeerLost(t0_ + 400ms);
  EXPECT_FALSE(a.newState);
  EXPECT_EQ(a.nextDeadline, t0_ + 461ms);
}

TEST_F(MachineTest, TrackingPenaltyLowersEffectivePriority) {
  Machine m(cfg(100));
  m.start(t0_);
  at(m, 361ms);
  clock_.set(t0_ + 380ms);
  Actions a = m.setPenalty(60, clock_.now());
  EXPECT_EQ(m.effectivePriority(), 40);
  EXPECT_EQ(a.sendAdvert, 40);  // at once, not at the next interval
  EXPECT_EQ(a.nextDeadline, t0_ + 480ms);
  EXPECT_EQ(m.setPenalty(500, clock_.now()).sendAdvert, 1);  // never below 1
  EXPECT_EQ(m.effectivePriority(), 1);
  EXPECT_FALSE(m.setPenalty(500, clock_.now()).sendAdvert);  // no change, no advert
  // Skew follows the effective priority: (256 - 1) * 100 / 256.
  EXPECT_EQ(m.skewTime(), nanoseconds(99'609'375));
  m.setPenalty(0, clock_.now());
  EXPECT_EQ(m.effectivePriority(), 100);
}

TEST_F(MachineTest, HandoverSendsPriorityZeroAndHoldsPreemption) {
  MachineConfig c = cfg(150);
  c.handoverHold = 10s;
  Machine m(c);
  m.start(t0_);
  at(m, 342ms);
  ASSERT_EQ(m.state(), State::Master);
  clock_.set(t0_ + 1s);
  Actions a = m.handover(clock_.now());
  EXPECT_EQ(a.sendAdvert, 0);
  EXPECT_TRUE(a.releaseVips);
  EXPECT_EQ(a.newState, State::Backup);
  // The lower-priority peer takes over; we follow it for the whole hold.
  std::optional<TimePoint> becameMaster;
  for (Duration t = 1100ms; t < 20s && !becameMaster; t += 100ms) {
    clock_.set(t0_ + t);
    m.onAdvert(advert(100), kPeer, clock_.now());
    for (Duration d = 0ms; d < 100ms && !becameMaster; d += 1ms)
      if (at(m, t + d).newState == State::Master) becameMaster = clock_.now();
  }
  // Hold ends at 11 s: the advert at 11 s is discarded, so 10.9 s + 341.40625 ms → 11.242 s.
  ASSERT_TRUE(becameMaster);
  EXPECT_EQ(*becameMaster - t0_, 11242ms);
}

TEST_F(MachineTest, HandoverIsANoOpUnlessMaster) {
  Machine m(cfg(100));
  m.start(t0_);
  Actions a = m.handover(t0_ + 1ms);
  EXPECT_FALSE(a.sendAdvert);
  EXPECT_FALSE(a.newState);
}

TEST_F(MachineTest, HandoverHoldNeverBlocksTakeoverFromADeadMaster) {
  Machine m(cfg(150));
  m.start(t0_);
  at(m, 342ms);
  clock_.set(t0_ + 400ms);
  m.handover(clock_.now());
  clock_.set(t0_ + 500ms);
  m.onAdvert(advert(100), kPeer, clock_.now());  // the peer took over, then dies
  EXPECT_FALSE(at(m, 500ms + 341ms).newState);
  EXPECT_EQ(at(m, 500ms + 342ms).newState, State::Master);
}

TEST_F(MachineTest, ShutdownFromMasterSendsPriorityZero) {
  Machine m(cfg(100));
  m.start(t0_);
  at(m, 361ms);
  Actions a = m.shutdown(t0_ + 400ms);
  EXPECT_EQ(a.sendAdvert, 0);
  EXPECT_TRUE(a.releaseVips);
  EXPECT_EQ(a.newState, State::Initialize);
  EXPECT_FALSE(a.nextDeadline);
  EXPECT_FALSE(m.onAdvert(advert(0), kPeer, t0_ + 500ms).sendAdvert);  // not listening
}

TEST_F(MachineTest, ShutdownFromBackupIsSilent) {
  Machine m(cfg(100));
  m.start(t0_);
  Actions a = m.shutdown(t0_ + 10ms);
  EXPECT_FALSE(a.sendAdvert);
  EXPECT_FALSE(a.releaseVips);
  EXPECT_EQ(m.state(), State::Initialize);
}

TEST_F(MachineTest, AddressOwnerStartsAsMaster) {
  Machine m(cfg(255));
  Actions a = m.start(t0_);
  EXPECT_EQ(a.newState, State::Master);
  EXPECT_EQ(a.sendAdvert, 255);
  EXPECT_TRUE(a.claimVips);
  EXPECT_TRUE(a.garp);
}

TEST_F(MachineTest, LowerPriorityMasterTriggersReassertionAndRateLimitedGarp) {
  Machine m(cfg(150));
  m.start(t0_);
  at(m, 342ms);
  clock_.set(t0_ + 400ms);
  Actions a = m.onAdvert(advert(100), kPeer, clock_.now());
  EXPECT_EQ(a.sendAdvert, 150);
  EXPECT_TRUE(a.garp);
  clock_.set(t0_ + 500ms);
  a = m.onAdvert(advert(100), kPeer, clock_.now());
  EXPECT_EQ(a.sendAdvert, 150);
  EXPECT_FALSE(a.garp);                             // within kForcedGarpSpacing
  for (Duration t = 600ms; t < 1400ms; t += 100ms)  // the same incident goes on
    EXPECT_FALSE(m.onAdvert(advert(100), kPeer, t0_ + t).garp) << toMillis(t);
  EXPECT_TRUE(m.onAdvert(advert(100), kPeer, t0_ + 1400ms).garp);  // 1 s since the last one
  EXPECT_FALSE(m.onAdvert(advert(100), kPeer, t0_ + 1450ms).garp);
  // Quiet for more than 3 intervals, then a lower advert again: a new split, re-announce at
  // once even though the last announcement was under 1 s ago.
  EXPECT_TRUE(m.onAdvert(advert(100), kPeer, t0_ + 1751ms).garp);
}

TEST_F(MachineTest, LinkDownIsFaultAndLinkUpStartsOver) {
  Machine m(cfg(100));
  m.start(t0_);
  at(m, 361ms);
  Actions a = m.setLinkUp(false, t0_ + 400ms);
  EXPECT_EQ(a.newState, State::Fault);
  EXPECT_TRUE(a.releaseVips);
  EXPECT_FALSE(a.sendAdvert);
  EXPECT_FALSE(a.nextDeadline);
  EXPECT_FALSE(at(m, 10s).newState);
  clock_.set(t0_ + 10s);
  a = m.setLinkUp(true, clock_.now());
  EXPECT_EQ(a.newState, State::Backup);
  EXPECT_EQ(a.nextDeadline, t0_ + 10s + nanoseconds(360'937'500));
}

// ---------------------------------------------------------------- several machines on a LAN

// A deterministic LAN: every advert a node sends reaches every other node it is connected to
// at the same instant; timers fire exactly at their deadlines.
class Lan {
 public:
  struct Node {
    std::unique_ptr<Machine> machine;
    IpAddress address;
    bool alive = true;
    int segment = 0;  // nodes hear each other only within one segment (partitions)
    bool vips = false;
    int garps = 0;
    std::vector<std::pair<Duration, State>> transitions;
  };

  Node& add(MachineConfig c, const char* address) {
    c.primaryAddress = ip(address);
    nodes_.push_back(std::make_unique<Node>());
    Node& n = *nodes_.back();
    n.machine = std::make_unique<Machine>(c);
    n.address = c.primaryAddress;
    return n;
  }
  Duration elapsed() const { return clock_.now() - t0_; }
  TimePoint now() const { return clock_.now(); }
  void start(Node& n) { apply(n, n.machine->start(clock_.now())); }
  void kill(Node& n) { n.alive = false; }  // SIGKILL: silent, VIPs stay until they expire
  void stop(Node& n) { apply(n, n.machine->shutdown(clock_.now())); }

  void runFor(Duration d) {
    TimePoint end = clock_.now() + d;
    for (;;) {
      std::optional<TimePoint> next;
      Node* who = nullptr;
      for (auto& n : nodes_) {
        if (!n->alive) continue;
        auto dl = n->machine->deadline();
        if (dl && (!next || *dl < *next)) next = dl, who = n.get();
      }
      if (!next || *next > end) break;
      clock_.set(std::max(*next, clock_.now()));
      apply(*who, who->machine->onTimer(clock_.now()));
    }
    clock_.set(end);
  }

  int masters() const {
    int n = 0;
    for (auto& x : nodes_) n += x->alive && x->machine->state() == State::Master;
    return n;
  }
  int vipHolders() const {
    int n = 0;
    for (auto& x : nodes_) n += x->alive && x->vips;
    return n;
  }

  void apply(Node& from, const Actions& a) {
    if (a.claimVips) from.vips = true;
    if (a.releaseVips) from.vips = false;
    if (a.garp) ++from.garps;
    if (a.newState) from.transitions.push_back({elapsed(), *a.newState});
    if (a.sendAdvert)
      queue_.push_back({&from, advert(*a.sendAdvert, from.machine->config().advertInterval)});
    if (delivering_) return;
    delivering_ = true;
    while (!queue_.empty()) {
      auto [src, adv] = queue_.front();
      queue_.pop_front();
      for (auto& n : nodes_)
        if (n.get() != src && n->alive && src->alive && n->segment == src->segment)
          apply(*n, n->machine->onAdvert(adv, src->address, clock_.now()));
    }
    delivering_ = false;
  }

 private:
  ManualClock clock_;
  TimePoint t0_ = clock_.now();
  std::vector<std::unique_ptr<Node>> nodes_;
  std::deque<std::pair<Node*, Advert>> queue_;
  bool delivering_ = false;
};

TEST(LanTest, ExactlyOneMasterAndFailoverOnKill) {
  Lan lan;
  auto& a = lan.add(cfg(150), "192.0.2.11");
  auto& b = lan.add(cfg(100), "192.0.2.12");
  lan.start(a);
  lan.start(b);
  lan.runFor(2s);
  EXPECT_EQ(lan.masters(), 1);
  EXPECT_EQ(a.machine->state(), State::Master);
  EXPECT_EQ(b.machine->masterAddress(), a.address);
  // A became master at its MDI (341.40625 ms), before B's (360.9375 ms).
  ASSERT_FALSE(a.transitions.empty());
  EXPECT_EQ(a.transitions.back().first, nanoseconds(341'406'250));

  Duration killedAt = lan.elapsed();
  lan.kill(a);
  lan.runFor(1s);
  EXPECT_EQ(b.machine->state(), State::Master);
  // A's last advert left at 341.40625 + 16 × 100 ms = 1941.40625 ms; B takes over one MDI later.
  EXPECT_EQ(b.transitions.back().first, nanoseconds(1'941'406'250) + nanoseconds(360'937'500));
  EXPECT_LE(b.transitions.back().first - killedAt, nanoseconds(360'937'500));
}

TEST(LanTest, CleanStopHandsOverAfterSkewTime) {
  Lan lan;
  auto& a = lan.add(cfg(150), "192.0.2.11");
  auto& b = lan.add(cfg(100), "192.0.2.12");
  lan.start(a);
  lan.start(b);
  lan.runFor(1s);
  Duration stoppedAt = lan.elapsed();
  lan.stop(a);
  lan.runFor(200ms);
  EXPECT_EQ(b.machine->state(), State::Master);
  EXPECT_EQ(b.transitions.back().first - stoppedAt, nanoseconds(60'937'500));
}

TEST(LanTest, PreemptsBackWhenConfiguredAndNotOtherwise) {
  for (bool preempt : {true, false}) {
    Lan lan;
    MachineConfig ca = cfg(150);
    ca.preempt = preempt;
    auto& a = lan.add(ca, "192.0.2.11");
    auto& b = lan.add(cfg(100), "192.0.2.12");
    lan.start(b);
    lan.runFor(1s);
    ASSERT_EQ(b.machine->state(), State::Master);
    lan.start(a);  // the preferred node returns
    lan.runFor(3s);
    EXPECT_EQ(lan.masters(), 1) << preempt;
    EXPECT_EQ(a.machine->state(), preempt ? State::Master : State::Backup) << preempt;
    EXPECT_EQ(lan.vipHolders(), 1) << preempt;
  }
}

TEST(LanTest, HealedPartitionLeavesOneMaster) {
  for (bool preempt : {true, false}) {
    Lan lan;
    MachineConfig ca = cfg(150), cb = cfg(100);
    ca.preempt = cb.preempt = preempt;
    auto& a = lan.add(ca, "192.0.2.11");
    auto& b = lan.add(cb, "192.0.2.12");
    lan.start(a);
    lan.start(b);
    lan.runFor(1s);
    b.segment = 1;  // partition
    lan.runFor(2s);
    EXPECT_EQ(lan.masters(), 2);  // each side elects itself: expected while split
    int garpsBefore = a.garps;
    b.segment = 0;  // heal
    lan.runFor(1s);
    // The winner re-announces: clients that followed B's announcements come back.
    EXPECT_EQ(a.garps, garpsBefore + 1) << preempt;
    EXPECT_EQ(lan.masters(), 1) << preempt;
    EXPECT_EQ(a.machine->state(), State::Master) << preempt;
    EXPECT_EQ(lan.vipHolders(), 1) << preempt;
  }
}

TEST(LanTest, TrackingPenaltyMovesMastershipToTheHealthierNode) {
  Lan lan;
  auto& a = lan.add(cfg(150), "192.0.2.11");
  auto& b = lan.add(cfg(100), "192.0.2.12");
  lan.start(a);
  lan.start(b);
  lan.runFor(1s);
  ASSERT_EQ(a.machine->state(), State::Master);
  lan.apply(a, a.machine->setPenalty(60, lan.now()));  // 150 - 60 = 90 < 100
  lan.runFor(1s);
  EXPECT_EQ(b.machine->state(), State::Master);
  EXPECT_EQ(a.machine->state(), State::Backup);
  EXPECT_EQ(lan.vipHolders(), 1);
}

TEST(LanTest, EqualPrioritiesElectTheGreaterAddressBetweenTwoMasters) {
  // In Backup an equal-priority advert is accepted (§6.4.2), so the tie-break only matters
  // when both are masters, as after a partition.
  Lan lan;
  auto& a = lan.add(cfg(100), "192.0.2.11");
  auto& b = lan.add(cfg(100), "192.0.2.12");
  b.segment = 1;
  lan.start(a);
  lan.start(b);
  lan.runFor(1s);
  ASSERT_EQ(lan.masters(), 2);
  b.segment = 0;
  lan.runFor(1s);
  EXPECT_EQ(lan.masters(), 1);
  EXPECT_EQ(b.machine->state(), State::Master);
}

}  // namespace
}  // namespace halb::vrrp
