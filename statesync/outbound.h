#pragma once
// The outbound half of replication, before anything touches a connection:
//
//   data plane --Change--> Coalescer --(batch window)--> OutboundLog --(frames)--> peer
//
// The Coalescer keeps at most one pending change per key for the current batch window and
// suppresses stick-entry touches the peer does not need yet. The OutboundLog numbers changes
// and keeps them until the peer acknowledges them: it is both the bounded outbound queue and
// the resend window that lets a reconnecting peer resume without a full snapshot.
#include <cstdint>
#include <deque>
#include <string>
#include <unordered_map>
#include <vector>

#include "common/replication.h"
#include "common/time.h"

namespace halb::statesync {

class Coalescer {
 public:
  struct Stats {
    uint64_t merged = 0;             // absorbed by a later change to the same key
    uint64_t cancelled = 0;          // connection opened and closed inside one window
    uint64_t touchesSuppressed = 0;  // the peer's copy was still fresh enough
  };

  // touchCacheSlots: size of the direct-mapped cache that remembers, per stick key, when the
  // peer's copy expires (rounded up to a power of two). A touch is forwarded only when it
  // extends that expiry by more than `touchRefresh` of the entry's TTL, so an entry touched
  // 1000 times a second is sent about 1/touchRefresh times per TTL.
  explicit Coalescer(size_t touchCacheSlots = 1 << 16, double touchRefresh = 0.2);

  void offer(const repl::Change& c);
  size_t size() const { return live_; }
  bool empty() const { return live_ == 0; }
  // Arrival time of the oldest pending change (the batch window started then).
  TimePoint oldest() const { return oldest_; }
  // Moves the pending changes out, oldest key first, and starts a new window.
  void drain(std::vector<repl::Change>& out);
  void clear();
  // Forgets what the peer was sent (a new peer process knows nothing).
  void forgetPeerView();
  const Stats& stats() const { return stats_; }

 private:
  struct Pending {
    repl::Change change;
    bool live = true;
  };
  struct TouchSlot {
    uint64_t hash = 0;  // 0 = empty
    int64_t peerExpiryNs = 0;
  };
  static std::string keyOf(const repl::Change& c);
  bool suppressTouch(const repl::Change& c);
  void rememberSent(const repl::Change& c);

  std::vector<Pending> pending_;
  std::unordered_map<std::string, size_t> index_;
  size_t live_ = 0;
  TimePoint oldest_{};
  std::vector<TouchSlot> touches_;
  double touchRefresh_;
  Stats stats_;
};

class OutboundLog {
 public:
  struct Item {
    uint64_t seq = 0;
    repl::ChangeKind kind = repl::ChangeKind::StickUpsert;
    TimePoint at{};
    std::string body;  // wire::encodeEntryBody
  };

  OutboundLog(size_t maxEntries, size_t maxBytes) : maxEntries_(maxEntries), maxBytes_(maxBytes) {}

  uint64_t nextSeq() const { return nextSeq_; }
  uint64_t firstSeq() const { return items_.empty() ? nextSeq_ : items_.front().seq; }
  size_t size() const { return items_.size(); }
  size_t bytes() const { return bytes_; }
  // False when the log is full: the caller breaks the stream (and schedules a resync).
  bool append(repl::ChangeKind kind, TimePoint at, std::string body);
  const Item* find(uint64_t seq) const;
  // The peer applied everything up to `seq`.
  void ack(uint64_t seq);
  // A peer that applied everything up to `lastApplied` can continue from the log alone.
  bool canResumeFrom(uint64_t lastApplied) const;
  // Forgets everything and makes every earlier resume point invalid.
  void breakStream();

 private:
  std::deque<Item> items_;
  size_t bytes_ = 0;
  uint64_t nextSeq_ = 1;
  uint64_t floor_ = 1;  // no resume from before this sequence number
  size_t maxEntries_;
  size_t maxBytes_;
};

}  // namespace halb::statesync
