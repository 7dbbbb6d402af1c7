#pragma once
// Retries, pure: whether a failed attempt may be tried again (policy and HTTP semantics) and
// whether the backend's retry budget allows it, so retries cannot multiply the load on a
// backend that is already failing (the "retry storm" of a naive retry-on-5xx).
#include <array>
#include <cstdint>
#include <string_view>

#include "common/time.h"
#include "config/config.h"

namespace halb::balancer {

// RFC 9110 §9.2.2: GET, HEAD, OPTIONS, TRACE, PUT, DELETE. Anything else (POST, PATCH,
// CONNECT, WebDAV methods...) is never sent twice.
bool isIdempotent(std::string_view method);

enum class AttemptFailure : uint8_t {
  ConnectFailure,  // refused, unreachable, connect timeout: nothing was sent
  Reset,           // the server closed or reset before a complete response head
  Timeout,         // no response head within server_response
  Status,          // a response whose status the policy lists
};
const char* toString(AttemptFailure f);

struct AttemptInfo {
  AttemptFailure failure = AttemptFailure::ConnectFailure;
  int status = 0;  // for Status
  std::string_view method;
  bool requestHasBody = false;  // bodies are streamed, never kept: such a request is not resent
  uint32_t retriesSoFar = 0;    // retries already made for this request
};

// Whether the policy allows another attempt (the budget is asked separately). A connect
// failure may be retried for any method, since no byte of the request left; once anything
// was sent, only idempotent requests without a body are.
bool retryAllowed(const config::RetryPolicy& policy, const AttemptInfo& a);

// Retries may add at most `percent`% of the backend's requests over the last `window`, plus
// `minRetries` per window (so a quiet backend can still retry a little). The window slides
// in ten steps. One budget per backend and worker: the share holds per worker and so for the
// node (each worker's minimum is minRetries / workers, rounded up).
class RetryBudget {
 public:
  explicit RetryBudget(const config::RetryBudget& cfg, uint32_t workers = 1);
  void onRequest(TimePoint now);  // a first attempt (not a retry)
  // Takes one retry from the budget if there is one.
  bool tryRetry(TimePoint now);

  uint64_t requestsInWindow(TimePoint now);
  uint64_t retriesInWindow(TimePoint now);
  uint64_t denied() const { return denied_; }

 private:
  static constexpr size_t kBuckets = 10;
  struct Bucket {
    int64_t epoch = -1;  // which step of time this bucket counts
    uint64_t requests = 0;
    uint64_t retries = 0;
  };
  Bucket& current(TimePoint now);
  void sum(TimePoint now, uint64_t& requests, uint64_t& retries);

  Duration step_;
  uint32_t percent_;
  uint64_t minRetries_;
  std::array<Bucket, kBuckets> buckets_{};
  uint64_t denied_ = 0;
};

}  // namespace halb::balancer
