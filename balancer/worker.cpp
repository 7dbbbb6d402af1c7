#include "balancer/worker.h"

#include <netinet/tcp.h>
#include <openssl/ssl.h>
#include <sys/socket.h>

#include <bit>
#include <boost/asio/connect.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/read.hpp>
#include <boost/asio/ssl/error.hpp>
#include <cstring>

#include "common/log.h"

namespace halb::balancer::dp {

using namespace std::chrono_literals;

namespace {

constexpr Duration kTick = 250ms;
// A connection enters the replicated connection table once it has lived this long (IPVS-
// style threshold): short exchanges would be over before the peer could use the entry, and
// skipping them keeps the per-request path free of table work.
constexpr uint64_t kPublishEveryTicks = 4;  // 1 s
constexpr Duration kConnPublishDelay = 1s;
constexpr size_t kMaxIdlePerServer = 256;
constexpr Duration kTrustIdle = 1s;  // see takeIdle()
constexpr size_t kMaxFreeBuffers = 1024;
constexpr Duration kAcceptBackoffMin = 10ms;
constexpr Duration kAcceptBackoffMax = 1s;
// A mirror's response is read and thrown away up to this much, then the connection is cut.
constexpr size_t kMirrorDiscardMax = 16u << 20;

// Errors that are a client going away, not worth a log line.
bool isDisconnect(const ErrorCode& ec) {
  return ec == asio::error::eof || ec == asio::error::connection_reset ||
         ec == asio::error::broken_pipe || ec == asio::error::operation_aborted ||
         ec == asio::ssl::error::stream_truncated;
}

}  // namespace

ServerConn::~ServerConn() {
  // A connection closed between messages keeps its TLS session resumable (OpenSSL otherwise
  // treats a close without close_notify as a reason to forget the session).
  if (tls && clean)
    SSL_set_shutdown(tls->native_handle(), SSL_SENT_SHUTDOWN | SSL_RECEIVED_SHUTDOWN);
}

// ---------------------------------------------------------------------------------------
// EngineShared

BackendGate& EngineShared::gate(uint64_t backendId) {
  std::lock_guard lock(gatesMu_);
  auto& g = gates_[backendId];
  if (!g) g = std::make_unique<BackendGate>();
  return *g;
}

// ---------------------------------------------------------------------------------------
// Buffer

void Buffer::reserve(size_t capacity) {
  if (capacity <= cap_) return;
  auto mem = std::make_unique_for_overwrite<char[]>(capacity);
  if (size() > 0) std::memcpy(mem.get(), data(), size());
  end_ = size();
  begin_ = 0;
  mem_ = std::move(mem);
  cap_ = capacity;
}

void Buffer::compact() {
  if (begin_ == 0) return;
  size_t n = size();
  if (n > 0) std::memmove(mem_.get(), mem_.get() + begin_, n);
  begin_ = 0;
  end_ = n;
}

bool Buffer::ensureWritable(size_t limit) {
  if (writable() > 0) return true;
  if (begin_ > 0) {
    compact();
    return true;
  }
  if (cap_ >= limit) return false;
  reserve(std::min(limit, std::max<size_t>(cap_ * 2, 4096)));
  return true;
}

// ---------------------------------------------------------------------------------------
// Helpers

void setNoDelay(tcp::socket& s) {
  ErrorCode ec;
  s.set_option(tcp::no_delay(true), ec);
}

SocketAddress toSocketAddress(const tcp::endpoint& ep) {
  return SocketAddress::fromSockaddr(ep.data());
}

tcp::endpoint toEndpoint(const SocketAddress& a) {
  tcp::endpoint ep;
  sockaddr_storage ss{};
  socklen_t len = a.toSockaddr(ss);
  std::memcpy(ep.data(), &ss, len);
  ep.resize(len);
  return ep;
}

asio::awaitable<ErrorCode> connectTo(tcp::socket& sock, const SocketAddress& server) {
  tcp::endpoint ep = toEndpoint(server);
  ErrorCode ec;
  if (sock.is_open()) sock.close(ec);
  sock.open(ep.protocol(), ec);
  if (ec) co_return ec;
  sock.set_option(tcp::no_delay(true), ec);
  auto [cec] = co_await sock.async_connect(ep, kUseTuple);
  co_return cec;
}

// ---------------------------------------------------------------------------------------
// Session

Session::Session(Worker& worker, tcp::socket client, const SocketAddress& clientAddr,
                 const SocketAddress& listenAddr, uint64_t frontendIndex)
    : worker_(worker),
      client_(std::move(client)),
      frontendIndex_(frontendIndex),
      id_(worker.nextConnId()),
      started_(SteadyClock::now()),
      clientAddr_(clientAddr),
      frontendAddr_(listenAddr),
      timer_(worker.io()) {
  WorkerMetrics::inc(worker_.metrics().activeConnections);
  worker_.add(this);
}

Session::~Session() {
  releaseSlot();
  auto& m = worker_.metrics().activeConnections;
  m.store(m.load(std::memory_order_relaxed) - 1, std::memory_order_relaxed);
  worker_.remove(this);
}

const SocketAddress& Session::frontendAddress() {
  if (frontendAddr_.ip.isUnspecified()) {
    ErrorCode ec;
    auto local = client_.local_endpoint(ec);
    if (!ec) frontendAddr_ = toSocketAddress(local);
  }
  return frontendAddr_;
}

void Session::describe(repl::ConnEntry& e) {
  e.id = id_;
  e.frontendId = worker_.shared().frontends[frontendIndex_].id;
  e.backendId = backendId_;
  e.serverId = serverId_;
  e.client = clientAddr_;
  e.frontend = frontendAddress();
  e.serverLocal = serverLocal_;
  e.server = serverAddr_;
  e.startedUnixMs =
      std::chrono::duration_cast<milliseconds>(std::chrono::system_clock::now().time_since_epoch() -
                                               (SteadyClock::now() - started_))
          .count();
  e.bytesIn = bytesIn_;
  e.bytesOut = bytesOut_;
  e.phase = repl::ConnPhase::Open;
}

void Session::arm(Duration d) {
  deadline_ = SteadyClock::now() + d;
  // A pending wait that ends earlier just re-waits when it fires; only an earlier deadline
  // needs the timer moved.
  if (!waiting_ || timerAt_ > deadline_) startWait();
}

void Session::startWait() {
  timerAt_ = deadline_;
  waiting_ = true;
  timer_.expires_at(deadline_);
  uint64_t gen = ++timerGen_;
  timer_.async_wait(
      [self = shared_from_this(), gen](const ErrorCode& ec) { self->onTimer(ec, gen); });
}

void Session::onTimer(const ErrorCode& ec, uint64_t generation) {
  if (generation != timerGen_) return;  // superseded by a later startWait()
  waiting_ = false;
  if (ec || deadline_ == TimePoint::max()) return;
  if (SteadyClock::now() < deadline_) {
    startWait();
    return;
  }
  deadline_ = TimePoint::max();
  timedOut_ = true;
  WorkerMetrics::inc(worker_.metrics().timeouts);
  onTimeout();
}

void Session::stopWatchdog() {
  deadline_ = TimePoint::max();
  ++timerGen_;
  timer_.cancel();
}

asio::awaitable<bool> Session::handshakeClient(const config::Config& cfg) {
  const config::Frontend& fe = *worker_.shared().frontends[frontendIndex_].cfg;
  if (!fe.tls) co_return true;
  const ServerTls* st = worker_.frontendTls(frontendIndex_);
  SSL* ssl = st ? st->newSsl() : nullptr;
  if (!ssl) {
    WorkerMetrics::inc(worker_.metrics().tlsFailures);
    HALB_LOG_EVERY(Error, "tls", 10s) << "frontend " << fe.name << ": no TLS context, refusing";
    co_return false;
  }
  clientTls_ = std::make_unique<TlsStream>(client_, ssl);
  // TLS writes small records of its own (the server's flight, session tickets after the
  // handshake, close_notify): with Nagle on, each would wait for the client's delayed ACK
  // (40 ms). Plaintext connections set this lazily; TLS ones need it from the start.
  setNoDelay(client_);
  timedOut_ = false;
  arm(cfg.timeouts.tlsHandshake);
  auto [ec] = co_await clientTls_->async_handshake(asio::ssl::stream_base::server, kUseTuple);
  if (ec) {
    WorkerMetrics::inc(worker_.metrics().tlsFailures);
    if (!isDisconnect(ec) && !timedOut_) {
      HALB_LOG_EVERY(Info, "tls", 1s)
          << "handshake with " << clientAddr_.toString() << " failed: " << ec.message();
    }
    co_return false;
  }
  WorkerMetrics::inc(worker_.metrics().tlsHandshakes);
  if (sessionResumed(ssl)) WorkerMetrics::inc(worker_.metrics().tlsResumed);
  co_return true;
}

asio::awaitable<void> Session::shutdownClientTls(Duration linger) {
  if (!clientTls_ || !client_.is_open()) co_return;
  timedOut_ = false;
  arm(linger);
  co_await clientTls_->async_shutdown(kUseTuple);
}

asio::awaitable<bool> Session::handshakeServer(tcp::socket& sock, std::unique_ptr<TlsStream>& tls,
                                               const ServerView& server, const BackendView& backend,
                                               bool alpnHttp, const config::Config& cfg) {
  const ClientTls* ct = worker_.backendTls(backend.id);
  SSL* ssl = ct ? ct->newSsl(server.id, server.address, alpnHttp) : nullptr;
  if (!ssl) {
    WorkerMetrics::inc(worker_.metrics().backendTlsFailures);
    HALB_LOG_EVERY(Error, "tls", 10s)
        << "backend " << (backend.config ? backend.config->name : std::string("?"))
        << ": no TLS context for its servers";
    co_return false;
  }
  tls = std::make_unique<TlsStream>(sock, ssl);
  arm(cfg.timeouts.tlsHandshake);
  auto [ec] = co_await tls->async_handshake(asio::ssl::stream_base::client, kUseTuple);
  if (ec) {
    WorkerMetrics::inc(worker_.metrics().backendTlsFailures);
    std::string why = ClientTls::verifyError(ssl);
    HALB_LOG_EVERY(Warn, "tls", 1s)
        << "TLS to " << server.address.toString()
        << " failed: " << (why.empty() ? ec.message() : "certificate: " + why);
    co_return false;
  }
  WorkerMetrics::inc(worker_.metrics().backendTlsHandshakes);
  if (sessionResumed(ssl)) WorkerMetrics::inc(worker_.metrics().backendTlsResumed);
  co_return true;
}

bool Session::takeSlot(const BackendView& backend, const ServerView& server) {
  const uint32_t limit =
      backend.config && server.config ? backend.config->limitOf(*server.config) : 0;
  if (limit == 0 || !server.stats) return true;
  releaseSlot();
  if (!server.stats->admitted.tryAcquire(limit)) return false;
  slotStats_ = server.stats;
  slotBackend_ = backend.id;
  return true;
}

void Session::releaseSlot() {
  if (!slotStats_) return;
  slotStats_->admitted.release();
  slotStats_.reset();
  worker_.slotFreed(slotBackend_);
}

asio::awaitable<bool> Session::waitForSlot(const BackendView& backend, TimePoint deadline,
                                           bool again) {
  const uint32_t size = backend.config ? backend.config->queue.size : 0;
  BackendGate& g = worker_.gate(backend.id);
  if (size == 0 || !g.queued.tryAcquire(size)) {
    WorkerMetrics::inc(worker_.metrics().queueFull);
    co_return false;
  }
  if (!again) WorkerMetrics::inc(worker_.metrics().queued);
  if (!slotTimer_) slotTimer_ = std::make_unique<asio::steady_timer>(worker_.io());
  slotWoken_ = false;
  slotWaiting_ = true;
  worker_.addWaiter(backend.id, this, deadline, again);
  // A slot freed between our failed attempt and the registration above saw no waiter to
  // wake: look once more now that we are visible (see SlotCounter).
  if (slotFreeIn(backend)) {
    slotWoken_ = true;
  } else {
    slotTimer_->expires_at(deadline);
    co_await slotTimer_->async_wait(kUseTuple);
  }
  slotWaiting_ = false;
  worker_.removeWaiter(backend.id, this);
  g.queued.release();
  if (slotWoken_) {
    WorkerMetrics::inc(worker_.metrics().queueServed);
    co_return true;
  }
  WorkerMetrics::inc(worker_.metrics().queueTimeouts);
  co_return false;
}

bool Session::slotFreeIn(const BackendView& backend) const {
  for (const ServerView& s : backend.servers) {
    if (!s.acceptsNew() || !s.stats) continue;
    const uint32_t limit = backend.config && s.config ? backend.config->limitOf(*s.config) : 0;
    if (limit == 0 || s.stats->admitted.value() < limit) return true;
  }
  return false;
}

void Session::wakeSlotWait() {
  slotWoken_ = true;
  if (slotTimer_) slotTimer_->cancel();
}

// ---------------------------------------------------------------------------------------
// ConnTable

void ConnTable::upsert(const repl::ConnEntry& e) {
  std::lock_guard lock(mu_);
  entries_[e.id] = e;
}

void ConnTable::erase(uint64_t id) {
  std::lock_guard lock(mu_);
  entries_.erase(id);
}

void ConnTable::forEach(const std::function<void(const repl::ConnEntry&)>& fn) const {
  std::lock_guard lock(mu_);
  for (const auto& [id, e] : entries_) fn(e);
}

// ---------------------------------------------------------------------------------------
// Worker

Worker::Worker(EngineShared& shared, uint32_t index, PoolSnapshotPtr pools,
               std::vector<ListenerFd> listeners)
    : shared_(shared),
      index_(index),
      io_(BOOST_ASIO_CONCURRENCY_HINT_UNSAFE_IO),
      listenerFds_(std::move(listeners)),
      changes_(shared.config->statesync.queueSize) {
  cookies_ = shared.cookies;
  tls_ = shared.tls;
  emit_ = [this](repl::Change&& c) { changes_.push(std::move(c)); };
  applyPools(std::move(pools));
  applyRoutes(shared.config);
  for (const ListenerFd& l : listenerFds_) {
    sockaddr_storage ss{};
    socklen_t len = sizeof ss;
    ::getsockname(l.fd, reinterpret_cast<sockaddr*>(&ss), &len);
    auto proto = ss.ss_family == AF_INET6 ? tcp::v6() : tcp::v4();
    acceptors_.push_back(std::make_shared<tcp::acceptor>(io_, proto, l.fd));
    listenAddrs_.push_back(SocketAddress::fromSockaddr(reinterpret_cast<sockaddr*>(&ss)));
  }
  tickTimer_ = std::make_unique<asio::steady_timer>(io_);
  drainTimer_ = std::make_unique<asio::steady_timer>(io_);
}

Worker::~Worker() {
  join();
}

void Worker::start() {
  for (size_t i = 0; i < acceptors_.size(); ++i)
    asio::co_spawn(io_, acceptLoop(listenerFds_[i].frontendIndex, acceptors_[i], listenAddrs_[i]),
                   [](std::exception_ptr e) {
                     if (e) {
                       HALB_LOG(Error, "dataplane") << "accept loop ended by an exception";
                     }
                   });
  asio::co_spawn(io_, tickLoop(), [](std::exception_ptr e) {
    if (e) {
      HALB_LOG(Error, "dataplane") << "tick loop ended by an exception";
    }
  });
  thread_ = std::thread([this] {
    for (;;) {
      try {
        io_.run();
        break;
      } catch (const std::exception& e) {
        // Sessions catch their own; reaching here is a bug, but the worker must go on.
        HALB_LOG(Error, "dataplane") << "worker " << index_ << ": " << e.what();
      }
    }
  });
}

void Worker::join() {
  if (thread_.joinable()) thread_.join();
}

void Worker::postPools(PoolSnapshotPtr pools) {
  asio::post(io_, [this, p = std::move(pools)]() mutable { applyPools(std::move(p)); });
}

void Worker::postCookies(std::shared_ptr<const CookieCodecs> cookies) {
  asio::post(io_, [this, c = std::move(cookies)]() mutable { cookies_ = std::move(c); });
}

void Worker::postTls(TlsContextsPtr tls) {
  asio::post(io_, [this, t = std::move(tls)]() mutable { tls_ = std::move(t); });
}

void Worker::postRoutes(config::ConfigPtr config) {
  asio::post(io_, [this, c = std::move(config)] { applyRoutes(c); });
}

void Worker::postWake(uint64_t backendId, uint32_t hops) {
  asio::post(io_, [this, backendId, hops] {
    if (wakeOne(backendId)) return;
    // Our waiters timed out meanwhile: pass the wake on to another worker with waiters.
    if (hops >= shared_.workerCount) return;
    BackendGate& g = gate(backendId);
    uint64_t mask = g.waitingWorkers.load(std::memory_order_acquire);
    if (index_ < 64) mask &= ~(uint64_t{1} << index_);
    if (mask == 0) return;
    shared_.workers[static_cast<size_t>(std::countr_zero(mask))]->postWake(backendId, hops + 1);
  });
}

void Worker::applyRoutes(const config::ConfigPtr& config) {
  routes_.resize(shared_.frontends.size());
  for (size_t i = 0; i < shared_.frontends.size(); ++i) {
    const config::Frontend* fe =
        config ? config->findFrontend(shared_.frontends[i].cfg->name) : nullptr;
    if (!fe) {
      if (routes_[i]) continue;  // a frontend the new configuration lacks keeps its routes
      fe = shared_.frontends[i].cfg;
    }
    auto fr = std::make_shared<FrontendRoutes>();
    fr->config = fe == shared_.frontends[i].cfg ? shared_.config : config;
    fr->frontend = fe;
    if (fe->mode == config::Mode::Http && shared_.makeRouter && !fe->routes.empty())
      fr->route = shared_.makeRouter(*fe);
    for (const config::Route& r : fe->routes) fr->states.push_back(std::make_unique<RouteState>(r));
    fr->defaultRetry.attempts = fr->config->limits.connectRetries;
    routes_[i] = std::move(fr);
  }
}

RetryBudget& Worker::retryBudget(const BackendView& backend) {
  auto& e = budgets_[backend.id];
  if (!e.second || e.first != backend.config) {
    e.first = backend.config;
    e.second = std::make_unique<RetryBudget>(
        backend.config ? backend.config->retryBudget : config::RetryBudget{}, shared_.workerCount);
  }
  return *e.second;
}

BackendGate& Worker::gate(uint64_t backendId) {
  auto it = gates_.find(backendId);
  if (it != gates_.end()) return *it->second;
  BackendGate& g = shared_.gate(backendId);
  gates_.emplace(backendId, &g);
  return g;
}

void Worker::addWaiter(uint64_t backendId, Session* s, TimePoint deadline, bool front) {
  Waiters& w = waiters_[backendId];
  uint64_t id = ++nextWaiterId_;
  if (front)
    w.queue.pushFront(id, deadline);
  else
    w.queue.push(id, deadline);
  w.sessions.emplace(id, s);
  waiterIds_[s] = id;
  if (index_ < 64) gate(backendId).waitingWorkers.fetch_or(uint64_t{1} << index_);
}

void Worker::removeWaiter(uint64_t backendId, Session* s) {
  auto id = waiterIds_.find(s);
  if (id == waiterIds_.end()) return;
  Waiters& w = waiters_[backendId];
  w.queue.remove(id->second);
  w.sessions.erase(id->second);
  waiterIds_.erase(id);
  if (w.queue.empty() && index_ < 64)
    gate(backendId).waitingWorkers.fetch_and(~(uint64_t{1} << index_));
}

bool Worker::wakeOne(uint64_t backendId) {
  auto it = waiters_.find(backendId);
  if (it == waiters_.end()) return false;
  Waiters& w = it->second;
  while (auto id = w.queue.popFront()) {
    auto s = w.sessions.find(*id);
    if (s == w.sessions.end()) continue;
    Session* session = s->second;
    w.sessions.erase(s);
    waiterIds_.erase(session);
    if (w.queue.empty() && index_ < 64)
      gate(backendId).waitingWorkers.fetch_and(~(uint64_t{1} << index_));
    session->wakeSlotWait();
    return true;
  }
  return false;
}

void Worker::slotFreed(uint64_t backendId) {
  BackendGate& g = gate(backendId);
  if (g.queued.value() == 0) return;  // nobody waits anywhere: the common case, one load
  if (wakeOne(backendId)) return;
  uint64_t mask = g.waitingWorkers.load(std::memory_order_acquire);
  if (index_ < 64) mask &= ~(uint64_t{1} << index_);
  if (mask == 0) return;
  // Spread wakes over the workers that wait, starting at a rotating position.
  const uint32_t start = g.nextWake.fetch_add(1, std::memory_order_relaxed) % 64;
  uint64_t rotated = std::rotr(mask, static_cast<int>(start));
  size_t target = (static_cast<size_t>(std::countr_zero(rotated)) + start) % 64;
  if (target < shared_.workers.size()) shared_.workers[target]->postWake(backendId, 1);
}

// ---------------------------------------------------------------------------------------
// Mirrors

// One copy of a request to a shadow backend: its own connection (Connection: close), the
// answer read and discarded, every step under the route's deadlines. Owned by its coroutine;
// the worker tracks it so a stop can cut it.
class MirrorTask : public std::enable_shared_from_this<MirrorTask> {
 public:
  MirrorTask(Worker& w, FrontendRoutesPtr routes, RouteState& state, const config::Route& route,
             std::string request, const IpAddress& client, Duration connectTimeout,
             Duration responseTimeout)
      : worker_(w),
        routes_(std::move(routes)),
        state_(state),
        route_(route),
        request_(std::move(request)),
        client_(client),
        connectTimeout_(connectTimeout),
        responseTimeout_(responseTimeout),
        conn_(w.io()),
        timer_(w.io()) {}

  RouteState& state() { return state_; }

  void abort() {
    aborted_ = true;
    ErrorCode ec;
    conn_.sock.close(ec);
  }

  asio::awaitable<void> run() {
    ok_ = co_await exchange();
    timer_.cancel();
    WorkerMetrics::inc(ok_ ? worker_.metrics().mirrorsSent : worker_.metrics().mirrorsFailed);
  }

 private:
  void deadline(Duration d) {
    timer_.expires_after(d);
    timer_.async_wait([self = shared_from_this()](const ErrorCode& ec) {
      if (!ec) self->abort();
    });
  }

  asio::awaitable<bool> exchange() {
    SnapshotRef pin = worker_.pinPools();
    const BackendView* backend = worker_.findBackend(route_.mirror->backend);
    if (!backend || aborted_) co_return false;
    PickContext ctx;
    ctx.clientAddress = &client_;
    const ServerView* server = worker_.pick(*backend, ctx, nullptr).server;
    if (!server) co_return false;
    const config::Config& cfg = worker_.config();
    deadline(connectTimeout_);
    ErrorCode ec = co_await connectTo(conn_.sock, server->address);
    if (ec || aborted_) {
      if (!aborted_) worker_.report(*backend, *server, Outcome::ConnectFailure);
      co_return false;
    }
    if (backend->config && backend->config->tls) {
      const ClientTls* ct = worker_.backendTls(backend->id);
      SSL* ssl = ct ? ct->newSsl(server->id, server->address, true) : nullptr;
      if (!ssl) co_return false;
      conn_.tls = std::make_unique<TlsStream>(conn_.sock, ssl);
      timer_.cancel();
      deadline(cfg.timeouts.tlsHandshake);
      auto [hec] = co_await conn_.tls->async_handshake(asio::ssl::stream_base::client, kUseTuple);
      if (hec) co_return false;
    }
    timer_.cancel();
    deadline(responseTimeout_);
    auto [wec, n] = co_await conn_.io().write(asio::buffer(request_));
    if (wec) co_return false;
    // Read and drop the answer; the server closes after it (Connection: close).
    char buf[16384];
    size_t total = 0;
    for (;;) {
      auto [rec, m] = co_await conn_.io().readSome(asio::buffer(buf));
      total += m;
      if (rec) co_return total > 0 && !aborted_;
      if (total > kMirrorDiscardMax) co_return true;
    }
  }

  Worker& worker_;
  FrontendRoutesPtr routes_;  // keeps route_ and state_ alive
  RouteState& state_;
  const config::Route& route_;
  std::string request_;
  IpAddress client_;
  Duration connectTimeout_, responseTimeout_;
  ServerConn conn_;
  asio::steady_timer timer_;
  bool aborted_ = false;
  bool ok_ = false;
};

void Worker::mirror(const FrontendRoutesPtr& routes, RouteState& state, const config::Route& route,
                    std::string request, const IpAddress& client, Duration connectTimeout,
                    Duration responseTimeout) {
  if (!route.mirror || stopping_) return;
  if (state.mirrorsInFlight >= route.mirror->maxInFlight) {
    WorkerMetrics::inc(metrics_.mirrorsDropped);
    return;
  }
  auto t = std::make_shared<MirrorTask>(*this, routes, state, route, std::move(request), client,
                                        connectTimeout, responseTimeout);
  ++state.mirrorsInFlight;
  mirrors_.insert(t.get());
  asio::co_spawn(io_, t->run(), [this, t](std::exception_ptr) { mirrorDone(t.get()); });
}

void Worker::mirrorDone(MirrorTask* t) {
  --t->state().mirrorsInFlight;
  mirrors_.erase(t);
}

void Worker::postStop(Duration drain) {
  asio::post(io_, [this, drain] { beginStop(drain); });
}

void Worker::applyPools(PoolSnapshotPtr pools) {
  if (!pools) {
    if (current_) return;
    pools = std::make_shared<PoolSnapshot>();
  }
  // Older snapshots stay while a session pins them.
  std::erase_if(holds_, [](const std::unique_ptr<SnapshotHold>& h) { return h->refs == 0; });
  holds_.push_back(std::make_unique<SnapshotHold>());
  current_ = holds_.back().get();
  current_->snapshot = std::move(pools);
  const PoolSnapshot& snap = *current_->snapshot;
  backendsByName_.clear();
  backendsById_.clear();
  for (const BackendView& b : snap.backends) {
    if (b.config) backendsByName_[b.config->name] = &b;
    backendsById_[b.id] = &b;
  }
  // Idle connections to servers that left the pool are closed now, not on next use.
  for (auto it = idle_.begin(); it != idle_.end();) {
    bool present = false;
    for (const BackendView& b : snap.backends)
      for (const ServerView& s : b.servers)
        if (s.id == it->first) present = true;
    if (!present) {
      idleCount_ -= it->second.size();
      it = idle_.erase(it);
    } else {
      ++it;
    }
  }
}

SnapshotRef::SnapshotRef(Worker* w, SnapshotHold* h) : worker_(w), hold_(h) {
  if (hold_) ++hold_->refs;
}

SnapshotRef& SnapshotRef::operator=(SnapshotRef&& o) noexcept {
  if (this != &o) {
    reset();
    worker_ = o.worker_;
    hold_ = o.hold_;
    o.hold_ = nullptr;
  }
  return *this;
}

void SnapshotRef::reset() {
  if (hold_) worker_->unpin(hold_);
  hold_ = nullptr;
}

void Worker::unpin(SnapshotHold* h) {
  if (--h->refs == 0 && h != current_)
    std::erase_if(holds_, [h](const std::unique_ptr<SnapshotHold>& x) { return x.get() == h; });
}

uint64_t Worker::nextConnId() {
  // node bit | worker (15 bits) | counter (48 bits)
  return (static_cast<uint64_t>(shared_.nodeIndex & 1) << 63) |
         (static_cast<uint64_t>(index_ & 0x7fff) << 48) | (++connCounter_ & 0xffffffffffffULL);
}

const BackendView* Worker::findBackend(std::string_view name) const {
  auto it = backendsByName_.find(name);
  return it == backendsByName_.end() ? nullptr : it->second;
}

const BackendView* Worker::findBackendById(uint64_t id) const {
  auto it = backendsById_.find(id);
  return it == backendsById_.end() ? nullptr : it->second;
}

StickyPick Worker::pick(const BackendView& backend, const PickContext& ctx,
                        const RequestView* request) {
  const config::Algorithm alg =
      backend.config ? backend.config->algorithm : config::Algorithm::RoundRobin;
  BackendState& st = backendState_[backend.id];
  if (!st.selector || st.algorithm != alg) {
    st.algorithm = alg;
    st.selector = shared_.makeSelector(alg, (static_cast<uint64_t>(index_) << 32) ^ backend.id);
    if (!st.selector) return {};
  }
  StickyPick p = pickSticky(backend, *st.selector, ctx, request, shared_.stickTables.get(),
                            cookies_.get(), SteadyClock::now(), emit_);
  if (p.server != nullptr) {
    for (uint64_t ex : ctx.exclude)
      if (ex == p.server->id) return {};  // the selector must honour exclude; never loop on it
  }
  return p;
}

Histogram* Worker::latency(uint64_t backendId) {
  auto it = latency_.find(backendId);
  if (it != latency_.end()) return it->second.get();
  std::lock_guard lock(latencyMu_);
  return latency_.emplace(backendId, std::make_unique<Histogram>()).first->second.get();
}

void Worker::forEachLatency(const std::function<void(uint64_t, const Histogram&)>& fn) const {
  std::lock_guard lock(latencyMu_);
  for (const auto& [id, h] : latency_) fn(id, *h);
}

void Worker::emitChange(repl::Change&& c) {
  changes_.push(std::move(c));
}

std::unique_ptr<ServerConn> Worker::takeIdle(uint64_t serverId, TimePoint now, bool mustProbe) {
  auto it = idle_.find(serverId);
  if (it == idle_.end()) return nullptr;
  auto& v = it->second;
  while (!v.empty()) {
    std::unique_ptr<ServerConn> c = std::move(v.back());
    v.pop_back();
    --idleCount_;
    const Duration idle = now - c->idleSince;
    if (idle >= config().timeouts.serverIdle) continue;
    // A connection parked a moment ago is trusted without a syscall (a server does not close
    // a keep-alive connection within a second of answering on it, and a bodyless request
    // that meets such a close is resent on a fresh connection). Older ones, and any about to
    // carry a body that could not be resent, are probed: a server that closed leaves a FIN
    // (recv returns 0) or an RST (error); stray bytes disqualify as well. Only EAGAIN means
    // alive.
    if (mustProbe || idle >= kTrustIdle) {
      if (!probeAlive(*c)) continue;
    }
    return c;
  }
  return nullptr;
}

bool Worker::probeAlive(ServerConn& c) {
  char probe;
  ssize_t n = ::recv(c.sock.native_handle(), &probe, 1, MSG_PEEK | MSG_DONTWAIT);
  return n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK);
}

void Worker::putIdle(std::unique_ptr<ServerConn> conn, TimePoint now) {
  if (stopping_ || !conn->sock.is_open()) return;
  auto& v = idle_[conn->serverId];
  if (v.size() >= kMaxIdlePerServer) return;  // closes it
  conn->idleSince = now;
  conn->buf.clear();
  v.push_back(std::move(conn));
  ++idleCount_;
}

Buffer Worker::takeBuffer() {
  if (!freeBuffers_.empty()) {
    Buffer b = std::move(freeBuffers_.back());
    freeBuffers_.pop_back();
    return b;
  }
  return Buffer(config().limits.bufferSize);
}

void Worker::returnBuffer(Buffer&& b) {
  if (b.capacity() == 0 || freeBuffers_.size() >= kMaxFreeBuffers) return;
  if (b.capacity() != config().limits.bufferSize) return;  // grown for a large head: drop
  b.clear();
  freeBuffers_.push_back(std::move(b));
}

void Worker::add(Session* s) {
  s->next = sessions_;
  s->prev = nullptr;
  if (sessions_) sessions_->prev = s;
  sessions_ = s;
  ++sessionCount_;
}

void Worker::remove(Session* s) {
  if (s->prev)
    s->prev->next = s->next;
  else if (sessions_ == s)
    sessions_ = s->next;
  if (s->next) s->next->prev = s->prev;
  s->prev = s->next = nullptr;
  --sessionCount_;
  if (s->published) {
    connTable_.erase(s->id());
    repl::Change c;
    c.kind = repl::ChangeKind::ConnClose;
    c.at = SteadyClock::now();
    c.conn.id = s->id();
    c.conn.phase = repl::ConnPhase::Closed;
    emitChange(std::move(c));
  }
  if (stopping_ && sessionCount_ == 0) {
    tickTimer_->cancel();
    drainTimer_->cancel();
    idle_.clear();
    idleCount_ = 0;
  }
}

void Worker::spawn(std::shared_ptr<Session> s) {
  Session* raw = s.get();
  asio::co_spawn(io_, raw->run(), [s = std::move(s)](std::exception_ptr e) {
    if (e) {
      try {
        std::rethrow_exception(e);
      } catch (const std::exception& ex) {
        HALB_LOG_EVERY(Error, "dataplane", 1s) << "session ended by an exception: " << ex.what();
      } catch (...) {
        HALB_LOG_EVERY(Error, "dataplane", 1s) << "session ended by an unknown exception";
      }
    }
    s->stopWatchdog();
  });
}

asio::awaitable<void> Worker::acceptLoop(size_t frontendIndex,
                                         std::shared_ptr<tcp::acceptor> acceptor,
                                         SocketAddress listenAddr) {
  const config::Frontend& fe = *shared_.frontends[frontendIndex].cfg;
  const uint64_t perWorkerMax =
      (config().limits.maxConnections + shared_.workerCount - 1) / shared_.workerCount;
  Duration backoff = kAcceptBackoffMin;
  asio::steady_timer backoffTimer(io_);
  for (;;) {
    tcp::socket sock(io_);
    tcp::endpoint peer;
    auto [ec] = co_await acceptor->async_accept(sock, peer, kUseTuple);
    if (stopping_ || ec == asio::error::operation_aborted) break;
    if (ec) {
      WorkerMetrics::inc(metrics_.acceptErrors);
      HALB_LOG_EVERY(Warn, "dataplane", 1s)
          << "accept on frontend " << fe.name << ": " << ec.message();
      if (ec == asio::error::connection_aborted) continue;
      // EMFILE, ENFILE, ENOBUFS...: the condition persists; retrying at once would spin.
      backoffTimer.expires_after(backoff);
      co_await backoffTimer.async_wait(kUseTuple);
      backoff = std::min<Duration>(backoff * 2, kAcceptBackoffMax);
      if (stopping_) break;
      continue;
    }
    backoff = kAcceptBackoffMin;
    WorkerMetrics::inc(metrics_.connectionsAccepted);
    if (sessionCount_ >= perWorkerMax) {
      WorkerMetrics::inc(metrics_.rejectedMaxConn);
      HALB_LOG_EVERY(Warn, "dataplane", 1s) << "max_connections reached, refusing a connection";
      continue;  // closes it
    }
    const SocketAddress client = toSocketAddress(peer);
    std::shared_ptr<Session> s =
        fe.mode == config::Mode::Tcp
            ? makeTcpSession(*this, std::move(sock), client, listenAddr, frontendIndex)
            : makeHttpSession(*this, std::move(sock), client, listenAddr, frontendIndex);
    spawn(std::move(s));
  }
}

asio::awaitable<void> Worker::tickLoop() {
  for (;;) {
    tickTimer_->expires_after(kTick);
    co_await tickTimer_->async_wait(kUseTuple);
    if (stopping_ && sessionCount_ == 0) break;
    tick(SteadyClock::now());
  }
}

void Worker::tick(TimePoint now) {
  WorkerMetrics::inc(metrics_.heartbeat);
  ++tickCount_;
  // Idle server connections past server_idle are closed here, so servers see them go.
  const Duration serverIdle = config().timeouts.serverIdle;
  for (auto& [id, v] : idle_) {
    size_t before = v.size();
    std::erase_if(v, [&](const std::unique_ptr<ServerConn>& c) {
      const Duration idle = now - c->idleSince;
      return idle >= serverIdle || (idle >= kTrustIdle && !probeAlive(*c));
    });
    idleCount_ -= before - v.size();
  }
  if (tickCount_ % kPublishEveryTicks != 0) return;
  // Connection table: publish long-lived connections and their progress, coalesced.
  for (Session* s = sessions_; s != nullptr; s = s->next) {
    if (now - s->started() < kConnPublishDelay) continue;
    if (s->published && s->bytesTotal() == s->publishedBytes && s->serverId() == s->publishedServer)
      continue;  // nothing new: no copy, no lock
    repl::Change c;
    s->describe(c.conn);
    if (!s->published) {
      c.kind = repl::ChangeKind::ConnOpen;
      s->published = true;
    } else if (c.conn.bytesIn + c.conn.bytesOut != s->publishedBytes ||
               c.conn.serverId != s->publishedServer) {
      c.kind = repl::ChangeKind::ConnUpdate;
    } else {
      continue;
    }
    s->publishedBytes = c.conn.bytesIn + c.conn.bytesOut;
    s->publishedServer = c.conn.serverId;
    c.at = now;
    connTable_.upsert(c.conn);
    emitChange(std::move(c));
  }
}

void Worker::beginStop(Duration drain) {
  if (stopping_) return;
  stopping_ = true;
  for (auto& a : acceptors_) {
    ErrorCode ec;
    a->close(ec);
  }
  idle_.clear();
  idleCount_ = 0;
  for (MirrorTask* m : mirrors_) m->abort();  // copies are never worth waiting for
  if (sessionCount_ == 0) {
    tickTimer_->cancel();
    return;
  }
  for (Session* s = sessions_; s != nullptr; s = s->next) s->drain();
  drainTimer_->expires_after(drain);
  drainTimer_->async_wait([this](const ErrorCode& ec) {
    if (ec) return;
    if (sessionCount_ > 0) {
      HALB_LOG(Info, "dataplane") << "worker " << index_ << ": drain timeout, cutting "
                                  << sessionCount_ << " connections";
    }
    for (Session* s = sessions_; s != nullptr; s = s->next) s->abort();
  });
}

}  // namespace halb::balancer::dp
