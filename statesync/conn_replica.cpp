#include "statesync/conn_replica.h"

namespace halb::statesync {

bool ConnReplica::apply(const repl::ConnEntry& e) {
  if (e.phase == repl::ConnPhase::Closed) return remove(e.id, e.version);
  auto [it, inserted] = entries_.try_emplace(e.id);
  if (!inserted && e.version < it->second.entry.version) return false;
  it->second.entry = e;
  it->second.generation = generation_;
  return true;
}

bool ConnReplica::remove(uint64_t id, repl::Version v) {
  auto it = entries_.find(id);
  if (it == entries_.end() || v < it->second.entry.version) return false;
  entries_.erase(it);
  return true;
}

size_t ConnReplica::sweep() {
  size_t n = 0;
  for (auto it = entries_.begin(); it != entries_.end();) {
    if (it->second.generation < generation_) {
      it = entries_.erase(it);
      ++n;
    } else {
      ++it;
    }
  }
  return n;
}

std::vector<repl::ConnEntry> ConnReplica::take() {
  std::vector<repl::ConnEntry> out;
  out.reserve(entries_.size());
  for (auto& [id, h] : entries_) out.push_back(std::move(h.entry));
  entries_.clear();
  return out;
}

const repl::ConnEntry* ConnReplica::find(uint64_t id) const {
  auto it = entries_.find(id);
  return it == entries_.end() ? nullptr : &it->second.entry;
}

}  // namespace halb::statesync
