#include "balancer/pool_service.h"

namespace halb::balancer {

PoolService::PoolService(uv::Loop& loop, PoolManager::Options options, config::ConfigPtr config,
                         uint64_t seed)
    : loop_(loop),
      publish_(std::move(options.publish)),
      wake_(loop,
            [this] {
              manager_->poll(loop_.now());
              arm();
            }),
      timer_(loop),
      checker_(
          loop,
          [this](uint64_t id, const CheckResult& r) {
            manager_->onCheckResult(id, r, loop_.now());
          },
          seed) {
  // Every rebuild may move the next deadline, so re-arm after each publish.
  options.publish = [this](PoolSnapshotPtr s) {
    if (publish_) publish_(std::move(s));
    if (manager_) arm();
  };
  options.wake = [this] { wake_.send(); };
  manager_ = std::make_unique<PoolManager>(std::move(options), config, loop.now());
  checker_.configure(*config);
  arm();
}

PoolService::~PoolService() = default;

void PoolService::applyConfig(config::ConfigPtr config) {
  manager_->applyConfig(config, loop_.now());
  checker_.configure(*config);
  arm();
}

void PoolService::arm() {
  auto t = manager_->nextDeadline();
  if (!t) {
    timer_.stop();
    return;
  }
  timer_.start(*t - loop_.now(), [this] {
    manager_->poll(loop_.now());
    arm();
  });
}

}  // namespace halb::balancer
