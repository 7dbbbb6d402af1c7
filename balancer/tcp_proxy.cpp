// L4 `mode: tcp`: one session per client connection. Picks a server (stickiness by source,
// then the backend's algorithm with the client address as hash key), connects with a
// deadline and retries on another server, optionally sends a PROXY v2 header, then moves
// bytes both ways with splice(2) through one pipe per direction — the payload never enters
// user space. Half-close is forwarded (FIN one way keeps the other way open); an error on
// either side resets both; the idle timeout covers both directions together.
//
// The proxy loop (`proxyLoop`) only needs two connected sockets, so a connection restored
// from replicated TCP state (TCP_REPAIR, issue 9) can enter it directly; between two
// transfers both pipes are empty, which is the idle point at which a connection can be
// frozen and dumped.
#include <fcntl.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/asio/read.hpp>
#include <boost/asio/write.hpp>

#include "balancer/proxy_protocol.h"
#include "balancer/worker.h"
#include "common/log.h"

namespace halb::balancer::dp {

using namespace std::chrono_literals;
using namespace boost::asio::experimental::awaitable_operators;

namespace {

constexpr size_t kSpliceChunk = 1 << 20;  // per splice call; the pipe bounds it anyway
constexpr int kPipeSize = 1 << 20;        // F_SETPIPE_SZ: fewer wake-ups on bulk transfers
constexpr size_t kMaxTries = 8;
constexpr size_t kMaxFull = 64;      // servers skipped for being at their limit
constexpr Duration kTlsLinger = 1s;  // waiting for the client's close_notify

struct Pipe {
  int r = -1, w = -1;
  size_t pending = 0;  // bytes in the pipe not yet written to the destination
  Pipe() = default;
  Pipe(const Pipe&) = delete;
  Pipe& operator=(const Pipe&) = delete;
  ~Pipe() {
    if (r >= 0) ::close(r);
    if (w >= 0) ::close(w);
  }
  bool open() {
    int fds[2];
    if (::pipe2(fds, O_NONBLOCK | O_CLOEXEC) != 0) return false;
    r = fds[0];
    w = fds[1];
    ::fcntl(w, F_SETPIPE_SZ, kPipeSize);  // best effort (bounded by pipe-max-size)
    return true;
  }
};

class TcpSession final : public Session {
 public:
  TcpSession(Worker& w, tcp::socket client, const SocketAddress& clientAddr,
             const SocketAddress& listenAddr, uint64_t fi)
      : Session(w, std::move(client), clientAddr, listenAddr, fi), server_(w.io()) {}

  asio::awaitable<void> run() override {
    auto self = shared_from_this();
    const config::Config& cfg = worker_.config();
    const config::Frontend& fe = *worker_.shared().frontends[frontendIndex_].cfg;
    ErrorCode ec;
    client_.non_blocking(true, ec);
    setNoDelay(client_);
    phase_ = Phase::Handshake;
    if (co_await handshakeClient(cfg)) {
      if (co_await connectServer(cfg, fe)) co_await proxyLoop(cfg);
      if (clientTls() && !closed_ && cleanEnd_) {
        phase_ = Phase::Proxy;  // a timeout closes everything
        co_await shutdownClientTls(kTlsLinger);
      }
    }
    releaseSlot();
    closeAll(false);
    if (stats_) {
      stats_->active.fetch_sub(1, std::memory_order_relaxed);
      stats_->bytesToServer.fetch_add(bytesIn_, std::memory_order_relaxed);
      stats_->bytesFromServer.fetch_add(bytesOut_, std::memory_order_relaxed);
    }
  }

  void describe(repl::ConnEntry& e) override {
    Session::describe(e);
    // Idle: both pipes empty, nothing in flight inside halb (the point where a connection
    // can be frozen for TCP_REPAIR); bytes still queued in the kernel are the dump's job.
    e.phase = closed_ ? repl::ConnPhase::Closed
              : (phase_ == Phase::Proxy && up_.pending == 0 && down_.pending == 0)
                  ? repl::ConnPhase::Idle
                  : repl::ConnPhase::Busy;
  }

  void onTimeout() override {
    if (phase_ == Phase::Handshake) {
      ErrorCode ec;
      client_.cancel(ec);
      return;
    }
    if (phase_ == Phase::Connect) {
      ErrorCode ec;
      server_.close(ec);  // the pending connect completes with operation_aborted
      return;
    }
    closeAll(true);
  }
  void drain() override {}  // a byte stream has no request boundary: wait for the drain timeout
  void abort() override {
    closeAll(true);
    if (slotWaiting_ && slotTimer_) slotTimer_->cancel();
  }

 private:
  enum class Phase : uint8_t { Handshake, Connect, Proxy };

  asio::awaitable<bool> connectServer(const config::Config& cfg, const config::Frontend& fe) {
    SnapshotRef pin = worker_.pinPools();  // backend/server pointers live across the connect
    const BackendView* backend = worker_.findBackend(fe.defaultBackend);
    if (backend == nullptr) {
      WorkerMetrics::inc(worker_.metrics().noServer);
      HALB_LOG_EVERY(Warn, "tcp", 1s) << "frontend " << fe.name << ": backend '"
                                      << fe.defaultBackend << "' not in the pool snapshot";
      co_return false;
    }
    backendId_ = backend->id;
    RetryBudget& budget = worker_.retryBudget(*backend);
    budget.onRequest(SteadyClock::now());
    std::array<uint64_t, kMaxTries + kMaxFull> exclude{};
    std::array<uint64_t, kMaxTries> tried{};
    std::array<uint64_t, kMaxFull> full{};
    size_t nTried = 0, nFull = 0;
    bool queued = false;
    TimePoint queueDeadline{};
    const size_t maxTries = std::min<size_t>(kMaxTries, cfg.limits.connectRetries + 1);
    for (size_t attempt = 0; attempt < maxTries;) {
      // Stickiness by source (the only key an L4 proxy has), else the algorithm with the
      // client address as hash key (source_hash, maglev); a retry excludes what failed, and
      // servers at their max_connections are skipped.
      size_t n = 0;
      for (size_t i = 0; i < nTried; ++i) exclude[n++] = tried[i];
      for (size_t i = 0; i < nFull; ++i) exclude[n++] = full[i];
      PickContext ctx;
      ctx.clientAddress = &clientAddr_.ip;
      ctx.exclude = std::span<const uint64_t>(exclude.data(), n);
      const ServerView* server = worker_.pick(*backend, ctx, nullptr).server;
      if (server == nullptr) {
        if (nFull == 0) break;
        // Every usable server is full: wait in the backend's queue (queue.timeout in all).
        if (!queued) queueDeadline = SteadyClock::now() + backend->config->queue.timeout;
        disarm();
        const bool again = queued;
        queued = true;
        if (!co_await waitForSlot(*backend, queueDeadline, again)) break;
        nFull = 0;
        continue;
      }
      if (!takeSlot(*backend, *server)) {
        if (nFull < full.size()) {
          full[nFull++] = server->id;
          continue;
        }
        break;
      }
      if (attempt > 0) {
        if (!budget.tryRetry(SteadyClock::now())) {
          WorkerMetrics::inc(worker_.metrics().retriesDenied);
          break;
        }
        WorkerMetrics::inc(worker_.metrics().connectRetries);
        WorkerMetrics::inc(worker_.metrics().retries);
      }
      ++attempt;
      phase_ = Phase::Connect;
      timedOut_ = false;
      arm(cfg.timeouts.connect);
      WorkerMetrics::inc(worker_.metrics().serverConnects);
      ErrorCode ec = co_await connectTo(server_, server->address);
      // PROXY v2 goes first on the connection, before any TLS (what servers that accept
      // both expect, as with HAProxy's send-proxy-v2 + ssl).
      if (!ec && backend->config && backend->config->proxyProtocol == config::ProxyProtocol::V2) {
        ProxyV2Header hdr;
        size_t len = encodeProxyV2(clientAddr_, frontendAddress(), hdr);
        auto [wec, n] =
            co_await asio::async_write(server_, asio::buffer(hdr.data(), len), kUseTuple);
        ec = wec;
      }
      bool tlsFailed = false;
      if (!ec && backend->config && backend->config->tls) {
        tlsFailed = !co_await handshakeServer(server_, serverTls_, *server, *backend, false, cfg);
        if (tlsFailed) {
          serverTls_.reset();
          ec = asio::error::connection_refused;
        }
      }
      disarm();
      if (!ec) {
        serverId_ = server->id;
        serverAddr_ = server->address;
        ErrorCode lec;
        auto local = server_.local_endpoint(lec);
        if (!lec) serverLocal_ = toSocketAddress(local);
        server_.non_blocking(true, lec);
        stats_ = server->stats;
        if (stats_) {
          stats_->active.fetch_add(1, std::memory_order_relaxed);
          stats_->connections.fetch_add(1, std::memory_order_relaxed);
        }
        worker_.report(*backend, *server, Outcome::Success);
        co_return true;
      }
      releaseSlot();
      WorkerMetrics::inc(worker_.metrics().connectFailures);
      if (server->stats) server->stats->connectFailures.fetch_add(1, std::memory_order_relaxed);
      worker_.report(*backend, *server, Outcome::ConnectFailure);
      HALB_LOG_EVERY(Warn, "tcp", 1s)
          << "connect to " << server->address.toString()
          << " failed: " << (timedOut_ ? std::string("timeout") : ec.message());
      if (nTried < tried.size()) tried[nTried++] = server->id;
    }
    WorkerMetrics::inc(worker_.metrics().noServer);
    co_return false;
  }

  asio::awaitable<void> proxyLoop(const config::Config& cfg) {
    phase_ = Phase::Proxy;
    idle_ = cfg.timeouts.clientIdle;
    arm(idle_);
    // TLS on either side: the bytes must pass through user space to be (de)crypted.
    const bool tls = clientTls() || serverTls_;
    if (!tls && up_.open() && down_.open()) {
      co_await (splicePump(client_, server_, up_, bytesIn_, true) &&
                splicePump(server_, client_, down_, bytesOut_, false));
    } else {
      // TLS, or no pipes (fd limit): copies through a buffer.
      co_await (copyPump(clientIo(), serverIo(), bytesIn_, true) &&
                copyPump(serverIo(), clientIo(), bytesOut_, false));
    }
    disarm();
  }

  asio::awaitable<void> splicePump(tcp::socket& src, tcp::socket& dst, Pipe& pipe,
                                   uint64_t& counter, bool fromClient) {
    for (;;) {
      if (closed_) co_return;
      ssize_t n = ::splice(src.native_handle(), nullptr, pipe.w, nullptr, kSpliceChunk,
                           SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
      if (n > 0) {
        pipe.pending += static_cast<size_t>(n);
        arm(idle_);
        while (pipe.pending > 0) {
          ssize_t m = ::splice(pipe.r, nullptr, dst.native_handle(), nullptr, pipe.pending,
                               SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
          if (m > 0) {
            pipe.pending -= static_cast<size_t>(m);
            account(counter, static_cast<uint64_t>(m), fromClient);
            continue;
          }
          if (m < 0 && (errno == EAGAIN || errno == EINTR)) {
            // Back-pressure: the destination's send buffer is full; stop reading the source.
            auto [ec] = co_await dst.async_wait(tcp::socket::wait_write, kUseTuple);
            if (ec || closed_) co_return closeAll(true);
            continue;
          }
          co_return closeAll(true);  // EPIPE, ECONNRESET
        }
        continue;
      }
      if (n == 0) {
        // FIN from src: pass it on, keep the other direction open (half-close).
        ErrorCode ec;
        dst.shutdown(tcp::socket::shutdown_send, ec);
        co_return;
      }
      if (errno == EAGAIN || errno == EINTR) {
        auto [ec] = co_await src.async_wait(tcp::socket::wait_read, kUseTuple);
        if (ec || closed_) co_return closeAll(true);
        continue;
      }
      co_return closeAll(true);
    }
  }

  StreamIo serverIo() { return {&server_, serverTls_.get()}; }

  // Buffered copy for streams splice cannot serve (TLS; no pipes left). An end of stream is
  // passed on as a half-close towards a plain TCP side; towards a TLS side (Asio cannot
  // half-close TLS) it ends both directions, with a close_notify to a TLS client when the
  // server ended.
  asio::awaitable<void> copyPump(StreamIo src, StreamIo dst, uint64_t& counter, bool fromClient) {
    Buffer buf = worker_.takeBuffer();
    for (;;) {
      if (closed_ || ending_) break;
      auto [ec, n] = co_await src.readSome(asio::buffer(buf.writePtr(), buf.writable()));
      if (closed_ || ending_) break;
      if (ec == asio::error::eof || (src.tls && ec == asio::ssl::error::stream_truncated)) {
        if (!dst.shutdownSend()) {
          ending_ = true;
          cleanEnd_ = !fromClient;
          ErrorCode cec;
          (fromClient ? server_ : client_).cancel(cec);  // the other direction stops
        }
        break;
      }
      if (ec) {
        closeAll(true);
        break;
      }
      arm(idle_);
      auto [wec, m] = co_await dst.write(asio::buffer(buf.writePtr(), n));
      if (wec || closed_) {
        closeAll(true);
        break;
      }
      account(counter, m, fromClient);
    }
    worker_.returnBuffer(std::move(buf));
  }

  void account(uint64_t& counter, uint64_t n, bool fromClient) {
    counter += n;
    if (fromClient)
      worker_.metrics().addBytesIn(n);
    else
      worker_.metrics().addBytesOut(n);
  }

  // reset: an error or timeout on one side; SO_LINGER 0 makes close() send RST so the peer
  // learns at once instead of seeing a clean FIN.
  void closeAll(bool reset) {
    if (closed_) return;
    closed_ = true;
    ErrorCode ec;
    // A clean end keeps the server's TLS session resumable (see ServerConn::~ServerConn).
    if (!reset && serverTls_)
      SSL_set_shutdown(serverTls_->native_handle(), SSL_SENT_SHUTDOWN | SSL_RECEIVED_SHUTDOWN);
    for (tcp::socket* s : {&client_, &server_}) {
      if (!s->is_open()) continue;
      if (reset) s->set_option(asio::socket_base::linger(true, 0), ec);
      s->close(ec);
    }
  }

  tcp::socket server_;
  std::unique_ptr<TlsStream> serverTls_;  // on server_ when the backend has `tls:`
  bool ending_ = false;    // TLS: one side ended, the other direction is being stopped
  bool cleanEnd_ = false;  // the server ended the stream (a TLS client gets close_notify)
  Pipe up_, down_;
  Phase phase_ = Phase::Connect;
  Duration idle_{};
  bool closed_ = false;
  std::shared_ptr<ServerStats> stats_;
};

}  // namespace

std::shared_ptr<Session> makeTcpSession(Worker& w, tcp::socket client,
                                        const SocketAddress& clientAddr,
                                        const SocketAddress& listenAddr, uint64_t frontendIndex) {
  return std::make_shared<TcpSession>(w, std::move(client), clientAddr, listenAddr, frontendIndex);
}

}  // namespace halb::balancer::dp
