#pragma once
// Connection limits per server (`max_connections`) and the bounded wait for a free slot
// (`queue`), pure: the counters are shared by all workers (atomics, no locks), the waiters are
// per worker (a FIFO with deadlines, driven with `now`). The data plane wakes waiters when a
// slot frees (on its own worker directly, on other workers by posting to them).
//
// Admission of one request (http) or connection (tcp):
//   1. pick a server; if its SlotCounter is at the limit, exclude it and pick again;
//   2. no server has room: take a place in the backend's queue (SlotCounter of size
//      queue.size, so the bound holds across workers) or get 503 at once when it is full;
//   3. a waiter is woken when a slot of the backend frees, and tries 1 again; it keeps its
//      place at the head if it loses the race; at its deadline (queue.timeout) it gets 503.
#include <atomic>
#include <cstdint>
#include <deque>
#include <optional>
#include <vector>

#include "common/time.h"

namespace halb::balancer {

// A count that never exceeds its limit, whatever the threads racing on it do. Sequentially
// consistent on purpose: a waiter takes a queue place and then looks at the slots, a releaser
// frees a slot and then looks at the queue; with anything weaker both could miss the other
// (a lost wake-up). On x86 the read-modify-writes are locked instructions either way.
class SlotCounter {
 public:
  // Takes a slot if fewer than `limit` are taken; limit 0 = unlimited.
  bool tryAcquire(uint32_t limit) {
    uint32_t cur = n_.load();
    do {
      if (limit != 0 && cur >= limit) return false;
    } while (!n_.compare_exchange_weak(cur, cur + 1));
    return true;
  }
  void release() { n_.fetch_sub(1); }
  uint32_t value() const { return n_.load(); }

 private:
  std::atomic<uint32_t> n_{0};
};

// Waiters of one worker, oldest first. Ids are the data plane's (one per waiting request).
class WaitQueue {
 public:
  void push(uint64_t id, TimePoint deadline) { q_.push_back({id, deadline}); }
  // A woken waiter that found no slot after all goes back to the head: it keeps its turn.
  void pushFront(uint64_t id, TimePoint deadline) { q_.push_front({id, deadline}); }
  std::optional<uint64_t> popFront();
  bool remove(uint64_t id);
  // Removes the waiters whose deadline is at or before `now`, oldest first.
  std::vector<uint64_t> expire(TimePoint now);
  std::optional<TimePoint> nextDeadline() const;
  size_t size() const { return q_.size(); }
  bool empty() const { return q_.empty(); }

 private:
  struct Waiter {
    uint64_t id;
    TimePoint deadline;
  };
  std::deque<Waiter> q_;
};

}  // namespace halb::balancer
