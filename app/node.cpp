#include "app/node.h"

#include <signal.h>
#ifdef HALB_HAVE_SYSTEMD
#include <systemd/sd-daemon.h>
#endif

#include <thread>

#include "app/admin.h"
#include "app/statesync_wiring.h"
#include "app/tls_wiring.h"
#include "app/wire_vrrp.h"
#include "balancer/engine.h"
#include "balancer/pool_service.h"
#include "balancer/stick_table.h"
#include "balancer/sticky.h"
#include "common/crypto.h"
#include "common/log.h"
#include "config/loader.h"
#include "vrrp/instance.h"

#ifndef HALB_VERSION
#define HALB_VERSION "unknown"
#endif

namespace halb::app {

// The services this node runs; each is null when the configuration does not ask for it.
// Wiring code for each service lives in startServices().
struct Node::Services {
  // Data plane: pools (health, outliers, slow start) on this loop, snapshots posted to the
  // engine's workers; stick tables shared by the workers; cookie codecs per backend.
  std::vector<uint8_t> cookieSecret;  // standalone fallback key (see loadCookieKey)
  std::shared_ptr<balancer::StickTables> stickTables;
  std::unique_ptr<balancer::PoolService> pools;
  std::unique_ptr<balancer::Engine> engine;
  std::unique_ptr<uv::Timer> housekeeping;  // stick-table expiry, stuck-worker watch
  std::vector<uint64_t> heartbeats;
  std::vector<int> stalledChecks;
  std::unique_ptr<uv::Async> engineStopped;
  std::thread stopper;
  // What state sync replicates: the stick tables and the data plane's connection table.
  struct Tables : repl::TableSource {
    balancer::StickTables* sticks = nullptr;
    balancer::Engine* engine = nullptr;
    void forEachStick(const std::function<void(const repl::StickEntry&)>& fn) const override {
      sticks->forEachStick(fn);
    }
    void forEachConn(const std::function<void(const repl::ConnEntry&)>& fn) const override {
      engine->forEachConn(fn);
    }
  } tables;
  // TLS: ticket keys (rotated here, shared with the peer) and each configuration's contexts.
  std::unique_ptr<TlsNode> tls;
  std::unique_ptr<StateSyncNode> statesync;
  std::unique_ptr<vrrp::Instance> vrrp;
  ~Services() {
    if (stopper.joinable()) stopper.join();
  }
};

namespace {

constexpr Duration kHousekeeping = std::chrono::seconds(1);
// A worker whose heartbeat (a 250 ms tick) has not moved in this many housekeeping rounds
// has a blocked loop.
constexpr int kStuckRounds = 2;

std::shared_ptr<const balancer::CookieCodecs> loadCookies(const config::Config& cfg,
                                                          std::span<const uint8_t> fallback) {
  auto c = balancer::CookieCodecs::load(cfg, fallback);
  if (!c.ok()) {
    HALB_LOG(Error, "balancer") << "sticky cookies: " << c.error();
    return nullptr;
  }
  return std::make_shared<const balancer::CookieCodecs>(std::move(c).value());
}

}  // namespace

Node::Node(config::ConfigPtr config, std::string configPath, std::string nodeName)
    : config_(std::move(config)),
      configPath_(std::move(configPath)),
      nodeName_(std::move(nodeName)),
      admin_(std::make_unique<AdminServer>(loop_)) {}

Node::~Node() {
  // Services hold uv handles: destroy them before the loop.
  services_.reset();
  signals_.clear();
  admin_.reset();
}

void Node::addMetrics(std::function<void(PromWriter&)> fn) { metrics_.push_back(std::move(fn)); }
void Node::addStatus(std::string key, std::function<void(JsonWriter&)> fn) {
  status_.emplace_back(std::move(key), std::move(fn));
}
void Node::onStop(std::function<void(std::function<void()>)> fn) { stopHooks_.push_back(std::move(fn)); }
void Node::onReload(std::function<void(const config::ConfigPtr&)> fn) { reloadHooks_.push_back(std::move(fn)); }

std::string Node::metricsText() {
  PromWriter w;
  w.family("halb_build_info", "gauge", "Build and node information.");
  w.sample("halb_build_info", {{"version", HALB_VERSION}, {"node", nodeName_}}, 1);
  w.family("halb_uptime_seconds", "gauge", "Seconds since this process started.");
  w.sample("halb_uptime_seconds", {}, std::chrono::duration<double>(SteadyClock::now() - startedAt_).count());
  w.family("halb_config_reloads_total", "counter", "Configuration reloads by result.");
  w.sample("halb_config_reloads_total", {{"result", "ok"}}, static_cast<double>(reloads_));
  w.sample("halb_config_reloads_total", {{"result", "rejected"}}, static_cast<double>(reloadFailures_));
  for (auto& fn : metrics_) fn(w);
  return w.take();
}

std::string Node::statusJson() {
  JsonWriter j;
  j.beginObject();
  j.key("node").value(nodeName_);
  j.key("version").value(HALB_VERSION);
  j.key("uptime_seconds").value(std::chrono::duration<double>(SteadyClock::now() - startedAt_).count());
  j.key("config").value(configPath_);
  for (auto& [key, fn] : status_) {
    j.key(key);
    fn(j);
  }
  j.endObject();
  return j.take();
}

bool Node::startDataPlane() {
  Services& s = *services_;
  const auto& cfg = *config_;
  s.cookieSecret.resize(32);
  randomBytes(s.cookieSecret);
  s.stickTables = std::shared_ptr<balancer::StickTables>(
      balancer::makeStickTables(balancer::stickTableSpecs(cfg)));
  const uint32_t workers = balancer::Engine::workerCount(cfg);

  balancer::PoolManager::Options po;
  po.workers = workers;
  po.publish = [this](balancer::PoolSnapshotPtr snap) {
    if (services_ && services_->engine) services_->engine->updatePools(std::move(snap));
  };
  s.pools = std::make_unique<balancer::PoolService>(loop_, std::move(po), config_,
                                                    static_cast<uint64_t>(::getpid()));

  balancer::EngineOptions eo;
  eo.config = config_;
  eo.pools = s.pools->manager().snapshot();
  eo.makeSelector = balancer::defaultSelectorFactory();
  eo.makeRouter = balancer::defaultRouterFactory();
  eo.stickTables = s.stickTables;
  eo.cookies = loadCookies(cfg, s.cookieSecret);
  eo.outcomeSink = [this](size_t w) { return &services_->pools->manager().reporter(w); };
  // Connection ids carry one node bit: the pair's nodes sort their names the same way.
  {
    std::string error;
    s.tls = TlsNode::start(*this,
                           [this](balancer::TlsContextsPtr t) {
                             if (services_ && services_->engine) services_->engine->updateTls(std::move(t));
                           },
                           error);
    if (!s.tls) {
      HALB_LOG(Error, "tls") << error;
      return false;
    }
    eo.tls = s.tls->contexts();
  }
  eo.nodeIndex = 0;
  for (const auto& peer : cfg.peers)
    if (peer.name < cfg.self.name) eo.nodeIndex = 1;
  auto engine = balancer::Engine::start(std::move(eo));
  if (!engine.ok()) {
    HALB_LOG(Error, "balancer") << engine.error();
    return false;
  }
  s.engine = std::move(engine).value();
  // A snapshot published between snapshot() above and the engine's start is not lost.
  s.engine->updatePools(s.pools->manager().snapshot());

  s.heartbeats.assign(s.engine->workerCount(), 0);
  s.stalledChecks.assign(s.engine->workerCount(), 0);
  s.housekeeping = std::make_unique<uv::Timer>(loop_);
  s.housekeeping->startRepeating(kHousekeeping, [this] {
    Services& sv = *services_;
    sv.stickTables->expire(loop_.now());
    for (size_t i = 0; i < sv.heartbeats.size(); ++i) {
      uint64_t hb = sv.engine->workerInfo(i).heartbeat;
      sv.stalledChecks[i] = hb == sv.heartbeats[i] ? sv.stalledChecks[i] + 1 : 0;
      sv.heartbeats[i] = hb;
      if (sv.stalledChecks[i] == kStuckRounds) {
        HALB_LOG(Error, "balancer") << "worker " << i << " looks stuck: its loop has not ticked for "
                                    << kStuckRounds << " s";
      }
    }
  });

  addMetrics([this](PromWriter& w) {
    if (!services_) return;
    services_->engine->writeMetrics(w);
    services_->pools->manager().writeMetrics(w, loop_.now());
  });
  addStatus("dataplane", [this](JsonWriter& j) {
    if (services_ && services_->engine) j.raw(services_->engine->statusJson());
    else j.raw("null");
  });
  addStatus("pools", [this](JsonWriter& j) {
    if (services_ && services_->pools) services_->pools->manager().writeStatus(j, loop_.now());
    else j.raw("null");
  });
  onReload([this](const config::ConfigPtr& next) {
    Services& sv = *services_;
    sv.stickTables->configure(balancer::stickTableSpecs(*next));
    sv.pools->applyConfig(next);  // publishes a snapshot with the new backends
    // Routes and traffic policies (split weights, mirrors, retries) after the pools, so a
    // route never names a backend the workers do not know yet.
    sv.engine->updateRoutes(next);
    if (auto c = loadCookies(*next, sv.cookieSecret)) sv.engine->updateCookies(std::move(c));
  });
  // Stop: drain the workers off the loop thread (stop() blocks up to timeouts.drain), then
  // let the next stop hook run.
  onStop([this](std::function<void()> done) {
    Services& sv = *services_;
    sv.housekeeping->stop();
    sv.engineStopped = std::make_unique<uv::Async>(loop_, [this, done] {
      if (services_->stopper.joinable()) services_->stopper.join();
      done();
    });
    const Duration drain = config_->timeouts.drain;
    sv.stopper = std::thread([&sv, drain] {
      sv.engine->stop(drain);
      sv.engineStopped->send();
    });
  });
  return true;
}

bool Node::startServices() {
  services_ = std::make_unique<Services>();
  admin_->handle("GET", "/metrics", [this](const AdminRequest&) {
    AdminResponse r = AdminResponse::text(200, metricsText());
    r.contentType = "text/plain; version=0.0.4; charset=utf-8";
    return r;
  });
  admin_->handle("GET", "/status", [this](const AdminRequest&) { return AdminResponse::json(200, statusJson()); });
  admin_->handle("GET", "/healthz", [this](const AdminRequest&) {
    return stopping_ ? AdminResponse::text(503, "stopping\n") : AdminResponse::text(200, "ok\n");
  });
  admin_->handle("POST", "/reload", [this](const AdminRequest&) {
    reload();
    return AdminResponse::text(202, "reload requested; see the log and /metrics\n");
  });

  // The data plane first: state sync replicates its tables and drains its queues.
  if (!startDataPlane()) return false;

  // State sync next: VRRP's hooks call into it. Its ports to VRRP look the instance up when
  // called, since VRRP starts after it.
  Services& sv = *services_;
  StateSyncPorts ports;
  sv.tables.sticks = sv.stickTables.get();
  sv.tables.engine = sv.engine.get();
  ports.source = &sv.tables;
  ports.sink = sv.stickTables.get();
  for (size_t i = 0; i < sv.engine->workerCount(); ++i) ports.queues.push_back(&sv.engine->changeQueue(i));
  ports.maxEpochSeen = [&sv] { return sv.stickTables->maxEpochSeen(); };
  ports.onPeerLost = [&sv](std::string_view) {
    if (sv.vrrp) sv.vrrp->onPeerLost();
  };
  ports.setSyncReady = [&sv](bool ready) {
    if (sv.vrrp) sv.vrrp->setSyncReady(ready);
  };
  ports.onTicketKeys = [&sv](std::vector<repl::TicketKey> keys) { sv.tls->onPeerKeys(std::move(keys)); };
  std::string error;
  sv.statesync = StateSyncNode::start(*this, std::move(ports), error);
  if (!error.empty()) {
    HALB_LOG(Error, "statesync") << error;
    return false;
  }
  // TLS session-ticket keys go to the peer, so resumption survives a failover.
  if (sv.statesync) sv.tls->attach(&sv.statesync->service());

  vrrp::Hooks hooks;
  hooks.onStateChange = [&sv](vrrp::State from, vrrp::State to) {
    HALB_LOG(Debug, "vrrp") << "role " << vrrp::toString(from) << " -> " << vrrp::toString(to);
    if (to == vrrp::State::Master && sv.statesync)
      sv.stickTables->setEpoch(sv.statesync->becameMaster().epoch);
    // A backup keeps listening (nothing reaches it); the role shows in /status.
    sv.engine->setRole(to == vrrp::State::Master ? balancer::Role::Master : balancer::Role::Backup);
  };
  if (!wireVrrp(*this, std::move(hooks), sv.vrrp, error)) {
    HALB_LOG(Error, "vrrp") << "cannot start: " << error;
    return false;
  }
  return true;
}

int Node::run() {
  startedAt_ = SteadyClock::now();
  const auto& cfg = *config_;
  log::configure(cfg.logging.level, cfg.logging.format);
  if (int rc = admin_->listen(cfg.admin.listen); rc != 0) {
    HALB_LOG(Error, "admin") << "cannot listen on " << cfg.admin.listen.toString() << ": " << uv::errorText(rc);
    return 1;
  }
  if (!startServices()) return 1;

  // A write to a closed socket is an error value, not a reason to die.
  ::signal(SIGPIPE, SIG_IGN);
  for (int sig : {SIGTERM, SIGINT}) {
    auto s = std::make_unique<uv::Signal>(loop_);
    s->start(sig, [this, sig] {
      if (stopping_) {
        HALB_LOG(Warn, "node") << "second signal " << sig << ": exiting without draining";
        std::_Exit(1);
      }
      stop();
    });
    signals_.push_back(std::move(s));
  }
  auto hup = std::make_unique<uv::Signal>(loop_);
  hup->start(SIGHUP, [this] { reload(); });
  signals_.push_back(std::move(hup));

  HALB_LOG(Info, "node") << "halb " << HALB_VERSION << " node " << nodeName_ << " running; admin on "
                         << admin_->local().toString();
  notifySystemd("READY=1\nSTATUS=running");
  loop_.run();
  HALB_LOG(Info, "node") << "stopped";
  return 0;
}

void Node::stop() {
  if (stopping_) return;
  stopping_ = true;
  HALB_LOG(Info, "node") << "stopping";
  notifySystemd("STOPPING=1");
  runStopHooks();
}

void Node::runStopHooks() {
  if (stopHooks_.empty()) {
    // Closing our handles lets uv_run return once nothing else is active.
    services_.reset();
    signals_.clear();
    admin_.reset();
    loop_.stop();
    return;
  }
  auto hook = std::move(stopHooks_.back());
  stopHooks_.pop_back();
  hook([this] { runStopHooks(); });
}

void Node::reload() {
  config::LoadOptions opt;
  opt.node = nodeName_;
  config::LoadResult res = config::loadConfigFile(configPath_, opt);
  for (const auto& w : res.warnings) HALB_LOG(Warn, "config") << w.toString();
  if (!res.ok()) {
    ++reloadFailures_;
    for (const auto& e : res.errors) HALB_LOG(Error, "config") << e.toString();
    HALB_LOG(Error, "config") << "reload rejected (" << res.errors.size()
                              << " errors); still running the previous configuration";
    return;
  }
  notifySystemd("RELOADING=1");
  config_ = res.config;
  log::configure(config_->logging.level, config_->logging.format);
  for (auto& fn : reloadHooks_) fn(config_);
  ++reloads_;
  HALB_LOG(Info, "config") << "reloaded " << configPath_;
  notifySystemd("READY=1\nSTATUS=running");
}

void Node::notifySystemd(const std::string& state) {
#ifdef HALB_HAVE_SYSTEMD
  sd_notify(0, state.c_str());
#else
  (void)state;
#endif
}

}  // namespace halb::app
