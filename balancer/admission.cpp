#include "balancer/admission.h"

#include <algorithm>

namespace halb::balancer {

std::optional<uint64_t> WaitQueue::popFront() {
  if (q_.empty()) return std::nullopt;
  uint64_t id = q_.front().id;
  q_.pop_front();
  return id;
}

bool WaitQueue::remove(uint64_t id) {
  auto it = std::find_if(q_.begin(), q_.end(), [&](const Waiter& w) { return w.id == id; });
  if (it == q_.end()) return false;
  q_.erase(it);
  return true;
}

std::vector<uint64_t> WaitQueue::expire(TimePoint now) {
  std::vector<uint64_t> out;
  // Deadlines are not ordered (pushFront, per-request timeouts): scan all; queues are short.
  for (auto it = q_.begin(); it != q_.end();) {
    if (it->deadline <= now) {
      out.push_back(it->id);
      it = q_.erase(it);
    } else {
      ++it;
    }
  }
  return out;
}

std::optional<TimePoint> WaitQueue::nextDeadline() const {
  if (q_.empty()) return std::nullopt;
  TimePoint t = TimePoint::max();
  for (const Waiter& w : q_) t = std::min(t, w.deadline);
  return t;
}

}  // namespace halb::balancer
