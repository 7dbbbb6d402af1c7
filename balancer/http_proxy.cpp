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

constexpr size_t kMaxExclude = 64;     // servers one request skips (failed or at their limit)
constexpr Duration kErrorLinger = 1s;  // reading what the client still sends after an error
constexpr Duration kTlsLinger = 1s;    // waiting for the client's close_notify
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
  static const std::string k503Busy =
      makeError(503, "Service Unavailable",
                "every server is at its connection limit and the queue is full or timed out\n");
  static const std::string k504 =
      makeError(504, "Gateway Timeout", "the server did not answer in time\n");
  static const std::string k505 =
      makeError(505, "HTTP Version Not Supported", "HTTP version not supported\n");
  switch (code) {
    case 5031:
      return k503Busy;
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
    if (co_await handshakeClient(cfg)) {
      if (clientTls()) clientNoDelay_ = true;  // set before the handshake
      for (;;) {
        if (!co_await readRequestHead(cfg, first)) break;
        first = false;
        const bool more = co_await handleRequest(cfg);
        sendMirror();
        if (!more || draining_) break;
      }
      if (clientTls() && !clientGone_) co_await shutdownClientTls(kTlsLinger);
    } else {
      clientGone_ = true;
    }
    releaseServer(false);
    releaseSlot();
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
    if (slotWaiting_ && slotTimer_) slotTimer_->cancel();
  }

 private:
  enum class Phase : uint8_t {
    Idle,
    Head,
    Body,
    Connect,
    Queue,  // waiting for a server slot (max_connections)
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
      auto [ec, n] = co_await clientIo().readSome(asio::buffer(cbuf_.writePtr(), cbuf_.writable()));
      if (ec) {
        if (ec != asio::error::operation_aborted) clientGone_ = true;
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

    // Route, then its traffic policy: split (and pin), mirror, retries, timeouts. The routes
    // are held for the request: a reload may replace them meanwhile.
    FrontendRoutesPtr routes = worker_.routes(frontendIndex_);
    const int ri = routes->route ? routes->route(*this) : -1;
    const config::Route* route = ri >= 0 && static_cast<size_t>(ri) < routes->states.size()
                                     ? &routes->frontend->routes[ri]
                                     : nullptr;
    RouteState* rstate = route ? routes->states[static_cast<size_t>(ri)].get() : nullptr;
    const std::string* backendName = nullptr;
    pinRoute_ = nullptr;
    if (route) {
      SplitPick sp = rstate->traffic.pick(*this);
      backendName = sp.backend;
      if (sp.setPinCookie) pinRoute_ = route;
    } else if (!routes->frontend->defaultBackend.empty()) {
      backendName = &routes->frontend->defaultBackend;
    }
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
    const TimePoint start = SteadyClock::now();
    rq_ = RequestPolicy{};
    rq_.retry = route ? &route->retry : &routes->defaultRetry;
    rq_.budget = &worker_.retryBudget(*backend);
    rq_.budget->onRequest(start);
    rq_.method.assign(req_.view(base, req_.method()));
    rq_.hasBody = reqBody != BodyKind::None;
    rq_.connectTimeout =
        route && route->timeouts.connect ? *route->timeouts.connect : cfg.timeouts.connect;
    const Duration responseTimeout = route && route->timeouts.serverResponse
                                         ? *route->timeouts.serverResponse
                                         : cfg.timeouts.serverResponse;
    const bool idempotent = isIdempotent(rq_.method);

    const config::Sticky& sc = backend->config ? backend->config->sticky : kNoSticky;
    setCookie_.clear();

    // Rewrite the head now (it is consumed from cbuf_ below).
    buildRequestHead(base, upgrade);
    // A mirror copy is taken now (head and a body that came with it) and sent once the
    // client has its answer, so the copy costs the client nothing.
    if (route && route->mirror && !upgrade && rstate->traffic.sampleMirror()) {
      if (buildMirrorCopy(mirror_.copy, reqBody, *route->mirror)) {
        mirror_.routes = routes;
        mirror_.state = rstate;
        mirror_.route = route;
        mirror_.connectTimeout = rq_.connectTimeout;
        mirror_.responseTimeout = responseTimeout;
      } else {
        WorkerMetrics::inc(worker_.metrics().mirrorsSkipped);
      }
    }

    const size_t headLen = req_.headLength();
    cbuf_.consume(headLen);
    reqChunks_.reset();
    uint64_t reqRemaining = reqBody == BodyKind::Length ? req_.contentLength() : 0;
    // Expect: 100-continue is answered here (as nginx does) and not forwarded: the body then
    // streams like any other, and a server that ignores expectations cannot stall it.
    if (req_.expectContinue() && reqBody != BodyKind::None && cbuf_.empty()) {
      static constexpr std::string_view k100 = "HTTP/1.1 100 Continue\r\n\r\n";
      beforeClientWrite();
      auto [ec, n] = co_await clientIo().write(asio::buffer(k100.data(), k100.size()));
      if (ec) co_return false;
    }

    // Server connection + send. A pooled connection that turns out dead before anything of
    // the request could have been processed (no body, idempotent) gets one resend on a fresh
    // connection; other failures are retried per the route's policy, within the budget.
    bool sentBody = reqBody == BodyKind::None;
    const ServerView* server = nullptr;
    TimePoint sentAt{};
    bool freshOnly = false;
    for (;;) {
      bool reused = false;
      // A non-idempotent request is never sent twice, so it must not meet a pooled
      // connection the server is closing: probe every pooled connection it would use.
      server = co_await acquireServer(cfg, *backend, freshOnly, rq_.hasBody || !idempotent, reused);
      if (server == nullptr) {
        WorkerMetrics::inc(worker_.metrics().noServer);
        HALB_LOG_EVERY(Warn, "http", 1s)
            << "backend " << *backendName
            << (rq_.busy ? ": every server at max_connections" : ": no server available");
        co_await sendErrorAndClose(503, rq_.busy);
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
        arm(responseTimeout);
        auto [ec, n] = co_await sc_->io().write(asio::buffer(out_));
        r = ec ? BodyResult::DstError : BodyResult::Ok;
      } else {
        phase_ = Phase::Body;
        r = co_await forwardBody(clientIo(), cbuf_, sc_->io(), reqBody, reqRemaining, reqChunks_,
                                 cfg.timeouts.requestBody, out_, true);
        sentBody = true;
      }
      if (r == BodyResult::Ok) {
        ParseStatus st = co_await readResponseHead(responseTimeout);
        if (st == ParseStatus::Complete) {
          const int code = resp_.statusCode();
          if (code != 101 && co_await retryAfter(*backend, *server, AttemptFailure::Status, code)) {
            freshOnly = false;
            continue;
          }
          break;
        }
        if (st == ParseStatus::Incomplete && reused && reqBody == BodyKind::None && idempotent &&
            !freshOnly && !timedOut_) {
          dropActive();
          releaseServer(false);
          freshOnly = true;
          continue;  // the pooled connection was closed under us: resend on a fresh one
        }
        const bool timeout = timedOut_ && phase_ == Phase::ServerResponse;
        dropActive();
        if (server->stats && !timedOut_)
          server->stats->responses5xx.fetch_add(1, std::memory_order_relaxed);
        releaseServer(false);
        if (st == ParseStatus::Incomplete || timeout) {
          if (co_await retryAfter(*backend, *server,
                                  timeout ? AttemptFailure::Timeout : AttemptFailure::Reset, 0)) {
            freshOnly = false;
            continue;
          }
        }
        releaseSlot();
        co_await sendErrorAndClose(timeout ? 504 : 502);
        co_return false;
      }
      dropActive();
      if (r == BodyResult::DstError && reused && reqBody == BodyKind::None && idempotent &&
          !freshOnly) {
        releaseServer(false);
        freshOnly = true;
        continue;
      }
      releaseServer(false);
      releaseSlot();
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
    buildResponseHead(rbase, closeAfter, false, sc.name, *backendName);
    sc_->buf.consume(resp_.headLength());
    countResponse(status);
    if (status >= 500 && server->stats)
      server->stats->responses5xx.fetch_add(1, std::memory_order_relaxed);
    worker_.report(*backend, *server, status >= 500 ? Outcome::Response5xx : Outcome::Success);
    respChunks_.reset();
    uint64_t respRemaining = respBody == BodyKind::Length ? resp_.contentLength() : 0;
    phase_ = Phase::ResponseBody;
    BodyResult r = co_await forwardBody(sc_->io(), sc_->buf, clientIo(), respBody, respRemaining,
                                        respChunks_, responseTimeout, out_, false);
    dropActive();
    releaseSlot();
    if (r != BodyResult::Ok) {
      // Headers are out: all we can do is cut the client connection so it sees a truncation.
      if (r == BodyResult::DstError) clientGone_ = true;
      releaseServer(false);
      co_return false;
    }
    sc_->clean = true;  // the response is complete: a TLS session stays resumable
    releaseServer(serverReusable);
    if (closeAfter) co_return false;  // run() closes: a FIN, as nothing is left unread
    co_return true;
  }

  // An attempt failed (`failure`; `status` for a response): retries per the route's policy and
  // the backend's budget. true = try again (the server is excluded while others remain).
  asio::awaitable<bool> retryAfter(const BackendView& backend, const ServerView& server,
                                   AttemptFailure failure, int status) {
    AttemptInfo a{failure, status, rq_.method, rq_.hasBody, rq_.retries};
    if (!retryAllowed(*rq_.retry, a)) co_return false;
    if (!rq_.budget->tryRetry(SteadyClock::now())) {
      WorkerMetrics::inc(worker_.metrics().retriesDenied);
      HALB_LOG_EVERY(Warn, "http", 1s) << "retry budget of backend "
                                       << (backend.config ? backend.config->name : std::string("?"))
                                       << " spent: " << toString(failure) << " goes to the client";
      co_return false;
    }
    if (failure == AttemptFailure::Status) {
      // The response head is read but not sent: drop it with its connection.
      dropActive();
      if (server.stats) server.stats->responses5xx.fetch_add(1, std::memory_order_relaxed);
      worker_.report(backend, server, status >= 500 ? Outcome::Response5xx : Outcome::Success);
      releaseServer(false);
    }
    releaseSlot();
    ++rq_.retries;
    if (rq_.nFailed < rq_.failed.size()) rq_.failed[rq_.nFailed++] = server.id;
    WorkerMetrics::inc(worker_.metrics().retries);
    co_return true;
  }

  // The request's copy goes to its shadow backend once the client has the answer (or the
  // request ended otherwise), so it costs the client nothing; never from a destroyed session.
  void sendMirror() {
    if (mirror_.copy.empty()) return;
    worker_.mirror(mirror_.routes, *mirror_.state, *mirror_.route, std::move(mirror_.copy),
                   clientAddr_.ip, mirror_.connectTimeout, mirror_.responseTimeout);
    mirror_ = PendingMirror{};
  }

  // The copy of this request for a shadow backend: the rewritten head with Connection: close
  // and X-Halb-Shadow, then the body, if all of it came with the head (cbuf_ still holds it).
  bool buildMirrorCopy(std::string& copy, BodyKind body, const config::Mirror& m) {
    const uint64_t len = body == BodyKind::Length ? req_.contentLength() : 0;
    if (body == BodyKind::Chunked || len > m.maxBody) return false;
    std::string_view after = cbuf_.view().substr(req_.headLength());
    if (after.size() < len) return false;
    std::string_view head(out_);
    head.remove_suffix(2);  // the blank line
    copy.reserve(head.size() + len + 48);
    static constexpr std::string_view kKeepAlive = "Connection: keep-alive\r\n";
    if (size_t k = head.find(kKeepAlive); k != std::string_view::npos) {
      copy.append(head.substr(0, k));
      copy.append(head.substr(k + kKeepAlive.size()));
    } else {
      copy.append(head);
    }
    copy.append("X-Halb-Shadow: 1\r\nConnection: close\r\n\r\n"sv);
    copy.append(after.substr(0, static_cast<size_t>(len)));
    return true;
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

  // A server for this request: the sticky one if usable, else the algorithm's pick, skipping
  // servers at their max_connections (and waiting in the backend's queue when all are); a
  // pooled idle connection when there is one, else a new connection (TLS when the backend
  // has it), retrying connect failures on other servers per the route's policy and budget.
  // nullptr when no server can take it (rq_.busy: because all were at their limit).
  asio::awaitable<const ServerView*> acquireServer(const config::Config& cfg,
                                                   const BackendView& backend, bool freshOnly,
                                                   bool mustProbe, bool& reused) {
    const TimePoint now = SteadyClock::now();
    std::array<uint64_t, kMaxExclude> exclude{};
    std::array<uint64_t, kMaxExclude> full{};
    size_t nFull = 0;
    bool queued = false;
    TimePoint queueDeadline{};
    for (;;) {
      // Servers this request failed on stay out while others remain; full ones are skipped.
      size_t n = 0;
      if (backend.usableCount() > rq_.nFailed)
        for (size_t i = 0; i < rq_.nFailed; ++i) exclude[n++] = rq_.failed[i];
      for (size_t i = 0; i < nFull && n < exclude.size(); ++i) exclude[n++] = full[i];
      PickContext ctx;
      ctx.clientAddress = &clientAddr_.ip;
      ctx.exclude = std::span<const uint64_t>(exclude.data(), n);
      StickyPick pick = worker_.pick(backend, ctx, this);
      const ServerView* server = pick.server;
      if (server == nullptr) {
        if (nFull == 0) co_return nullptr;
        // Every usable server is at its limit: wait for a slot (queue.timeout in all).
        if (!queued) queueDeadline = SteadyClock::now() + backend.config->queue.timeout;
        phase_ = Phase::Queue;
        disarm();  // the queue's deadline bounds the wait
        const bool again = queued;
        queued = true;
        if (!co_await waitForSlot(backend, queueDeadline, again)) {
          rq_.busy = true;
          co_return nullptr;
        }
        nFull = 0;
        continue;
      }
      if (!takeSlot(backend, *server)) {
        if (nFull < full.size())
          full[nFull++] = server->id;
        else {
          rq_.busy = true;
          co_return nullptr;
        }
        continue;
      }
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
      sc_ = std::make_unique<ServerConn>(worker_.io());
      sc_->buf = worker_.takeBuffer();
      sc_->serverId = server->id;
      sc_->backendId = backend.id;
      phase_ = Phase::Connect;
      timedOut_ = false;
      arm(rq_.connectTimeout);
      WorkerMetrics::inc(worker_.metrics().serverConnects);
      ErrorCode ec = co_await connectTo(sc_->sock, server->address);
      bool tlsFailed = false;
      if (!ec && backend.config && backend.config->tls) {
        tlsFailed = !co_await handshakeServer(*sc_, *server, backend, true, cfg);
        if (tlsFailed) ec = asio::error::connection_refused;
      }
      if (!ec) {
        if (server->stats) server->stats->connections.fetch_add(1, std::memory_order_relaxed);
        noteServer(*server);
        co_return server;
      }
      WorkerMetrics::inc(worker_.metrics().connectFailures);
      if (server->stats) server->stats->connectFailures.fetch_add(1, std::memory_order_relaxed);
      worker_.report(backend, *server, Outcome::ConnectFailure);
      if (!tlsFailed) {
        HALB_LOG_EVERY(Warn, "http", 1s)
            << "connect to " << server->address.toString()
            << " failed: " << (timedOut_ ? std::string("timeout") : ec.message());
      }
      timedOut_ = false;
      releaseServer(false);
      releaseSlot();
      if (rq_.nFailed < rq_.failed.size()) rq_.failed[rq_.nFailed++] = server->id;
      AttemptInfo a{AttemptFailure::ConnectFailure, 0, rq_.method, rq_.hasBody, rq_.retries};
      if (!retryAllowed(*rq_.retry, a)) co_return nullptr;
      if (!rq_.budget->tryRetry(SteadyClock::now())) {
        WorkerMetrics::inc(worker_.metrics().retriesDenied);
        co_return nullptr;
      }
      ++rq_.retries;
      WorkerMetrics::inc(worker_.metrics().retries);
      WorkerMetrics::inc(worker_.metrics().connectRetries);
    }
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
      sc_->clean = true;  // whenever the pool closes it, it is between messages
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
  asio::awaitable<ParseStatus> readResponseHead(Duration timeout) {
    const config::Config& cfg = worker_.config();
    phase_ = Phase::ServerResponse;
    arm(timeout);
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
          auto [ec, n] = co_await clientIo().write(asio::buffer(head.data(), head.size()));
          if (ec) co_return ParseStatus::Error;
          sc_->buf.consume(resp_.headLength());
          resp_.reset();
          continue;
        }
      }
      if (!sc_->buf.ensureWritable(headLimit(cfg))) co_return ParseStatus::Error;
      auto [ec, n] =
          co_await sc_->io().readSome(asio::buffer(sc_->buf.writePtr(), sc_->buf.writable()));
      if (ec) co_return any ? ParseStatus::Error : ParseStatus::Incomplete;
      any = true;
      sc_->buf.commit(n);
    }
  }

  // Forwards one message body from `src` (whose unread bytes are in `buf`) to `dst`;
  // `prefix` (a head not yet sent) goes out in the same writev as the first body bytes.
  asio::awaitable<BodyResult> forwardBody(StreamIo src, Buffer& buf, StreamIo dst, BodyKind kind,
                                          uint64_t& remaining, http::ChunkedFramer& framer,
                                          Duration timeout, std::string& prefix, bool toServer) {
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
        auto [ec, n] = co_await dst.write(bufs);
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
      auto [ec, n] = co_await src.readSome(asio::buffer(buf.writePtr(), buf.writable()));
      if (ec) {
        if (timedOut_) co_return BodyResult::Timeout;
        // A TLS server that closes without close_notify ends a read-until-close body too.
        if (ec == asio::error::eof || (ec == asio::ssl::error::stream_truncated && !toServer))
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
      auto [ec, n] = co_await clientIo().write(bufs);
      if (ec) co_return;
      sc_->buf.clear();
      beforeClientWrite();  // the tunnel writes small frames
    }
    co_await (pumpTunnel(clientIo(), cbuf_, sc_->io(), true) &&
              pumpTunnel(sc_->io(), sc_->buf, clientIo(), false));
  }

  asio::awaitable<void> pumpTunnel(StreamIo src, Buffer& buf, StreamIo dst, bool fromClient) {
    for (;;) {
      if (!buf.empty()) {
        auto [ec, n] = co_await dst.write(asio::buffer(buf.data(), buf.size()));
        if (ec) break;
        if (fromClient)
          bytesIn_ += n;
        else {
          bytesOut_ += n;
          worker_.metrics().addBytesOut(n);
        }
        buf.clear();
      }
      auto [ec, n] = co_await src.readSome(asio::buffer(buf.writePtr(), buf.writable()));
      if (ec == asio::error::eof && dst.shutdownSend()) co_return;  // half-close passed on
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
    out_.append(clientTls() ? "\r\nX-Forwarded-Proto: https\r\nForwarded: for="sv
                            : "\r\nX-Forwarded-Proto: http\r\nForwarded: for="sv);
    if (clientAddr_.ip.isV6()) {
      out_.append("\"[");
      out_.append(clientIp_);
      out_.append("]\"");
    } else {
      out_.append(clientIp_);
    }
    out_.append(clientTls() ? ";proto=https\r\n\r\n"sv : ";proto=http\r\n\r\n"sv);
  }

  void buildResponseHead(std::string_view base, bool closeAfter, bool upgrade,
                         std::string_view cookieName = {}, std::string_view pinBackend = {}) {
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
      out_.append(StickyCookie::setCookieHeader(cookieName, setCookie_, clientTls()));
      out_.append("\r\n"sv);
    }
    if (pinRoute_ && !pinBackend.empty()) {
      out_.append("Set-Cookie: "sv);
      out_.append(pinCookieHeader(pinRoute_->pin.name, pinBackend, clientTls()));
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
  asio::awaitable<void> sendErrorAndClose(int status, bool busy = false) {
    countResponse(status);
    phase_ = Phase::Closing;
    timedOut_ = false;
    arm(kErrorLinger);
    const std::string& r = errorResponse(busy && status == 503 ? 5031 : status);
    auto [ec, n] = co_await clientIo().write(asio::buffer(r));
    clientGone_ = true;  // closed here: run() has nothing more to say
    if (ec) co_return;
    bytesOut_ += n;
    worker_.metrics().addBytesOut(n);
    if (clientTls()) {
      // close_notify, then the client's: the TLS form of a lingering close.
      co_await shutdownClientTls(kErrorLinger);
      co_return;
    }
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
  std::string setCookie_;                    // cookie stickiness: value to set on this response
  const config::Route* pinRoute_ = nullptr;  // split pinned by cookie: set it on this response
  // What governs the current request's attempts.
  struct RequestPolicy {
    const config::RetryPolicy* retry = nullptr;
    RetryBudget* budget = nullptr;
    std::string method;
    bool hasBody = false;
    Duration connectTimeout{};
    uint32_t retries = 0;
    std::array<uint64_t, 8> failed{};  // servers that failed this request
    size_t nFailed = 0;
    bool busy = false;  // no server: all were at their max_connections
  } rq_;
  bool clientGone_ = false;  // the client closed or failed: no TLS goodbye
  struct PendingMirror {
    std::string copy;
    FrontendRoutesPtr routes;
    RouteState* state = nullptr;
    const config::Route* route = nullptr;
    Duration connectTimeout{}, responseTimeout{};
  } mirror_;
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
