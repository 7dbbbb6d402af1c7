#include "vrrp/instance.h"

#include <sched.h>
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstring>
#include <map>
#include <set>

#include "common/crypto.h"
#include "common/json.h"
#include "common/log.h"
#include "common/prom.h"
#include "common/uv.h"
#include "config/config.h"
#include "vrrp/announce.h"
#include "vrrp/auth.h"
#include "vrrp/hooks.h"
#include "vrrp/iface.h"
#include "vrrp/transport.h"
#include "vrrp/vip.h"

namespace halb::vrrp {

namespace {

constexpr const char* kLog = "vrrp";
constexpr std::chrono::milliseconds kNotifyTimeout{30'000};
constexpr std::array kStates{State::Initialize, State::Backup, State::Master, State::Fault};

double seconds(Duration d) {
  return std::chrono::duration<double>(d).count();
}

uint64_t wallMicros() {
  return static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::microseconds>(
                                   std::chrono::system_clock::now().time_since_epoch())
                                   .count());
}

}  // namespace

struct Instance::Impl {
  Impl(uv::Loop& l, const config::Config& c, Hooks h)
      : loop(l),
        cfg(c.vrrp),
        vips(c.vips),
        syncGate(c.statesync.enabled),
        syncWait(c.statesync.syncWait),
        hooks(std::move(h)) {
    for (const auto& v : vips) vipAddresses.push_back(v.address.address);
  }

  // ---------------------------------------------------------------- configuration
  uv::Loop& loop;
  config::Vrrp cfg;
  std::vector<config::Vip> vips;
  std::vector<IpAddress> vipAddresses;
  bool syncGate;
  Duration syncWait;
  Hooks hooks;

  // ---------------------------------------------------------------- runtime
  bool running = false;
  IpAddress source;
  std::unique_ptr<Machine> machine;
  std::unique_ptr<Transport> transport;
  std::unique_ptr<VipManager> vipManager;
  std::map<std::string, std::unique_ptr<Announcer>> announcers;  // per VIP interface
  std::unique_ptr<LinkMonitor> links;
  std::unique_ptr<NotifyRunner> notifier;
  std::optional<Authenticator> auth;
  std::unique_ptr<uv::Timer> machineTimer, renewTimer, garpTimer, refreshTimer;
  std::optional<TimePoint> timerDue;
  uint32_t appPenalty = 0, linkPenalty = 0;
  bool syncReady = false;
  bool holdingVips = false;
  uint32_t garpRoundsLeft = 0;
  State lastState = State::Initialize;
  struct Transition {
    TimePoint at;
    State from = State::Initialize, to = State::Initialize;
    std::string reason;
  };
  std::optional<Transition> lastTransition;

  // ---------------------------------------------------------------- counters
  uint64_t accepted = 0;
  std::array<uint64_t, kDropReasonCount> dropped{};
  std::array<uint64_t, kStates.size()> transitions{};
  uint64_t intervalMismatch = 0, addressMismatch = 0;
  uint64_t vipErrors = 0, vipRenewals = 0, leftoversRemoved = 0;
  uint64_t lateTimers = 0;
  Duration maxLateness{};

  TimePoint now() const { return SteadyClock::now(); }
  uint32_t penalty() const { return appPenalty + linkPenalty; }

  std::string start();
  void stop(bool graceful);
  void apply(const Actions& a);
  void onPacket(std::span<const uint8_t> payload, const PacketContext& ctx);
  void drop(DropReason r, const PacketContext& ctx);
  void sendAdvert(uint8_t priority);
  void claimVips();
  void renewVips();
  void releaseVips();
  void startGarpBurst();
  void garpRound();
  void onStateChanged(State to, const char* reason);
  void onMachineTimer();
  void onLinkChange();
  unsigned ifindexOf(const config::Vip& v) const { return interfaceIndex(v.interface); }
};

std::string Instance::Impl::start() {
  if (running) return {};
  if (vips.empty()) return "no VIPs configured";
  const IpAddress::Family family = vipAddresses.front().family();
  if (interfaceIndex(cfg.interface) == 0) return "no interface " + cfg.interface;

  // The advert source: the configured one when it is of the VIPs' family, else the
  // interface's own (RFC 9568 §5.1.1.1: the primary IPv4 address; §5.1.2.1: link-local).
  if (cfg.sourceAddress && cfg.sourceAddress->family() == family &&
      (cfg.sourceAddress->isV4() || cfg.sourceAddress->isLinkLocal())) {
    source = *cfg.sourceAddress;
  } else if (auto a = interfaceSourceAddress(cfg.interface, family, vipAddresses)) {
    source = *a;
  } else {
    return std::string("no ") + (family == IpAddress::Family::V4 ? "IPv4" : "IPv6 link-local") +
           " address on " + cfg.interface + " to send adverts from";
  }

  if (cfg.auth == config::VrrpAuth::Hmac) {
    auto key = loadKeyFile(cfg.authKeyFile);
    if (!key) return "vrrp.auth_key_file: " + key.error();
    auth.emplace(std::move(key).value());
  }

  auto vm = VipManager::open();
  if (!vm) return vm.error();
  vipManager = std::move(vm).value();
  // A VIP left by an earlier run (a SIGKILLed process whose lifetime has not run out yet)
  // must go before we take a role: as a backup we must not answer ARP for it.
  for (const auto& v : vips) {
    bool was = false;
    std::string err = vipManager->remove(v.address, ifindexOf(v), &was);
    if (!err.empty()) {
      HALB_LOG(Warn, kLog) << err;
    }
    if (was) {
      ++leftoversRemoved;
      HALB_LOG(Warn, kLog) << "removed leftover VIP " << v.address.toString() << " from "
                           << v.interface;
    }
  }

  for (const auto& v : vips) {
    if (announcers.count(v.interface)) continue;
    auto an = Announcer::open(v.interface);
    if (!an) return an.error();
    announcers[v.interface] = std::move(an).value();
  }

  Transport::Options to{
      .interface = cfg.interface, .source = source, .unicast = cfg.unicast, .peers = {}};
  for (const IpAddress& p : cfg.unicastPeers)
    if (p.family() == family && p != source) to.peers.push_back(p);
  auto tr = Transport::open(
      loop, std::move(to),
      [this](std::span<const uint8_t> p, const PacketContext& c) { onPacket(p, c); });
  if (!tr) return tr.error();
  transport = std::move(tr).value();

  auto lm = LinkMonitor::open(loop, [this] { onLinkChange(); });
  if (lm) {
    links = std::move(lm).value();
  } else {
    HALB_LOG(Warn, kLog) << "no link-state events (" << lm.error()
                         << "); interface tracking disabled";
  }
  if (!cfg.notify.empty())
    notifier = std::make_unique<NotifyRunner>(loop, cfg.notify, kNotifyTimeout);

  machineTimer = std::make_unique<uv::Timer>(loop);
  renewTimer = std::make_unique<uv::Timer>(loop);
  garpTimer = std::make_unique<uv::Timer>(loop);
  refreshTimer = std::make_unique<uv::Timer>(loop);

  MachineConfig mc{
      .vrid = static_cast<uint8_t>(cfg.virtualRouterId),
      .priority = static_cast<uint8_t>(cfg.priority),
      .advertInterval = cfg.advertInterval,
      .preempt = cfg.preempt,
      .preemptDelay = cfg.preemptDelay,
      .primaryAddress = source,
      .syncGate = syncGate,
      .syncWait = syncWait,
      .handoverHold = cfg.handoverHold,
  };
  machine = std::make_unique<Machine>(mc);
  running = true;
  TimePoint t = now();
  machine->setSyncReady(syncReady, t);
  machine->setLinkUp(interfaceRunning(cfg.interface), t);
  onLinkChange();  // tracked interfaces' initial penalty
  HALB_LOG(Info, kLog) << "VRID " << cfg.virtualRouterId << " on " << cfg.interface << " from "
                       << source.toString() << (cfg.unicast ? " (unicast)" : " (multicast)")
                       << ", priority " << cfg.priority << ", advert every "
                       << toMillis(cfg.advertInterval) << " ms" << (auth ? ", HMAC auth" : "");
  apply(machine->start(t));
  return {};
}

void Instance::Impl::stop(bool graceful) {
  if (!running) return;
  Actions a = machine->shutdown(now());
  if (!graceful) a.sendAdvert.reset();
  apply(a);
  if (holdingVips) releaseVips();
  running = false;
  machineTimer.reset();
  renewTimer.reset();
  garpTimer.reset();
  refreshTimer.reset();
  transport.reset();
  links.reset();
  announcers.clear();
  vipManager.reset();
  // The notifier stays: the hook for the last state change may still be running.
}

void Instance::Impl::apply(const Actions& a) {
  if (!running) return;
  if (a.releaseVips) releaseVips();
  if (a.claimVips) {
    if (hooks.beforeMaster) hooks.beforeMaster();
    claimVips();
  }
  if (a.sendAdvert) sendAdvert(*a.sendAdvert);
  if (a.garp) startGarpBurst();
  if (a.newState) {
    onStateChanged(*a.newState, a.reason);
  } else if (*a.reason) {
    HALB_LOG(Debug, kLog) << a.reason;
  }
  if (!machineTimer) return;
  timerDue = a.nextDeadline;
  if (!a.nextDeadline) {
    machineTimer->stop();
    return;
  }
  Duration delay = std::max(Duration::zero(), *a.nextDeadline - now());
  machineTimer->start(delay, [this] { onMachineTimer(); });
}

void Instance::Impl::onMachineTimer() {
  TimePoint t = now();
  if (timerDue) {
    Duration late = t - *timerDue;
    maxLateness = std::max(maxLateness, late);
    // A control loop that wakes up this late is starved (keepalived#2469's "timer expired N s
    // ago"): say so, because a flapping pair is the visible symptom.
    if (late > cfg.advertInterval / 2) {
      ++lateTimers;
      HALB_LOG_EVERY(Warn, kLog, std::chrono::seconds(5))
          << "control loop woke " << toMillis(late)
          << " ms late for a VRRP timer; is it starved of CPU?";
    }
  }
  apply(machine->onTimer(t));
}

void Instance::Impl::drop(DropReason r, const PacketContext& ctx) {
  ++dropped[static_cast<size_t>(r)];
  switch (r) {
    case DropReason::WrongVrid:
    case DropReason::OwnPacket:
      return;  // other routers on the LAN; not our business
    case DropReason::AuthBadMac:
    case DropReason::AuthReplay:
    case DropReason::AuthMissing:
    case DropReason::AuthKeyId:
      HALB_LOG_EVERY(Warn, kLog, std::chrono::seconds(5))
          << "dropped advert from " << ctx.source.toString() << ": " << toString(r);
      return;
    default:
      HALB_LOG_EVERY(Info, kLog, std::chrono::seconds(5))
          << "dropped advert from " << ctx.source.toString() << ": " << toString(r);
  }
}

void Instance::Impl::onPacket(std::span<const uint8_t> payload, const PacketContext& ctx) {
  if (!running) return;
  if (ctx.source == source) return drop(DropReason::OwnPacket, ctx);
  if (cfg.unicast && std::find(cfg.unicastPeers.begin(), cfg.unicastPeers.end(), ctx.source) ==
                         cfg.unicastPeers.end())
    return drop(DropReason::NotPeer, ctx);
  DecodeResult r = decode(payload, ctx, static_cast<uint8_t>(cfg.virtualRouterId));
  if (!r.ok()) return drop(*r.drop, ctx);
  if (auth) {
    if (auto bad = auth->verify(payload, r.packet, ctx)) return drop(*bad, ctx);
  }
  ++accepted;
  const Advert& adv = r.packet.advert;
  if (adv.intervalCs != toCentiseconds(cfg.advertInterval)) {
    ++intervalMismatch;
    // §6.4.2: a backup adopts the master's interval anyway; the mismatch is a config error.
    HALB_LOG_EVERY(Warn, kLog, std::chrono::seconds(30))
        << "advert from " << ctx.source.toString() << " has interval " << adv.intervalCs * 10
        << " ms, ours is " << toMillis(cfg.advertInterval) << " ms";
  }
  if (adv.priority != kPriorityShutdown &&
      std::set<IpAddress>(adv.addresses.begin(), adv.addresses.end()) !=
          std::set<IpAddress>(vipAddresses.begin(), vipAddresses.end())) {
    ++addressMismatch;
    // §7.1 makes the check optional (MAY); a different list is logged, not dropped.
    HALB_LOG_EVERY(Warn, kLog, std::chrono::seconds(30))
        << "advert from " << ctx.source.toString() << " lists other VIPs than ours";
  }
  apply(machine->onAdvert(adv, ctx.source, now()));
}

void Instance::Impl::sendAdvert(uint8_t priority) {
  if (!transport) return;
  Advert adv{.vrid = static_cast<uint8_t>(cfg.virtualRouterId),
             .priority = priority,
             .intervalCs = toCentiseconds(cfg.advertInterval),
             .addresses = vipAddresses};
  transport->send([&](const PacketContext& ctx) {
    if (auth)
      return auth->seal(adv, ctx, ChecksumForm::PseudoHeader, auth->nextCounter(wallMicros()));
    return encode(adv, ctx, ChecksumForm::PseudoHeader);
  });
}

void Instance::Impl::claimVips() {
  for (const auto& v : vips) {
    std::string err = vipManager->add(v.address, ifindexOf(v), cfg.vipLifetime);
    if (!err.empty()) {
      ++vipErrors;
      HALB_LOG(Error, kLog) << err;
    }
  }
  holdingVips = true;
  // Renew well before the lifetime runs out: three chances per lifetime.
  renewTimer->startRepeating(
      std::max<Duration>(cfg.vipLifetime / 3, std::chrono::milliseconds(100)),
      [this] { renewVips(); });
}

void Instance::Impl::renewVips() {
  for (const auto& v : vips) {
    std::string err = vipManager->add(v.address, ifindexOf(v), cfg.vipLifetime);
    if (!err.empty()) {
      ++vipErrors;
      HALB_LOG_EVERY(Error, kLog, std::chrono::seconds(5)) << "renewing VIP: " << err;
    } else {
      ++vipRenewals;
    }
  }
}

void Instance::Impl::releaseVips() {
  if (renewTimer) renewTimer->stop();
  if (garpTimer) garpTimer->stop();
  if (refreshTimer) refreshTimer->stop();
  garpRoundsLeft = 0;
  for (const auto& v : vips) {
    std::string err = vipManager->remove(v.address, ifindexOf(v));
    if (!err.empty()) {
      ++vipErrors;
      HALB_LOG(Error, kLog) << err;
    }
  }
  holdingVips = false;
}

void Instance::Impl::startGarpBurst() {
  garpRoundsLeft = cfg.garp.count;
  garpRound();
  if (garpRoundsLeft > 0)
    garpTimer->startRepeating(std::max<Duration>(cfg.garp.interval, std::chrono::milliseconds(1)),
                              [this] {
                                garpRound();
                                if (garpRoundsLeft == 0) garpTimer->stop();
                              });
}

void Instance::Impl::garpRound() {
  // Zero spacing sends the whole burst at once.
  do {
    if (garpRoundsLeft == 0) return;
    --garpRoundsLeft;
    for (const auto& v : vips) {
      std::string err = announcers.at(v.interface)->announce(v.address.address);
      if (!err.empty()) {
        HALB_LOG_EVERY(Warn, kLog, std::chrono::seconds(5)) << err;
      }
    }
  } while (cfg.garp.interval == Duration::zero());
}

void Instance::Impl::onStateChanged(State to, const char* reason) {
  State from = lastState;
  lastState = to;
  ++transitions[static_cast<size_t>(to)];
  lastTransition = Transition{now(), from, to, reason};
  HALB_LOG(Info, kLog) << "VRID " << cfg.virtualRouterId << ": " << toString(from) << " -> "
                       << toString(to) << " (" << reason << "), priority "
                       << int{machine->effectivePriority()};
  if (to == State::Master && cfg.garp.refresh > Duration::zero())
    refreshTimer->startRepeating(cfg.garp.refresh, [this] { startGarpBurst(); });
  if (notifier) notifier->notify(toString(to), toString(from));
  if (hooks.onStateChange) hooks.onStateChange(from, to);
}

void Instance::Impl::onLinkChange() {
  if (!running) return;
  TimePoint t = now();
  apply(machine->setLinkUp(interfaceRunning(cfg.interface), t));
  uint32_t down = 0;
  for (const auto& name : cfg.track.interfaces)
    if (!interfaceRunning(name)) ++down;
  uint32_t lp = down * cfg.track.penalty;
  if (lp != linkPenalty) {
    HALB_LOG(Info, kLog) << down << " tracked interface(s) down; link penalty " << lp;
    linkPenalty = lp;
    apply(machine->setPenalty(penalty(), t));
  }
}

// ------------------------------------------------------------------ Instance

Instance::Instance(uv::Loop& loop, const config::Config& config, Hooks hooks)
    : impl_(std::make_unique<Impl>(loop, config, std::move(hooks))) {}

Instance::~Instance() {
  impl_->stop(true);
}

std::string Instance::start() {
  std::string err = impl_->start();
  if (!err.empty()) impl_->stop(false);
  return err;
}

void Instance::stop(bool graceful) {
  impl_->stop(graceful);
}

void Instance::whenHooksIdle(std::function<void()> done) {
  if (!impl_->notifier) {
    done();
    return;
  }
  impl_->notifier->whenIdle(std::move(done), std::chrono::milliseconds(5000));
}

bool Instance::handover() {
  if (!impl_->running || impl_->machine->state() != State::Master) return false;
  impl_->apply(impl_->machine->handover(impl_->now()));
  return true;
}

void Instance::setPenalty(uint32_t penalty) {
  impl_->appPenalty = penalty;
  if (impl_->running) impl_->apply(impl_->machine->setPenalty(impl_->penalty(), impl_->now()));
}

void Instance::onPeerLost() {
  if (impl_->running) impl_->apply(impl_->machine->onPeerLost(impl_->now()));
}

void Instance::setSyncReady(bool ready) {
  impl_->syncReady = ready;
  if (impl_->running) impl_->apply(impl_->machine->setSyncReady(ready, impl_->now()));
}

State Instance::state() const {
  return impl_->machine ? impl_->machine->state() : State::Initialize;
}

uint8_t Instance::effectivePriority() const {
  return impl_->machine ? impl_->machine->effectivePriority()
                        : static_cast<uint8_t>(impl_->cfg.priority);
}

std::optional<IpAddress> Instance::masterAddress() const {
  return impl_->machine ? impl_->machine->masterAddress() : std::nullopt;
}

void Instance::writeStatus(JsonWriter& j) const {
  const Impl& s = *impl_;
  j.beginObject();
  j.key("state").value(toString(state()));
  j.key("vrid").value(uint64_t{s.cfg.virtualRouterId});
  j.key("interface").value(s.cfg.interface);
  j.key("source").value(s.source.toString());
  j.key("priority").beginObject();
  j.key("configured").value(uint64_t{s.cfg.priority});
  j.key("effective").value(uint64_t{effectivePriority()});
  j.key("penalty").value(uint64_t{s.penalty()});
  j.endObject();
  auto m = masterAddress();
  j.key("master");
  if (m) {
    j.value(m->toString());
  } else {
    j.null();
  }
  j.key("advert_interval_ms").value(toMillis(s.cfg.advertInterval));
  if (s.machine) {
    j.key("master_adver_interval_ms").value(toMillis(s.machine->masterAdverInterval()));
    j.key("master_down_interval_ms").value(seconds(s.machine->masterDownInterval()) * 1000);
    j.key("handover_hold").value(s.machine->holding(s.now()));
  }
  j.key("preempt").value(s.cfg.preempt);
  j.key("sync_ready").value(s.syncReady);
  j.key("holding_vips").value(s.holdingVips);
  j.key("vips").beginArray();
  for (const auto& v : s.vips) j.value(v.address.toString());
  j.endArray();
  j.key("transitions")
      .value(s.transitions[static_cast<size_t>(State::Master)] +
             s.transitions[static_cast<size_t>(State::Backup)] +
             s.transitions[static_cast<size_t>(State::Fault)] +
             s.transitions[static_cast<size_t>(State::Initialize)]);
  if (s.lastTransition) {
    j.key("last_transition").beginObject();
    j.key("from").value(toString(s.lastTransition->from));
    j.key("to").value(toString(s.lastTransition->to));
    j.key("reason").value(s.lastTransition->reason);
    j.key("seconds_ago").value(seconds(s.now() - s.lastTransition->at));
    j.endObject();
  }
  j.key("adverts").beginObject();
  j.key("sent").value(s.transport ? s.transport->counters().sent : uint64_t{0});
  j.key("send_errors").value(s.transport ? s.transport->counters().sendErrors : uint64_t{0});
  j.key("received").value(s.accepted);
  j.key("dropped").beginObject();
  for (size_t i = 0; i < kDropReasonCount; ++i)
    if (s.dropped[i]) j.key(toString(static_cast<DropReason>(i))).value(s.dropped[i]);
  j.endObject();
  j.endObject();
  j.endObject();
}

void Instance::writeMetrics(PromWriter& w) const {
  const Impl& s = *impl_;
  std::string vrid = std::to_string(s.cfg.virtualRouterId);
  w.family("halb_vrrp_state", "gauge", "1 for the current VRRP state of this node.");
  for (State st : kStates)
    w.sample("halb_vrrp_state", {{"vrid", vrid}, {"state", toString(st)}}, state() == st ? 1 : 0);
  w.family("halb_vrrp_priority", "gauge",
           "VRRP priority: configured and effective (after tracking).");
  w.sample("halb_vrrp_priority", {{"vrid", vrid}, {"kind", "configured"}}, s.cfg.priority);
  w.sample("halb_vrrp_priority", {{"vrid", vrid}, {"kind", "effective"}}, effectivePriority());
  w.family("halb_vrrp_master_info", "gauge",
           "The node this one believes is master (1 per address).");
  if (auto m = masterAddress()) {
    std::string addr = m->toString();
    w.sample("halb_vrrp_master_info", {{"vrid", vrid}, {"address", addr}}, 1);
  }
  w.family("halb_vrrp_transitions_total", "counter", "VRRP state changes, by the state entered.");
  for (State st : kStates)
    w.sample("halb_vrrp_transitions_total", {{"vrid", vrid}, {"to", toString(st)}},
             static_cast<double>(s.transitions[static_cast<size_t>(st)]));
  Transport::Counters tc = s.transport ? s.transport->counters() : Transport::Counters{};
  w.family("halb_vrrp_adverts_sent_total", "counter", "VRRP adverts sent (one per destination).");
  w.sample("halb_vrrp_adverts_sent_total", {{"vrid", vrid}}, static_cast<double>(tc.sent));
  w.family("halb_vrrp_advert_send_errors_total", "counter", "VRRP adverts the kernel refused.");
  w.sample("halb_vrrp_advert_send_errors_total", {{"vrid", vrid}},
           static_cast<double>(tc.sendErrors));
  w.family("halb_vrrp_adverts_received_total", "counter", "VRRP adverts accepted.");
  w.sample("halb_vrrp_adverts_received_total", {{"vrid", vrid}}, static_cast<double>(s.accepted));
  w.family("halb_vrrp_adverts_dropped_total", "counter",
           "Received VRRP packets dropped, by reason.");
  for (size_t i = 0; i < kDropReasonCount; ++i)
    w.sample("halb_vrrp_adverts_dropped_total",
             {{"vrid", vrid}, {"reason", toString(static_cast<DropReason>(i))}},
             static_cast<double>(s.dropped[i]));
  w.family("halb_vrrp_advert_mismatch_total", "counter",
           "Accepted adverts whose interval or VIP list differs from ours.");
  w.sample("halb_vrrp_advert_mismatch_total", {{"vrid", vrid}, {"field", "interval"}},
           static_cast<double>(s.intervalMismatch));
  w.sample("halb_vrrp_advert_mismatch_total", {{"vrid", vrid}, {"field", "addresses"}},
           static_cast<double>(s.addressMismatch));
  uint64_t garps = 0, garpErrors = 0;
  for (const auto& [name, a] : s.announcers) garps += a->sent(), garpErrors += a->errors();
  w.family("halb_vrrp_announcements_total", "counter",
           "Gratuitous ARPs / unsolicited NAs sent, by result.");
  w.sample("halb_vrrp_announcements_total", {{"vrid", vrid}, {"result", "ok"}},
           static_cast<double>(garps));
  w.sample("halb_vrrp_announcements_total", {{"vrid", vrid}, {"result", "error"}},
           static_cast<double>(garpErrors));
  w.family("halb_vrrp_vip_renewals_total", "counter", "VIP lifetime renewals by the master.");
  w.sample("halb_vrrp_vip_renewals_total", {{"vrid", vrid}}, static_cast<double>(s.vipRenewals));
  w.family("halb_vrrp_vip_errors_total", "counter", "Failed VIP netlink operations.");
  w.sample("halb_vrrp_vip_errors_total", {{"vrid", vrid}}, static_cast<double>(s.vipErrors));
  w.family("halb_vrrp_timer_late_total", "counter",
           "VRRP timers that fired more than half an advert interval late.");
  w.sample("halb_vrrp_timer_late_total", {{"vrid", vrid}}, static_cast<double>(s.lateTimers));
  w.family("halb_vrrp_timer_max_lateness_seconds", "gauge", "Worst VRRP timer lateness seen.");
  w.sample("halb_vrrp_timer_max_lateness_seconds", {{"vrid", vrid}}, seconds(s.maxLateness));
}

std::string raiseControlThreadPriority() {
  // sched_setscheduler(0, ...) applies to the calling thread. SCHED_RESET_ON_FORK makes every
  // task it creates later (worker threads, notify hooks) start as SCHED_OTHER.
  sched_param sp{};
  sp.sched_priority = 1;
  if (::sched_setscheduler(0, SCHED_FIFO | SCHED_RESET_ON_FORK, &sp) == 0)
    return "SCHED_FIFO priority 1";
  std::string why = std::strerror(errno);
  if (::setpriority(PRIO_PROCESS, static_cast<id_t>(::gettid()), -10) == 0)
    return "nice -10 (SCHED_FIFO refused: " + why + ")";
  return "unchanged (SCHED_FIFO: " + why + "; nice: " + std::strerror(errno) + ")";
}

}  // namespace halb::vrrp
