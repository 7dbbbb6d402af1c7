#include "common/replication.h"

#include <bit>

namespace halb::repl {

const char* toString(ChangeKind k) {
  switch (k) {
    case ChangeKind::StickUpsert: return "stick_upsert";
    case ChangeKind::StickTouch: return "stick_touch";
    case ChangeKind::StickDelete: return "stick_delete";
    case ChangeKind::ConnOpen: return "conn_open";
    case ChangeKind::ConnUpdate: return "conn_update";
    case ChangeKind::ConnClose: return "conn_close";
  }
  return "?";
}

ChangeQueue::ChangeQueue(size_t capacity)
    : slots_(std::bit_ceil(std::max<size_t>(capacity, 2))), mask_(slots_.size() - 1) {}

bool ChangeQueue::push(Change&& c) {
  size_t tail = tail_.load(std::memory_order_relaxed);
  if (tail - head_.load(std::memory_order_acquire) >= slots_.size()) {
    dropped_.fetch_add(1, std::memory_order_relaxed);
    overflow_.store(true, std::memory_order_release);
    return false;
  }
  slots_[tail & mask_] = std::move(c);
  tail_.store(tail + 1, std::memory_order_release);
  return true;
}

bool ChangeQueue::pop(Change& out) {
  size_t head = head_.load(std::memory_order_relaxed);
  if (head == tail_.load(std::memory_order_acquire)) return false;
  out = std::move(slots_[head & mask_]);
  head_.store(head + 1, std::memory_order_release);
  return true;
}

}  // namespace halb::repl
