#pragma once
// Internal to the data plane (includes Boost.Asio): one worker thread with its io_context,
// listeners, sessions, idle server-connection pool and metrics. Only balancer/*.cpp include
// this; app/ sees balancer/engine.h.
#include <array>
#include <atomic>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include "balancer/engine.h"
#include "common/prom.h"

namespace halb::balancer::dp {

namespace asio = boost::asio;
using tcp = asio::ip::tcp;
using ErrorCode = boost::system::error_code;
inline constexpr auto kUseTuple = asio::as_tuple(asio::use_awaitable);

class Worker;
struct EngineShared;

// Counters written by one worker thread (relaxed atomics so the control thread can read
// them); each worker's block sits on its own cache lines.
struct alignas(64) WorkerMetrics {
  std::atomic<uint64_t> connectionsAccepted{0};
  std::atomic<uint64_t> activeConnections{0};
  std::atomic<uint64_t> requests{0};
  std::array<std::atomic<uint64_t>, 6> responses{};  // index = status / 100 (0: none sent)
  std::atomic<uint64_t> bytesIn{0};                  // from clients
  std::atomic<uint64_t> bytesOut{0};                 // to clients
  std::atomic<uint64_t> acceptErrors{0};
  std::atomic<uint64_t> connectFailures{0};
  std::atomic<uint64_t> connectRetries{0};
  std::atomic<uint64_t> noServer{0};     // no usable server (503)
  std::atomic<uint64_t> parseErrors{0};  // 400/414/431/501/505 answered
  std::atomic<uint64_t> timeouts{0};
  std::atomic<uint64_t> serverReuse{0};  // requests sent on a pooled server connection
  std::atomic<uint64_t> serverConnects{0};
  std::atomic<uint64_t> rejectedMaxConn{0};
  std::atomic<uint64_t> heartbeat{0};

  void addBytesIn(uint64_t n) {
    bytesIn.store(bytesIn.load(std::memory_order_relaxed) + n, std::memory_order_relaxed);
  }
  void addBytesOut(uint64_t n) {
    bytesOut.store(bytesOut.load(std::memory_order_relaxed) + n, std::memory_order_relaxed);
  }
  // Single writer: a plain load+store is enough and avoids the locked instruction.
  static void inc(std::atomic<uint64_t>& c, uint64_t n = 1) {
    c.store(c.load(std::memory_order_relaxed) + n, std::memory_order_relaxed);
  }
};

// A byte buffer with a read window [begin, end); grows up to a bound only for message heads.
class Buffer {
 public:
  Buffer() = default;
  explicit Buffer(size_t capacity) { reserve(capacity); }
  void reserve(size_t capacity);
  const char* data() const { return mem_.get() + begin_; }
  size_t size() const { return end_ - begin_; }
  bool empty() const { return begin_ == end_; }
  std::string_view view() const { return {data(), size()}; }
  char* writePtr() { return mem_.get() + end_; }
  size_t writable() const { return cap_ - end_; }
  size_t capacity() const { return cap_; }
  void commit(size_t n) { end_ += n; }
  void consume(size_t n) {
    begin_ += n;
    if (begin_ == end_) begin_ = end_ = 0;
  }
  void clear() { begin_ = end_ = 0; }
  // Moves the window to the front so writable() is as large as possible.
  void compact();
  // Makes room for at least one more byte if total size stays under `limit`; false if not.
  bool ensureWritable(size_t limit);

 private:
  std::unique_ptr<char[]> mem_;
  size_t cap_ = 0, begin_ = 0, end_ = 0;
};

// An idle or busy connection to a server, owned by one HTTP session at a time or parked in
// the worker's idle pool.
struct ServerConn {
  explicit ServerConn(asio::io_context& io) : sock(io) {}
  tcp::socket sock;
  Buffer buf;
  uint64_t serverId = 0;
  uint64_t backendId = 0;
  SocketAddress local, remote;
  TimePoint idleSince{};
  uint32_t requests = 0;
};

// Base of every proxied connection. Owns the per-connection watchdog: a single timer whose
// deadline the session moves with plain stores (no timer re-arm per read), which fires
// onTimeout() once the current deadline has passed.
class Session : public std::enable_shared_from_this<Session> {
 public:
  // `client` comes from accept(2) itself and `listen` is the listener's address, so the
  // per-connection path makes no getpeername/getsockname calls (only a wildcard listener
  // needs getsockname, done lazily).
  Session(Worker& worker, tcp::socket client, const SocketAddress& clientAddr,
          const SocketAddress& listenAddr, uint64_t frontendIndex);
  virtual ~Session();
  Session(const Session&) = delete;
  Session& operator=(const Session&) = delete;

  virtual asio::awaitable<void> run() = 0;
  // The watchdog's deadline passed: cancel what is pending; run() sees operation_aborted and
  // looks at timedOut_ to tell why.
  virtual void onTimeout() = 0;
  // Graceful stop: finish the current exchange, take no new one.
  virtual void drain() = 0;
  // Hard stop: cut everything now.
  virtual void abort() = 0;
  // Fills the replicated view of this connection (server side may be unset).
  virtual void describe(repl::ConnEntry& e);

  void arm(Duration d);
  void disarm() { deadline_ = TimePoint::max(); }
  void stopWatchdog();

  uint64_t id() const { return id_; }
  uint64_t bytesTotal() const { return bytesIn_ + bytesOut_; }
  uint64_t serverId() const { return serverId_; }
  TimePoint started() const { return started_; }

  // Intrusive list of the worker's sessions (for drain, stop, the connection table).
  Session* prev = nullptr;
  Session* next = nullptr;
  bool published = false;  // ConnOpen sent / in the shared connection table
  uint64_t publishedBytes = 0;
  uint64_t publishedServer = 0;

 protected:
  void onTimer(const ErrorCode& ec, uint64_t generation);
  // The address the client connected to (the VIP); getsockname only for wildcard binds.
  const SocketAddress& frontendAddress();
  void startWait();

  Worker& worker_;
  tcp::socket client_;
  uint64_t frontendIndex_;
  uint64_t id_;
  TimePoint started_;
  SocketAddress clientAddr_;
  SocketAddress serverLocal_, serverAddr_;
  uint64_t backendId_ = 0, serverId_ = 0;
  uint64_t bytesIn_ = 0, bytesOut_ = 0;
  bool timedOut_ = false;
  bool draining_ = false;

 private:
  SocketAddress frontendAddr_;  // through frontendAddress()
  asio::steady_timer timer_;
  TimePoint deadline_ = TimePoint::max();
  TimePoint timerAt_ = TimePoint::max();
  uint64_t timerGen_ = 0;
  bool waiting_ = false;
};

// Keeps the worker's pool snapshot of the moment alive while a session uses pointers into
// it across suspension points (a new snapshot may arrive meanwhile). The count is per worker
// and plain: taking a reference touches no cache line shared with other workers, which a
// copy of the snapshot's shared_ptr (one atomic count for all workers) would.
struct SnapshotHold {
  PoolSnapshotPtr snapshot;
  uint32_t refs = 0;
};

class SnapshotRef {
 public:
  SnapshotRef() = default;
  SnapshotRef(Worker* w, SnapshotHold* h);
  SnapshotRef(SnapshotRef&& o) noexcept : worker_(o.worker_), hold_(o.hold_) { o.hold_ = nullptr; }
  SnapshotRef& operator=(SnapshotRef&& o) noexcept;
  ~SnapshotRef() { reset(); }
  void reset();

 private:
  Worker* worker_ = nullptr;
  SnapshotHold* hold_ = nullptr;
};

// Immutable per-frontend state shared by all workers (built once per configuration).
struct FrontendRt {
  const config::Frontend* cfg = nullptr;
  uint64_t id = 0;
  RouteFn route;
  std::vector<SocketAddress> bound;  // resolved listen addresses
};

// A listening socket bound on the control thread for one worker.
struct ListenerFd {
  size_t frontendIndex = 0;
  int fd = -1;
};

// State shared by the engine and its workers (all immutable after start except where noted).
struct EngineShared {
  config::ConfigPtr config;
  std::vector<FrontendRt> frontends;
  SelectorFactory makeSelector;
  std::shared_ptr<StickTables> stickTables;
  std::shared_ptr<const CookieCodecs> cookies;  // initial; workers hold their own copy
  uint32_t nodeIndex = 0;
  std::atomic<Role> role{Role::Master};
  uint32_t workerCount = 1;
};

// Per-worker connection table as the control thread sees it: published entries only
// (connections older than kConnPublishDelay), updated in batches by the worker's tick.
class ConnTable {
 public:
  void upsert(const repl::ConnEntry& e);
  void erase(uint64_t id);
  void forEach(const std::function<void(const repl::ConnEntry&)>& fn) const;

 private:
  mutable std::mutex mu_;
  std::unordered_map<uint64_t, repl::ConnEntry> entries_;
};

class Worker {
 public:
  Worker(EngineShared& shared, uint32_t index, PoolSnapshotPtr pools,
         std::vector<ListenerFd> listeners);
  ~Worker();

  // Starts the thread.
  void start();
  void join();

  // --- called from other threads: post into the loop ---
  void postPools(PoolSnapshotPtr pools);
  void postCookies(std::shared_ptr<const CookieCodecs> cookies);
  void setOutcomeSink(OutcomeSink* sink) { outcomes_ = sink; }
  void postStop(Duration drain);

  // --- loop thread only ---
  asio::io_context& io() { return io_; }
  const EngineShared& shared() const { return shared_; }
  const config::Config& config() const { return *shared_.config; }
  const PoolSnapshot& pools() const { return *current_->snapshot; }
  // Pins the current snapshot (and so every BackendView/ServerView pointer taken from it).
  SnapshotRef pinPools() { return SnapshotRef(this, current_); }
  void unpin(SnapshotHold* h);
  uint32_t index() const { return index_; }
  WorkerMetrics& metrics() { return metrics_; }
  const WorkerMetrics& metrics() const { return metrics_; }
  repl::ChangeQueue& changes() { return changes_; }
  ConnTable& connTable() { return connTable_; }
  const ConnTable& connTable() const { return connTable_; }
  uint64_t nextConnId();
  bool stopping() const { return stopping_; }

  const BackendView* findBackend(std::string_view name) const;
  const BackendView* findBackendById(uint64_t id) const;
  // Picks a server of `backend`: stickiness first (balancer::pickSticky), then the
  // backend's algorithm, skipping ctx.exclude. `request` is null for tcp.
  StickyPick pick(const BackendView& backend, const PickContext& ctx, const RequestView* request);
  // Passive outlier detection and per-server counters.
  void report(const BackendView& backend, const ServerView& server, Outcome outcome) {
    if (outcomes_) outcomes_->report(backend, server, outcome);
  }
  const StickTables::Emit& emitter() const { return emit_; }
  Histogram* latency(uint64_t backendId);
  // Stick table access for this worker (null when stickiness is off).
  StickTables* stickTables() const { return shared_.stickTables.get(); }
  void emitChange(repl::Change&& c);

  // Idle server connections, per server, bounded; checked for a close by the server.
  std::unique_ptr<ServerConn> takeIdle(uint64_t serverId, TimePoint now, bool mustProbe);
  void putIdle(std::unique_ptr<ServerConn> conn, TimePoint now);

  // Buffers recycled across connections.
  Buffer takeBuffer();
  void returnBuffer(Buffer&& b);

  // Session tracking.
  void add(Session* s);
  void remove(Session* s);

  // Histograms keyed by backend id, read at scrape time by the control thread.
  void forEachLatency(const std::function<void(uint64_t backendId, const Histogram&)>& fn) const;

 private:
  void applyPools(PoolSnapshotPtr pools);
  static bool probeAlive(ServerConn& c);
  asio::awaitable<void> acceptLoop(size_t frontendIndex, std::shared_ptr<tcp::acceptor> acceptor,
                                   SocketAddress listenAddr);
  asio::awaitable<void> tickLoop();
  void tick(TimePoint now);
  void beginStop(Duration drain);
  void spawn(std::shared_ptr<Session> s);

  EngineShared& shared_;
  uint32_t index_;
  asio::io_context io_;
  std::thread thread_;
  std::vector<std::unique_ptr<SnapshotHold>> holds_;  // back() is current
  SnapshotHold* current_ = nullptr;
  std::unordered_map<std::string_view, const BackendView*> backendsByName_;
  std::unordered_map<uint64_t, const BackendView*> backendsById_;
  struct BackendState {
    config::Algorithm algorithm;
    std::unique_ptr<Selector> selector;
  };
  std::unordered_map<uint64_t, BackendState> backendState_;
  std::shared_ptr<const CookieCodecs> cookies_;
  OutcomeSink* outcomes_ = nullptr;
  StickTables::Emit emit_;        // pushes into changes_
  mutable std::mutex latencyMu_;  // guards the map's shape only (insert vs. scrape)
  std::unordered_map<uint64_t, std::unique_ptr<Histogram>> latency_;
  std::vector<ListenerFd> listenerFds_;
  std::vector<std::shared_ptr<tcp::acceptor>> acceptors_;
  std::vector<SocketAddress> listenAddrs_;
  std::unique_ptr<asio::steady_timer> tickTimer_;
  std::unique_ptr<asio::steady_timer> drainTimer_;
  std::unordered_map<uint64_t, std::vector<std::unique_ptr<ServerConn>>> idle_;
  size_t idleCount_ = 0;
  std::vector<Buffer> freeBuffers_;
  Session* sessions_ = nullptr;
  size_t sessionCount_ = 0;
  uint64_t connCounter_ = 0;
  uint64_t tickCount_ = 0;
  bool stopping_ = false;
  WorkerMetrics metrics_;
  repl::ChangeQueue changes_;
  ConnTable connTable_;
};

// Session factories (tcp_proxy.cpp, http_proxy.cpp).
std::shared_ptr<Session> makeTcpSession(Worker& w, tcp::socket client,
                                        const SocketAddress& clientAddr,
                                        const SocketAddress& listenAddr, uint64_t frontendIndex);
std::shared_ptr<Session> makeHttpSession(Worker& w, tcp::socket client,
                                         const SocketAddress& clientAddr,
                                         const SocketAddress& listenAddr, uint64_t frontendIndex);

// Shared helpers.
void setNoDelay(tcp::socket& s);
SocketAddress toSocketAddress(const tcp::endpoint& ep);
tcp::endpoint toEndpoint(const SocketAddress& a);

// Connects `sock` to `server` (fresh socket), returns the error.
asio::awaitable<ErrorCode> connectTo(tcp::socket& sock, const SocketAddress& server);

}  // namespace halb::balancer::dp
