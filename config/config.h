#pragma once
// The validated, immutable configuration of one node. `loadConfig` (loader.h) builds it from
// the YAML file that both nodes share; everything here is already checked, typed and
// resolved for the node that runs (per-node overrides applied, defaults filled in).
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "common/log.h"
#include "common/net.h"
#include "common/time.h"

namespace halb::config {

using namespace std::chrono_literals;

enum class Mode { Tcp, Http };
enum class Algorithm { RoundRobin, WeightedRoundRobin, LeastConn, P2C, Random, SourceHash, Maglev };
enum class HealthType { None, Tcp, Http };
enum class StickyMode { None, Cookie, Source, AppCookie, Header };
enum class VrrpAuth { None, Hmac };
enum class ProxyProtocol { None, V2 };
enum class HostMatchKind { Exact, Wildcard };
enum class PathMatchKind { Exact, Prefix, Regex };
enum class PinKind { None, Cookie, Header };
enum class TlsVersion { V1_2, V1_3 };

const char* toString(Mode m);
const char* toString(Algorithm a);
const char* toString(HealthType t);
const char* toString(StickyMode m);
const char* toString(VrrpAuth a);
const char* toString(ProxyProtocol p);
const char* toString(PinKind p);
const char* toString(TlsVersion v);

// Where a value came from, so that later checks (files that cannot be read at start-up,
// certificates) can still point at the line of the file.
struct Origin {
  int line = 0;    // 1-based; 0 = not from the file (a default)
  int column = 0;  // 1-based
};

struct Timeouts {
  Duration connect = 3s;          // server connect, per attempt
  Duration clientIdle = 60s;      // no bytes either way on an established connection (tcp)
  Duration requestHeaders = 10s;  // whole request head must arrive in this time (slowloris)
  Duration requestBody = 30s;     // max gap between two body reads
  Duration serverResponse = 30s;  // request sent -> response head received (504 after)
  Duration keepAlive = 15s;       // idle client connection between requests
  Duration serverIdle = 30s;      // idle pooled server connection
  Duration tunnel = 1h;           // idle upgraded (WebSocket) or CONNECT tunnel
  Duration tlsHandshake = 10s;    // TLS handshake with a client or a server
  Duration drain = 10s;           // on stop/reload: wait for connections to finish
};

struct Limits {
  uint64_t maxConnections = 100000;  // per node, client connections
  uint64_t requestLine = 8 * 1024;   // longer -> 414
  uint64_t headerBytes = 32 * 1024;  // whole header block; larger -> 431
  uint32_t headerCount = 100;        // more -> 431
  uint64_t bufferSize = 16 * 1024;   // per direction, per connection
  uint32_t connectRetries = 2;       // retries on another server after a failed connect
};

struct Server {
  std::string name;
  uint64_t id = 0;  // stableId("backend/server")
  SocketAddress address;
  uint32_t weight = 100;  // 0..256; 0 drains the server
  uint32_t maxConnections = 0;  // in flight to this server; 0 = the backend's max_connections
  Origin origin;
};

struct HealthCheck {
  HealthType type = HealthType::Tcp;
  Duration interval = 2s;
  Duration timeout = 1s;
  uint32_t rise = 2;  // consecutive successes to become healthy
  uint32_t fall = 3;  // consecutive failures to become unhealthy
  std::string httpPath = "/";
  std::string httpHost;             // Host header; default: the server address
  uint32_t expectStatusMin = 200;   // inclusive range; "200" or "200-399"
  uint32_t expectStatusMax = 399;
  std::string expectBody;           // substring the body must contain; empty = any
};

struct OutlierDetection {
  uint32_t consecutiveFailures = 5;   // connect failures or 5xx in a row; 0 disables
  Duration baseEjection = 10s;        // doubled on each repeated ejection
  Duration maxEjection = 300s;
  uint32_t maxEjectedPercent = 50;    // never eject more than this share of a backend
};

struct Sticky {
  StickyMode mode = StickyMode::None;
  std::string name;      // cookie (cookie, app_cookie) or header name (header)
  Duration ttl = 30min;  // stick table entry lifetime after last use
  uint64_t tableSize = 1'000'000;  // entries; least recently used go first
  // mode cookie: the secret the cookie's HMAC key is derived from. Empty: derived from
  // statesync.key_file when state sync is on, else a random per-process secret
  // (balancer/sticky_cookie.h, docs/configuration.md).
  std::string keyFile;
};

// TLS towards the servers of a backend (balancer/tls.h).
struct BackendTls {
  bool verify = true;       // check the server's chain and name; off = encrypt only
  std::string caFile;       // trust anchors (PEM); empty = the system store
  std::string serverName;   // SNI sent and the name verified; empty = no SNI, the IP is verified
  TlsVersion minVersion = TlsVersion::V1_2;
  std::string ciphers;       // TLS 1.2; empty = OpenSSL default
  std::string ciphersuites;  // TLS 1.3; empty = OpenSSL default
  Origin origin;
};

// Retries may add at most `percent` of a backend's requests over `window` (plus
// `minRetries` per window so a quiet backend can still retry), so retries cannot multiply
// the load on a failing backend (balancer/retry.h).
struct RetryBudget {
  uint32_t percent = 20;
  Duration window = 10s;
  uint32_t minRetries = 100;  // 10 per second over the default window (as Finagle)
};

// Requests (http) or connections (tcp) that wait for a server below its max_connections.
struct Queue {
  uint32_t size = 0;       // waiting at most, per backend and node; 0 = no queue (503 at once)
  Duration timeout = 1s;   // waited longer -> 503
};

struct Backend {
  std::string name;
  uint64_t id = 0;
  Algorithm algorithm = Algorithm::RoundRobin;
  std::vector<Server> servers;
  HealthCheck health;
  OutlierDetection outlier;
  Duration slowStart = 0s;  // ramp-up of a recovered server's weight
  Sticky sticky;
  ProxyProtocol proxyProtocol = ProxyProtocol::None;
  std::optional<BackendTls> tls;
  uint32_t maxConnections = 0;  // per server, in flight (http requests, tcp connections); 0 = no limit
  Queue queue;
  RetryBudget retryBudget;
  Origin origin;

  // A server's effective limit (its own, else the backend's); 0 = none.
  uint32_t limitOf(const Server& s) const { return s.maxConnections ? s.maxConnections : maxConnections; }
};

struct HostMatch {
  HostMatchKind kind = HostMatchKind::Exact;
  std::string value;  // lower case; for Wildcard the part after "*" (".example.com")
};

struct PathMatch {
  PathMatchKind kind = PathMatchKind::Prefix;
  std::string value;  // for Regex: RE2 syntax (unanchored search), already checked to compile
};

// A header or cookie condition: present, equal to `value`, or matching `regex`.
struct FieldMatch {
  std::string name;  // headers: lower case
  std::optional<std::string> value;
  std::optional<std::string> regex;
};

struct Match {
  std::vector<HostMatch> hosts;  // any of them
  std::optional<PathMatch> path;
  std::vector<FieldMatch> headers;  // all of them
  std::vector<FieldMatch> cookies;  // all of them
  std::vector<std::string> methods;  // any of them; upper case
};

// Traffic shifting (balancer/traffic.h): a route's requests are split by weight between
// backends, e.g. 95/5 between a stable and a canary version.
struct SplitTarget {
  std::string backend;
  uint32_t weight = 0;  // 0..10000; the share is weight / sum of weights
};

// Keeps a user on the side of a split they got: `cookie` sets a cookie naming the side;
// `header` hashes the header's value (a user id), so the side follows from the value alone.
struct Pin {
  PinKind kind = PinKind::None;
  std::string name;  // header: lower case
};

// A copy of a share of the requests goes to a shadow backend; its response is discarded.
struct Mirror {
  std::string backend;
  uint32_t perMillion = 0;      // share mirrored, in millionths (percent 10 = 100000)
  uint32_t maxInFlight = 64;    // per worker; beyond it mirrors are dropped and counted
  uint64_t maxBody = 64 * 1024; // requests with a larger body are not mirrored
};

struct RetryPolicy {
  uint32_t attempts = 0;        // retries after the first try; 0 = none
  bool onConnectFailure = true; // (connect failures are retried for every method: nothing was sent)
  bool onReset = false;         // the server closed or reset before a response head
  bool onTimeout = false;       // no response head within server_response
  std::vector<uint16_t> statuses;  // retry on these response statuses (e.g. 502, 503, 504)
};

// Per-route overrides of the global timeouts; unset = the global one.
struct RouteTimeouts {
  std::optional<Duration> connect;
  std::optional<Duration> serverResponse;
};

struct Route {
  std::string name;
  Match match;
  // The backend; with `split`, the first target's (what code that ignores splits uses).
  std::string backend;
  std::vector<SplitTarget> split;  // empty: all requests go to `backend`
  Pin pin;
  std::optional<Mirror> mirror;
  RetryPolicy retry;
  RouteTimeouts timeouts;
  Origin origin;
};

struct TlsCertificate {
  std::string certFile;
  std::string keyFile;
  Origin origin;
};

struct FrontendTls {
  std::vector<TlsCertificate> certificates;  // the first is the default (no SNI match)
  TlsVersion minVersion = TlsVersion::V1_2;  // TLS 1.2 or 1.3; nothing older is offered
  std::string ciphers;                       // TLS 1.2 cipher list; empty = OpenSSL default
  std::string ciphersuites;                  // TLS 1.3 suites; empty = OpenSSL default
  Origin origin;
};

// Session resumption with stateless tickets (RFC 5077, RFC 8446 §4.6.1). The ticket keys are
// shared by every worker and frontend of a node and replicated to the peer by state sync, so
// a client resumes on whichever node holds the VIP.
struct SessionTickets {
  bool enabled = true;
  Duration rotation = 1h;         // a new key seals tickets every `rotation`
  Duration sessionLifetime = 2h;  // a ticket resumes for this long (and its key opens for this
                                  // long after it stopped sealing)
};

struct Tls {
  SessionTickets tickets;
};

struct Frontend {
  std::string name;
  std::vector<SocketAddress> bind;
  Mode mode = Mode::Http;
  std::optional<FrontendTls> tls;
  std::vector<Route> routes;
  std::string defaultBackend;  // empty: requests matching no route get 404 (http)
  bool continuity = false;     // replicate TCP state so connections survive failover
  Origin origin;
};

struct Vip {
  Prefix address;
  std::string interface;
};

struct Garp {
  uint32_t count = 5;          // gratuitous ARPs / unsolicited NAs on becoming master
  Duration interval = 20ms;    // spacing between them
  Duration refresh = 0s;       // repeat periodically while master; 0 = off
};

struct Tracking {
  std::vector<std::string> backends;    // no healthy server -> priority drops
  std::vector<std::string> interfaces;  // link down -> priority drops
  uint32_t penalty = 60;                // subtracted per failed item
};

struct Vrrp {
  bool enabled = false;  // false: standalone node, always serving, no VIP management
  std::string interface;
  uint32_t virtualRouterId = 0;
  uint32_t priority = 100;
  Duration advertInterval = 100ms;
  bool preempt = true;
  Duration preemptDelay = 0s;
  bool unicast = false;
  std::vector<IpAddress> unicastPeers;  // resolved: explicit, or the other nodes' addresses
  std::optional<IpAddress> sourceAddress;
  VrrpAuth auth = VrrpAuth::None;
  std::string authKeyFile;
  Duration vipLifetime = 2s;  // valid_lft of the VIP, renewed by the live master
  Duration handoverHold = 5min;  // after `halb handover`, do not preempt back for this long
  Garp garp;
  Tracking track;
  std::string notify;  // command run with the new state as argument
};

struct StateSync {
  bool enabled = false;
  SocketAddress listen;
  std::optional<SocketAddress> peer;
  std::string keyFile;
  Duration heartbeat = 100ms;
  Duration peerTimeout = 1s;  // no frame for this long: the link is dead (also TCP_USER_TIMEOUT)
  Duration reconnectMin = 50ms;
  Duration reconnectMax = 2s;
  Duration syncWait = 5s;  // a returning node waits at most this long for a snapshot before preempting
  uint32_t queueSize = 65536;  // per worker; overflow drops and schedules a resync
};

struct Admin {
  SocketAddress listen{IpAddress::fromV4(0x7f000001), 9100};
};

struct Logging {
  log::Level level = log::Level::Info;
  log::Format format = log::Format::Text;
};

struct Node {
  std::string name;
  std::optional<IpAddress> address;
};

struct Config {
  std::string file;
  Node self;
  std::vector<Node> peers;
  uint32_t workers = 0;  // 0 = one per core
  std::vector<Vip> vips;
  Vrrp vrrp;
  StateSync statesync;
  Admin admin;
  Logging logging;
  Timeouts timeouts;
  Limits limits;
  Tls tls;
  std::vector<Frontend> frontends;
  std::vector<Backend> backends;

  const Backend* findBackend(std::string_view name) const;
  const Frontend* findFrontend(std::string_view name) const;
};

using ConfigPtr = std::shared_ptr<const Config>;

}  // namespace halb::config
