// L7 `mode: http`: one coroutine per client connection loops over its requests, so a
// keep-alive connection costs no allocation per request: the read buffers, the parsers and
// the output string are reused. For each request: parse the head strictly (http_parser.h),
// route, pick a server (stickiness first), take a pooled idle server connection or connect
// one (retrying on another server), send the rewritten head and the body (streamed, never
// buffered whole), read the response head, forward it and its body, and park the server
// connection in the worker's pool when both sides allow it. Pipelined requests wait in the
// client buffer, so they are answered in order. Upgrade (WebSocket) becomes a tunnel.
//
// Every wait has a deadline through the session watchdog; which timeout fired is told by
// the phase the session was in (keep-alive idle, request head, body, connect, server
// response, response body, tunnel).
#include <sys/socket.h>

#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/asio/write.hpp>
#include <cstring>

#include "balancer/http_parser.h"
#include "balancer/sticky_cookie.h"
#include "balancer/worker.h"
#include "common/log.h"

namespace halb::balancer::dp {

using namespace std::chrono_literals;
using namespace std::string_view_literals;
using namespace boost::asio::experimental::awaitable_operators;
using http::BodyKind;
using http::FieldId;
using http::HeadParser;
using http::ParseStatus;

namespace {

constexpr size_t kMaxTries = 8;
constexpr Duration kErrorLinger = 1s;  // reading what the client still sends after an error
constexpr size_t kErrorLingerBytes = 64 * 1024;

std::string makeError(int code, std::string_view reason, std::string_view body) {
  std::string r = "HTTP/1.1 " + std::to_string(code) + " " + std::string(reason) +
                  "\r\nContent-Type: text/plain\r\nContent-Length: " + std::to_string(body.size()) +
                  "\r\nCache-Control: no-store\r\nConnection: close\r\n\r\n" + std::string(body);
  return r;
}

const std::string& errorResponse(int code) {
  static const std::string k400 = makeError(400, "Bad Request", "bad request\n");
  static const std::string k404 = makeError(404, "Not Found", "no route for this request\n");
  static const std::string k405 = makeError(405, "Method Not Allowed", "method not allowed\n");
  static const std::string k408 = makeError(408, "Request Timeout", "request timeout\n");
  static const std::string k414 = makeError(414, "URI Too Long", "request line too long\n");
  static const std::string k431 =
      makeError(431, "Request Header Fields Too Large", "request header fields too large\n");
  static const std::string k501 =
      makeError(501, "Not Implemented", "transfer coding not implemented\n");
  static const std::string k502 = makeError(502, "Bad Gateway", "the server failed to answer\n");
  static const std::string k503 =
      makeError(503, "Service Unavailable", "no healthy server available for this request\n");
  static const std::string k504 =
      makeError(504, "Gateway Timeout", "the server did not answer in time\n");
  static const std::string k505 =
      makeError(505, "HTTP Version Not Supported", "HTTP version not supported\n");
  switch (code) {
    case 404:
      return k404;
    case 405:
      return k405;
    case 408:
      return k408;
    case 414:
      return k414;
    case 431:
      return k431;
    case 501:
      return k501;
    case 502:
      return k502;
    case 503:
      return k503;
    case 504:
      return k504;
    case 505:
      return k505;
    default:
      return k400;
  }
}

char lowerAscii(char c) {
  return (c >= 'A' && c <= 'Z') ? static_cast<char>(c + 32) : c;
}

// IpAddress::toString goes through inet_ntop (printf machinery); IPv4, the common case, is
// formatted by hand since it is done once per client connection.
void formatIp(const IpAddress& ip, std::string& out) {
  if (!ip.isV4()) {
    out = ip.toString();
    return;
  }
  char buf[16];
  char* p = buf;
  for (size_t i = 0; i < 4; ++i) {
    unsigned v = ip.data()[i];
    if (v >= 100) *p++ = static_cast<char>('0' + v / 100);
    if (v >= 10) *p++ = static_cast<char>('0' + (v / 10) % 10);
    *p++ = static_cast<char>('0' + v % 10);
    if (i < 3) *p++ = '.';
  }
  out.assign(buf, static_cast<size_t>(p - buf));
}

enum class BodyResult : uint8_t { Ok, SrcClosed, SrcError, DstError, Timeout, Invalid };

class HttpSession final : public Session, private RequestView {
 public:
  HttpSession(Worker& w, tcp::socket client, const SocketAddress& clientAddr,
              const SocketAddress& listenAddr, uint64_t fi)
      : Session(w, std::move(client), clientAddr, listenAddr, fi),
        fe_(w.shared().frontends[fi]),
        req_(HeadParser::Kind::Request, limitsOf(w.config())),
        resp_(HeadParser::Kind::Response, limitsOf(w.config())),
        reqChunks_(static_cast<uint32_t>(w.config().limits.headerBytes)),
        respChunks_(static_cast<uint32_t>(w.config().limits.headerBytes)) {}

  asio::awaitable<void> run() override {
    auto self = shared_from_this();
    const config::Config& cfg = worker_.config();
    formatIp(clientAddr_.ip, clientIp_);
    cbuf_ = worker_.takeBuffer();
    out_.reserve(1024);
    bool first = true;
    for (;;) {
      if (!co_await readRequestHead(cfg, first)) break;
      first = false;
      if (!co_await handleRequest(cfg)) break;
      if (draining_) break;
    }
    releaseServer(false);
    ErrorCode ec;
    client_.close(ec);
    disarm();
    worker_.returnBuffer(std::move(cbuf_));
  }

  void describe(repl::ConnEntry& e) override {
    Session::describe(e);
    // Idle between requests with nothing buffered: the keep-alive point at which the
    // connection could be frozen and moved (issue 9).
    e.phase =
        phase_ == Phase::Idle && cbuf_.empty() ? repl::ConnPhase::Idle : repl::ConnPhase::Busy;
    e.appState = phase_ == Phase::Idle ? "h1:idle" : "h1:busy";
  }

  void onTimeout() override {
    ErrorCode ec;
    if (phase_ == Phase::Connect) {
      if (sc_) sc_->sock.close(ec);
      return;
    }
    client_.cancel(ec);
    if (sc_) sc_->sock.cancel(ec);
  }

  void drain() override {
    draining_ = true;
    if (phase_ == Phase::Idle) {
      ErrorCode ec;
      client_.cancel(ec);
    }
  }

  void abort() override {
    draining_ = true;
    ErrorCode ec;
    client_.close(ec);
    if (sc_) sc_->sock.close(ec);
  }

 private:
  enum class Phase : uint8_t {
    Idle,
    Head,
    Body,
    Connect,
    ServerResponse,
    ResponseBody,
    Tunnel,
    Closing
  };

  static http::ParseLimits limitsOf(const config::Config& c) {
    return {static_cast<uint32_t>(c.limits.requestLine),
            static_cast<uint32_t>(c.limits.headerBytes), c.limits.headerCount};
  }
  size_t headLimit(const config::Config& c) const {
    return c.limits.requestLine + c.limits.headerBytes + 1024;
  }

  // ---- RequestView for the router (valid while the head is in cbuf_) ----
  std::string_view method() const override { return req_.view(reqBase_, req_.method()); }
  std::string_view host() const override { return hostLower_; }
  std::string_view path() const override { return path_; }
  std::optional<std::string_view> header(std::string_view lowerName) const override {
    std::string_view base = reqBase_;
    for (const http::Field& f : req_.fields())
      if (http::iequals(req_.view(base, f.name), lowerName)) return req_.view(base, f.value);
    return std::nullopt;
  }
  std::optional<std::string_view> cookie(std::string_view name) const override {
    std::string_view base = reqBase_;
    for (const http::Field& f : req_.fields()) {
      if (f.id != FieldId::Cookie) continue;
      std::string_view v = req_.view(base, f.value);
      // cookie-string = cookie-pair *( ";" SP cookie-pair ) (RFC 6265 §4.2.1)
      while (!v.empty()) {
        size_t semi = v.find(';');
        std::string_view pair = v.substr(0, semi);
        while (!pair.empty() && pair.front() == ' ') pair.remove_prefix(1);
        size_t eq = pair.find('=');
        if (eq != std::string_view::npos && pair.substr(0, eq) == name) {
          std::string_view val = pair.substr(eq + 1);
          if (val.size() >= 2 && val.front() == '"' && val.back() == '"')
            val = val.substr(1, val.size() - 2);
          return val;
        }
        if (semi == std::string_view::npos) break;
        v.remove_prefix(semi + 1);
      }
    }
    return std::nullopt;
  }

  // Host (lower case, no port) and path (no query) for routing; the absolute-form target's
  // authority wins over Host (RFC 9112 §3.2.2).
  void prepareRouting() {
    std::string_view base = cbuf_.view();
    std::string_view target = req_.view(base, req_.target());
    std::string_view host;
    if (req_.hostIndex() >= 0) host = req_.view(base, req_.fields()[req_.hostIndex()].value);
    path_ = target;
    if (!target.empty() && target[0] != '/' && target != "*") {
      size_t scheme = target.find("://");
      std::string_view rest = target.substr(scheme + 3);
      size_t slash = rest.find('/');
      host = rest.substr(0, slash);
      path_ = slash == std::string_view::npos ? std::string_view("/") : rest.substr(slash);
    }
    size_t q = path_.find('?');
    if (q != std::string_view::npos) path_ = path_.substr(0, q);
    // Strip the port; keep IPv6 literals' brackets.
    size_t colon = host.rfind(':');
    if (colon != std::string_view::npos && host.find(']', colon) == std::string_view::npos)
      host = host.substr(0, colon);
    hostLower_.assign(host);
    for (char& c : hostLower_) c = lowerAscii(c);
  }

  // ---- request head ----
  asio::awaitable<bool> readRequestHead(const config::Config& cfg, bool first) {
    req_.reset();
    timedOut_ = false;
    const bool empty = cbuf_.empty();
    phase_ = empty && !first ? Phase::Idle : Phase::Head;
    arm(phase_ == Phase::Idle ? cfg.timeouts.keepAlive : cfg.timeouts.requestHeaders);
    if (draining_ && empty) co_return false;
    for (;;) {
      if (!cbuf_.empty()) {
        ParseStatus st = req_.feed(cbuf_.view());
        if (st == ParseStatus::Complete) co_return true;
        if (st == ParseStatus::Error) {
          WorkerMetrics::inc(worker_.metrics().parseErrors);
          HALB_LOG_EVERY(Info, "http", 1s)
              << "refused a request from " << clientIp_ << ": " << req_.errorDetail();
          co_await sendErrorAndClose(http::statusFor(req_.error()));
          co_return false;
        }
      }
      if (!cbuf_.ensureWritable(headLimit(cfg))) {
        WorkerMetrics::inc(worker_.metrics().parseErrors);
        co_await sendErrorAndClose(431);
        co_return false;
      }
      auto [ec, n] = co_await client_.async_read_some(
          asio::buffer(cbuf_.writePtr(), cbuf_.writable()), kUseTuple);
      if (ec) {
        // Timeout with a partial request: 408 (RFC 9110 §15.5.9); an idle keep-alive
        // connection just closes.
        if (timedOut_ && !cbuf_.empty()) co_await sendErrorAndClose(408);
        co_return false;
      }
      cbuf_.commit(n);
      bytesIn_ += n;
      worker_.metrics().addBytesIn(n);
      if (phase_ == Phase::Idle) {
        phase_ = Phase::Head;
        arm(cfg.timeouts.requestHeaders);
      }
    }
  }

  // ---- one request/response exchange; false = close the client connection ----
  asio::awaitable<bool> handleRequest(const config::Config& cfg) {
    WorkerMetrics::inc(worker_.metrics().requests);
    // BackendView/ServerView pointers below stay valid across suspensions.
    SnapshotRef pin = worker_.pinPools();
    std::string_view base = cbuf_.view();
    // The router and the stickiness glue read the head through RequestView. The head is
    // consumed from cbuf_ before the request is sent, but its bytes stay where they are
    // until the body (if any) is read into the buffer, and every pick (retries included)
    // happens before that: retries after the body started are not made.
    reqBase_ = base.substr(0, req_.headLength());
    const bool isHead = req_.methodIs(base, "HEAD");
    const BodyKind reqBody = req_.requestBody();
    const bool upgrade = req_.upgrade();
    clientKeepAlive_ = req_.keepAlive() && !draining_;
    prepareRouting();

    // Route.
    const std::string* backendName = fe_.route ? fe_.route(*this) : nullptr;
    if (backendName == nullptr && !fe_.cfg->defaultBackend.empty())
      backendName = &fe_.cfg->defaultBackend;
    if (backendName == nullptr) {
      co_await sendErrorAndClose(404);
      co_return false;
    }
    const BackendView* backend = worker_.findBackend(*backendName);
    if (backend == nullptr) {
      WorkerMetrics::inc(worker_.metrics().noServer);
      co_await sendErrorAndClose(503);
      co_return false;
    }
    backendId_ = backend->id;

    const config::Sticky& sc = backend->config ? backend->config->sticky : kNoSticky;
    setCookie_.clear();

    // Rewrite the head now (it is consumed from cbuf_ below).
    buildRequestHead(base, upgrade);
    const size_t headLen = req_.headLength();
    cbuf_.consume(headLen);
    reqChunks_.reset();
    uint64_t reqRemaining = reqBody == BodyKind::Length ? req_.contentLength() : 0;
    // Expect: 100-continue is answered here (as nginx does) and not forwarded: the body then
    // streams like any other, and a server that ignores expectations cannot stall it.
    if (req_.expectContinue() && reqBody != BodyKind::None && cbuf_.empty()) {
      static constexpr std::string_view k100 = "HTTP/1.1 100 Continue\r\n\r\n";
      beforeClientWrite();
      auto [ec, n] =
          co_await asio::async_write(client_, asio::buffer(k100.data(), k100.size()), kUseTuple);
      if (ec) co_return false;
    }

    // Server connection + send, with one resend on a fresh connection when a pooled one
    // turns out dead and nothing of the request could have been processed (no body).
    bool sentBody = reqBody == BodyKind::None;
    const ServerView* server = nullptr;
    TimePoint sentAt{};
    for (int attempt = 0;; ++attempt) {
      bool reused = false;
      server =
          co_await acquireServer(cfg, *backend, attempt > 0, reqBody != BodyKind::None, reused);
      if (server == nullptr) {
        WorkerMetrics::inc(worker_.metrics().noServer);
        HALB_LOG_EVERY(Warn, "http", 1s) << "backend " << *backendName << ": no server available";
        co_await sendErrorAndClose(503);
        co_return false;
      }
      if (server->stats) {
        server->stats->active.fetch_add(1, std::memory_order_relaxed);
        server->stats->requests.fetch_add(1, std::memory_order_relaxed);
      }
      activeStats_ = server->stats;
      sentAt = SteadyClock::now();
      BodyResult r;
      if (reqBody == BodyKind::None) {
        phase_ = Phase::ServerResponse;
        arm(cfg.timeouts.serverResponse);
        auto [ec, n] = co_await asio::async_write(sc_->sock, asio::buffer(out_), kUseTuple);
        r = ec ? BodyResult::DstError : BodyResult::Ok;
      } else {
        phase_ = Phase::Body;
        r = co_await forwardBody(client_, cbuf_, sc_->sock, reqBody, reqRemaining, reqChunks_,
                                 cfg.timeouts.requestBody, out_, true);
        sentBody = true;
      }
      if (r == BodyResult::Ok) {
        ParseStatus st = co_await readResponseHead(cfg);
        if (st == ParseStatus::Complete) break;
        if (st == ParseStatus::Incomplete && reused && reqBody == BodyKind::None && attempt == 0 &&
            !timedOut_) {
          dropActive();
          releaseServer(false);
          continue;  // the pooled connection was closed under us: resend on a fresh one
        }
        dropActive();
        if (server->stats && !timedOut_)
          server->stats->responses5xx.fetch_add(1, std::memory_order_relaxed);
        releaseServer(false);
        co_await sendErrorAndClose(timedOut_ && phase_ == Phase::ServerResponse ? 504 : 502);
        co_return false;
      }
      dropActive();
      if (r == BodyResult::DstError && reused && reqBody == BodyKind::None && attempt == 0) {
        releaseServer(false);
        continue;
      }
      releaseServer(false);
      // Client-side problems while streaming the request body: no answer is owed.
      if (r == BodyResult::Invalid) {
        co_await sendErrorAndClose(400);
      } else if (r == BodyResult::Timeout) {
        co_await sendErrorAndClose(408);
      } else if (r == BodyResult::DstError) {
        co_await sendErrorAndClose(502);
      }
      co_return false;
    }
    Histogram* lat = worker_.latency(backend->id);
    lat->observe(std::chrono::duration<double>(SteadyClock::now() - sentAt).count());

    // Response.
    const int status = resp_.statusCode();
    std::string_view rbase = sc_->buf.view();
    if (status == 101) {
      if (!upgrade) {
        dropActive();
        releaseServer(false);
        co_await sendErrorAndClose(502);
        co_return false;
      }
      buildResponseHead(rbase, false, true);
      sc_->buf.consume(resp_.headLength());
      countResponse(101);
      co_await tunnel(cfg);
      dropActive();
      releaseServer(false);
      co_return false;
    }
    const BodyKind respBody = resp_.responseBody(isHead);
    const bool closeAfter = !clientKeepAlive_ || respBody == BodyKind::UntilClose || draining_;
    const bool serverReusable =
        resp_.keepAlive() && respBody != BodyKind::UntilClose && sentBody && !upgrade;
    if (sc.mode == config::StickyMode::AppCookie && worker_.stickTables())
      learnAppCookie(rbase, sc.name, *backend, server->id);
    buildResponseHead(rbase, closeAfter, false, sc.name);
    sc_->buf.consume(resp_.headLength());
    countResponse(status);
    if (status >= 500 && server->stats)
      server->stats->responses5xx.fetch_add(1, std::memory_order_relaxed);
    worker_.report(*backend, *server, status >= 500 ? Outcome::Response5xx : Outcome::Success);
    respChunks_.reset();
    uint64_t respRemaining = respBody == BodyKind::Length ? resp_.contentLength() : 0;
    phase_ = Phase::ResponseBody;
    BodyResult r = co_await forwardBody(sc_->sock, sc_->buf, client_, respBody, respRemaining,
                                        respChunks_, cfg.timeouts.serverResponse, out_, false);
    dropActive();
    if (r != BodyResult::Ok) {
      // Headers are out: all we can do is cut the client connection so it sees a truncation.
      releaseServer(false);
      co_return false;
    }
    releaseServer(serverReusable);
    if (closeAfter) co_return false;  // run() closes: a FIN, as nothing is left unread
    co_return true;
  }

  void dropActive() {
    if (activeStats_) activeStats_->active.fetch_sub(1, std::memory_order_relaxed);
    activeStats_.reset();
  }

  // app_cookie: the application set its session cookie in this response; remember it.
  void learnAppCookie(std::string_view rbase, std::string_view name, const BackendView& backend,
                      uint64_t serverId) {
    for (const http::Field& f : resp_.fields()) {
      if (f.id != FieldId::SetCookie) continue;
      std::string_view v = resp_.view(rbase, f.value);
      if (v.size() > name.size() && v.substr(0, name.size()) == name && v[name.size()] == '=') {
        std::string_view val = v.substr(name.size() + 1);
        val = val.substr(0, val.find(';'));
        balancer::learnAppCookie(backend, val, serverId, *worker_.stickTables(), SteadyClock::now(),
                                 worker_.emitter());
        return;
      }
    }
  }

  // A server for this request: the sticky one if usable, else the algorithm's pick; a pooled
  // idle connection when there is one, else a new connection, with retries on other servers.
  asio::awaitable<const ServerView*> acquireServer(const config::Config& cfg,
                                                   const BackendView& backend, bool freshOnly,
                                                   bool mustProbe, bool& reused) {
    const TimePoint now = SteadyClock::now();
    std::array<uint64_t, kMaxTries> tried{};
    size_t nTried = 0;
    const size_t maxTries = std::min<size_t>(kMaxTries, cfg.limits.connectRetries + 1);
    for (size_t attempt = 0; attempt < maxTries; ++attempt) {
      // Stickiness (cookie, source, app_cookie, header) first, then the algorithm; a retry
      // excludes the servers that failed (and re-sticks the user to the one that works).
      PickContext ctx;
      ctx.clientAddress = &clientAddr_.ip;
      ctx.exclude = std::span<const uint64_t>(tried.data(), nTried);
      StickyPick pick = worker_.pick(backend, ctx, this);
      const ServerView* server = pick.server;
      if (server == nullptr) co_return nullptr;
      setCookie_ = std::move(pick.setCookie);
      // Keep the current connection when it already goes to this server.
      if (sc_ && sc_->serverId == server->id && !freshOnly) {
        reused = true;
        co_return server;
      }
      releaseServer(false);
      if (!freshOnly) {
        if (auto c = worker_.takeIdle(server->id, now, mustProbe)) {
          sc_ = std::move(c);
          reused = true;
          WorkerMetrics::inc(worker_.metrics().serverReuse);
          noteServer(*server);
          co_return server;
        }
      }
      if (attempt > 0) WorkerMetrics::inc(worker_.metrics().connectRetries);
      sc_ = std::make_unique<ServerConn>(worker_.io());
      sc_->buf = worker_.takeBuffer();
      sc_->serverId = server->id;
      sc_->backendId = backend.id;
      phase_ = Phase::Connect;
      timedOut_ = false;
      arm(cfg.timeouts.connect);
      WorkerMetrics::inc(worker_.metrics().serverConnects);
      ErrorCode ec = co_await connectTo(sc_->sock, server->address);
      if (!ec) {
        if (server->stats) server->stats->connections.fetch_add(1, std::memory_order_relaxed);
        noteServer(*server);
        co_return server;
      }
      WorkerMetrics::inc(worker_.metrics().connectFailures);
      if (server->stats) server->stats->connectFailures.fetch_add(1, std::memory_order_relaxed);
      worker_.report(backend, *server, Outcome::ConnectFailure);
      HALB_LOG_EVERY(Warn, "http", 1s)
          << "connect to " << server->address.toString()
          << " failed: " << (timedOut_ ? std::string("timeout") : ec.message());
      timedOut_ = false;
      releaseServer(false);
      if (nTried < tried.size()) tried[nTried++] = server->id;
    }
    co_return nullptr;
  }

  void noteServer(const ServerView& s) {
    serverId_ = s.id;
    serverAddr_ = s.address;
  }

  // Parks a reusable server connection in the worker's pool, or closes it.
  void releaseServer(bool reusable) {
    if (!sc_) return;
    if (reusable && sc_->buf.empty()) {
      ++sc_->requests;
      worker_.putIdle(std::move(sc_), SteadyClock::now());
    } else {
      Buffer b = std::move(sc_->buf);
      sc_.reset();  // closes the socket
      worker_.returnBuffer(std::move(b));
    }
    sc_.reset();
  }

  // Reads the server's response head into sc_->buf. Interim 1xx responses (but 101) are
  // forwarded to the client as they come.
  // Incomplete = the server closed or failed before sending anything of a head.
  asio::awaitable<ParseStatus> readResponseHead(const config::Config& cfg) {
    phase_ = Phase::ServerResponse;
    arm(cfg.timeouts.serverResponse);
    timedOut_ = false;
    resp_.reset();
    bool any = false;
    for (;;) {
      if (!sc_->buf.empty()) {
        ParseStatus st = resp_.feed(sc_->buf.view());
        if (st == ParseStatus::Error) {
          HALB_LOG_EVERY(Warn, "http", 1s)
              << "invalid response from server: " << resp_.errorDetail();
          co_return ParseStatus::Error;
        }
        if (st == ParseStatus::Complete) {
          int code = resp_.statusCode();
          if (code >= 200 || code == 101) co_return st;
          // Interim response: pass it on and wait for the final one.
          std::string_view head = sc_->buf.view().substr(0, resp_.headLength());
          beforeClientWrite();
          auto [ec, n] = co_await asio::async_write(client_, asio::buffer(head.data(), head.size()),
                                                    kUseTuple);
          if (ec) co_return ParseStatus::Error;
          sc_->buf.consume(resp_.headLength());
          resp_.reset();
          continue;
        }
      }
      if (!sc_->buf.ensureWritable(headLimit(cfg))) co_return ParseStatus::Error;
      auto [ec, n] = co_await sc_->sock.async_read_some(
          asio::buffer(sc_->buf.writePtr(), sc_->buf.writable()), kUseTuple);
      if (ec) co_return any ? ParseStatus::Error : ParseStatus::Incomplete;
      any = true;
      sc_->buf.commit(n);
    }
  }

  // Forwards one message body from `src` (whose unread bytes are in `buf`) to `dst`;
  // `prefix` (a head not yet sent) goes out in the same writev as the first body bytes.
  asio::awaitable<BodyResult> forwardBody(tcp::socket& src, Buffer& buf, tcp::socket& dst,
                                          BodyKind kind, uint64_t& remaining,
                                          http::ChunkedFramer& framer, Duration timeout,
                                          std::string& prefix, bool toServer) {
    bool prefixPending = !prefix.empty();
    for (;;) {
      size_t take = 0;
      bool done = kind == BodyKind::None;
      if (!buf.empty() && !done) {
        switch (kind) {
          case BodyKind::Length:
            take = static_cast<size_t>(std::min<uint64_t>(remaining, buf.size()));
            remaining -= take;
            done = remaining == 0;
            break;
          case BodyKind::Chunked: {
            auto step = framer.feed(buf.data(), buf.size());
            if (step.error) co_return BodyResult::Invalid;
            take = step.consumed;
            done = step.done;
            break;
          }
          default:
            take = buf.size();
            break;
        }
      }
      if (prefixPending || take > 0) {
        std::array<asio::const_buffer, 2> bufs{
            asio::buffer(prefix.data(), prefixPending ? prefix.size() : 0),
            asio::buffer(buf.data(), take)};
        if (!toServer) beforeClientWrite();
        auto [ec, n] = co_await asio::async_write(dst, bufs, kUseTuple);
        if (ec) co_return timedOut_ ? BodyResult::Timeout : BodyResult::DstError;
        if (!toServer) {
          bytesOut_ += n;
          worker_.metrics().addBytesOut(n);
        }
        prefixPending = false;
        buf.consume(take);
      }
      if (done) co_return BodyResult::Ok;
      if (!buf.ensureWritable(buf.capacity())) buf.compact();
      arm(timeout);
      auto [ec, n] =
          co_await src.async_read_some(asio::buffer(buf.writePtr(), buf.writable()), kUseTuple);
      if (ec) {
        if (timedOut_) co_return BodyResult::Timeout;
        if (ec == asio::error::eof)
          co_return kind == BodyKind::UntilClose ? BodyResult::Ok : BodyResult::SrcClosed;
        co_return BodyResult::SrcError;
      }
      buf.commit(n);
      if (toServer) {
        bytesIn_ += n;
        worker_.metrics().addBytesIn(n);
      }
    }
  }

  // After 101 Switching Protocols: bytes both ways until both sides close or the tunnel
  // timeout passes without traffic.
  asio::awaitable<void> tunnel(const config::Config& cfg) {
    phase_ = Phase::Tunnel;
    tunnelIdle_ = cfg.timeouts.tunnel;
    arm(tunnelIdle_);
    // out_ holds the 101 head for the client; send it with what the server already sent.
    {
      std::array<asio::const_buffer, 2> bufs{asio::buffer(out_),
                                             asio::buffer(sc_->buf.data(), sc_->buf.size())};
      beforeClientWrite();
      auto [ec, n] = co_await asio::async_write(client_, bufs, kUseTuple);
      if (ec) co_return;
      sc_->buf.clear();
      beforeClientWrite();  // the tunnel writes small frames
    }
    co_await (pumpTunnel(client_, cbuf_, sc_->sock, true) &&
              pumpTunnel(sc_->sock, sc_->buf, client_, false));
  }

  asio::awaitable<void> pumpTunnel(tcp::socket& src, Buffer& buf, tcp::socket& dst,
                                   bool fromClient) {
    for (;;) {
      if (!buf.empty()) {
        auto [ec, n] =
            co_await asio::async_write(dst, asio::buffer(buf.data(), buf.size()), kUseTuple);
        if (ec) break;
        if (fromClient)
          bytesIn_ += n;
        else {
          bytesOut_ += n;
          worker_.metrics().addBytesOut(n);
        }
        buf.clear();
      }
      auto [ec, n] =
          co_await src.async_read_some(asio::buffer(buf.writePtr(), buf.writable()), kUseTuple);
      if (ec == asio::error::eof) {
        ErrorCode sec;
        dst.shutdown(tcp::socket::shutdown_send, sec);
        co_return;
      }
      if (ec) break;
      buf.commit(n);
      arm(tunnelIdle_);
    }
    // Error or timeout on one side: end both directions.
    ErrorCode ec;
    client_.close(ec);
    if (sc_) sc_->sock.close(ec);
  }

  void buildRequestHead(std::string_view base, bool upgrade) {
    out_.clear();
    const http::Span sl = req_.startLine();
    out_.append(base.substr(sl.off, sl.len));
    out_.append("\r\n"sv);
    std::string_view upgradeValue;
    for (const http::Field& f : req_.fields()) {
      if (f.id == FieldId::Upgrade) upgradeValue = req_.view(base, f.value);
      if (f.hopByHop || f.id == FieldId::XForwardedProto) continue;
      if (f.id == FieldId::Expect && req_.expectContinue()) continue;  // answered by us
      out_.append(req_.view(base, f.name));
      out_.append(": "sv);
      out_.append(req_.view(base, f.value));
      out_.append("\r\n"sv);
    }
    if (upgrade) {
      out_.append("Connection: upgrade\r\nUpgrade: "sv);
      out_.append(upgradeValue);
      out_.append("\r\n"sv);
    } else if (req_.versionMinor() == 0) {
      out_.append("Connection: keep-alive\r\n"sv);  // ask a 1.0 server for a reusable connection
    }
    // A new X-Forwarded-For line is equivalent to appending to the list (RFC 9110 §5.3).
    out_.append("X-Forwarded-For: "sv);
    out_.append(clientIp_);
    out_.append("\r\nX-Forwarded-Proto: http\r\nForwarded: for="sv);
    if (clientAddr_.ip.isV6()) {
      out_.append("\"[");
      out_.append(clientIp_);
      out_.append("]\"");
    } else {
      out_.append(clientIp_);
    }
    out_.append(";proto=http\r\n\r\n"sv);
  }

  void buildResponseHead(std::string_view base, bool closeAfter, bool upgrade,
                         std::string_view cookieName = {}) {
    out_.clear();
    const http::Span sl = resp_.startLine();
    out_.append(base.substr(sl.off, sl.len));
    out_.append("\r\n"sv);
    std::string_view upgradeValue;
    for (const http::Field& f : resp_.fields()) {
      if (f.id == FieldId::Upgrade) upgradeValue = resp_.view(base, f.value);
      if (f.hopByHop) continue;
      out_.append(resp_.view(base, f.name));
      out_.append(": "sv);
      out_.append(resp_.view(base, f.value));
      out_.append("\r\n"sv);
    }
    if (upgrade) {
      out_.append("Connection: upgrade\r\nUpgrade: "sv);
      out_.append(upgradeValue);
      out_.append("\r\n"sv);
    } else if (closeAfter) {
      out_.append("Connection: close\r\n"sv);
    } else if (req_.versionMinor() == 0) {
      out_.append("Connection: keep-alive\r\n"sv);
    }
    if (!setCookie_.empty() && !cookieName.empty()) {
      out_.append("Set-Cookie: "sv);
      out_.append(StickyCookie::setCookieHeader(cookieName, setCookie_, false));
      out_.append("\r\n"sv);
    }
    out_.append("\r\n"sv);
  }

  // TCP_NODELAY only from the second write on: the first write of a connection leaves at
  // once anyway (nothing is unacknowledged yet), so a one-request connection saves the
  // setsockopt; later small writes must not wait for an ACK (Nagle + delayed ACK).
  void beforeClientWrite() {
    if (clientWrites_++ > 0 && !clientNoDelay_) {
      setNoDelay(client_);
      clientNoDelay_ = true;
    }
  }

  void countResponse(int status) {
    size_t cls = static_cast<size_t>(status / 100);
    if (cls > 5) cls = 5;
    WorkerMetrics::inc(worker_.metrics().responses[cls]);
  }

  // Sends a canned error (with Connection: close), then closes without losing it to an RST:
  // half-close, and read what the client still sends for a short while (lingering close).
  asio::awaitable<void> sendErrorAndClose(int status) {
    countResponse(status);
    phase_ = Phase::Closing;
    timedOut_ = false;
    arm(kErrorLinger);
    const std::string& r = errorResponse(status);
    auto [ec, n] = co_await asio::async_write(client_, asio::buffer(r), kUseTuple);
    if (ec) co_return;
    bytesOut_ += n;
    worker_.metrics().addBytesOut(n);
    ErrorCode sec;
    client_.shutdown(tcp::socket::shutdown_send, sec);
    size_t drained = 0;
    while (drained < kErrorLingerBytes) {
      cbuf_.clear();
      auto [rec, m] = co_await client_.async_read_some(
          asio::buffer(cbuf_.writePtr(), cbuf_.writable()), kUseTuple);
      if (rec) break;
      drained += m;
    }
    cbuf_.clear();
  }

  static inline const config::Sticky kNoSticky{};

  const FrontendRt& fe_;
  HeadParser req_;
  HeadParser resp_;
  http::ChunkedFramer reqChunks_;
  http::ChunkedFramer respChunks_;
  Buffer cbuf_;
  std::unique_ptr<ServerConn> sc_;
  std::shared_ptr<ServerStats> activeStats_;
  std::string out_;
  std::string clientIp_;
  std::string hostLower_;
  std::string setCookie_;     // cookie stickiness: value to set on this response
  std::string_view reqBase_;  // the request head, for RequestView (see handleRequest)
  std::string_view path_;
  Phase phase_ = Phase::Head;
  Duration tunnelIdle_{};
  bool clientKeepAlive_ = true;
  bool clientNoDelay_ = false;
  uint32_t clientWrites_ = 0;
};

}  // namespace

std::shared_ptr<Session> makeHttpSession(Worker& w, tcp::socket client,
                                         const SocketAddress& clientAddr,
                                         const SocketAddress& listenAddr, uint64_t frontendIndex) {
  return std::make_shared<HttpSession>(w, std::move(client), clientAddr, listenAddr, frontendIndex);
}

}  // namespace halb::balancer::dp
