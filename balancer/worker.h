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
#include <boost/asio/ssl/stream.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "balancer/admission.h"
#include "balancer/engine.h"
#include "balancer/retry.h"
#include "balancer/tls.h"
#include "balancer/traffic.h"
#include "common/prom.h"

namespace halb::balancer::dp {

namespace asio = boost::asio;
using tcp = asio::ip::tcp;
using ErrorCode = boost::system::error_code;
inline constexpr auto kUseTuple = asio::as_tuple(asio::use_awaitable);
using IoResult = std::tuple<ErrorCode, size_t>;

class Worker;
struct EngineShared;

// TLS over a socket the connection owns elsewhere (the session's client socket, a server
// connection's socket); the SSL object comes from balancer/tls.h.
using TlsStream = asio::ssl::stream<tcp::socket&>;

// A connection's byte stream: the socket, or TLS on it. One branch per operation keeps the
// plaintext path as it was (no type erasure, no extra coroutine frame).
struct StreamIo {
  tcp::socket* sock = nullptr;
  TlsStream* tls = nullptr;

  asio::awaitable<IoResult> readSome(asio::mutable_buffer b) {
    return tls ? tls->async_read_some(b, kUseTuple) : sock->async_read_some(b, kUseTuple);
  }
  template <class Buffers>
  asio::awaitable<IoResult> write(const Buffers& b) {
    return tls ? asio::async_write(*tls, b, kUseTuple) : asio::async_write(*sock, b, kUseTuple);
  }
  // Passes an end of stream on. TLS cannot half-close through Asio (close_notify is a full
  // shutdown there), so a TLS side reports false and the caller ends both directions.
  bool shutdownSend() {
    if (tls) return false;
    ErrorCode ec;
    sock->shutdown(tcp::socket::shutdown_send, ec);
    return true;
  }
};

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
  // TLS with clients (server side) and with servers (client side).
  std::atomic<uint64_t> tlsHandshakes{0}, tlsResumed{0}, tlsFailures{0};
  std::atomic<uint64_t> backendTlsHandshakes{0}, backendTlsResumed{0}, backendTlsFailures{0};
  // Retries after a sent request or a failed connect, and the ones the budget refused.
  std::atomic<uint64_t> retries{0}, retriesDenied{0};
  std::atomic<uint64_t> mirrorsSent{0}, mirrorsDropped{0}, mirrorsFailed{0}, mirrorsSkipped{0};
  // Waits for a server slot (max_connections): queued, then served or timed out; or refused
  // at once because the queue was full.
  std::atomic<uint64_t> queued{0}, queueServed{0}, queueTimeouts{0}, queueFull{0};

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
  ~ServerConn();
  ServerConn(const ServerConn&) = delete;
  ServerConn& operator=(const ServerConn&) = delete;
  StreamIo io() { return {&sock, tls.get()}; }
  tcp::socket sock;
  std::unique_ptr<TlsStream> tls;  // on `sock` when the backend has `tls:`
  // The connection ended between messages (pooled, or closed after a complete response): its
  // TLS session stays resumable. Otherwise OpenSSL drops it, as for any unclean close.
  bool clean = false;
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
  // Wakes a wait for a server slot (Worker::wakeOne).
  void wakeSlotWait();
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
  // Releases a held server slot (and wakes a waiter); idempotent.
  void releaseSlot();

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

  // The client's stream (TLS once handshakeClient() set it up).
  StreamIo clientIo() { return {&client_, clientTls_.get()}; }
  bool clientTls() const { return clientTls_ != nullptr; }
  // TLS frontends: the handshake, within timeouts.tls_handshake; false = close the
  // connection. Plaintext frontends: true at once.
  asio::awaitable<bool> handshakeClient(const config::Config& cfg);
  // Sends close_notify and waits (at most `linger`) for the client's, so a client reading
  // until the end sees a clean close rather than a truncation.
  asio::awaitable<void> shutdownClientTls(Duration linger);
  // TLS to a server: the handshake on `conn` (connected), within tls_handshake. False = treat
  // as a failed connect.
  asio::awaitable<bool> handshakeServer(ServerConn& conn, const ServerView& server,
                                        const BackendView& backend, bool alpnHttp,
                                        const config::Config& cfg) {
    return handshakeServer(conn.sock, conn.tls, server, backend, alpnHttp, cfg);
  }
  // The same on a bare socket; `tls` receives the stream.
  asio::awaitable<bool> handshakeServer(tcp::socket& sock, std::unique_ptr<TlsStream>& tls,
                                        const ServerView& server, const BackendView& backend,
                                        bool alpnHttp, const config::Config& cfg);

  // Connection limits (max_connections): takes a slot of `server` if it has one free; true
  // when the server is unlimited or a slot was taken (and is now held by this session).
  bool takeSlot(const BackendView& backend, const ServerView& server);
  // Waits in the backend's queue until a slot frees somewhere (true: try again) or the queue
  // is full or its timeout passes (false: answer 503). `again`: this admission waited before
  // and lost the race for the freed slot; it goes back to the head of the line.
  asio::awaitable<bool> waitForSlot(const BackendView& backend, TimePoint deadline, bool again);
  // Whether some usable server of `backend` is below its limit right now.
  bool slotFreeIn(const BackendView& backend) const;

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
  bool slotWaiting_ = false;              // in waitForSlot (onTimeout/abort cancel slotTimer_)
  std::unique_ptr<TlsStream> clientTls_;  // after client_: destroyed before it
  std::unique_ptr<asio::steady_timer> slotTimer_;

 private:
  std::shared_ptr<ServerStats> slotStats_;  // the server slot held, if any
  uint64_t slotBackend_ = 0;
  bool slotWoken_ = false;
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

// Immutable per-frontend state shared by all workers (built once at start).
struct FrontendRt {
  const config::Frontend* cfg = nullptr;
  uint64_t id = 0;
  std::vector<SocketAddress> bound;  // resolved listen addresses
};

// One route's mutable traffic state in one worker (split round-robin, mirror sampling).
struct RouteState {
  explicit RouteState(const config::Route& r) : traffic(r) {}
  RouteTraffic traffic;
  uint32_t mirrorsInFlight = 0;
};

// A frontend's routes as one worker runs them: from the configuration of the last
// updateRoutes() (or the start), kept alive by the requests that use them.
struct FrontendRoutes {
  config::ConfigPtr config;  // keeps `frontend` and the routes alive
  const config::Frontend* frontend = nullptr;
  RouteFn route;                                    // null: every request to the default backend
  std::vector<std::unique_ptr<RouteState>> states;  // per route, same index
  config::RetryPolicy defaultRetry;                 // for the default backend (connect failures)
};
using FrontendRoutesPtr = std::shared_ptr<FrontendRoutes>;

// Per backend, shared by all workers, outliving snapshots: how many wait for a server slot
// (bounded by queue.size across workers) and which workers hold waiters (bit per worker, the
// first 64 workers; others are woken by their own releases or their deadlines).
struct BackendGate {
  SlotCounter queued;
  std::atomic<uint64_t> waitingWorkers{0};
  std::atomic<uint32_t> nextWake{0};
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
  RouterFactory makeRouter;
  std::vector<Worker*> workers;  // set before the workers start
  std::shared_ptr<StickTables> stickTables;
  std::shared_ptr<const CookieCodecs> cookies;  // initial; workers hold their own copy
  TlsContextsPtr tls;                           // initial; workers hold their own copy
  uint32_t nodeIndex = 0;
  std::atomic<Role> role{Role::Master};
  uint32_t workerCount = 1;

  // Gates by backend id, made on first use and never freed (one per backend ever configured).
  BackendGate& gate(uint64_t backendId);

 private:
  std::mutex gatesMu_;
  std::unordered_map<uint64_t, std::unique_ptr<BackendGate>> gates_;
};

class MirrorTask;

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
  void postTls(TlsContextsPtr tls);
  void postRoutes(config::ConfigPtr config);
  // Another worker freed a slot of `backendId` while this one has waiters.
  void postWake(uint64_t backendId, uint32_t hops);
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

  // TLS contexts for new connections (null: none).
  const ServerTls* frontendTls(size_t frontendIndex) const {
    return tls_ && frontendIndex < tls_->frontends.size() ? tls_->frontends[frontendIndex].get()
                                                          : nullptr;
  }
  const ClientTls* backendTls(uint64_t backendId) const {
    return tls_ ? tls_->backend(backendId) : nullptr;
  }
  // The routes new requests of a frontend use (the caller keeps the pointer for the request).
  const FrontendRoutesPtr& routes(size_t frontendIndex) const { return routes_[frontendIndex]; }
  // Retry budget of a backend in this worker.
  RetryBudget& retryBudget(const BackendView& backend);

  // Server-slot waits (admission.h): register/cancel a waiting session; wake the oldest
  // waiter of a backend here, else on another worker that has waiters.
  void addWaiter(uint64_t backendId, Session* s, TimePoint deadline, bool front);
  void removeWaiter(uint64_t backendId, Session* s);
  void slotFreed(uint64_t backendId);
  BackendGate& gate(uint64_t backendId);

  // Mirrors: sends `request` to a server of `backend` on its own connection, reads and
  // discards the answer; at most route.mirror.maxInFlight per route and worker (dropped and
  // counted beyond). Tracked: stop cuts them.
  void mirror(const FrontendRoutesPtr& routes, RouteState& state, const config::Route& route,
              std::string request, const IpAddress& client, Duration connectTimeout,
              Duration responseTimeout);
  void mirrorDone(MirrorTask* t);

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
  void applyRoutes(const config::ConfigPtr& config);
  bool wakeOne(uint64_t backendId);
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
  TlsContextsPtr tls_;
  std::vector<FrontendRoutesPtr> routes_;  // by frontend index
  std::unordered_map<uint64_t, std::pair<const config::Backend*, std::unique_ptr<RetryBudget>>>
      budgets_;
  std::unordered_map<uint64_t, BackendGate*> gates_;  // cache of shared_.gate()
  struct Waiters {
    WaitQueue queue;
    std::unordered_map<uint64_t, Session*> sessions;  // waiter id -> session
  };
  std::unordered_map<uint64_t, Waiters> waiters_;     // by backend id
  std::unordered_map<Session*, uint64_t> waiterIds_;  // session -> waiter id
  uint64_t nextWaiterId_ = 0;
  std::unordered_set<MirrorTask*> mirrors_;
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
