#include "config/loader.h"

#include <unistd.h>
#include <re2/re2.h>
#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <charconv>
#include <fstream>
#include <map>
#include <set>
#include <sstream>
#include <variant>
#include <cstring>

#include "common/crypto.h"
#include "common/units.h"
#include "config/tls_files.h"

namespace halb::config {
namespace {

// ------------------------------------------------------------------------ error collection

class Reader {
 public:
  explicit Reader(std::string file) : file_(std::move(file)) {}

  void error(const YAML::Mark& m, const std::string& path, std::string message) {
    ConfigError e;
    e.file = file_;
    if (!m.is_null()) {
      e.line = m.line + 1;
      e.column = m.column + 1;
    }
    e.path = path;
    e.message = std::move(message);
    errors_.push_back(std::move(e));
  }
  void error(const Origin& o, const std::string& path, std::string message) {
    errors_.push_back(ConfigError{file_, o.line, o.column, path, std::move(message)});
  }
  void warning(const YAML::Mark& m, const std::string& path, std::string message) {
    error(m, path, std::move(message));
    errors_.back().warning = true;
  }
  // Paths in the file are relative to the file's own directory, so a checked-out tree and
  // /etc/halb behave alike.
  std::string resolvePath(const std::string& p) const {
    if (p.empty() || p[0] == '/') return p;
    auto slash = file_.rfind('/');
    return slash == std::string::npos ? p : file_.substr(0, slash + 1) + p;
  }

  const std::string& file() const { return file_; }
  std::vector<ConfigError>& errors() { return errors_; }

 private:
  std::string file_;
  std::vector<ConfigError> errors_;
};

Origin originOf(const YAML::Node& n) {
  YAML::Mark m = n.Mark();
  if (m.is_null()) return {};
  return {m.line + 1, m.column + 1};
}

// Looks a key up without yaml-cpp's operator[]: the non-const form inserts the key, and
// the const form returns a "zombie" node that throws on most accessors.
YAML::Node lookup(const YAML::Node& map, const std::string& key) {
  if (map.IsDefined() && map.IsMap()) {
    for (auto it = map.begin(); it != map.end(); ++it)
      if (it->first.IsScalar() && it->first.Scalar() == key) return it->second;
  }
  return YAML::Node(YAML::NodeType::Undefined);
}

YAML::Node item(const YAML::Node& seq, size_t i) {
  if (seq.IsDefined() && seq.IsSequence() && i < seq.size()) return seq[i];
  return YAML::Node(YAML::NodeType::Undefined);
}

// The mark of the deepest node that exists along a path of keys and indexes.
// (yaml-cpp's Node::operator= writes through to the referenced node, so walking uses
// std::optional::emplace, never assignment.)
YAML::Mark markAt(const YAML::Node& root, std::initializer_list<std::variant<const char*, size_t>> steps) {
  std::optional<YAML::Node> n(root);
  YAML::Mark m = root.Mark();
  for (const auto& s : steps) {
    YAML::Node next = std::holds_alternative<size_t>(s) ? item(*n, std::get<size_t>(s))
                                                        : lookup(*n, std::get<const char*>(s));
    if (!next.IsDefined()) break;
    m = next.Mark();
    n.emplace(next);
  }
  return m;
}

size_t editDistance(std::string_view a, std::string_view b) {
  std::vector<size_t> prev(b.size() + 1), cur(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) prev[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    cur[0] = i;
    for (size_t j = 1; j <= b.size(); ++j)
      cur[j] = std::min({prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (a[i - 1] != b[j - 1] ? 1 : 0)});
    std::swap(prev, cur);
  }
  return prev[b.size()];
}

const char* kindOf(const YAML::Node& n) {
  switch (n.Type()) {
    case YAML::NodeType::Map: return "a mapping";
    case YAML::NodeType::Sequence: return "a list";
    case YAML::NodeType::Scalar: return "a scalar";
    case YAML::NodeType::Null: return "empty";
    default: return "undefined";
  }
}

// A mapping whose keys are read one by one. Keys nobody asked for are reported by finish(),
// so a typo is an error instead of a silently ignored setting. An optional overlay (a node's
// per-node overrides) takes precedence key by key, recursively.
class MapView {
 public:
  MapView(Reader& r, const YAML::Node& base, const YAML::Node& overlay, std::string path, YAML::Mark parentMark)
      : r_(r), base_(usable(base)), overlay_(usable(overlay)), path_(std::move(path)), mark_(parentMark) {
    auto check = [&](const YAML::Node& n) {
      if (!n.IsDefined() || n.IsNull()) return;
      if (!n.IsMap()) {
        r_.error(n.Mark(), path_, std::string("must be a mapping, got ") + kindOf(n));
        bad_ = true;
        return;
      }
      std::set<std::string> seen;
      for (auto it = n.begin(); it != n.end(); ++it) {
        std::string key = it->first.Scalar();
        if (!seen.insert(key).second)
          r_.error(it->first.Mark(), join(key), "duplicate key '" + key + "'");
      }
    };
    check(base);
    check(overlay);
    if (base_.IsDefined() && base_.IsMap()) mark_ = base_.Mark();
  }

  bool present() const {
    return (base_.IsDefined() && base_.IsMap()) || (overlay_.IsDefined() && overlay_.IsMap());
  }
  bool bad() const { return bad_; }
  const YAML::Mark& mark() const { return mark_; }
  const std::string& path() const { return path_; }
  std::string join(std::string_view key) const {
    return path_.empty() ? std::string(key) : path_ + "." + std::string(key);
  }

  // The value for `key` (overlay first); undefined when absent.
  YAML::Node get(const std::string& key) {
    known_.insert(key);
    if (YAML::Node o = lookup(overlay_, key); o.IsDefined()) return o;
    return lookup(base_, key);
  }
  bool has(const std::string& key) {
    YAML::Node n = get(key);
    return n.IsDefined() && !n.IsNull();
  }

  MapView child(const std::string& key) {
    known_.insert(key);
    return MapView(r_, lookup(base_, key), lookup(overlay_, key), join(key), mark_);
  }

  void require(const std::string& key) {
    if (!has(key)) r_.error(mark_, join(key), "is required");
  }

  void finish() {
    for (const YAML::Node* n : {&base_, &overlay_}) {
      if (!n->IsDefined() || !n->IsMap()) continue;
      for (auto it = n->begin(); it != n->end(); ++it) {
        std::string key = it->first.Scalar();
        if (known_.count(key)) continue;
        std::string msg = "unknown key '" + key + "'";
        std::string best;
        size_t bestD = 3;
        for (const auto& k : known_) {
          size_t d = editDistance(key, k);
          if (d < bestD) {
            bestD = d;
            best = k;
          }
        }
        if (!best.empty()) msg += " (did you mean '" + best + "'?)";
        r_.error(it->first.Mark(), join(key), msg);
      }
    }
  }

 private:
  // The node itself when it is a mapping, else an undefined node (never a yaml-cpp "zombie").
  static YAML::Node usable(const YAML::Node& n) {
    if (n.IsDefined() && n.IsMap()) return n;
    return YAML::Node(YAML::NodeType::Undefined);
  }

  Reader& r_;
  YAML::Node base_, overlay_;
  std::string path_;
  YAML::Mark mark_;
  std::set<std::string> known_;
  bool bad_ = false;
};

// ------------------------------------------------------------------------ scalar readers

bool scalar(Reader& r, const YAML::Node& n, const std::string& path, std::string& out) {
  if (!n.IsScalar()) {
    r.error(n.Mark(), path, std::string("must be a scalar value, got ") + kindOf(n));
    return false;
  }
  out = n.Scalar();
  return true;
}

void readString(Reader& r, MapView& m, const std::string& key, std::string& out, bool nonEmpty = false) {
  YAML::Node n = m.get(key);
  if (!n.IsDefined() || n.IsNull()) return;
  std::string s;
  if (!scalar(r, n, m.join(key), s)) return;
  if (nonEmpty && s.empty()) {
    r.error(n.Mark(), m.join(key), "must not be empty");
    return;
  }
  out = s;
}

template <class T>
void readUint(Reader& r, MapView& m, const std::string& key, T& out, uint64_t min, uint64_t max) {
  YAML::Node n = m.get(key);
  if (!n.IsDefined() || n.IsNull()) return;
  std::string s;
  if (!scalar(r, n, m.join(key), s)) return;
  uint64_t v = 0;
  auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (s.empty() || ec != std::errc() || p != s.data() + s.size()) {
    r.error(n.Mark(), m.join(key), "must be an integer " + std::to_string(min) + ".." + std::to_string(max) +
                                       ", got '" + s + "'");
    return;
  }
  if (v < min || v > max) {
    r.error(n.Mark(), m.join(key),
            "must be " + std::to_string(min) + ".." + std::to_string(max) + ", got " + s);
    return;
  }
  out = static_cast<T>(v);
}

void readBool(Reader& r, MapView& m, const std::string& key, bool& out) {
  YAML::Node n = m.get(key);
  if (!n.IsDefined() || n.IsNull()) return;
  std::string s;
  if (!scalar(r, n, m.join(key), s)) return;
  if (s == "true" || s == "on" || s == "yes") out = true;
  else if (s == "false" || s == "off" || s == "no") out = false;
  else r.error(n.Mark(), m.join(key), "must be true or false (or on/off), got '" + s + "'");
}

void readDuration(Reader& r, MapView& m, const std::string& key, Duration& out, Duration min,
                  Duration max) {
  YAML::Node n = m.get(key);
  if (!n.IsDefined() || n.IsNull()) return;
  std::string s;
  if (!scalar(r, n, m.join(key), s)) return;
  auto d = parseDuration(s);
  if (!d) {
    r.error(n.Mark(), m.join(key), d.error());
    return;
  }
  if (*d < min || *d > max) {
    r.error(n.Mark(), m.join(key),
            "must be between " + formatDuration(min) + " and " + formatDuration(max) + ", got " + s);
    return;
  }
  out = *d;
}

void readSize(Reader& r, MapView& m, const std::string& key, uint64_t& out, uint64_t min, uint64_t max) {
  YAML::Node n = m.get(key);
  if (!n.IsDefined() || n.IsNull()) return;
  std::string s;
  if (!scalar(r, n, m.join(key), s)) return;
  auto v = parseSize(s);
  if (!v) {
    r.error(n.Mark(), m.join(key), v.error());
    return;
  }
  if (*v < min || *v > max) {
    r.error(n.Mark(), m.join(key),
            "must be between " + formatSize(min) + " and " + formatSize(max) + ", got " + s);
    return;
  }
  out = *v;
}

template <class E>
struct EnumName {
  const char* name;
  E value;
};

template <class E, size_t N>
void readEnum(Reader& r, MapView& m, const std::string& key, E& out, const EnumName<E> (&names)[N]) {
  YAML::Node n = m.get(key);
  if (!n.IsDefined() || n.IsNull()) return;
  std::string s;
  if (!scalar(r, n, m.join(key), s)) return;
  std::string allowed;
  for (const auto& e : names) {
    if (s == e.name) {
      out = e.value;
      return;
    }
    allowed += allowed.empty() ? "" : ", ";
    allowed += e.name;
  }
  r.error(n.Mark(), m.join(key), "must be one of " + allowed + ", got '" + s + "'");
}

template <class T, class Parse>
bool readParsed(Reader& r, const YAML::Node& n, const std::string& path, T& out, Parse parse) {
  std::string s;
  if (!scalar(r, n, path, s)) return false;
  auto v = parse(s);
  if (!v) {
    r.error(n.Mark(), path, v.error());
    return false;
  }
  out = *v;
  return true;
}

bool readIp(Reader& r, MapView& m, const std::string& key, IpAddress& out) {
  YAML::Node n = m.get(key);
  if (!n.IsDefined() || n.IsNull()) return false;
  return readParsed(r, n, m.join(key), out, IpAddress::parse);
}

bool readSocketAddress(Reader& r, const YAML::Node& n, const std::string& path, SocketAddress& out) {
  return readParsed(r, n, path, out, SocketAddress::parse);
}

// A list under `key` (absent = empty); calls fn(node, path) per element.
template <class Fn>
void forEachItem(Reader& r, MapView& m, const std::string& key, Fn fn) {
  YAML::Node n = m.get(key);
  if (!n.IsDefined() || n.IsNull()) return;
  if (!n.IsSequence()) {
    r.error(n.Mark(), m.join(key), std::string("must be a list, got ") + kindOf(n));
    return;
  }
  for (size_t i = 0; i < n.size(); ++i) fn(n[i], m.join(key) + "[" + std::to_string(i) + "]");
}

// A value that may be given as one scalar or as a list of scalars.
template <class Fn>
void forEachScalar(Reader& r, MapView& m, const std::string& key, Fn fn) {
  YAML::Node n = m.get(key);
  if (!n.IsDefined() || n.IsNull()) return;
  if (n.IsScalar()) {
    fn(n, m.join(key));
    return;
  }
  forEachItem(r, m, key, fn);
}

std::string lower(std::string s) {
  std::transform(s.begin(), s.end(), s.begin(), [](unsigned char c) { return std::tolower(c); });
  return s;
}

bool validName(const std::string& s) {
  if (s.empty() || s.size() > 64) return false;
  return std::all_of(s.begin(), s.end(), [](unsigned char c) {
    return std::isalnum(c) || c == '-' || c == '_' || c == '.';
  });
}

void readName(Reader& r, MapView& m, std::string& out) {
  m.require("name");
  YAML::Node n = m.get("name");
  if (!n.IsDefined() || n.IsNull()) return;
  std::string s;
  if (!scalar(r, n, m.join("name"), s)) return;
  if (!validName(s)) {
    r.error(n.Mark(), m.join("name"), "must be 1..64 characters of [A-Za-z0-9._-], got '" + s + "'");
    return;
  }
  out = s;
}

void readFilePath(Reader& r, MapView& m, const std::string& key, std::string& out) {
  readString(r, m, key, out);
  out = r.resolvePath(out);
}

void checkKeyFile(Reader& r, const LoadOptions& opt, MapView& m, const std::string& key,
                  const std::string& file) {
  if (!opt.checkFiles || file.empty()) return;
  auto k = loadKeyFile(file);
  if (!k) {
    r.error(m.get(key).Mark(), m.join(key), k.error());
    return;
  }
  if (std::string p = keyFilePermissionProblem(file); !p.empty()) r.warning(m.get(key).Mark(), m.join(key), p);
}

// ------------------------------------------------------------------------ sections

constexpr EnumName<Mode> kModes[] = {{"tcp", Mode::Tcp}, {"http", Mode::Http}};
constexpr EnumName<Algorithm> kAlgorithms[] = {
    {"round_robin", Algorithm::RoundRobin}, {"weighted_round_robin", Algorithm::WeightedRoundRobin},
    {"least_conn", Algorithm::LeastConn},   {"p2c", Algorithm::P2C},
    {"random", Algorithm::Random},          {"source_hash", Algorithm::SourceHash},
    {"maglev", Algorithm::Maglev}};
constexpr EnumName<HealthType> kHealthTypes[] = {
    {"none", HealthType::None}, {"tcp", HealthType::Tcp}, {"http", HealthType::Http}};
constexpr EnumName<StickyMode> kStickyModes[] = {{"none", StickyMode::None},
                                                 {"cookie", StickyMode::Cookie},
                                                 {"source", StickyMode::Source},
                                                 {"app_cookie", StickyMode::AppCookie},
                                                 {"header", StickyMode::Header}};
constexpr EnumName<VrrpAuth> kAuths[] = {{"none", VrrpAuth::None}, {"hmac", VrrpAuth::Hmac}};
constexpr EnumName<ProxyProtocol> kProxyProtocols[] = {{"none", ProxyProtocol::None},
                                                       {"v2", ProxyProtocol::V2}};
constexpr EnumName<log::Level> kLevels[] = {{"debug", log::Level::Debug},
                                           {"info", log::Level::Info},
                                           {"warn", log::Level::Warn},
                                           {"error", log::Level::Error}};
constexpr EnumName<log::Format> kFormats[] = {{"text", log::Format::Text}, {"json", log::Format::Json}};

constexpr Duration kMaxTimeout = std::chrono::hours(24 * 7);

void readTimeouts(Reader& r, MapView m, Timeouts& t) {
  readDuration(r, m, "connect", t.connect, 1ms, kMaxTimeout);
  readDuration(r, m, "client_idle", t.clientIdle, 1ms, kMaxTimeout);
  readDuration(r, m, "request_headers", t.requestHeaders, 1ms, kMaxTimeout);
  readDuration(r, m, "request_body", t.requestBody, 1ms, kMaxTimeout);
  readDuration(r, m, "server_response", t.serverResponse, 1ms, kMaxTimeout);
  readDuration(r, m, "keep_alive", t.keepAlive, 0ms, kMaxTimeout);
  readDuration(r, m, "server_idle", t.serverIdle, 0ms, kMaxTimeout);
  readDuration(r, m, "tunnel", t.tunnel, 1ms, kMaxTimeout);
  readDuration(r, m, "drain", t.drain, 0ms, kMaxTimeout);
  readDuration(r, m, "tls_handshake", t.tlsHandshake, 1ms, kMaxTimeout);
  m.finish();
}

void readLimits(Reader& r, MapView m, Limits& l) {
  readUint(r, m, "max_connections", l.maxConnections, 1, 100'000'000);
  readSize(r, m, "request_line", l.requestLine, 64, 1 << 20);
  readSize(r, m, "header_size", l.headerBytes, 256, 1 << 24);
  readUint(r, m, "header_count", l.headerCount, 1, 10'000);
  readSize(r, m, "buffer_size", l.bufferSize, 1024, 1 << 24);
  readUint(r, m, "connect_retries", l.connectRetries, 0, 16);
  m.finish();
}

void readHealth(Reader& r, MapView m, HealthCheck& h) {
  readEnum(r, m, "type", h.type, kHealthTypes);
  readDuration(r, m, "interval", h.interval, 10ms, std::chrono::hours(1));
  readDuration(r, m, "timeout", h.timeout, 1ms, std::chrono::hours(1));
  readUint(r, m, "rise", h.rise, 1, 100);
  readUint(r, m, "fall", h.fall, 1, 100);
  readString(r, m, "path", h.httpPath, true);
  readString(r, m, "host", h.httpHost);
  readString(r, m, "expect_body", h.expectBody);
  if (YAML::Node n = m.get("expect_status"); n.IsDefined() && !n.IsNull()) {
    std::string s;
    if (scalar(r, n, m.join("expect_status"), s)) {
      unsigned lo = 0, hi = 0;
      auto dash = s.find('-');
      std::string a = s.substr(0, dash), b = dash == std::string::npos ? a : s.substr(dash + 1);
      auto pa = std::from_chars(a.data(), a.data() + a.size(), lo);
      auto pb = std::from_chars(b.data(), b.data() + b.size(), hi);
      if (a.empty() || b.empty() || pa.ec != std::errc() || pb.ec != std::errc() ||
          pa.ptr != a.data() + a.size() || pb.ptr != b.data() + b.size() || lo < 100 || hi > 599 ||
          lo > hi) {
        r.error(n.Mark(), m.join("expect_status"),
                "must be a status (200) or a range (200-399) within 100..599, got '" + s + "'");
      } else {
        h.expectStatusMin = lo;
        h.expectStatusMax = hi;
      }
    }
  }
  if (!h.httpPath.empty() && h.httpPath[0] != '/')
    r.error(m.get("path").Mark(), m.join("path"), "must start with '/'");
  if (h.timeout > h.interval)
    r.error(m.has("timeout") ? m.get("timeout").Mark() : m.mark(), m.join("timeout"),
            "must not exceed interval (" + formatDuration(h.timeout) + " > " + formatDuration(h.interval) + ")");
  if (h.type != HealthType::Http) {
    for (const char* k : {"path", "host", "expect_status", "expect_body"})
      if (m.has(k)) r.error(m.get(k).Mark(), m.join(k), "only applies to type: http");
  }
  m.finish();
}

void readOutlier(Reader& r, MapView m, OutlierDetection& o) {
  readUint(r, m, "consecutive_failures", o.consecutiveFailures, 0, 1000);
  readDuration(r, m, "base_ejection", o.baseEjection, 1ms, std::chrono::hours(24));
  readDuration(r, m, "max_ejection", o.maxEjection, 1ms, std::chrono::hours(24));
  readUint(r, m, "max_ejected_percent", o.maxEjectedPercent, 0, 100);
  if (o.maxEjection < o.baseEjection)
    r.error(m.mark(), m.join("max_ejection"), "must not be shorter than base_ejection");
  m.finish();
}

void readSticky(Reader& r, const LoadOptions& opt, MapView m, Sticky& s) {
  readEnum(r, m, "mode", s.mode, kStickyModes);
  readString(r, m, "name", s.name);
  readFilePath(r, m, "key_file", s.keyFile);
  if (!s.keyFile.empty()) {
    if (s.mode != StickyMode::Cookie)
      r.error(m.get("key_file").Mark(), m.join("key_file"), "only applies to mode: cookie");
    else
      checkKeyFile(r, opt, m, "key_file", s.keyFile);
  }
  readDuration(r, m, "ttl", s.ttl, 1s, std::chrono::hours(24 * 30));
  readUint(r, m, "table_size", s.tableSize, 1, 100'000'000);
  if (m.present() && !m.has("mode")) r.error(m.mark(), m.join("mode"), "is required");
  switch (s.mode) {
    case StickyMode::Cookie:
      if (s.name.empty()) s.name = "HALB_SERVER";
      break;
    case StickyMode::AppCookie:
    case StickyMode::Header:
      if (s.name.empty())
        r.error(m.mark(), m.join("name"),
                std::string("is required for mode ") + toString(s.mode) + " (the cookie or header that identifies a user)");
      if (s.mode == StickyMode::Header) s.name = lower(s.name);
      break;
    case StickyMode::Source:
    case StickyMode::None:
      if (m.has("name")) r.error(m.get("name").Mark(), m.join("name"), "only applies to cookie, app_cookie and header modes");
      break;
  }
  m.finish();
}

void readServer(Reader& r, MapView m, Backend& b, Server& s) {
  readName(r, m, s.name);
  s.origin = originOf(m.get("name"));
  m.require("address");
  if (YAML::Node n = m.get("address"); n.IsDefined() && !n.IsNull()) {
    if (readSocketAddress(r, n, m.join("address"), s.address)) {
      if (s.address.port == 0) r.error(n.Mark(), m.join("address"), "needs a port other than 0");
      if (s.address.ip.isUnspecified()) r.error(n.Mark(), m.join("address"), "needs a concrete IP address");
    }
  }
  readUint(r, m, "weight", s.weight, 0, 256);
  readUint(r, m, "max_connections", s.maxConnections, 0, 10'000'000);
  s.id = stableId(b.name + "/" + s.name);
  m.finish();
}

void readBackendTls(Reader& r, const LoadOptions& opt, MapView m, BackendTls& t);

void readBackend(Reader& r, const LoadOptions& opt, MapView m, Backend& b) {
  readName(r, m, b.name);
  b.origin = originOf(m.get("name"));
  b.id = stableId(b.name);
  readEnum(r, m, "algorithm", b.algorithm, kAlgorithms);
  readDuration(r, m, "slow_start", b.slowStart, 0ms, std::chrono::hours(1));
  readEnum(r, m, "proxy_protocol", b.proxyProtocol, kProxyProtocols);
  m.require("servers");
  std::map<std::string, std::string> names;
  std::map<SocketAddress, std::string> addrs;
  forEachItem(r, m, "servers", [&](const YAML::Node& n, const std::string& path) {
    MapView sm(r, n, YAML::Node(), path, n.Mark());
    if (sm.bad()) return;
    Server s;
    readServer(r, sm, b, s);
    if (!s.name.empty()) {
      if (auto [it, fresh] = names.emplace(s.name, path); !fresh)
        r.error(sm.get("name").Mark(), path + ".name", "duplicate server name '" + s.name + "' (also " + it->second + ")");
    }
    if (s.address.port != 0) {
      if (auto [it, fresh] = addrs.emplace(s.address, path); !fresh)
        r.error(sm.get("address").Mark(), path + ".address",
                "server " + s.address.toString() + " is listed twice (also " + it->second + "); use weight instead");
    }
    b.servers.push_back(std::move(s));
  });
  if (YAML::Node n = m.get("servers"); n.IsSequence() && n.size() == 0)
    r.error(n.Mark(), m.join("servers"), "needs at least one server");
  readHealth(r, m.child("health"), b.health);
  readOutlier(r, m.child("outlier"), b.outlier);
  readSticky(r, opt, m.child("sticky"), b.sticky);
  readUint(r, m, "max_connections", b.maxConnections, 0, 10'000'000);
  {
    MapView q = m.child("queue");
    readUint(r, q, "size", b.queue.size, 0, 10'000'000);
    readDuration(r, q, "timeout", b.queue.timeout, 1ms, std::chrono::hours(1));
    q.finish();
    bool anyLimit = b.maxConnections != 0 ||
                    std::any_of(b.servers.begin(), b.servers.end(), [](const Server& s) { return s.maxConnections != 0; });
    if (q.present() && !anyLimit)
      r.error(q.mark(), q.path(), "has no use without max_connections (nothing is ever queued)");
  }
  {
    MapView rb = m.child("retry_budget");
    readUint(r, rb, "percent", b.retryBudget.percent, 0, 100);
    readDuration(r, rb, "window", b.retryBudget.window, 100ms, std::chrono::hours(1));
    readUint(r, rb, "min_retries", b.retryBudget.minRetries, 0, 1'000'000);
    rb.finish();
  }
  if (m.has("tls")) {
    b.tls.emplace();
    readBackendTls(r, opt, m.child("tls"), *b.tls);
    if (b.health.type == HealthType::Http)
      r.error(m.get("tls").Mark(), m.join("tls"),
              "http health checks do not speak TLS yet: use health.type tcp (or none) with tls");
  } else {
    m.child("tls").finish();
  }
  m.finish();
}

// Route regexes use RE2 syntax, as the router compiles them (balancer/router.cpp): no
// backreferences or lookaround, in exchange for linear-time matching of client input.
std::string regexError(const std::string& pattern) {
  RE2::Options o;
  o.set_log_errors(false);
  RE2 re(pattern, o);
  return re.ok() ? std::string() : re.error();
}

void readFieldMatches(Reader& r, MapView& m, const std::string& key, bool lowerName,
                      std::vector<FieldMatch>& out) {
  forEachItem(r, m, key, [&](const YAML::Node& n, const std::string& path) {
    MapView fm(r, n, YAML::Node(), path, n.Mark());
    if (fm.bad()) return;
    FieldMatch f;
    fm.require("name");
    readString(r, fm, "name", f.name, true);
    if (lowerName) f.name = lower(f.name);
    if (fm.has("value")) {
      std::string v;
      readString(r, fm, "value", v);
      f.value = v;
    }
    if (fm.has("regex")) {
      std::string v;
      readString(r, fm, "regex", v);
      if (std::string err = regexError(v); err.empty())
        f.regex = v;
      else
        r.error(fm.get("regex").Mark(), fm.join("regex"), "invalid regular expression: " + err);
    }
    if (f.value && f.regex) r.error(fm.mark(), path, "give either value or regex, not both");
    fm.finish();
    out.push_back(std::move(f));
  });
}

void readMatch(Reader& r, MapView m, Match& match) {
  forEachScalar(r, m, "host", [&](const YAML::Node& n, const std::string& path) {
    std::string s;
    if (!scalar(r, n, path, s)) return;
    s = lower(s);
    HostMatch h;
    if (s.rfind("*.", 0) == 0 && s.size() > 2) {
      h.kind = HostMatchKind::Wildcard;
      h.value = s.substr(1);
    } else if (s.find('*') != std::string::npos || s.empty()) {
      r.error(n.Mark(), path, "a host is exact (api.example.com) or a leading wildcard (*.example.com), got '" + s + "'");
      return;
    } else {
      h.value = s;
    }
    match.hosts.push_back(h);
  });
  int pathKinds = 0;
  for (auto [key, kind] : {std::pair{"path", PathMatchKind::Exact}, std::pair{"path_prefix", PathMatchKind::Prefix},
                           std::pair{"path_regex", PathMatchKind::Regex}}) {
    YAML::Node n = m.get(key);
    if (!n.IsDefined() || n.IsNull()) continue;
    if (++pathKinds > 1) {
      r.error(n.Mark(), m.join(key), "give only one of path, path_prefix, path_regex");
      continue;
    }
    std::string s;
    if (!scalar(r, n, m.join(key), s)) continue;
    if (kind == PathMatchKind::Regex) {
      if (std::string err = regexError(s); !err.empty()) {
        r.error(n.Mark(), m.join(key), "invalid regular expression: " + err);
        continue;
      }
    } else if (s.empty() || s[0] != '/') {
      r.error(n.Mark(), m.join(key), "must start with '/', got '" + s + "'");
      continue;
    }
    match.path = PathMatch{kind, s};
  }
  readFieldMatches(r, m, "headers", true, match.headers);
  readFieldMatches(r, m, "cookies", false, match.cookies);
  forEachScalar(r, m, "method", [&](const YAML::Node& n, const std::string& path) {
    std::string s;
    if (!scalar(r, n, path, s)) return;
    bool token = !s.empty() && std::all_of(s.begin(), s.end(), [](unsigned char c) { return std::isalpha(c); });
    if (!token) {
      r.error(n.Mark(), path, "must be an HTTP method such as GET, got '" + s + "'");
      return;
    }
    std::transform(s.begin(), s.end(), s.begin(), [](unsigned char c) { return std::toupper(c); });
    match.methods.push_back(s);
  });
  m.finish();
}

constexpr EnumName<TlsVersion> kTlsVersions[] = {{"1.2", TlsVersion::V1_2}, {"1.3", TlsVersion::V1_3}};

// A certificate within this long of its end is reported (a warning; the file still loads).
constexpr int64_t kCertExpiryWarning = 30 * 86400;

int64_t nowUnix(const LoadOptions& opt) {
  return opt.nowUnix != 0 ? opt.nowUnix : static_cast<int64_t>(::time(nullptr));
}

void readCiphers(Reader& r, MapView& m, std::string& ciphers, std::string& suites) {
  readString(r, m, "ciphers", ciphers);
  readString(r, m, "ciphersuites", suites);
  if (std::string p = tls::cipherProblem(ciphers, false); !p.empty())
    r.error(m.get("ciphers").Mark(), m.join("ciphers"), p);
  if (std::string p = tls::cipherProblem(suites, true); !p.empty())
    r.error(m.get("ciphersuites").Mark(), m.join("ciphersuites"), p);
}

// Each certificate is loaded as the data plane will load it, so `halb check` refuses what a
// start or reload would: unreadable or malformed files, a key that is not the certificate's,
// a chain certificate outside its validity period. Errors point at the YAML key of the file
// at fault and name the file.
void checkCertificate(Reader& r, const LoadOptions& opt, MapView& cm, const TlsCertificate& c,
                      std::map<std::string, std::string>& names, const std::string& path) {
  if (!opt.checkFiles || c.certFile.empty() || c.keyFile.empty()) return;
  tls::LoadedPair lp = tls::loadCertKeyPair(c.certFile, c.keyFile);
  if (!lp) {
    const char* key = lp.error.file == tls::File::Key ? "key" : "cert";
    r.error(cm.get(key).Mark(), cm.join(key), lp.error.message);
    return;
  }
  const int64_t now = nowUnix(opt);
  if (std::string p = tls::validityProblem(*lp.pair, c.certFile, now); !p.empty())
    r.error(cm.get("cert").Mark(), cm.join("cert"), p);
  else if (std::string w = tls::expiryWarning(*lp.pair, c.certFile, now, kCertExpiryWarning); !w.empty())
    r.warning(cm.get("cert").Mark(), cm.join("cert"), w);
  if (std::string p = keyFilePermissionProblem(c.keyFile); !p.empty())
    r.warning(cm.get("key").Mark(), cm.join("key"), p);
  if (lp.pair->names.empty())
    r.warning(cm.get("cert").Mark(), cm.join("cert"),
              "the certificate in '" + c.certFile + "' names no DNS host; it can only be the default");
  for (const std::string& n : lp.pair->names) {
    if (auto [it, fresh] = names.emplace(n, path); !fresh)
      r.warning(cm.get("cert").Mark(), cm.join("cert"),
                "'" + n + "' is also served by " + it->second + ", which comes first and wins");
  }
}

void readTls(Reader& r, const LoadOptions& opt, MapView m, FrontendTls& tls) {
  tls.origin = originOf(m.get("certificates"));
  m.require("certificates");
  std::map<std::string, std::string> names;  // SNI name -> the certificate that serves it
  forEachItem(r, m, "certificates", [&](const YAML::Node& n, const std::string& path) {
    MapView cm(r, n, YAML::Node(), path, n.Mark());
    if (cm.bad()) return;
    TlsCertificate c;
    c.origin = originOf(n);
    cm.require("cert");
    cm.require("key");
    readFilePath(r, cm, "cert", c.certFile);
    readFilePath(r, cm, "key", c.keyFile);
    checkCertificate(r, opt, cm, c, names, path);
    cm.finish();
    tls.certificates.push_back(std::move(c));
  });
  if (YAML::Node n = m.get("certificates"); n.IsSequence() && n.size() == 0)
    r.error(n.Mark(), m.join("certificates"), "needs at least one certificate");
  readEnum(r, m, "min_version", tls.minVersion, kTlsVersions);
  readCiphers(r, m, tls.ciphers, tls.ciphersuites);
  m.finish();
}

void readBackendTls(Reader& r, const LoadOptions& opt, MapView m, BackendTls& t) {
  t.origin = originOf(m.get("verify"));
  readBool(r, m, "verify", t.verify);
  readFilePath(r, m, "ca_file", t.caFile);
  readString(r, m, "server_name", t.serverName);
  t.serverName = lower(t.serverName);
  if (!t.serverName.empty() &&
      (t.serverName.size() > 253 || !std::all_of(t.serverName.begin(), t.serverName.end(), [](unsigned char c) {
        return std::isalnum(c) || c == '-' || c == '.';
      })))
    r.error(m.get("server_name").Mark(), m.join("server_name"),
            "must be a DNS host name (letters, digits, '-', '.'), got '" + t.serverName + "'");
  readEnum(r, m, "min_version", t.minVersion, kTlsVersions);
  readCiphers(r, m, t.ciphers, t.ciphersuites);
  if (!t.caFile.empty()) {
    if (!t.verify)
      r.error(m.get("ca_file").Mark(), m.join("ca_file"), "has no use with verify: false");
    else if (opt.checkFiles)
      if (std::string p = tls::caFileProblem(t.caFile); !p.empty())
        r.error(m.get("ca_file").Mark(), m.join("ca_file"), p);
  }
  m.finish();
}

void readSessionTickets(Reader& r, MapView m, SessionTickets& t) {
  readBool(r, m, "session_tickets", t.enabled);
  readDuration(r, m, "ticket_rotation", t.rotation, 1s, std::chrono::hours(24 * 7));
  readDuration(r, m, "session_lifetime", t.sessionLifetime, 1s, std::chrono::hours(24 * 7));
  // Every key that may still open a ticket is kept (on both nodes): bound their number.
  if (t.sessionLifetime > 64 * t.rotation)
    r.error(m.has("session_lifetime") ? m.get("session_lifetime").Mark() : m.mark(), m.join("session_lifetime"),
            "must not exceed 64 x ticket_rotation (" + formatDuration(t.rotation) +
                "): every key that can still open a ticket is kept");
  m.finish();
}

// "10", "0.5", "12.25" (percent, up to four decimals) -> millionths.
std::optional<uint32_t> parsePercent(std::string_view s) {
  if (!s.empty() && s.back() == '%') s.remove_suffix(1);
  size_t dot = s.find('.');
  std::string_view whole = s.substr(0, dot), frac = dot == std::string_view::npos ? "" : s.substr(dot + 1);
  if (whole.empty() || frac.size() > 4 || (dot != std::string_view::npos && frac.empty())) return std::nullopt;
  uint64_t w = 0, f = 0;
  if (std::from_chars(whole.data(), whole.data() + whole.size(), w).ptr != whole.data() + whole.size())
    return std::nullopt;
  if (!frac.empty() && std::from_chars(frac.data(), frac.data() + frac.size(), f).ptr != frac.data() + frac.size())
    return std::nullopt;
  for (size_t i = frac.size(); i < 4; ++i) f *= 10;
  uint64_t v = w * 10000 + f;  // in 1/10000 percent = millionths
  if (v > 1'000'000) return std::nullopt;
  return static_cast<uint32_t>(v);
}

bool validCookieName(const std::string& s) {
  // token (RFC 6265 §4.1.1 -> RFC 2616 token): no separators or controls
  static const std::string kSeparators = "()<>@,;:\\\"/[]?={} \t";
  return !s.empty() && s.size() <= 64 && std::all_of(s.begin(), s.end(), [](unsigned char c) {
    return c > 32 && c < 127 && kSeparators.find(static_cast<char>(c)) == std::string::npos;
  });
}

void readRoutePolicies(Reader& r, MapView& rm, Route& route, const Limits& limits) {
  // split
  forEachItem(r, rm, "split", [&](const YAML::Node& n, const std::string& path) {
    MapView sm(r, n, YAML::Node(), path, n.Mark());
    if (sm.bad()) return;
    SplitTarget t;
    sm.require("backend");
    sm.require("weight");
    readString(r, sm, "backend", t.backend, true);
    readUint(r, sm, "weight", t.weight, 0, 10000);
    sm.finish();
    route.split.push_back(std::move(t));
  });
  if (rm.has("split")) {
    uint64_t sum = 0;
    std::set<std::string> seen;
    for (size_t i = 0; i < route.split.size(); ++i) {
      sum += route.split[i].weight;
      if (!route.split[i].backend.empty() && !seen.insert(route.split[i].backend).second)
        r.error(markAt(rm.get("split"), {i, "backend"}), rm.join("split") + "[" + std::to_string(i) + "].backend",
                "backend '" + route.split[i].backend + "' is listed twice");
    }
    if (route.split.empty())
      r.error(rm.get("split").Mark(), rm.join("split"), "needs at least one backend");
    else if (sum == 0)
      r.error(rm.get("split").Mark(), rm.join("split"), "weights must not all be 0");
    if (rm.has("backend"))
      r.error(rm.get("backend").Mark(), rm.join("backend"), "give either backend or split, not both");
    else if (!route.split.empty())
      route.backend = route.split[0].backend;
  } else {
    rm.require("backend");
  }
  // pin
  {
    MapView pm = rm.child("pin");
    if (pm.present()) {
      std::string cookie, header;
      readString(r, pm, "cookie", cookie, true);
      readString(r, pm, "header", header, true);
      if (!cookie.empty() && !header.empty())
        r.error(pm.mark(), pm.path(), "give either cookie or header, not both");
      else if (!cookie.empty()) {
        route.pin = {PinKind::Cookie, cookie};
        if (!validCookieName(cookie))
          r.error(pm.get("cookie").Mark(), pm.join("cookie"), "is not a valid cookie name: '" + cookie + "'");
      } else if (!header.empty()) {
        route.pin = {PinKind::Header, lower(header)};
      } else if (!pm.bad()) {
        r.error(pm.mark(), pm.path(), "needs cookie or header");
      }
      if (route.split.size() < 2)
        r.error(pm.mark(), pm.path(), "only applies to a split between at least two backends");
    }
    pm.finish();
  }
  // mirror
  {
    MapView mm = rm.child("mirror");
    if (mm.present() && !mm.bad()) {
      Mirror mi;
      mm.require("backend");
      mm.require("percent");
      readString(r, mm, "backend", mi.backend, true);
      if (YAML::Node n = mm.get("percent"); n.IsDefined() && !n.IsNull()) {
        std::string s;
        if (scalar(r, n, mm.join("percent"), s)) {
          auto v = parsePercent(s);
          if (!v || *v == 0)
            r.error(n.Mark(), mm.join("percent"), "must be a percentage above 0 and at most 100 (up to 4 decimals), got '" + s + "'");
          else
            mi.perMillion = *v;
        }
      }
      readUint(r, mm, "max_in_flight", mi.maxInFlight, 1, 100000);
      readSize(r, mm, "max_body", mi.maxBody, 0, limits.bufferSize);
      route.mirror = std::move(mi);
    }
    mm.finish();
  }
  // retry: by default a failed connect moves to another server (limits.connect_retries).
  route.retry.attempts = limits.connectRetries;
  {
    MapView qm = rm.child("retry");
    if (qm.present() && !qm.bad()) {
      readUint(r, qm, "attempts", route.retry.attempts, 0, 5);
      if (qm.has("on")) {
        route.retry.onConnectFailure = false;
        forEachScalar(r, qm, "on", [&](const YAML::Node& n, const std::string& path) {
          std::string s;
          if (!scalar(r, n, path, s)) return;
          if (s == "connect_failure") route.retry.onConnectFailure = true;
          else if (s == "reset") route.retry.onReset = true;
          else if (s == "timeout") route.retry.onTimeout = true;
          else if (s == "5xx") {
            for (uint16_t c = 500; c <= 599; ++c) route.retry.statuses.push_back(c);
          } else {
            unsigned code = 0;
            auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), code);
            if (ec != std::errc() || p != s.data() + s.size() || code < 400 || code > 599)
              r.error(n.Mark(), path,
                      "must be connect_failure, reset, timeout, 5xx or a status 400..599, got '" + s + "'");
            else
              route.retry.statuses.push_back(static_cast<uint16_t>(code));
          }
        });
        std::sort(route.retry.statuses.begin(), route.retry.statuses.end());
        route.retry.statuses.erase(std::unique(route.retry.statuses.begin(), route.retry.statuses.end()),
                                   route.retry.statuses.end());
      }
    }
    qm.finish();
  }
  // per-route timeouts
  {
    MapView tm = rm.child("timeouts");
    if (tm.has("connect")) {
      Duration d{};
      readDuration(r, tm, "connect", d, 1ms, kMaxTimeout);
      route.timeouts.connect = d;
    }
    if (tm.has("server_response")) {
      Duration d{};
      readDuration(r, tm, "server_response", d, 1ms, kMaxTimeout);
      route.timeouts.serverResponse = d;
    }
    tm.finish();
  }
}

void readFrontend(Reader& r, const LoadOptions& opt, MapView m, Frontend& f, const Limits& limits) {
  readName(r, m, f.name);
  f.origin = originOf(m.get("name"));
  readEnum(r, m, "mode", f.mode, kModes);
  m.require("bind");
  forEachScalar(r, m, "bind", [&](const YAML::Node& n, const std::string& path) {
    SocketAddress a;
    if (!readSocketAddress(r, n, path, a)) return;
    if (a.port == 0) {
      r.error(n.Mark(), path, "needs a port other than 0");
      return;
    }
    f.bind.push_back(a);
  });
  readString(r, m, "default_backend", f.defaultBackend);
  readBool(r, m, "continuity", f.continuity);
  if (m.has("tls")) {
    f.tls.emplace();
    readTls(r, opt, m.child("tls"), *f.tls);
    // A moved TCP connection would arrive mid-TLS-record on a node without the TLS state.
    if (f.continuity)
      r.error(m.get("continuity").Mark(), m.join("continuity"),
              "cannot carry TLS connections (their TLS state is not replicated); turn it off "
              "on TLS frontends");
  } else {
    m.child("tls").finish();
  }
  forEachItem(r, m, "routes", [&](const YAML::Node& n, const std::string& path) {
    MapView rm(r, n, YAML::Node(), path, n.Mark());
    if (rm.bad()) return;
    Route route;
    route.origin = originOf(n);
    readString(r, rm, "name", route.name);
    if (route.name.empty()) route.name = path.substr(path.rfind('.') + 1);
    readString(r, rm, "backend", route.backend, true);
    readMatch(r, rm.child("match"), route.match);
    readRoutePolicies(r, rm, route, limits);
    rm.finish();
    f.routes.push_back(std::move(route));
  });
  if (f.mode == Mode::Tcp) {
    if (m.has("routes"))
      r.error(m.get("routes").Mark(), m.join("routes"), "routes need mode: http (a tcp frontend has one default_backend)");
    if (f.defaultBackend.empty()) r.error(m.mark(), m.join("default_backend"), "is required for mode: tcp");
  } else if (f.defaultBackend.empty() && f.routes.empty()) {
    r.error(m.mark(), m.join("default_backend"), "is required when there are no routes");
  }
  m.finish();
}

void readVrrp(Reader& r, const LoadOptions& opt, MapView m, Vrrp& v) {
  v.enabled = m.present();
  readBool(r, m, "enabled", v.enabled);
  readString(r, m, "interface", v.interface);
  readUint(r, m, "virtual_router_id", v.virtualRouterId, 1, 255);
  // 255 is the address owner's priority (RFC 9568 §6.1): an owner never yields, which a
  // load-balancer pair must, so it is not offered.
  readUint(r, m, "priority", v.priority, 1, 254);
  readDuration(r, m, "advert_interval", v.advertInterval, 10ms, 40950ms);
  if (v.advertInterval.count() % 10'000'000 != 0)
    r.error(m.get("advert_interval").Mark(), m.join("advert_interval"),
            "must be a multiple of 10ms (VRRPv3 carries centiseconds)");
  readBool(r, m, "preempt", v.preempt);
  readDuration(r, m, "preempt_delay", v.preemptDelay, 0ms, std::chrono::hours(1));
  readBool(r, m, "unicast", v.unicast);
  forEachItem(r, m, "unicast_peers", [&](const YAML::Node& n, const std::string& path) {
    IpAddress a;
    if (readParsed(r, n, path, a, IpAddress::parse)) v.unicastPeers.push_back(a);
  });
  IpAddress src;
  if (readIp(r, m, "source_address", src)) v.sourceAddress = src;
  readEnum(r, m, "auth", v.auth, kAuths);
  readFilePath(r, m, "auth_key_file", v.authKeyFile);
  if (v.auth == VrrpAuth::Hmac && v.authKeyFile.empty())
    r.error(m.mark(), m.join("auth_key_file"), "is required with auth: hmac");
  if (v.auth == VrrpAuth::Hmac) checkKeyFile(r, opt, m, "auth_key_file", v.authKeyFile);
  readDuration(r, m, "vip_lifetime", v.vipLifetime, 1s, std::chrono::hours(1));
  readDuration(r, m, "handover_hold", v.handoverHold, 0ms, std::chrono::hours(24));
  {
    MapView g = m.child("garp");
    readUint(r, g, "count", v.garp.count, 1, 100);
    readDuration(r, g, "interval", v.garp.interval, 0ms, 10s);
    readDuration(r, g, "refresh", v.garp.refresh, 0ms, std::chrono::hours(1));
    g.finish();
  }
  {
    MapView t = m.child("track");
    forEachScalar(r, t, "backends", [&](const YAML::Node& n, const std::string& path) {
      std::string s;
      if (scalar(r, n, path, s)) v.track.backends.push_back(s);
    });
    forEachScalar(r, t, "interfaces", [&](const YAML::Node& n, const std::string& path) {
      std::string s;
      if (scalar(r, n, path, s)) v.track.interfaces.push_back(s);
    });
    readUint(r, t, "penalty", v.track.penalty, 1, 254);
    t.finish();
  }
  readString(r, m, "notify", v.notify);
  if (v.enabled) {
    if (v.interface.empty()) r.error(m.mark(), m.join("interface"), "is required");
    if (v.virtualRouterId == 0) r.error(m.mark(), m.join("virtual_router_id"), "is required");
  }
  m.finish();
}

void readStateSync(Reader& r, const LoadOptions& opt, MapView m, StateSync& s, const Node& self,
                   const std::vector<Node>& peers) {
  s.enabled = m.present();
  readBool(r, m, "enabled", s.enabled);
  uint16_t port = 0;
  readUint(r, m, "port", port, 1, 65535);
  bool haveListen = false;
  if (YAML::Node n = m.get("listen"); n.IsDefined() && !n.IsNull())
    haveListen = readSocketAddress(r, n, m.join("listen"), s.listen);
  if (YAML::Node n = m.get("peer"); n.IsDefined() && !n.IsNull()) {
    SocketAddress a;
    if (readSocketAddress(r, n, m.join("peer"), a)) s.peer = a;
  }
  readFilePath(r, m, "key_file", s.keyFile);
  readDuration(r, m, "heartbeat", s.heartbeat, 10ms, 60s);
  bool havePeerTimeout = m.has("peer_timeout");
  readDuration(r, m, "peer_timeout", s.peerTimeout, 20ms, 600s);
  readDuration(r, m, "reconnect_min", s.reconnectMin, 1ms, 60s);
  readDuration(r, m, "reconnect_max", s.reconnectMax, 1ms, 600s);
  readDuration(r, m, "sync_wait", s.syncWait, 0ms, std::chrono::hours(1));
  readUint(r, m, "queue_size", s.queueSize, 64, 1u << 24);
  // A peer is declared dead after peer_timeout without a frame; heartbeats must fit in it
  // several times or a healthy link would be cut.
  if (s.peerTimeout < 2 * s.heartbeat) {
    if (havePeerTimeout)
      r.error(m.mark(), m.join("peer_timeout"), "must be at least twice heartbeat");
    else
      s.peerTimeout = 10 * s.heartbeat;
  }
  if (s.reconnectMax < s.reconnectMin)
    r.error(m.mark(), m.join("reconnect_max"), "must not be below reconnect_min");
  if (s.enabled) {
    // With `port`, both ends follow from the nodes' addresses: one line serves the pair.
    if (!haveListen && port != 0 && self.address) {
      s.listen = SocketAddress{*self.address, port};
      haveListen = true;
    }
    if (!s.peer && port != 0 && peers.size() == 1 && peers[0].address)
      s.peer = SocketAddress{*peers[0].address, port};
    if (!haveListen)
      r.error(m.mark(), m.join("listen"), "is required (or give port and nodes.<name>.address)");
    if (!s.peer) r.error(m.mark(), m.join("peer"), "is required (or give port and the peer node's address)");
    if (s.keyFile.empty())
      r.error(m.mark(), m.join("key_file"), "is required: every state-sync frame is authenticated");
    checkKeyFile(r, opt, m, "key_file", s.keyFile);
  }
  m.finish();
}

std::string hostname() {
  char buf[256] = {};
  if (::gethostname(buf, sizeof buf - 1) != 0) return {};
  std::string h = buf;
  return h.substr(0, h.find('.'));
}

// ------------------------------------------------------------------------ cross checks

void crossCheck(Reader& r, Config& c, YAML::Node root) {
  auto itemMark = [&](const char* list, size_t i, const char* key) { return markAt(root, {list, i, key}); };
  auto itemPath = [](const char* list, size_t i) { return std::string(list) + "[" + std::to_string(i) + "]"; };

  std::map<std::string, size_t> backendIdx;
  for (size_t i = 0; i < c.backends.size(); ++i) {
    const Backend& b = c.backends[i];
    if (b.name.empty()) continue;
    if (auto [it, fresh] = backendIdx.emplace(b.name, i); !fresh)
      r.error(itemMark("backends", i, "name"), itemPath("backends", i) + ".name",
              "duplicate backend name '" + b.name + "' (also backends[" + std::to_string(it->second) + "])");
  }
  std::map<std::string, size_t> frontendIdx;
  std::map<SocketAddress, std::string> binds;
  for (size_t i = 0; i < c.frontends.size(); ++i) {
    Frontend& f = c.frontends[i];
    std::string fp = itemPath("frontends", i);
    if (!f.name.empty()) {
      if (auto [it, fresh] = frontendIdx.emplace(f.name, i); !fresh)
        r.error(itemMark("frontends", i, "name"), fp + ".name",
                "duplicate frontend name '" + f.name + "' (also frontends[" + std::to_string(it->second) + "])");
    }
    for (size_t j = 0; j < f.bind.size(); ++j) {
      if (auto [it, fresh] = binds.emplace(f.bind[j], fp); !fresh)
        r.error(itemMark("frontends", i, "bind"), fp + ".bind",
                f.bind[j].toString() + " is already bound by " + it->second);
    }
    auto checkBackend = [&](const std::string& name, const YAML::Mark& mark, const std::string& path) {
      auto it = backendIdx.find(name);
      if (it == backendIdx.end()) {
        r.error(mark, path, "unknown backend '" + name + "'");
        return;
      }
      const Backend& b = c.backends[it->second];
      if (f.mode == Mode::Tcp && (b.sticky.mode == StickyMode::Cookie || b.sticky.mode == StickyMode::AppCookie ||
                                  b.sticky.mode == StickyMode::Header))
        r.error(mark, path,
                "backend '" + name + "' uses sticky mode " + toString(b.sticky.mode) +
                    ", which needs an http frontend (tcp frontends can stick by source)");
    };
    if (!f.defaultBackend.empty())
      checkBackend(f.defaultBackend, itemMark("frontends", i, "default_backend"), fp + ".default_backend");
    std::set<std::string> routeNames;
    for (size_t j = 0; j < f.routes.size(); ++j) {
      std::string rp = fp + ".routes[" + std::to_string(j) + "]";
      const Route& route = f.routes[j];
      if (route.split.empty() && !route.backend.empty())
        checkBackend(route.backend, markAt(root, {"frontends", i, "routes", j, "backend"}), rp + ".backend");
      for (size_t k = 0; k < route.split.size(); ++k)
        if (!route.split[k].backend.empty())
          checkBackend(route.split[k].backend, markAt(root, {"frontends", i, "routes", j, "split", k, "backend"}),
                       rp + ".split[" + std::to_string(k) + "].backend");
      if (route.mirror && !route.mirror->backend.empty()) {
        YAML::Mark mark = markAt(root, {"frontends", i, "routes", j, "mirror", "backend"});
        checkBackend(route.mirror->backend, mark, rp + ".mirror.backend");
        if (route.mirror->backend == route.backend && route.split.empty())
          r.error(mark, rp + ".mirror.backend", "mirrors to the backend that serves the route");
      }
      if (!routeNames.insert(f.routes[j].name).second)
        r.error(markAt(root, {"frontends", i, "routes", j, "name"}), rp + ".name",
                "duplicate route name '" + f.routes[j].name + "'");
    }
  }
  for (const std::string& t : c.vrrp.track.backends) {
    if (!backendIdx.count(t))
      r.error(markAt(root, {"vrrp", "track", "backends"}), "vrrp.track.backends", "unknown backend '" + t + "'");
  }

  // VIPs and VRRP
  std::set<IpAddress> vipSet;
  for (size_t i = 0; i < c.vips.size(); ++i) {
    Vip& v = c.vips[i];
    if (v.interface.empty()) v.interface = c.vrrp.interface;
    if (!vipSet.insert(v.address.address).second)
      r.error(markAt(root, {"vips", i}), itemPath("vips", i), "VIP " + v.address.address.toString() + " is listed twice");
    if (v.address.address.family() != c.vips[0].address.address.family())
      r.error(markAt(root, {"vips", i}), itemPath("vips", i),
              "all VIPs of one virtual router must be the same family (RFC 9568 §5.2.5); "
              "IPv4 and IPv6 need two pairs of halb nodes or a single family");
  }
  if (!c.vips.empty() && !c.vrrp.enabled)
    r.error(markAt(root, {"vips"}), "vips", "VIPs need a vrrp section (who holds them is decided by VRRP)");
  if (c.vrrp.enabled && c.vips.empty())
    r.error(markAt(root, {"vrrp"}), "vips", "vrrp needs at least one VIP to protect");
  if (c.vrrp.enabled) {
    if (c.vrrp.unicast && c.vrrp.unicastPeers.empty()) {
      for (const Node& p : c.peers)
        if (p.address) c.vrrp.unicastPeers.push_back(*p.address);
      if (c.vrrp.unicastPeers.empty())
        r.error(markAt(root, {"vrrp"}), "vrrp.unicast_peers",
                "unicast needs peers: list them, or give the other nodes an address");
    }
    if (!c.vrrp.sourceAddress && c.self.address) c.vrrp.sourceAddress = c.self.address;
    if (c.vrrp.unicast && !c.vrrp.unicastPeers.empty() && !c.vips.empty()) {
      for (const IpAddress& p : c.vrrp.unicastPeers)
        if (p.family() != c.vips[0].address.address.family())
          r.error(markAt(root, {"vrrp"}), "vrrp.unicast_peers",
                  "peer " + p.toString() + " is not the same address family as the VIPs");
    }
  }
}

// ------------------------------------------------------------------------ top level

ConfigPtr build(Reader& r, YAML::Node root, const LoadOptions& opt) {
  auto c = std::make_shared<Config>();
  c->file = r.file();
  if (!root.IsMap()) {
    r.error(root.Mark(), "", std::string("the file must be a mapping of sections, got ") + kindOf(root));
    return nullptr;
  }
  MapView top(r, root, YAML::Node(), "", root.Mark());
  uint32_t version = 1;
  readUint(r, top, "version", version, 1, 1);

  // Which node am I? Everything below may then be overridden under nodes.<me>.
  std::string want = opt.node.empty() ? hostname() : opt.node;
  std::optional<YAML::Node> overlayNode;
  MapView nodes = top.child("nodes");
  if (nodes.present()) {
    YAML::Node nn = top.get("nodes");
    std::vector<std::string> names;
    for (auto it = nn.begin(); it != nn.end(); ++it) {
      std::string name = it->first.Scalar();
      names.push_back(name);
      std::string path = "nodes." + name;
      if (!validName(name)) r.error(it->first.Mark(), path, "node names must be 1..64 characters of [A-Za-z0-9._-]");
      MapView nm(r, it->second, YAML::Node(), path, it->second.Mark());
      Node n{name, std::nullopt};
      IpAddress a;
      if (readIp(r, nm, "address", a)) n.address = a;
      // Sections a node may override; read through the overlay below.
      for (const char* k : {"priority", "vrrp", "statesync", "admin", "logging", "workers"}) nm.get(k);
      nm.finish();
      if (name == want) {
        c->self = n;
        overlayNode.emplace(it->second);
      } else {
        c->peers.push_back(n);
      }
      nodes.get(name);
    }
    if (c->self.name.empty()) {
      std::string known;
      for (const auto& n : names) known += (known.empty() ? "" : ", ") + n;
      r.error(nn.Mark(), "nodes",
              "this node '" + want + "' is not among nodes (" + known + "); pass --node NAME" +
                  (opt.node.empty() ? " (the default is the hostname)" : ""));
    }
    if (names.size() > 2)
      r.error(nn.Mark(), "nodes", "a pair has two nodes; " + std::to_string(names.size()) + " are listed");
  } else {
    c->self.name = want;
  }
  const YAML::Node overlay = overlayNode ? *overlayNode : YAML::Node(YAML::NodeType::Undefined);
  auto section = [&](const char* key) {
    top.get(key);
    return MapView(r, lookup(root, key), lookup(overlay, key), key, root.Mark());
  };

  // workers: "auto" or a count, overridable per node.
  {
    const YAML::Node w = lookup(overlay, "workers").IsDefined() ? lookup(overlay, "workers") : top.get("workers");
    std::string s;
    if (w.IsDefined() && !w.IsNull() && scalar(r, w, "workers", s) && s != "auto") {
      unsigned v = 0;
      auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
      if (ec != std::errc() || p != s.data() + s.size() || v < 1 || v > 256)
        r.error(w.Mark(), "workers", "must be 'auto' or 1..256, got '" + s + "'");
      else
        c->workers = v;
    }
  }

  forEachItem(r, top, "vips", [&](const YAML::Node& n, const std::string& path) {
    Vip v;
    if (n.IsScalar()) {
      if (readParsed(r, n, path, v.address, Prefix::parse)) c->vips.push_back(v);
      return;
    }
    MapView vm(r, n, YAML::Node(), path, n.Mark());
    if (vm.bad()) return;
    vm.require("address");
    if (YAML::Node a = vm.get("address"); a.IsDefined() && !a.IsNull())
      readParsed(r, a, vm.join("address"), v.address, Prefix::parse);
    readString(r, vm, "interface", v.interface);
    vm.finish();
    c->vips.push_back(v);
  });

  {
    // nodes.<me>.priority is shorthand for nodes.<me>.vrrp.priority.
    MapView nodeView(r, YAML::Node(), overlay, "nodes." + c->self.name, root.Mark());
    uint32_t priority = 0;
    readUint(r, nodeView, "priority", priority, 1, 254);
    readVrrp(r, opt, section("vrrp"), c->vrrp);
    if (priority != 0) c->vrrp.priority = priority;
  }
  readStateSync(r, opt, section("statesync"), c->statesync, c->self, c->peers);
  {
    MapView a = section("admin");
    if (YAML::Node n = a.get("listen"); n.IsDefined() && !n.IsNull())
      readSocketAddress(r, n, a.join("listen"), c->admin.listen);
    a.finish();
  }
  {
    MapView l = section("logging");
    readEnum(r, l, "level", c->logging.level, kLevels);
    readEnum(r, l, "format", c->logging.format, kFormats);
    l.finish();
  }
  readTimeouts(r, section("timeouts"), c->timeouts);
  readLimits(r, section("limits"), c->limits);
  readSessionTickets(r, section("tls"), c->tls.tickets);

  forEachItem(r, top, "backends", [&](const YAML::Node& n, const std::string& path) {
    MapView m(r, n, YAML::Node(), path, n.Mark());
    if (m.bad()) return;
    Backend b;
    readBackend(r, opt, m, b);
    c->backends.push_back(std::move(b));
  });
  top.require("frontends");
  forEachItem(r, top, "frontends", [&](const YAML::Node& n, const std::string& path) {
    MapView m(r, n, YAML::Node(), path, n.Mark());
    if (m.bad()) return;
    Frontend f;
    readFrontend(r, opt, m, f, c->limits);
    c->frontends.push_back(std::move(f));
  });
  top.finish();
  crossCheck(r, *c, root);
  return c;
}

LoadResult finishResult(Reader& r, ConfigPtr c) {
  LoadResult res;
  auto& errs = r.errors();
  std::stable_sort(errs.begin(), errs.end(), [](const ConfigError& a, const ConfigError& b) {
    return std::tie(a.line, a.column) < std::tie(b.line, b.column);
  });
  // One mistake can be reported from two angles at the same spot; say it once.
  errs.erase(std::unique(errs.begin(), errs.end(),
                         [](const ConfigError& a, const ConfigError& b) {
                           return a.line == b.line && a.column == b.column && a.path == b.path &&
                                  a.message == b.message;
                         }),
             errs.end());
  for (auto& e : errs) (e.warning ? res.warnings : res.errors).push_back(std::move(e));
  if (res.errors.empty()) res.config = std::move(c);
  return res;
}

}  // namespace

std::string ConfigError::toString() const {
  std::string s = file;
  if (line > 0) s += ":" + std::to_string(line) + ":" + std::to_string(column);
  s += ": ";
  if (!path.empty()) s += path + ": ";
  if (warning) s += "warning: ";
  return s + message;
}

const Backend* Config::findBackend(std::string_view name) const {
  for (const auto& b : backends)
    if (b.name == name) return &b;
  return nullptr;
}

const Frontend* Config::findFrontend(std::string_view name) const {
  for (const auto& f : frontends)
    if (f.name == name) return &f;
  return nullptr;
}

LoadResult loadConfigString(std::string_view yaml, const std::string& fileName, const LoadOptions& options) {
  Reader r(fileName);
  YAML::Node root;
  try {
    root = YAML::Load(std::string(yaml));
  } catch (const YAML::Exception& e) {
    r.error(e.mark, "", "YAML syntax error: " + e.msg);
    return finishResult(r, nullptr);
  }
  ConfigPtr c;
  try {
    c = build(r, root, options);
  } catch (const YAML::Exception& e) {
    // yaml-cpp throws on a few shapes it cannot represent (e.g. a non-scalar key).
    r.error(e.mark, "", e.msg);
  }
  return finishResult(r, c);
}

LoadResult loadConfigFile(const std::string& path, const LoadOptions& options) {
  std::ifstream in(path);
  if (!in) {
    LoadResult res;
    res.errors.push_back(ConfigError{path, 0, 0, "", std::string("cannot open: ") + std::strerror(errno)});
    return res;
  }
  std::stringstream ss;
  ss << in.rdbuf();
  return loadConfigString(ss.str(), path, options);
}

}  // namespace halb::config
