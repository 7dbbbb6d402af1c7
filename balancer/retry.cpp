#include "balancer/retry.h"

#include <algorithm>

namespace halb::balancer {

bool isIdempotent(std::string_view m) {
  return m == "GET" || m == "HEAD" || m == "OPTIONS" || m == "TRACE" || m == "PUT" || m == "DELETE";
}

const char* toString(AttemptFailure f) {
  switch (f) {
    case AttemptFailure::ConnectFailure:
      return "connect_failure";
    case AttemptFailure::Reset:
      return "reset";
    case AttemptFailure::Timeout:
      return "timeout";
    case AttemptFailure::Status:
      return "status";
  }
  return "?";
}

bool retryAllowed(const config::RetryPolicy& p, const AttemptInfo& a) {
  if (a.retriesSoFar >= p.attempts) return false;
  if (a.failure == AttemptFailure::ConnectFailure) return p.onConnectFailure;
  // The request went out: the server may have acted on it.
  if (!isIdempotent(a.method) || a.requestHasBody) return false;
  switch (a.failure) {
    case AttemptFailure::Reset:
      return p.onReset;
    case AttemptFailure::Timeout:
      return p.onTimeout;
    case AttemptFailure::Status:
      return std::binary_search(p.statuses.begin(), p.statuses.end(),
                                static_cast<uint16_t>(a.status));
    case AttemptFailure::ConnectFailure:
      break;
  }
  return false;
}

RetryBudget::RetryBudget(const config::RetryBudget& cfg, uint32_t workers)
    : step_(std::max<Duration>(cfg.window / static_cast<int64_t>(kBuckets), Duration(1))),
      percent_(cfg.percent),
      minRetries_((cfg.minRetries + std::max(workers, 1u) - 1) / std::max(workers, 1u)) {}

RetryBudget::Bucket& RetryBudget::current(TimePoint now) {
  int64_t epoch = now.time_since_epoch() / step_;
  Bucket& b = buckets_[static_cast<size_t>(epoch) % kBuckets];
  if (b.epoch != epoch) b = Bucket{epoch, 0, 0};
  return b;
}

void RetryBudget::sum(TimePoint now, uint64_t& requests, uint64_t& retries) {
  int64_t epoch = now.time_since_epoch() / step_;
  requests = retries = 0;
  for (const Bucket& b : buckets_) {
    if (b.epoch < 0 || epoch - b.epoch >= static_cast<int64_t>(kBuckets)) continue;
    requests += b.requests;
    retries += b.retries;
  }
}

void RetryBudget::onRequest(TimePoint now) {
  ++current(now).requests;
}

bool RetryBudget::tryRetry(TimePoint now) {
  uint64_t requests = 0, retries = 0;
  sum(now, requests, retries);
  // retries + 1 <= percent% of requests + minRetries, in integers.
  if ((retries + 1) * 100 > requests * percent_ + minRetries_ * 100) {
    ++denied_;
    return false;
  }
  ++current(now).retries;
  return true;
}

uint64_t RetryBudget::requestsInWindow(TimePoint now) {
  uint64_t q = 0, r = 0;
  sum(now, q, r);
  return q;
}

uint64_t RetryBudget::retriesInWindow(TimePoint now) {
  uint64_t q = 0, r = 0;
  sum(now, q, r);
  return r;
}

}  // namespace halb::balancer
