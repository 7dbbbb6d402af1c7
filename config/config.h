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

const char* toString(Mode m);
const char* toString(Algorithm a);
const char* toString(HealthType t);
const char* toString(StickyMode m);
const char* toString(VrrpAuth a);
const char* toString(ProxyProtocol p);

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
  Origin origin;
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

struct Route {
  std::string name;
  Match match;
  std::string backend;
  Origin origin;
};

struct TlsCertificate {
  std::string certFile;
  std::string keyFile;
  Origin origin;
};

struct FrontendTls {
  std::vector<TlsCertificate> certificates;  // the first is the default (no SNI match)
  std::string minVersion = "1.2";            // 1.2 or 1.3
  std::string ciphers;                       // TLS 1.2 cipher list; empty = OpenSSL default
  std::string ciphersuites;                  // TLS 1.3 suites; empty = OpenSSL default
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
  std::vector<Frontend> frontends;
  std::vector<Backend> backends;

  const Backend* findBackend(std::string_view name) const;
  const Frontend* findFrontend(std::string_view name) const;
};

using ConfigPtr = std::shared_ptr<const Config>;

}  // namespace halb::config
