#pragma once
// The control-thread side of the pools: owns every server's health, outlier, admin and
// slow-start state, turns them with the configuration into immutable PoolSnapshots, and
// publishes each new snapshot through a callback (the app posts it to every worker).
//
// Pure: no loop, no clock. The app (or PoolService, pool_service.h) calls poll(now) when
// woken and at nextDeadline(), and feeds check results in. Every method is for the control
// thread, except reporter(i).report(), which worker i calls.
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "balancer/health.h"
#include "balancer/pool.h"
#include "common/json.h"
#include "common/prom.h"
#include "common/time.h"
#include "config/config.h"

namespace halb::balancer {

class PoolManager {
 public:
  struct Options {
    size_t workers = 1;             // one OutcomeSink per worker
    size_t reportQueueSize = 1024;  // per worker; on overflow an ejection request is lost
    // Receives every new snapshot (control thread).
    std::function<void(PoolSnapshotPtr)> publish;
    // Called from a worker thread after it queued an ejection request: must be thread-safe
    // and cheap (uv_async_send). The control thread then calls poll().
    std::function<void()> wake;
    // A backend gained or lost its last healthy server (VRRP tracking; control thread).
    std::function<void(const std::string& backend, bool hasHealthyServer)> onBackendHealth;
  };

  PoolManager(Options options, config::ConfigPtr config, TimePoint now);
  ~PoolManager();
  PoolManager(const PoolManager&) = delete;
  PoolManager& operator=(const PoolManager&) = delete;

  // Reload. Servers that stay (same id, i.e. same "backend/server" name) keep their health,
  // ejection, admin state, runtime weight and counters; new servers start Unknown and must
  // pass one check; removed servers disappear from the next snapshot.
  void applyConfig(config::ConfigPtr config, TimePoint now);

  void onCheckResult(uint64_t serverId, const CheckResult& result, TimePoint now);

  // Runtime administration (admin API). False when the server is unknown.
  bool setAdmin(uint64_t serverId, AdminState state, TimePoint now);
  // Overrides the configured weight (0..256); nullopt restores it.
  bool setWeight(uint64_t serverId, std::optional<uint32_t> weight, TimePoint now);
  std::optional<uint64_t> findServer(std::string_view backend, std::string_view server) const;

  // Worker `i`'s outcome port; the reference stays valid for the manager's lifetime.
  OutcomeSink& reporter(size_t worker);

  // Drains ejection requests, ends ejections, steps slow-start ramps; publishes a snapshot
  // when anything changed.
  void poll(TimePoint now);
  // When poll() must run next even if nothing wakes it (ejection end, ramp step).
  std::optional<TimePoint> nextDeadline() const;

  PoolSnapshotPtr snapshot() const { return snapshot_; }
  const config::ConfigPtr& config() const { return config_; }
  // At least one server that is healthy (checks up, not ejected), whatever its admin state.
  bool backendHasHealthyServer(std::string_view backend) const;

  // Prometheus families halb_server_* and halb_backend_* (see docs).
  void writeMetrics(PromWriter& w, TimePoint now) const;
  // {"generation":..,"backends":[{"name":..,"servers":[...]}]}
  std::string statusJson(TimePoint now) const;
  // The same object, written into a larger document (the app's /status).
  void writeStatus(JsonWriter& json, TimePoint now) const;

 private:
  struct ServerState;
  class Reporter;
  struct EjectRequest {
    uint64_t backendId;
    uint64_t serverId;
    Outcome outcome;
    uint32_t streak;
  };

  void rebuild(TimePoint now);
  void processReports(TimePoint now);
  ServerState* state(uint64_t serverId);
  const ServerState* state(uint64_t serverId) const;

  Options options_;
  config::ConfigPtr config_;
  std::map<uint64_t, std::unique_ptr<ServerState>> servers_;  // by server id
  std::vector<std::unique_ptr<Reporter>> reporters_;
  std::map<std::string, bool, std::less<>> backendHealthy_;
  PoolSnapshotPtr snapshot_;
  uint64_t generation_ = 0;
  std::optional<TimePoint> nextRamp_;
  uint64_t ejectionsRefused_ = 0;  // over max_ejected_percent
};

}  // namespace halb::balancer
