#pragma once
// The data-plane engine: N worker threads, each with its own event loop, its own
// SO_REUSEPORT listeners for every frontend bind address, and its own connections, so the
// per-request path takes no lock. This header is the whole surface app/ sees; Boost.Asio
// stays behind it (pimpl).
//
// Threads: every method here is called from the control thread. Snapshots (pools, role) are
// posted to the workers; per-worker ChangeQueues carry connection-table and stick-table
// changes back, and the control thread drains them.
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "balancer/pool.h"
#include "balancer/router.h"
#include "balancer/stick_table.h"
#include "balancer/sticky.h"
#include "balancer/tls.h"
#include "common/net.h"
#include "common/prom.h"
#include "common/replication.h"
#include "common/result.h"
#include "common/time.h"
#include "config/config.h"

namespace halb::balancer {

enum class Role : uint8_t { Master, Backup };
const char* toString(Role r);

// Builds a worker's balancing state for one backend (balancer::makeSelector in production).
using SelectorFactory =
    std::function<std::unique_ptr<Selector>(config::Algorithm algorithm, uint64_t seed)>;
// Routes one request of an http frontend: the index of the matching route in
// frontend.routes, or -1 (the frontend's default backend, if any).
using RouteFn = std::function<int(const RequestView&)>;
// Builds the route function of an http frontend once per configuration.
using RouterFactory = std::function<RouteFn(const config::Frontend&)>;

// The production factories. Inline so that only callers that use them link the pure
// balancing code (tests of the data plane bring their own).
inline SelectorFactory defaultSelectorFactory() {
  return [](config::Algorithm a, uint64_t seed) { return makeSelector(a, seed); };
}
inline RouterFactory defaultRouterFactory() {
  return [](const config::Frontend& f) -> RouteFn {
    auto router = std::make_shared<const Router>(f);
    return [router](const RequestView& r) { return router->matchIndex(r); };
  };
}

struct EngineOptions {
  config::ConfigPtr config;      // frontends, timeouts, limits, workers
  PoolSnapshotPtr pools;         // first snapshot; later ones through updatePools()
  SelectorFactory makeSelector;  // required
  RouterFactory makeRouter;      // null: every request goes to the frontend's default backend
  std::shared_ptr<StickTables> stickTables;     // null: source/app_cookie/header stickiness off
  std::shared_ptr<const CookieCodecs> cookies;  // null: cookie stickiness off
  // Worker i's passive-outcome port (PoolManager::reporter(i)); null: outcomes not reported.
  // Called once per worker at start; the sink must outlive the engine.
  std::function<OutcomeSink*(size_t worker)> outcomeSink;
  uint32_t nodeIndex = 0;  // goes into connection ids (bit 63) so two nodes never clash
  Role role = Role::Master;
  // TLS contexts of this configuration (buildTlsContexts); null = no TLS anywhere. A frontend
  // or backend with `tls:` but no context here refuses its connections.
  TlsContextsPtr tls;
};

// One worker's view for the control thread.
struct WorkerInfo {
  uint64_t heartbeat = 0;  // grows every tick while the worker's loop runs
  uint64_t activeConnections = 0;
  uint64_t requests = 0;
};

class Engine {
 public:
  // Binds every listener (synchronously, so bind errors are reported here) and starts the
  // workers. Binding uses SO_REUSEPORT and IP_FREEBIND/IPV6_FREEBIND so a backup can listen
  // on a VIP it does not hold yet.
  static Result<std::unique_ptr<Engine>> start(EngineOptions options);
  // The number of workers a configuration gets (`workers: 0` = one per core), for sizing
  // what is per worker outside the engine (PoolManager reporters) before start().
  static uint32_t workerCount(const config::Config& config);
  ~Engine();  // stop(0) if still running
  Engine(const Engine&) = delete;
  Engine& operator=(const Engine&) = delete;

  size_t workerCount() const;

  // Posts a new snapshot to every worker; connections already established keep their server.
  void updatePools(PoolSnapshotPtr pools);
  // New cookie codecs (reload with new keys); posted like the pools.
  void updateCookies(std::shared_ptr<const CookieCodecs> cookies);
  // New TLS contexts (reload re-read the certificates): new handshakes use them, established
  // connections keep theirs.
  void updateTls(TlsContextsPtr tls);
  // Reload: the routes and traffic policies (splits, pins, mirrors, retries, route timeouts)
  // of `config`'s frontends, matched by name, replace the running ones for new requests.
  // Listeners, modes and the other frontend settings stay as they started.
  void updateRoutes(config::ConfigPtr config);
  // A backup keeps listening (no traffic reaches it anyway) so takeover needs no bind.
  void setRole(Role role);
  Role role() const;

  // Graceful stop: listeners close at once, idle keep-alive connections close, busy ones
  // finish their current request (http) or transfer (tcp) until `drain` has passed; then the
  // rest are cut. Blocks until every worker thread has exited.
  void stop(Duration drain);

  // Per-worker change queues (connection table, stick tables) for the control thread.
  repl::ChangeQueue& changeQueue(size_t worker);
  // Stuck-worker detection: the control thread compares heartbeats between two looks.
  WorkerInfo workerInfo(size_t worker) const;

  // Every published connection (open longer than the sync threshold), from all workers.
  void forEachConn(const std::function<void(const repl::ConnEntry&)>& fn) const;

  // The addresses a frontend actually listens on (port 0 in the config resolves here).
  std::vector<SocketAddress> listenAddresses(const std::string& frontend) const;

  // Prometheus families (summed over workers, with per-worker series where useful).
  void writeMetrics(PromWriter& w) const;
  // JSON object for /status: {"role":..,"workers":[..],"connections":..,...}.
  std::string statusJson() const;

  struct Impl;

 private:
  explicit Engine(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace halb::balancer
