#include "statesync/outbound.h"

#include <bit>
#include <cstring>
#include <functional>

namespace halb::statesync {

using repl::Change;
using repl::ChangeKind;

namespace {

bool isStick(ChangeKind k) {
  return k == ChangeKind::StickUpsert || k == ChangeKind::StickTouch ||
         k == ChangeKind::StickDelete;
}

uint64_t stickHash(const repl::StickEntry& s) {
  uint64_t h = std::hash<std::string_view>{}(s.key) ^ (s.backendId * 0x9e3779b97f4a7c15ull);
  return h == 0 ? 1 : h;
}

int64_t nanos(TimePoint t) {
  return t.time_since_epoch().count();
}

}  // namespace

Coalescer::Coalescer(size_t touchCacheSlots, double touchRefresh)
    : touches_(std::bit_ceil(std::max<size_t>(touchCacheSlots, 1))), touchRefresh_(touchRefresh) {}

std::string Coalescer::keyOf(const Change& c) {
  std::string k;
  if (isStick(c.kind)) {
    k.reserve(9 + c.stick.key.size());
    k.push_back('s');
    k.append(reinterpret_cast<const char*>(&c.stick.backendId), sizeof c.stick.backendId);
    k.append(c.stick.key);
  } else {
    k.push_back('c');
    k.append(reinterpret_cast<const char*>(&c.conn.id), sizeof c.conn.id);
  }
  return k;
}

bool Coalescer::suppressTouch(const Change& c) {
  uint64_t h = stickHash(c.stick);
  const TouchSlot& slot = touches_[h & (touches_.size() - 1)];
  if (slot.hash != h) return false;  // unknown (or evicted): forward, the safe choice
  int64_t newExpiry = nanos(c.at) + c.stick.ttlLeft.count();
  auto threshold =
      static_cast<int64_t>(static_cast<double>(c.stick.ttlLeft.count()) * touchRefresh_);
  return newExpiry - slot.peerExpiryNs <= threshold;
}

void Coalescer::rememberSent(const Change& c) {
  if (!isStick(c.kind)) return;
  uint64_t h = stickHash(c.stick);
  TouchSlot& slot = touches_[h & (touches_.size() - 1)];
  if (c.kind == ChangeKind::StickDelete) {
    if (slot.hash == h) slot = TouchSlot{};
    return;
  }
  slot.hash = h;
  slot.peerExpiryNs = nanos(c.at) + c.stick.ttlLeft.count();
}

void Coalescer::offer(const Change& c) {
  if (c.kind == ChangeKind::StickTouch && suppressTouch(c)) {
    ++stats_.touchesSuppressed;
    return;
  }
  rememberSent(c);
  std::string key = keyOf(c);
  auto [it, inserted] = index_.try_emplace(std::move(key), pending_.size());
  if (inserted) {
    if (live_ == 0) oldest_ = c.at;
    pending_.push_back(Pending{c, true});
    ++live_;
    return;
  }
  Pending& p = pending_[it->second];
  const repl::Version& held =
      isStick(p.change.kind) ? p.change.stick.version : p.change.conn.version;
  const repl::Version& now = isStick(c.kind) ? c.stick.version : c.conn.version;
  ++stats_.merged;
  if (!p.live) {
    // A connection cancelled earlier in this window is back (ids are not reused, but be safe).
    p = Pending{c, true};
    ++live_;
    return;
  }
  // Workers drain in any order; the version says which change is the later one.
  if (now < held) return;
  ChangeKind kind = c.kind;
  if (p.change.kind == ChangeKind::ConnOpen && c.kind == ChangeKind::ConnClose) {
    // Opened and closed inside one window: the peer never heard of it and need not.
    p.live = false;
    --live_;
    ++stats_.cancelled;
    return;
  }
  // The peer must learn the entry exists: an open or an upsert stays one when refreshed.
  if (p.change.kind == ChangeKind::ConnOpen && c.kind == ChangeKind::ConnUpdate)
    kind = ChangeKind::ConnOpen;
  if (p.change.kind == ChangeKind::StickUpsert && c.kind == ChangeKind::StickTouch)
    kind = ChangeKind::StickUpsert;
  TimePoint first = p.change.at;  // lag is measured from the oldest change the batch carries
  p.change = c;
  p.change.kind = kind;
  p.change.at = first;
}

void Coalescer::drain(std::vector<Change>& out) {
  for (auto& p : pending_)
    if (p.live) out.push_back(std::move(p.change));
  pending_.clear();
  index_.clear();
  live_ = 0;
}

void Coalescer::clear() {
  pending_.clear();
  index_.clear();
  live_ = 0;
}

void Coalescer::forgetPeerView() {
  std::fill(touches_.begin(), touches_.end(), TouchSlot{});
}

// ------------------------------------------------------------------------------ log

bool OutboundLog::append(ChangeKind kind, TimePoint at, std::string body) {
  if (items_.size() >= maxEntries_ || bytes_ + body.size() > maxBytes_) return false;
  bytes_ += body.size();
  items_.push_back(Item{nextSeq_++, kind, at, std::move(body)});
  return true;
}

const OutboundLog::Item* OutboundLog::find(uint64_t seq) const {
  if (items_.empty() || seq < items_.front().seq || seq >= nextSeq_) return nullptr;
  return &items_[seq - items_.front().seq];
}

void OutboundLog::ack(uint64_t seq) {
  while (!items_.empty() && items_.front().seq <= seq) {
    bytes_ -= items_.front().body.size();
    items_.pop_front();
  }
}

bool OutboundLog::canResumeFrom(uint64_t lastApplied) const {
  uint64_t next = lastApplied + 1;
  if (next < floor_ || next > nextSeq_) return false;
  return next >= firstSeq();
}

void OutboundLog::breakStream() {
  items_.clear();
  bytes_ = 0;
  // Skip one number: a peer that holds everything up to nextSeq_-1 has still missed what
  // could not be queued, so it must not be able to resume from there.
  ++nextSeq_;
  floor_ = nextSeq_;
}

}  // namespace halb::statesync
