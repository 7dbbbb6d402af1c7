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
    if (co_await connectServer(cfg, fe)) co_await proxyLoop(cfg);
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
    if (phase_ == Phase::Connect) {
      ErrorCode ec;
      server_.close(ec);  // the pending connect completes with operation_aborted
      return;
    }
    closeAll(true);
  }
  void drain() override {}  // a byte stream has no request boundary: wait for the drain timeout
  void abort() override { closeAll(true); }

 private:
  enum class Phase : uint8_t { Connect, Proxy };

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
    std::array<uint64_t, kMaxTries> tried{};
    size_t nTried = 0;
    const size_t maxTries = std::min<size_t>(kMaxTries, cfg.limits.connectRetries + 1);
    for (size_t attempt = 0; attempt < maxTries; ++attempt) {
      // Stickiness by source (the only key an L4 proxy has), else the algorithm with the
      // client address as hash key (source_hash, maglev); a retry excludes what failed.
      PickContext ctx;
      ctx.clientAddress = &clientAddr_.ip;
      ctx.exclude = std::span<const uint64_t>(tried.data(), nTried);
      const ServerView* server = worker_.pick(*backend, ctx, nullptr).server;
      if (server == nullptr) break;
      if (attempt > 0) WorkerMetrics::inc(worker_.metrics().connectRetries);
      phase_ = Phase::Connect;
      timedOut_ = false;
      arm(cfg.timeouts.connect);
      WorkerMetrics::inc(worker_.metrics().serverConnects);
      ErrorCode ec = co_await connectTo(server_, server->address);
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
        if (backend->config && backend->config->proxyProtocol == config::ProxyProtocol::V2) {
          ProxyV2Header hdr;
          size_t len = encodeProxyV2(clientAddr_, frontendAddress(), hdr);
          arm(cfg.timeouts.connect);
          auto [wec, n] =
              co_await asio::async_write(server_, asio::buffer(hdr.data(), len), kUseTuple);
          disarm();
          if (wec) co_return false;
        }
        co_return true;
      }
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
    if (up_.open() && down_.open()) {
      co_await (splicePump(client_, server_, up_, bytesIn_, true) &&
                splicePump(server_, client_, down_, bytesOut_, false));
    } else {
      // No pipes (fd limit): plain copies through user space.
      co_await (copyPump(client_, server_, bytesIn_, true) &&
                copyPump(server_, client_, bytesOut_, false));
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

  // Buffered copy for streams splice cannot serve (no pipes left; TLS later): any pair of
  // Asio stream types.
  template <class SrcStream, class DstStream>
  asio::awaitable<void> copyPump(SrcStream& src, DstStream& dst, uint64_t& counter,
                                 bool fromClient) {
    Buffer buf = worker_.takeBuffer();
    for (;;) {
      auto [ec, n] =
          co_await src.async_read_some(asio::buffer(buf.writePtr(), buf.writable()), kUseTuple);
      if (closed_) break;
      if (ec == asio::error::eof) {
        ErrorCode sec;
        dst.shutdown(tcp::socket::shutdown_send, sec);
        break;
      }
      if (ec) {
        closeAll(true);
        break;
      }
      arm(idle_);
      auto [wec, m] = co_await asio::async_write(dst, asio::buffer(buf.writePtr(), n), kUseTuple);
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
    for (tcp::socket* s : {&client_, &server_}) {
      if (!s->is_open()) continue;
      if (reset) s->set_option(asio::socket_base::linger(true, 0), ec);
      s->close(ec);
    }
  }

  tcp::socket server_;
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
