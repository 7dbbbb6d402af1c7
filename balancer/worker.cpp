#include "balancer/worker.h"

#include <netinet/tcp.h>
#include <sys/socket.h>

#include <boost/asio/connect.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/post.hpp>
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

}  // namespace

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
  emit_ = [this](repl::Change&& c) { changes_.push(std::move(c)); };
  applyPools(std::move(pools));
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
