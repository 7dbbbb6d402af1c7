#pragma once
// The backend pools as the data plane sees them: an immutable snapshot built on the control
// thread (config + active health + outlier ejections + admin state + slow start) and posted
// to every worker, which swaps its pointer. Workers never lock to read it.
//
// Contract between the pure balancing logic (algorithms, health, stickiness) and the data
// plane (balancer/worker*, proxies): the data plane asks `Selector::select` for a server and
// reports outcomes through `ServerStats` and `OutcomeSink`.
#include <atomic>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "balancer/admission.h"
#include "common/net.h"
#include "common/time.h"
#include "config/config.h"

namespace halb::balancer {

// Counters shared by all workers for one server; they outlive snapshots (keyed by server id)
// so that least_conn sees connections opened under an older snapshot.
struct ServerStats {
  std::atomic<int64_t> active{0};  // connections (tcp) or requests in flight (http)
  std::atomic<uint64_t> connections{0};
  std::atomic<uint64_t> requests{0};
  std::atomic<uint64_t> connectFailures{0};
  std::atomic<uint64_t> responses5xx{0};
  std::atomic<uint64_t> bytesToServer{0};
  std::atomic<uint64_t> bytesFromServer{0};
  // Connect failures or 5xx in a row, across all workers; reset by a success. Maintained by
  // OutcomeSink::report (passive outlier detection), not by the data plane directly.
  std::atomic<uint32_t> consecutiveFailures{0};
  // Slots taken under the server's max_connections (requests in flight, tcp connections),
  // over all workers; only used when a limit is set.
  SlotCounter admitted;
};

enum class AdminState : uint8_t { Ready, Drain, Maint };
const char* toString(AdminState s);

struct ServerView {
  const config::Server* config = nullptr;  // name, address, configured weight, id
  uint64_t id = 0;
  SocketAddress address;
  uint32_t weight = 0;      // effective: configured x admin x slow-start ramp; 0 = no new users
  bool healthy = false;     // active check says up, and not ejected by outlier detection
  AdminState admin = AdminState::Ready;
  std::shared_ptr<ServerStats> stats;

  // May receive a new user (not sticky): healthy, weight > 0, Ready.
  bool acceptsNew() const { return healthy && weight > 0 && admin == AdminState::Ready; }
  // May keep a user already stuck to it: a draining server keeps its sticky users.
  bool acceptsSticky() const { return healthy && admin != AdminState::Maint; }
};

class Selector;

struct BackendView {
  const config::Backend* config = nullptr;
  uint64_t id = 0;
  std::vector<ServerView> servers;
  // Built on the control thread when the snapshot is built (the Maglev lookup table, the
  // weight index of p2c/random); shared read-only by all workers. Holds a
  // balancer::AlgorithmState (algorithm_state.h), set only by buildAlgorithmState().
  std::shared_ptr<const void> algorithmState;

  const ServerView* findServer(uint64_t serverId) const;
  size_t usableCount() const;  // servers with acceptsNew()
};

struct PoolSnapshot {
  config::ConfigPtr config;  // keeps every config:: pointer above alive
  uint64_t generation = 0;
  std::vector<BackendView> backends;

  const BackendView* findBackend(uint64_t backendId) const;
  const BackendView* findBackend(std::string_view name) const;
};
using PoolSnapshotPtr = std::shared_ptr<const PoolSnapshot>;

// What a pick may use about the request.
struct PickContext {
  const IpAddress* clientAddress = nullptr;   // source_hash, maglev (tcp)
  uint64_t hashKey = 0;                       // maglev/source_hash key when not the address
  std::span<const uint64_t> exclude;          // servers already tried for this request (retries)
};

// What happened when the data plane used a server, for passive outlier detection.
enum class Outcome : uint8_t {
  Success,         // tcp: connected; http: a response other than 5xx
  ConnectFailure,  // refused, unreachable or connect timeout
  Response5xx,     // http: the server answered 500..599
};
const char* toString(Outcome o);

// Where a worker reports outcomes. One per worker (PoolManager::reporter(i)); report() is
// wait-free: a success costs one relaxed load (and a store when it ends a failure streak), a
// failure one atomic increment, and only the failure that reaches the backend's
// outlier.consecutive_failures threshold pushes an event to the control thread.
class OutcomeSink {
 public:
  virtual ~OutcomeSink() = default;
  virtual void report(const BackendView& backend, const ServerView& server, Outcome outcome) = 0;
};

// Per-worker, per-backend balancing state (round-robin positions, RNG). Never shared across
// threads, so no atomics beyond ServerStats.
class Selector {
 public:
  virtual ~Selector() = default;
  // A server that acceptsNew(), or nullptr when none is usable.
  virtual const ServerView* select(const BackendView& backend, const PickContext& ctx) = 0;
};

// `seed` makes random choices reproducible in tests; workers pass distinct seeds.
// A selector may be reused across snapshots: it re-keys its state by server id when the
// backend's server list changes between calls.
std::unique_ptr<Selector> makeSelector(config::Algorithm algorithm, uint64_t seed);

// Builds backend.algorithmState from backend.servers for the backend's algorithm (maglev:
// the lookup table over the servers that acceptsNew(); p2c, random: their cumulative
// weights). The snapshot builder calls it on the control thread; tests and tools that
// assemble views by hand may call it too, after changing the servers. Selectors work
// without it (maglev then falls back to weighted rendezvous hashing; p2c and random scan).
void buildAlgorithmState(BackendView& backend);

// The key consistent algorithms hash: ctx.hashKey when set, else the client address.
uint64_t pickHash(const PickContext& ctx);

}  // namespace halb::balancer
