#pragma once
// statesync::Service: the state-sync channel on the control thread's libuv loop, for app/.
//
// It listens on statesync.listen and connects to statesync.peer (both nodes do; the protocol
// keeps one connection), drains the data plane's per-worker change queues, feeds the pure
// Session (session.h) and applies the peer's entries: stick entries into the TableSink,
// connection entries into a replica store that app/ takes over when this node becomes master.
//
// Thread: everything here runs on the loop's thread. The only cross-thread input is the
// ChangeQueues, which the data plane's workers fill and this drains.
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/json.h"
#include "common/net.h"
#include "common/prom.h"
#include "common/replication.h"
#include "common/uv.h"
#include "config/config.h"
#include "statesync/session.h"

namespace halb::statesync {

struct Hooks {
  // The peer authenticated and replication runs.
  std::function<void()> onPeerUp;
  // The connection to the peer broke. When the peer's process dies on a live host its kernel
  // closes the connection at once, so this is the fastest death signal there is; vrrp confirms
  // it with a missing advert before acting (a sync link can break while the peer lives).
  std::function<void(std::string_view reason)> onPeerLost;
  // A full copy of the peer's tables is applied: vrrp's preemption gate.
  std::function<void()> onSyncComplete;
};

// Knobs that are not configuration: tests and benchmarks use them.
struct ServiceOptions {
  std::optional<std::vector<uint8_t>> key;  // instead of reading statesync.key_file
  std::function<void(Settings&)> tune;      // last word on the session settings
  Duration drainInterval = 1ms;             // how often the change queues are polled
};

class Service {
 public:
  Service(uv::Loop& loop, const config::Config& config, repl::TableSource& source,
          repl::TableSink& sink, std::vector<repl::ChangeQueue*> queues, Hooks hooks,
          ServiceOptions options = {});
  ~Service();
  Service(const Service&) = delete;
  Service& operator=(const Service&) = delete;

  // Reads the key, binds the listener and starts connecting. False (with `error`) when the
  // key cannot be read or the address cannot be bound.
  bool start(std::string& error);
  // Says goodbye to the peer (it sees a clean close, not a death) and stops reconnecting.
  void stop();

  // The peer to connect to (config reload, tests); nullopt = only accept.
  void setPeer(std::optional<SocketAddress> peer);
  SocketAddress listenAddress() const;

  // Epochs order writes across mastership changes (last writer wins by (epoch, seq)). app/
  // sets a new one each time this node becomes master, from nextEpoch().
  void setEpoch(uint32_t epoch);
  uint32_t peerEpoch() const;
  uint32_t highestEpochSeen() const;

  bool peerConnected() const;
  bool inSync() const;
  PeerState state() const;

  // Clean handover (issue 9): sends connection entries in one acknowledged message; `done`
  // gets true once the peer stored them, false on timeout or a broken link. False when there
  // is no peer (done is not called then).
  bool transfer(std::vector<repl::ConnEntry> entries, std::function<void(bool)> done);
  // The peer's connections as replicated so far; the store is emptied. Call on becoming master.
  std::vector<repl::ConnEntry> takeConnections();
  size_t replicaSize() const;

  // Drains the change queues now instead of at the next poll.
  void drainNow();

  void writeMetrics(PromWriter& w) const;
  // One JSON object for /status and `halb status` (the "statesync" section).
  void writeStatus(JsonWriter& j) const;
  std::string statusJson() const;
  const Session& session() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// The epoch for a node that becomes master: above its own and every epoch it has seen from the
// peer, and at least the wall-clock second, so a restarted node (which remembers nothing) still
// moves forward.
uint32_t nextEpoch(uint32_t current, uint32_t highestSeen, int64_t unixSeconds);

}  // namespace halb::statesync
