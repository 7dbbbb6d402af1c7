#include "app/admin.h"

#include <algorithm>

#include "common/log.h"

namespace halb::app {
namespace {

constexpr size_t kMaxRequest = 64 * 1024;
constexpr size_t kMaxConns = 64;
constexpr auto kDeadline = std::chrono::seconds(10);

const char* reason(int status) {
  switch (status) {
    case 200: return "OK";
    case 202: return "Accepted";
    case 400: return "Bad Request";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 409: return "Conflict";
    case 413: return "Content Too Large";
    case 503: return "Service Unavailable";
    default: return status < 500 ? "Error" : "Server Error";
  }
}

int hexValue(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

}  // namespace

std::string urlDecode(std::string_view s) {
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '%' && i + 2 < s.size() && hexValue(s[i + 1]) >= 0 && hexValue(s[i + 2]) >= 0) {
      out += static_cast<char>(hexValue(s[i + 1]) * 16 + hexValue(s[i + 2]));
      i += 2;
    } else if (s[i] == '+') {
      out += ' ';
    } else {
      out += s[i];
    }
  }
  return out;
}

AdminResponse AdminResponse::text(int status, std::string body) {
  return AdminResponse{status, "text/plain; charset=utf-8", std::move(body)};
}

AdminResponse AdminResponse::json(int status, std::string body) {
  return AdminResponse{status, "application/json", std::move(body)};
}

struct AdminServer::Conn {
  std::unique_ptr<uv::TcpStream> stream;
  std::unique_ptr<uv::Timer> deadline;
  std::string buf;
  bool responded = false;
};

AdminServer::AdminServer(uv::Loop& loop) : loop_(loop) {}
AdminServer::~AdminServer() = default;

void AdminServer::handle(const std::string& method, const std::string& path, Handler h) {
  routes_[{method, path}] = std::move(h);
}

int AdminServer::listen(const SocketAddress& addr) {
  listener_ = std::make_unique<uv::TcpListener>(loop_);
  return listener_->listen(addr, [this](std::unique_ptr<uv::TcpStream> s) { onAccept(std::move(s)); });
}

SocketAddress AdminServer::local() const { return listener_ ? listener_->local() : SocketAddress{}; }

void AdminServer::onAccept(std::unique_ptr<uv::TcpStream> s) {
  if (conns_.size() >= kMaxConns) return;  // dropping the stream closes it
  auto c = std::make_unique<Conn>();
  Conn* cp = c.get();
  c->stream = std::move(s);
  c->deadline = std::make_unique<uv::Timer>(loop_);
  c->deadline->start(kDeadline, [this, cp] { finish(cp); });
  c->stream->startRead(
      [this, cp](std::span<const char> data) {
        if (cp->responded) return;
        cp->buf.append(data.data(), data.size());
        if (cp->buf.size() > kMaxRequest) {
          cp->responded = true;
          AdminResponse r = AdminResponse::text(413, "request too large\n");
          std::string out = "HTTP/1.1 413 Content Too Large\r\nConnection: close\r\nContent-Length: " +
                            std::to_string(r.body.size()) + "\r\n\r\n" + r.body;
          cp->stream->write(out, [this, cp](int) { finish(cp); });
          return;
        }
        dispatch(*cp);
      },
      [this, cp](int) {
        if (!cp->responded) finish(cp);
      });
  conns_.push_back(std::move(c));
}

void AdminServer::dispatch(Conn& c) {
  size_t headEnd = c.buf.find("\r\n\r\n");
  if (headEnd == std::string::npos) return;
  std::string_view head(c.buf.data(), headEnd);
  AdminRequest req;
  req.peer = c.stream->peer();
  size_t lineEnd = head.find("\r\n");
  std::string_view line = head.substr(0, lineEnd);
  size_t sp1 = line.find(' '), sp2 = line.rfind(' ');
  AdminResponse resp;
  bool ok = sp1 != std::string_view::npos && sp2 != sp1;
  size_t contentLength = 0;
  if (ok) {
    req.method = std::string(line.substr(0, sp1));
    std::string_view target = line.substr(sp1 + 1, sp2 - sp1 - 1);
    size_t q = target.find('?');
    req.path = urlDecode(target.substr(0, q));
    if (q != std::string_view::npos) {
      std::string_view qs = target.substr(q + 1);
      while (!qs.empty()) {
        size_t amp = qs.find('&');
        std::string_view kv = qs.substr(0, amp);
        size_t eq = kv.find('=');
        req.query[urlDecode(kv.substr(0, eq))] = eq == std::string_view::npos ? "" : urlDecode(kv.substr(eq + 1));
        qs = amp == std::string_view::npos ? std::string_view() : qs.substr(amp + 1);
      }
    }
    // Only Content-Length matters here; the admin API never takes chunked bodies.
    std::string lower(head.substr(lineEnd == std::string_view::npos ? head.size() : lineEnd));
    std::transform(lower.begin(), lower.end(), lower.begin(), [](unsigned char ch) { return std::tolower(ch); });
    if (size_t p = lower.find("\r\ncontent-length:"); p != std::string::npos)
      contentLength = std::strtoul(lower.c_str() + p + 17, nullptr, 10);
    if (contentLength > kMaxRequest) ok = false;
    else if (c.buf.size() < headEnd + 4 + contentLength) return;  // wait for the body
    if (ok) req.body = c.buf.substr(headEnd + 4, contentLength);
  }
  c.responded = true;
  if (!ok) {
    resp = AdminResponse::text(400, "bad request\n");
  } else {
    const Handler* h = nullptr;
    size_t best = 0;
    bool pathKnown = false;
    for (const auto& [k, handler] : routes_) {
      const auto& [m, p] = k;
      bool match = p == req.path || (p.back() == '/' && req.path.rfind(p, 0) == 0);
      if (!match) continue;
      pathKnown = true;
      if (m == req.method && p.size() >= best) {
        h = &handler;
        best = p.size();
      }
    }
    if (h)
      resp = (*h)(req);
    else
      resp = AdminResponse::text(pathKnown ? 405 : 404, pathKnown ? "method not allowed\n" : "not found\n");
  }
  std::string out = "HTTP/1.1 " + std::to_string(resp.status) + " " + reason(resp.status) +
                    "\r\nContent-Type: " + resp.contentType + "\r\nContent-Length: " +
                    std::to_string(resp.body.size()) + "\r\nConnection: close\r\n\r\n";
  if (req.method != "HEAD") out += resp.body;
  Conn* cp = &c;
  c.stream->write(out, [this, cp](int) { finish(cp); });
}

void AdminServer::finish(Conn* c) {
  // Deferred erase: this may run inside the connection's own callbacks, whose handles the
  // uv wrappers keep alive until libuv's close callback.
  auto it = std::find_if(conns_.begin(), conns_.end(), [c](const auto& p) { return p.get() == c; });
  if (it != conns_.end()) conns_.erase(it);
}

}  // namespace halb::app
