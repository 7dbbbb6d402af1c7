#include "balancer/pool_manager.h"

#include <algorithm>
#include <atomic>
#include <bit>
#include <cstdio>

#include "common/json.h"
#include "common/log.h"

namespace halb::balancer {
namespace {

// A slow-start ramp is published in about this many steps (each a snapshot rebuild).
constexpr int kRampSteps = 20;
constexpr Duration kMinRampStep = std::chrono::milliseconds(100);

std::string hexId(uint64_t id) {
  char buf[17];
  std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(id));
  return buf;
}

}  // namespace

struct PoolManager::ServerState {
  const config::Backend* backend = nullptr;
  const config::Server* server = nullptr;
  HealthTracker health = HealthTracker::alwaysUp();
  OutlierTracker outlier;
  AdminState admin = AdminState::Ready;
  std::optional<uint32_t> weightOverride;
  std::optional<TimePoint> rampSince;  // slow start in progress since
  bool wasServing = false;             // in the last snapshot: healthy and not in maintenance
  bool ejectedInSnapshot = false;
  uint32_t publishedWeight = 0;
  std::shared_ptr<ServerStats> stats = std::make_shared<ServerStats>();
  CheckResult lastCheck;
  uint64_t checksOk = 0, checksFailed = 0;

  std::string name() const { return backend->name + "/" + server->name; }
};

// Worker -> control thread: a bounded single-producer single-consumer ring of ejection
// requests. Only the failure that completes a streak of `consecutive_failures` is queued,
// so the ring sees a handful of events per failing server, never per request.
class PoolManager::Reporter final : public OutcomeSink {
 public:
  Reporter(size_t capacity, const std::function<void()>* wake)
      : slots_(std::bit_ceil(std::max<size_t>(capacity, 2))),
        mask_(slots_.size() - 1),
        wake_(wake) {}

  void report(const BackendView& backend, const ServerView& server, Outcome outcome) override {
    if (!server.stats) return;
    auto& streak = server.stats->consecutiveFailures;
    if (outcome == Outcome::Success) {
      // Load first: the common case writes nothing, so the cache line stays shared.
      if (streak.load(std::memory_order_relaxed) != 0) streak.store(0, std::memory_order_relaxed);
      return;
    }
    const uint32_t n = streak.fetch_add(1, std::memory_order_relaxed) + 1;
    const uint32_t threshold = backend.config ? backend.config->outlier.consecutiveFailures : 0;
    // At the threshold and every further `threshold` failures (in case the control thread
    // could not eject the first time: max_ejected_percent).
    if (threshold == 0 || n < threshold || (n - threshold) % threshold != 0) return;
    size_t tail = tail_.load(std::memory_order_relaxed);
    if (tail - head_.load(std::memory_order_acquire) >= slots_.size()) {
      dropped_.fetch_add(1, std::memory_order_relaxed);
      return;
    }
    slots_[tail & mask_] = {backend.id, server.id, outcome, n};
    tail_.store(tail + 1, std::memory_order_release);
    if (*wake_) (*wake_)();
  }

  bool pop(EjectRequest& out) {
    size_t head = head_.load(std::memory_order_relaxed);
    if (head == tail_.load(std::memory_order_acquire)) return false;
    out = slots_[head & mask_];
    head_.store(head + 1, std::memory_order_release);
    return true;
  }
  uint64_t dropped() const { return dropped_.load(std::memory_order_relaxed); }

 private:
  std::vector<EjectRequest> slots_;
  size_t mask_;
  const std::function<void()>* wake_;
  alignas(64) std::atomic<size_t> head_{0};
  alignas(64) std::atomic<size_t> tail_{0};
  std::atomic<uint64_t> dropped_{0};
};

PoolManager::PoolManager(Options options, config::ConfigPtr config, TimePoint now)
    : options_(std::move(options)) {
  for (size_t i = 0; i < std::max<size_t>(options_.workers, 1); ++i)
    reporters_.push_back(std::make_unique<Reporter>(options_.reportQueueSize, &options_.wake));
  applyConfig(std::move(config), now);
}

PoolManager::~PoolManager() = default;

OutcomeSink& PoolManager::reporter(size_t worker) {
  return *reporters_.at(worker);
}

PoolManager::ServerState* PoolManager::state(uint64_t id) {
  auto it = servers_.find(id);
  return it == servers_.end() ? nullptr : it->second.get();
}
const PoolManager::ServerState* PoolManager::state(uint64_t id) const {
  auto it = servers_.find(id);
  return it == servers_.end() ? nullptr : it->second.get();
}

void PoolManager::applyConfig(config::ConfigPtr config, TimePoint now) {
  const bool boot = config_ == nullptr;
  std::map<uint64_t, std::unique_ptr<ServerState>> next;
  for (const auto& b : config->backends) {
    const bool checked = b.health.type != config::HealthType::None;
    for (const auto& s : b.servers) {
      std::unique_ptr<ServerState> st;
      if (auto it = servers_.find(s.id); it != servers_.end()) {
        st = std::move(it->second);
        const bool wasChecked = st->backend->health.type != config::HealthType::None;
        if (!checked)
          st->health = HealthTracker::alwaysUp();
        else if (!wasChecked)
          st->health = HealthTracker(b.health.rise, b.health.fall, true);  // keeps serving
        else
          st->health.setThresholds(b.health.rise, b.health.fall);
      } else {
        st = std::make_unique<ServerState>();
        st->health =
            checked ? HealthTracker(b.health.rise, b.health.fall, boot) : HealthTracker::alwaysUp();
        st->wasServing = st->health.up();  // no slow start for what serves from the start
      }
      st->backend = &b;
      st->server = &s;
      next.emplace(s.id, std::move(st));
    }
  }
  servers_ = std::move(next);
  config_ = std::move(config);
  for (auto it = backendHealthy_.begin(); it != backendHealthy_.end();)
    it = config_->findBackend(it->first) ? std::next(it) : backendHealthy_.erase(it);
  rebuild(now);
}

void PoolManager::onCheckResult(uint64_t serverId, const CheckResult& result, TimePoint now) {
  ServerState* st = state(serverId);
  if (!st) return;
  st->lastCheck = result;
  ++(result.ok ? st->checksOk : st->checksFailed);
  const HealthStatus before = st->health.status();
  if (!st->health.onResult(result.ok)) return;
  const HealthStatus after = st->health.status();
  if (after == HealthStatus::Down)
    HALB_LOG(Warn, "health") << st->name() << " is down (" << result.detail << ")";
  else
    HALB_LOG(Info, "health") << st->name() << " is up"
                             << (before == HealthStatus::Unknown ? " (first check)" : "");
  rebuild(now);
}

bool PoolManager::setAdmin(uint64_t serverId, AdminState s, TimePoint now) {
  ServerState* st = state(serverId);
  if (!st) return false;
  if (st->admin != s) {
    HALB_LOG(Info, "pool") << st->name() << " admin state " << toString(st->admin) << " -> "
                           << toString(s);
    st->admin = s;
    rebuild(now);
  }
  return true;
}

bool PoolManager::setWeight(uint64_t serverId, std::optional<uint32_t> weight, TimePoint now) {
  ServerState* st = state(serverId);
  if (!st || (weight && *weight > 256)) return false;
  if (st->weightOverride != weight) {
    st->weightOverride = weight;
    rebuild(now);
  }
  return true;
}

std::optional<uint64_t> PoolManager::findServer(std::string_view backend,
                                                std::string_view server) const {
  const config::Backend* b = config_->findBackend(backend);
  if (!b) return std::nullopt;
  for (const auto& s : b->servers)
    if (s.name == server) return s.id;
  return std::nullopt;
}

void PoolManager::processReports(TimePoint now) {
  bool changed = false;
  EjectRequest r;
  for (auto& rep : reporters_) {
    while (rep->pop(r)) {
      ServerState* st = state(r.serverId);
      if (!st || st->backend->id != r.backendId || st->outlier.ejected(now)) continue;
      const auto& cfg = st->backend->outlier;
      if (cfg.consecutiveFailures == 0) continue;
      size_t ejectedNow = 0;
      for (const auto& s : st->backend->servers)
        if (const ServerState* o = state(s.id); o && o->outlier.ejected(now)) ++ejectedNow;
      if (ejectedNow >= maxEjected(st->backend->servers.size(), cfg.maxEjectedPercent)) {
        ++ejectionsRefused_;
        HALB_LOG_EVERY(Warn, "outlier", std::chrono::seconds(10))
            << st->name() << ": " << r.streak << " failures in a row, not ejected: " << ejectedNow
            << " of " << st->backend->servers.size() << " servers already are (max_ejected_percent "
            << cfg.maxEjectedPercent << ")";
        continue;
      }
      Duration d = st->outlier.eject(now, cfg);
      st->stats->consecutiveFailures.store(0, std::memory_order_relaxed);
      HALB_LOG(Warn, "outlier") << st->name() << " ejected for " << toMillis(d) << " ms after "
                                << r.streak << " " << toString(r.outcome) << " in a row";
      changed = true;
    }
  }
  if (changed) rebuild(now);
}

void PoolManager::poll(TimePoint now) {
  processReports(now);
  bool changed = nextRamp_ && now >= *nextRamp_;
  for (const auto& [id, st] : servers_)
    if (st->ejectedInSnapshot != st->outlier.ejected(now)) changed = true;
  if (changed) rebuild(now);
}

std::optional<TimePoint> PoolManager::nextDeadline() const {
  std::optional<TimePoint> t = nextRamp_;
  for (const auto& [id, st] : servers_)
    if (st->ejectedInSnapshot && (!t || st->outlier.ejectedUntil() < *t))
      t = st->outlier.ejectedUntil();
  return t;
}

void PoolManager::rebuild(TimePoint now) {
  auto snap = std::make_shared<PoolSnapshot>();
  snap->config = config_;
  snap->generation = ++generation_;
  nextRamp_.reset();
  snap->backends.reserve(config_->backends.size());
  for (const auto& b : config_->backends) {
    BackendView v;
    v.config = &b;
    v.id = b.id;
    v.servers.reserve(b.servers.size());
    bool anyHealthy = false;
    for (const auto& s : b.servers) {
      ServerState& st = *servers_.at(s.id);
      const bool ejected = st.outlier.ejected(now);
      const bool healthy = st.health.up() && !ejected;
      const bool serving = healthy && st.admin != AdminState::Maint;
      if (serving && !st.wasServing && b.slowStart > Duration::zero()) st.rampSince = now;
      if (!serving) st.rampSince.reset();  // a ramp restarts when the server is back
      st.wasServing = serving;
      st.ejectedInSnapshot = ejected;
      uint32_t weight = st.weightOverride.value_or(s.weight);
      if (st.rampSince) {
        if (now >= *st.rampSince + b.slowStart) {
          st.rampSince.reset();
        } else {
          weight = slowStartWeight(weight, *st.rampSince, now, b.slowStart);
          TimePoint step = now + std::max<Duration>(b.slowStart / kRampSteps, kMinRampStep);
          step = std::min(step, *st.rampSince + b.slowStart);
          if (!nextRamp_ || step < *nextRamp_) nextRamp_ = step;
        }
      }
      st.publishedWeight = weight;
      ServerView sv;
      sv.config = &s;
      sv.id = s.id;
      sv.address = s.address;
      sv.weight = weight;
      sv.healthy = healthy;
      sv.admin = st.admin;
      sv.stats = st.stats;
      v.servers.push_back(std::move(sv));
      anyHealthy |= healthy;
    }
    buildAlgorithmState(v);
    auto [it, fresh] = backendHealthy_.try_emplace(b.name, anyHealthy);
    if (fresh || it->second != anyHealthy) {
      if (!anyHealthy) {
        HALB_LOG(Warn, "pool") << "backend " << b.name << " has no healthy server";
      } else if (!fresh) {
        HALB_LOG(Info, "pool") << "backend " << b.name << " has a healthy server again";
      }
      it->second = anyHealthy;
      if (options_.onBackendHealth) options_.onBackendHealth(b.name, anyHealthy);
    }
    snap->backends.push_back(std::move(v));
  }
  snapshot_ = std::move(snap);
  if (options_.publish) options_.publish(snapshot_);
}

bool PoolManager::backendHasHealthyServer(std::string_view backend) const {
  auto it = backendHealthy_.find(backend);
  return it != backendHealthy_.end() && it->second;
}

void PoolManager::writeMetrics(PromWriter& w, TimePoint now) const {
  struct Family {
    const char* name;
    const char* type;
    const char* help;
  };
  auto each = [&](const Family& f, auto value) {
    w.family(f.name, f.type, f.help);
    for (const auto& b : config_->backends)
      for (const auto& s : b.servers)
        w.sample(f.name, {{"backend", b.name}, {"server", s.name}}, value(*servers_.at(s.id)));
  };
  auto rel = [](const std::atomic<uint64_t>& a) {
    return static_cast<double>(a.load(std::memory_order_relaxed));
  };
  each({"halb_server_healthy", "gauge", "1 when active checks pass and the server is not ejected"},
       [&](const ServerState& st) {
         return st.health.up() && !st.outlier.ejected(now) ? 1.0 : 0.0;
       });
  each({"halb_server_check_up", "gauge", "Active health: 1 up, 0 down, -1 not checked yet"},
       [](const ServerState& st) {
         return st.health.status() == HealthStatus::Up     ? 1.0
                : st.health.status() == HealthStatus::Down ? 0.0
                                                           : -1.0;
       });
  w.family("halb_server_admin_state", "gauge",
           "Administrative state (one-hot: ready, drain, maint)");
  for (const auto& b : config_->backends)
    for (const auto& s : b.servers)
      for (AdminState a : {AdminState::Ready, AdminState::Drain, AdminState::Maint})
        w.sample("halb_server_admin_state",
                 {{"backend", b.name}, {"server", s.name}, {"state", toString(a)}},
                 servers_.at(s.id)->admin == a ? 1 : 0);
  each(
      {"halb_server_weight", "gauge", "Effective weight (runtime override and slow start applied)"},
      [](const ServerState& st) { return static_cast<double>(st.publishedWeight); });
  each({"halb_server_ejected", "gauge", "1 while ejected by passive outlier detection"},
       [&](const ServerState& st) { return st.outlier.ejected(now) ? 1.0 : 0.0; });
  each({"halb_server_ejections_total", "counter", "Outlier ejections"},
       [](const ServerState& st) { return static_cast<double>(st.outlier.ejections()); });
  w.family("halb_server_checks_total", "counter", "Active health checks by result");
  for (const auto& b : config_->backends)
    for (const auto& s : b.servers) {
      const ServerState& st = *servers_.at(s.id);
      w.sample("halb_server_checks_total",
               {{"backend", b.name}, {"server", s.name}, {"result", "ok"}},
               static_cast<double>(st.checksOk));
      w.sample("halb_server_checks_total",
               {{"backend", b.name}, {"server", s.name}, {"result", "failed"}},
               static_cast<double>(st.checksFailed));
    }
  each({"halb_server_active", "gauge", "Connections (tcp) or requests (http) in flight"},
       [](const ServerState& st) {
         return static_cast<double>(st.stats->active.load(std::memory_order_relaxed));
       });
  each({"halb_server_connections_total", "counter", "Connections opened to the server"},
       [&](const ServerState& st) { return rel(st.stats->connections); });
  each({"halb_server_requests_total", "counter", "HTTP requests sent to the server"},
       [&](const ServerState& st) { return rel(st.stats->requests); });
  each({"halb_server_connect_failures_total", "counter", "Failed connection attempts"},
       [&](const ServerState& st) { return rel(st.stats->connectFailures); });
  each({"halb_server_responses_5xx_total", "counter", "5xx responses from the server"},
       [&](const ServerState& st) { return rel(st.stats->responses5xx); });
  each({"halb_server_bytes_to_server_total", "counter", "Bytes sent to the server"},
       [&](const ServerState& st) { return rel(st.stats->bytesToServer); });
  each({"halb_server_bytes_from_server_total", "counter", "Bytes received from the server"},
       [&](const ServerState& st) { return rel(st.stats->bytesFromServer); });

  w.family("halb_backend_healthy_servers", "gauge", "Servers that are healthy");
  for (const auto& bv : snapshot_->backends) {
    size_t n = 0;
    for (const auto& s : bv.servers) n += s.healthy;
    w.sample("halb_backend_healthy_servers", {{"backend", bv.config->name}},
             static_cast<double>(n));
  }
  w.family("halb_backend_usable_servers", "gauge",
           "Servers that take new users (healthy, ready, weight > 0)");
  for (const auto& bv : snapshot_->backends)
    w.sample("halb_backend_usable_servers", {{"backend", bv.config->name}},
             static_cast<double>(bv.usableCount()));
  w.family("halb_backend_no_healthy_server", "gauge",
           "1 when the backend has no healthy server (requests get 503)");
  for (const auto& b : config_->backends)
    w.sample("halb_backend_no_healthy_server", {{"backend", b.name}},
             backendHasHealthyServer(b.name) ? 0 : 1);
  w.family("halb_outlier_ejections_refused_total", "counter",
           "Ejections not done because max_ejected_percent of the backend was already ejected");
  w.sample("halb_outlier_ejections_refused_total", {}, static_cast<double>(ejectionsRefused_));
  uint64_t dropped = 0;
  for (const auto& r : reporters_) dropped += r->dropped();
  w.family("halb_outlier_reports_dropped_total", "counter",
           "Ejection requests lost to a full worker queue");
  w.sample("halb_outlier_reports_dropped_total", {}, static_cast<double>(dropped));
}

std::string PoolManager::statusJson(TimePoint now) const {
  JsonWriter j;
  writeStatus(j, now);
  return j.take();
}

void PoolManager::writeStatus(JsonWriter& j, TimePoint now) const {
  j.beginObject();
  j.key("generation").value(generation_);
  j.key("backends").beginArray();
  for (const auto& bv : snapshot_->backends) {
    const config::Backend& b = *bv.config;
    j.beginObject();
    j.key("name").value(b.name);
    j.key("algorithm").value(config::toString(b.algorithm));
    j.key("has_healthy_server").value(backendHasHealthyServer(b.name));
    j.key("usable_servers").value(static_cast<uint64_t>(bv.usableCount()));
    j.key("servers").beginArray();
    for (const auto& sv : bv.servers) {
      const ServerState& st = *servers_.at(sv.id);
      j.beginObject();
      j.key("name").value(sv.config->name);
      j.key("id").value(hexId(sv.id));
      j.key("address").value(sv.address.toString());
      j.key("admin").value(toString(st.admin));
      j.key("health").value(toString(st.health.status()));
      j.key("healthy").value(sv.healthy);
      j.key("accepts_new").value(sv.acceptsNew());
      j.key("weight").value(sv.weight);
      j.key("configured_weight").value(sv.config->weight);
      if (st.weightOverride) j.key("weight_override").value(*st.weightOverride);
      if (st.rampSince)
        j.key("slow_start_ms_left")
            .value(std::max<int64_t>(0, toMillis(*st.rampSince + b.slowStart - now)));
      const bool ejected = st.outlier.ejected(now);
      j.key("ejected").value(ejected);
      if (ejected) j.key("ejected_ms_left").value(toMillis(st.outlier.ejectedUntil() - now));
      j.key("ejections").value(st.outlier.ejections());
      j.key("active").value(st.stats->active.load(std::memory_order_relaxed));
      j.key("consecutive_failures")
          .value(st.stats->consecutiveFailures.load(std::memory_order_relaxed));
      if (st.checksOk + st.checksFailed > 0) {
        j.key("last_check").beginObject();
        j.key("ok").value(st.lastCheck.ok);
        j.key("detail").value(st.lastCheck.detail);
        j.key("latency_ms").value(toMillis(st.lastCheck.latency));
        j.endObject();
      }
      j.endObject();
    }
    j.endArray();
    j.endObject();
  }
  j.endArray();
  j.endObject();
}

}  // namespace halb::balancer
