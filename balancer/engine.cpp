#include "balancer/engine.h"

#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <sstream>
#include <thread>

#include "balancer/worker.h"
#include "common/crypto.h"
#include "common/log.h"

#ifndef IPV6_FREEBIND
#define IPV6_FREEBIND 78  // Linux 4.15+
#endif

namespace halb::balancer {

const char* toString(Role r) {
  return r == Role::Master ? "master" : "backup";
}

namespace {

constexpr int kListenBacklog = 4096;

// A listening socket that may bind an address this node does not hold yet (IP_FREEBIND):
// the backup listens on the VIP before it owns it, so takeover needs no bind.
Result<int> bindListener(const SocketAddress& addr) {
  int fd = ::socket(addr.ip.af(), SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return Error{std::string("socket: ") + std::strerror(errno)};
  int one = 1;
  ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  if (::setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one) != 0) {
    int e = errno;
    ::close(fd);
    return Error{std::string("SO_REUSEPORT: ") + std::strerror(e)};
  }
  if (addr.ip.isV4()) {
    ::setsockopt(fd, IPPROTO_IP, IP_FREEBIND, &one, sizeof one);
  } else {
    ::setsockopt(fd, IPPROTO_IPV6, IPV6_FREEBIND, &one, sizeof one);
    ::setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);
  }
  sockaddr_storage ss{};
  socklen_t len = addr.toSockaddr(ss);
  if (::bind(fd, reinterpret_cast<sockaddr*>(&ss), len) != 0 || ::listen(fd, kListenBacklog) != 0) {
    int e = errno;
    ::close(fd);
    return Error{"bind " + addr.toString() + ": " + std::strerror(e)};
  }
  return fd;
}

SocketAddress boundAddress(int fd) {
  sockaddr_storage ss{};
  socklen_t len = sizeof ss;
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&ss), &len);
  return SocketAddress::fromSockaddr(reinterpret_cast<sockaddr*>(&ss));
}

void jsonString(std::ostringstream& o, std::string_view s) {
  o << '"';
  for (char c : s) {
    if (c == '"' || c == '\\')
      o << '\\' << c;
    else if (static_cast<unsigned char>(c) < 0x20)
      o << ' ';
    else
      o << c;
  }
  o << '"';
}

}  // namespace

struct Engine::Impl {
  dp::EngineShared shared;
  std::vector<std::unique_ptr<dp::Worker>> workers;
  bool stopped = false;
};

Engine::Engine(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

Engine::~Engine() {
  if (impl_ && !impl_->stopped) stop(Duration::zero());
}

Result<std::unique_ptr<Engine>> Engine::start(EngineOptions options) {
  if (!options.config) return Error{"engine: no configuration"};
  if (!options.makeSelector) return Error{"engine: no selector factory"};
  auto impl = std::make_unique<Impl>();
  dp::EngineShared& sh = impl->shared;
  sh.config = options.config;
  sh.makeSelector = std::move(options.makeSelector);
  sh.stickTables = std::move(options.stickTables);
  sh.cookies = std::move(options.cookies);
  sh.tls = std::move(options.tls);
  sh.makeRouter = std::move(options.makeRouter);
  sh.nodeIndex = options.nodeIndex;
  sh.role.store(options.role);
  const uint32_t n = workerCount(*options.config);
  sh.workerCount = n;

  // Bind everything first, so a bad address fails start() with nothing running.
  std::vector<std::vector<dp::ListenerFd>> perWorker(n);
  auto closeAll = [&] {
    for (auto& v : perWorker)
      for (auto& l : v) ::close(l.fd);
  };
  for (const config::Frontend& fe : options.config->frontends) {
    dp::FrontendRt rt;
    rt.cfg = &fe;
    rt.id = stableId("frontend/" + fe.name);
    size_t fi = sh.frontends.size();
    for (const SocketAddress& want : fe.bind) {
      SocketAddress addr = want;
      for (uint32_t w = 0; w < n; ++w) {
        auto fd = bindListener(addr);
        if (!fd.ok()) {
          closeAll();
          return Error{"frontend " + fe.name + ": " + fd.error()};
        }
        // Port 0 (tests): the first socket picks the port, the other workers join it.
        if (w == 0) addr = boundAddress(*fd);
        perWorker[w].push_back({fi, *fd});
      }
      rt.bound.push_back(addr);
    }
    sh.frontends.push_back(std::move(rt));
  }

  for (uint32_t w = 0; w < n; ++w) {
    impl->workers.push_back(
        std::make_unique<dp::Worker>(sh, w, options.pools, std::move(perWorker[w])));
    if (options.outcomeSink) impl->workers.back()->setOutcomeSink(options.outcomeSink(w));
    sh.workers.push_back(impl->workers.back().get());
  }
  for (auto& w : impl->workers) w->start();
  HALB_LOG(Info, "dataplane") << "engine started: " << n << " workers, " << sh.frontends.size()
                              << " frontends";
  return std::unique_ptr<Engine>(new Engine(std::move(impl)));
}

size_t Engine::workerCount() const {
  return impl_->workers.size();
}

uint32_t Engine::workerCount(const config::Config& config) {
  return config.workers != 0 ? config.workers : std::max(1u, std::thread::hardware_concurrency());
}

void Engine::updateCookies(std::shared_ptr<const CookieCodecs> cookies) {
  for (auto& w : impl_->workers) w->postCookies(cookies);
}

void Engine::updateTls(TlsContextsPtr tls) {
  for (auto& w : impl_->workers) w->postTls(tls);
}

void Engine::updateRoutes(config::ConfigPtr config) {
  for (auto& w : impl_->workers) w->postRoutes(config);
}

void Engine::updatePools(PoolSnapshotPtr pools) {
  for (auto& w : impl_->workers) w->postPools(pools);
}

void Engine::setRole(Role role) {
  impl_->shared.role.store(role);
}
Role Engine::role() const {
  return impl_->shared.role.load();
}

void Engine::stop(Duration drain) {
  if (impl_->stopped) return;
  impl_->stopped = true;
  for (auto& w : impl_->workers) w->postStop(drain);
  for (auto& w : impl_->workers) w->join();
  HALB_LOG(Info, "dataplane") << "engine stopped";
}

repl::ChangeQueue& Engine::changeQueue(size_t worker) {
  return impl_->workers.at(worker)->changes();
}

WorkerInfo Engine::workerInfo(size_t worker) const {
  const auto& m = impl_->workers.at(worker)->metrics();
  WorkerInfo i;
  i.heartbeat = m.heartbeat.load(std::memory_order_relaxed);
  i.activeConnections = m.activeConnections.load(std::memory_order_relaxed);
  i.requests = m.requests.load(std::memory_order_relaxed);
  return i;
}

void Engine::forEachConn(const std::function<void(const repl::ConnEntry&)>& fn) const {
  for (const auto& w : impl_->workers) w->connTable().forEach(fn);
}

std::vector<SocketAddress> Engine::listenAddresses(const std::string& frontend) const {
  for (const auto& f : impl_->shared.frontends)
    if (f.cfg->name == frontend) return f.bound;
  return {};
}

void Engine::writeMetrics(PromWriter& w) const {
  const auto& workers = impl_->workers;
  auto sum = [&](auto member) {
    uint64_t t = 0;
    for (const auto& wk : workers) t += (wk->metrics().*member).load(std::memory_order_relaxed);
    return static_cast<double>(t);
  };
  struct Counter {
    const char* name;
    const char* type;
    const char* help;
    std::atomic<uint64_t> dp::WorkerMetrics::*member;
  };
  static const Counter kCounters[] = {
      {"halb_connections_accepted_total", "counter", "Client connections accepted.",
       &dp::WorkerMetrics::connectionsAccepted},
      {"halb_connections_active", "gauge", "Client connections open now.",
       &dp::WorkerMetrics::activeConnections},
      {"halb_bytes_in_total", "counter", "Bytes received from clients.",
       &dp::WorkerMetrics::bytesIn},
      {"halb_bytes_out_total", "counter", "Bytes sent to clients.", &dp::WorkerMetrics::bytesOut},
      {"halb_accept_errors_total", "counter", "Failed accept() calls.",
       &dp::WorkerMetrics::acceptErrors},
      {"halb_server_connect_failures_total", "counter", "Failed connects to servers.",
       &dp::WorkerMetrics::connectFailures},
      {"halb_server_connect_retries_total", "counter", "Connects retried on another server.",
       &dp::WorkerMetrics::connectRetries},
      {"halb_no_server_total", "counter",
       "Requests or connections refused because no server was usable (503).",
       &dp::WorkerMetrics::noServer},
      {"halb_http_parse_errors_total", "counter",
       "Requests refused as malformed or over a limit (400/414/431/501/505).",
       &dp::WorkerMetrics::parseErrors},
      {"halb_timeouts_total", "counter", "Connections or requests ended by a timeout.",
       &dp::WorkerMetrics::timeouts},
      {"halb_server_connection_reuse_total", "counter",
       "Requests sent on a pooled server connection.", &dp::WorkerMetrics::serverReuse},
      {"halb_server_connections_opened_total", "counter", "Server connections opened.",
       &dp::WorkerMetrics::serverConnects},
      {"halb_connections_rejected_total", "counter",
       "Client connections closed at once because max_connections was reached.",
       &dp::WorkerMetrics::rejectedMaxConn},
  };
  struct Labelled {
    const char* name;
    const char* help;
    const char* label;
    std::vector<std::pair<const char*, std::atomic<uint64_t> dp::WorkerMetrics::*>> series;
  };
  static const Labelled kLabelled[] = {
      {"halb_tls_handshakes_total",
       "TLS handshakes with clients: full, resumed (session ticket) or failed.",
       "result",
       {{"full", &dp::WorkerMetrics::tlsHandshakes},
        {"resumed", &dp::WorkerMetrics::tlsResumed},
        {"failed", &dp::WorkerMetrics::tlsFailures}}},
      {"halb_backend_tls_handshakes_total",
       "TLS handshakes with servers: full, resumed or failed (incl. verification).",
       "result",
       {{"full", &dp::WorkerMetrics::backendTlsHandshakes},
        {"resumed", &dp::WorkerMetrics::backendTlsResumed},
        {"failed", &dp::WorkerMetrics::backendTlsFailures}}},
      {"halb_retries_total",
       "Requests or connects tried again (sent), and retries the retry budget refused (budget).",
       "result",
       {{"sent", &dp::WorkerMetrics::retries}, {"budget", &dp::WorkerMetrics::retriesDenied}}},
      {"halb_mirror_total",
       "Mirrored requests: answered (sent), failed, dropped (max_in_flight) or skipped (body).",
       "result",
       {{"sent", &dp::WorkerMetrics::mirrorsSent},
        {"failed", &dp::WorkerMetrics::mirrorsFailed},
        {"dropped", &dp::WorkerMetrics::mirrorsDropped},
        {"skipped", &dp::WorkerMetrics::mirrorsSkipped}}},
      {"halb_queue_total",
       "Waits for a server slot (max_connections): queued, woken, timed out, or refused at "
       "once (queue full or none).",
       "result",
       {{"queued", &dp::WorkerMetrics::queued},
        {"woken", &dp::WorkerMetrics::queueServed},
        {"timeout", &dp::WorkerMetrics::queueTimeouts},
        {"full", &dp::WorkerMetrics::queueFull}}},
  };
  for (const Counter& c : kCounters) {
    w.family(c.name, c.type, c.help);
    w.sample(c.name, {}, sum(c.member));
  }
  for (const Labelled& l : kLabelled) {
    w.family(l.name, "counter", l.help);
    for (const auto& [value, member] : l.series) w.sample(l.name, {{l.label, value}}, sum(member));
  }
  w.family("halb_http_requests_total", "counter", "HTTP requests received, per worker.");
  for (size_t i = 0; i < workers.size(); ++i) {
    std::string idx = std::to_string(i);
    w.sample("halb_http_requests_total", {{"worker", idx}},
             static_cast<double>(workers[i]->metrics().requests.load(std::memory_order_relaxed)));
  }
  w.family("halb_http_responses_total", "counter", "HTTP responses sent, by status class.");
  static const char* kClasses[] = {"", "1xx", "2xx", "3xx", "4xx", "5xx"};
  for (size_t k = 1; k < 6; ++k) {
    uint64_t t = 0;
    for (const auto& wk : workers) t += wk->metrics().responses[k].load(std::memory_order_relaxed);
    w.sample("halb_http_responses_total", {{"code", kClasses[k]}}, static_cast<double>(t));
  }
  w.family("halb_worker_heartbeat", "counter",
           "Ticks of each worker's loop; a value that stops growing means a stuck worker.");
  for (size_t i = 0; i < workers.size(); ++i) {
    std::string idx = std::to_string(i);
    w.sample("halb_worker_heartbeat", {{"worker", idx}},
             static_cast<double>(workers[i]->metrics().heartbeat.load(std::memory_order_relaxed)));
  }
  // Per-backend latency: time from the request sent to the response head received.
  std::unordered_map<uint64_t, std::pair<std::vector<uint64_t>, double>> merged;
  std::span<const double> bounds = defaultLatencyBuckets();
  for (const auto& wk : workers)
    wk->forEachLatency([&](uint64_t id, const Histogram& h) {
      auto& [counts, total] = merged[id];
      h.addTo(counts, total);
    });
  w.family("halb_backend_response_seconds", "histogram",
           "Time from a request sent to a server to its response head received.");
  for (const config::Backend& b : impl_->shared.config->backends) {
    auto it = merged.find(b.id);
    if (it == merged.end()) continue;
    Histogram::write(w, "halb_backend_response_seconds", {{"backend", b.name}}, bounds,
                     it->second.first, it->second.second);
  }
}

std::string Engine::statusJson() const {
  std::ostringstream o;
  o << "{\"role\":\"" << toString(role()) << "\",\"workers\":[";
  uint64_t active = 0, requests = 0;
  for (size_t i = 0; i < impl_->workers.size(); ++i) {
    WorkerInfo wi = workerInfo(i);
    active += wi.activeConnections;
    requests += wi.requests;
    if (i) o << ',';
    o << "{\"index\":" << i << ",\"heartbeat\":" << wi.heartbeat
      << ",\"active_connections\":" << wi.activeConnections << ",\"requests\":" << wi.requests
      << ",\"change_queue_dropped\":" << impl_->workers[i]->changes().dropped() << '}';
  }
  o << "],\"active_connections\":" << active << ",\"requests\":" << requests << ",\"frontends\":[";
  bool first = true;
  for (const auto& f : impl_->shared.frontends) {
    if (!first) o << ',';
    first = false;
    o << "{\"name\":";
    jsonString(o, f.cfg->name);
    o << ",\"mode\":\"" << config::toString(f.cfg->mode) << "\",\"listen\":[";
    for (size_t k = 0; k < f.bound.size(); ++k) {
      if (k) o << ',';
      jsonString(o, f.bound[k].toString());
    }
    o << "]}";
  }
  o << "]}";
  return o.str();
}

}  // namespace halb::balancer
