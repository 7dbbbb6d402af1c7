#include "app/node.h"

#include <signal.h>
#ifdef HALB_HAVE_SYSTEMD
#include <systemd/sd-daemon.h>
#endif

#include "app/admin.h"
#include "common/log.h"
#include "config/loader.h"

#ifndef HALB_VERSION
#define HALB_VERSION "unknown"
#endif

namespace halb::app {

// The services this node runs; each is null when the configuration does not ask for it.
// Wiring code for each service lives in startServices().
struct Node::Services {};

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

void Node::startServices() {
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
}

int Node::run() {
  startedAt_ = SteadyClock::now();
  const auto& cfg = *config_;
  log::configure(cfg.logging.level, cfg.logging.format);
  if (int rc = admin_->listen(cfg.admin.listen); rc != 0) {
    HALB_LOG(Error, "admin") << "cannot listen on " << cfg.admin.listen.toString() << ": " << uv::errorText(rc);
    return 1;
  }
  startServices();

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
