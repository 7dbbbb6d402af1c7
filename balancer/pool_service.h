#pragma once
// Runs the pools on the control loop: a PoolManager woken by workers (uv_async) and by its
// own deadlines (ejection ends, slow-start steps), fed by a HealthChecker. The app creates
// one at start, calls applyConfig on reload, hands manager().reporter(i) to worker i and
// posts every published snapshot to the workers.
#include <memory>

#include "balancer/health_checker.h"
#include "balancer/pool_manager.h"
#include "common/uv.h"

namespace halb::balancer {

class PoolService {
 public:
  // options.wake is provided here (an uv::Async); the other callbacks are the caller's.
  PoolService(uv::Loop& loop, PoolManager::Options options, config::ConfigPtr config,
              uint64_t seed);
  ~PoolService();
  PoolService(const PoolService&) = delete;
  PoolService& operator=(const PoolService&) = delete;

  void applyConfig(config::ConfigPtr config);
  // For admin calls (setAdmin, setWeight), status and metrics; control thread only.
  PoolManager& manager() { return *manager_; }

 private:
  void arm();

  uv::Loop& loop_;
  std::function<void(PoolSnapshotPtr)> publish_;
  uv::Async wake_;
  uv::Timer timer_;
  std::unique_ptr<PoolManager> manager_;
  HealthChecker checker_;
};

}  // namespace halb::balancer
