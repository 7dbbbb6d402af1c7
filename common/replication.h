#pragma once
// What the state-sync channel replicates, as plain values. The balancer produces these (its
// stick tables and connection table), statesync ships them, and the peer's balancer applies
// them; neither library includes the other: app/ connects them through these types.
//
// Keys are names and stable ids, never positions, so both nodes (and, later, several peers)
// agree on them. Times travel as durations relative to "now" at the sender, so the two
// nodes' clocks need not agree.
#include <array>
#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "common/net.h"
#include "common/time.h"

namespace halb::repl {

// Last writer wins by (epoch, seq): the epoch grows each time a node becomes master, so a
// returning old master's stale entries lose against the new master's.
struct Version {
  uint32_t epoch = 0;
  uint64_t seq = 0;
  auto operator<=>(const Version&) const = default;
};

// A sticky mapping: in table `backendId`, user `key` goes to server `serverId`.
struct StickEntry {
  uint64_t backendId = 0;
  std::string key;  // source: the address bytes (4 or 16); app_cookie/header: the value
  uint64_t serverId = 0;
  Duration ttlLeft{};  // remaining lifetime when sent
  Version version;
};

// TCP state of one socket read with TCP_REPAIR (shared/research/tcp-repair-feasibility.md).
struct TcpRepairState {
  uint32_t sndSeq = 0;  // write_seq
  uint32_t rcvSeq = 0;  // rcv_nxt
  uint32_t mss = 0;
  uint8_t options = 0;  // TCPI_OPT_* bits
  uint8_t sndWscale = 0;
  uint8_t rcvWscale = 0;
  uint32_t tsval = 0;
  // struct tcp_repair_window
  uint32_t sndWl1 = 0, sndWnd = 0, maxWindow = 0, rcvWnd = 0, rcvWup = 0;
  std::string sendQueue;  // bytes sent but not yet acknowledged
  std::string recvQueue;  // bytes received but not yet read
};

enum class ConnPhase : uint8_t { Open, Idle, Busy, Closed };

// One proxied connection: client <-> (VIP) halb (source) <-> server.
struct ConnEntry {
  uint64_t id = 0;  // unique per node: (node bit | worker | counter)
  uint64_t frontendId = 0;
  uint64_t backendId = 0;
  uint64_t serverId = 0;
  SocketAddress client;      // client's address
  SocketAddress frontend;    // the VIP:port the client connected to
  SocketAddress serverLocal; // halb's source address towards the server
  SocketAddress server;      // the server's address
  int64_t startedUnixMs = 0;
  uint64_t bytesIn = 0, bytesOut = 0;
  ConnPhase phase = ConnPhase::Open;
  // Present only when the connection is idle and continuity is on: enough to re-create both
  // sockets on the peer. Absent = not restorable (the peer must not try).
  std::optional<TcpRepairState> clientTcp, serverTcp;
  std::string appState;  // opaque to statesync: protocol position (e.g. HTTP keep-alive)
  Version version;
};

// A TLS session-ticket key (balancer/tls.h): 16-byte name, AES-256 key, HMAC-SHA256 key, the
// layout of RFC 5077 §4's recommended ticket construction. Both nodes hold the same keys, so a
// ticket one node sealed opens on the other and resumption survives a failover. Sent whole
// (the set is small) and never logged; on the wire it is encrypted (statesync protocol §14).
struct TicketKey {
  std::array<uint8_t, 16> name{};
  std::array<uint8_t, 32> aesKey{};
  std::array<uint8_t, 32> hmacKey{};
  Duration age{};  // since the key was made, at the sender when sent
  bool operator==(const TicketKey&) const = default;
};

enum class ChangeKind : uint8_t { StickUpsert, StickTouch, StickDelete, ConnOpen, ConnUpdate, ConnClose };

const char* toString(ChangeKind k);

// One change produced by a worker for the replication channel.
struct Change {
  ChangeKind kind = ChangeKind::StickUpsert;
  TimePoint at{};  // when it happened (for replication-lag measurement)
  StickEntry stick;  // Stick* kinds
  ConnEntry conn;    // Conn* kinds
};

// Bounded single-producer single-consumer ring from one worker to the control thread. The
// worker never blocks: when the ring is full the change is dropped and `overflowed` is set,
// which tells statesync to schedule a resync (a fresh snapshot) instead.
class ChangeQueue {
 public:
  explicit ChangeQueue(size_t capacity);  // rounded up to a power of two
  ChangeQueue(const ChangeQueue&) = delete;
  ChangeQueue& operator=(const ChangeQueue&) = delete;

  bool push(Change&& c);  // producer thread; false (and dropped() grows) when full
  bool pop(Change& out);  // consumer thread
  uint64_t dropped() const { return dropped_.load(std::memory_order_relaxed); }
  // Consumer: true once after any drop since the last call.
  bool takeOverflow() { return overflow_.exchange(false, std::memory_order_acq_rel); }

 private:
  std::vector<Change> slots_;
  size_t mask_;
  alignas(64) std::atomic<size_t> head_{0};  // next to pop (consumer)
  alignas(64) std::atomic<size_t> tail_{0};  // next to push (producer)
  alignas(64) std::atomic<uint64_t> dropped_{0};
  std::atomic<bool> overflow_{false};
};

// What statesync needs from the local tables; the balancer implements it.
class TableSource {
 public:
  virtual ~TableSource() = default;
  // Every live entry, for a snapshot. Called on the control thread; implementations lock
  // per shard, never the whole table at once.
  virtual void forEachStick(const std::function<void(const StickEntry&)>& fn) const = 0;
  virtual void forEachConn(const std::function<void(const ConnEntry&)>& fn) const = 0;

  // A snapshot walks the tables one shard per step, so a large table neither stalls the
  // control loop nor needs a copy of itself in memory. Sharded implementations override these;
  // the defaults present each table as one shard.
  virtual size_t stickShards() const { return 1; }
  virtual void forEachStickInShard(size_t shard, const std::function<void(const StickEntry&)>& fn) const {
    if (shard == 0) forEachStick(fn);
  }
  virtual size_t connShards() const { return 1; }
  virtual void forEachConnInShard(size_t shard, const std::function<void(const ConnEntry&)>& fn) const {
    if (shard == 0) forEachConn(fn);
  }
};

// Where entries received from the peer go; the balancer implements it.
class TableSink {
 public:
  virtual ~TableSink() = default;
  // Applies if `e.version` is newer than what is held (last writer wins); returns whether it
  // did. The entry expires at now + e.ttlLeft.
  virtual bool applyStick(const StickEntry& e, TimePoint now) = 0;
  virtual bool removeStick(uint64_t backendId, const std::string& key, Version v) = 0;
};

}  // namespace halb::repl
