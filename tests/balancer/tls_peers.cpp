#include "tests/balancer/tls_peers.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <cstring>
#include <stdexcept>

namespace halb::testing {

namespace {

int listenLoopback(uint16_t& port) {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  int one = 1;
  ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 || ::listen(fd, 512) != 0)
    throw std::runtime_error("test backend: bind/listen failed");
  socklen_t len = sizeof a;
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
  port = ntohs(a.sin_port);
  return fd;
}

void setTimeouts(int fd, std::chrono::milliseconds t) {
  timeval tv{};
  tv.tv_sec = static_cast<time_t>(t.count() / 1000);
  tv.tv_usec = static_cast<suseconds_t>((t.count() % 1000) * 1000);
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  ::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
}

std::string lowerStr(std::string s) {
  for (char& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

std::string headerOf(const std::string& head, const std::string& name) {
  std::string lh = lowerStr(head);
  std::string key = "\r\n" + lowerStr(name) + ":";
  size_t p = lh.find(key);
  if (p == std::string::npos) return "";
  p += key.size();
  size_t e = head.find("\r\n", p);
  std::string v = head.substr(p, e - p);
  while (!v.empty() && v.front() == ' ') v.erase(0, 1);
  return v;
}

int queryInt(const std::string& path, const std::string& key, int def) {
  size_t p = path.find(key + "=");
  if (p == std::string::npos) return def;
  return std::atoi(path.c_str() + p + key.size() + 1);
}

// Reads one request head (and a Content-Length body) from `read`; false at EOF.
template <class Read>
bool readRequest(Read read, std::string& buf, std::string& head, std::string& body) {
  char tmp[8192];
  size_t end;
  while ((end = buf.find("\r\n\r\n")) == std::string::npos) {
    int n = read(tmp, sizeof tmp);
    if (n <= 0) return false;
    buf.append(tmp, static_cast<size_t>(n));
  }
  head = buf.substr(0, end + 4);
  size_t len = static_cast<size_t>(std::atoi(headerOf(head, "content-length").c_str()));
  while (buf.size() < end + 4 + len) {
    int n = read(tmp, sizeof tmp);
    if (n <= 0) return false;
    buf.append(tmp, static_cast<size_t>(n));
  }
  body = buf.substr(end + 4, len);
  buf.erase(0, end + 4 + len);
  return true;
}

std::string response(int status, const std::string& body) {
  return "HTTP/1.1 " + std::to_string(status) +
         " X\r\nContent-Length: " + std::to_string(body.size()) + "\r\n\r\n" + body;
}

}  // namespace

// ---------------------------------------------------------------------------------------
// TlsClient

TlsClient::TlsClient(uint16_t port, const TlsClientOptions& o) {
  fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  setTimeouts(fd_, o.timeout);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = htons(port);
  if (::connect(fd_, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
    error_ = std::string("connect: ") + std::strerror(errno);
    return;
  }
  ctx_ = SSL_CTX_new(TLS_client_method());
  // No session cache: sessions are handed in and out explicitly, and freeing a context
  // with a cache marks every session in it unresumable.
  SSL_CTX_set_session_cache_mode(ctx_, SSL_SESS_CACHE_OFF);
  if (o.maxVersion) SSL_CTX_set_max_proto_version(ctx_, o.maxVersion);
  ssl_ = SSL_new(ctx_);
  SSL_set_fd(ssl_, fd_);
  if (!o.sni.empty()) SSL_set_tlsext_host_name(ssl_, o.sni.c_str());
  if (!o.alpn.empty())
    SSL_set_alpn_protos(ssl_, reinterpret_cast<const unsigned char*>(o.alpn.data()),
                        static_cast<unsigned>(o.alpn.size()));
  if (o.session) SSL_set_session(ssl_, o.session);
  if (SSL_connect(ssl_) != 1) {
    char buf[256];
    ERR_error_string_n(ERR_get_error(), buf, sizeof buf);
    error_ = std::string("handshake: ") + buf;
    ERR_clear_error();
    return;
  }
  ok_ = true;
}

TlsClient::~TlsClient() {
  if (ssl_) SSL_free(ssl_);
  if (ctx_) SSL_CTX_free(ctx_);
  if (fd_ >= 0) ::close(fd_);
}

std::string TlsClient::peerCommonName() const {
  X509* x = SSL_get1_peer_certificate(ssl_);
  if (!x) return "";
  char buf[256] = {};
  X509_NAME_get_text_by_NID(X509_get_subject_name(x), NID_commonName, buf, sizeof buf);
  X509_free(x);
  return buf;
}

std::string TlsClient::alpn() const {
  const unsigned char* p = nullptr;
  unsigned len = 0;
  SSL_get0_alpn_selected(ssl_, &p, &len);
  return p ? std::string(reinterpret_cast<const char*>(p), len) : "";
}

bool TlsClient::resumed() const {
  return ssl_ && SSL_session_reused(ssl_) == 1;
}
int TlsClient::version() const {
  return ssl_ ? SSL_version(ssl_) : 0;
}
SSL_SESSION* TlsClient::session() const {
  return ssl_ ? SSL_get1_session(ssl_) : nullptr;
}

bool TlsClient::send(const std::string& data) {
  if (!ok_) return false;
  return SSL_write(ssl_, data.data(), static_cast<int>(data.size())) ==
         static_cast<int>(data.size());
}

bool TlsClient::fill() {
  char tmp[16384];
  int n = SSL_read(ssl_, tmp, sizeof tmp);
  if (n <= 0) return false;
  buf_.append(tmp, static_cast<size_t>(n));
  return true;
}

TlsClient::Response TlsClient::request(const std::string& req) {
  Response r;
  if (!send(req)) return r;
  size_t end;
  while ((end = buf_.find("\r\n\r\n")) == std::string::npos)
    if (!fill()) return r;
  r.head = buf_.substr(0, end + 4);
  std::string cl = headerOf(r.head, "content-length");
  if (cl.empty()) {
    while (fill()) {
    }
    r.body = buf_.substr(end + 4);
    buf_.clear();
  } else {
    size_t len = static_cast<size_t>(std::atoi(cl.c_str()));
    while (buf_.size() < end + 4 + len)
      if (!fill()) return r;
    r.body = buf_.substr(end + 4, len);
    buf_.erase(0, end + 4 + len);
  }
  r.status = std::atoi(r.head.c_str() + 9);
  return r;
}

std::string TlsClient::readN(size_t n) {
  while (buf_.size() < n && fill()) {
  }
  std::string out = buf_.substr(0, n);
  buf_.erase(0, out.size());
  return out;
}

void TlsClient::close() {
  if (ok_) SSL_shutdown(ssl_);
}

// ---------------------------------------------------------------------------------------
// TlsHttpBackend

TlsHttpBackend::TlsHttpBackend(std::string name, const std::string& certFile,
                               const std::string& keyFile)
    : name_(std::move(name)) {
  ctx_ = SSL_CTX_new(TLS_server_method());
  if (SSL_CTX_use_certificate_chain_file(ctx_, certFile.c_str()) != 1 ||
      SSL_CTX_use_PrivateKey_file(ctx_, keyFile.c_str(), SSL_FILETYPE_PEM) != 1)
    throw std::runtime_error("TlsHttpBackend: cannot load " + certFile);
  listenFd_ = listenLoopback(port_);
  acceptThread_ = std::thread([this] { acceptLoop(); });
}

TlsHttpBackend::~TlsHttpBackend() {
  dead_ = true;
  ::shutdown(listenFd_, SHUT_RDWR);
  if (acceptThread_.joinable()) acceptThread_.join();
  {
    std::lock_guard l(mu_);
    for (int fd : fds_) ::shutdown(fd, SHUT_RDWR);
  }
  for (auto& t : threads_) t.join();
  ::close(listenFd_);
  SSL_CTX_free(ctx_);
}

void TlsHttpBackend::acceptLoop() {
  for (;;) {
    int fd = ::accept4(listenFd_, nullptr, nullptr, SOCK_CLOEXEC);
    if (fd < 0) return;
    if (dead_) {
      ::close(fd);
      return;
    }
    std::lock_guard l(mu_);
    fds_.push_back(fd);
    threads_.emplace_back([this, fd] { serve(fd); });
  }
}

void TlsHttpBackend::serve(int fd) {
  setTimeouts(fd, std::chrono::milliseconds(5000));
  SSL* ssl = SSL_new(ctx_);
  SSL_set_fd(ssl, fd);
  if (SSL_accept(ssl) == 1) {
    ++handshakes_;
    if (SSL_session_reused(ssl)) ++resumed_;
    const char* sni = SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name);
    std::string buf, head, body;
    auto read = [ssl](char* b, size_t n) { return SSL_read(ssl, b, static_cast<int>(n)); };
    while (readRequest(read, buf, head, body)) {
      std::string path = head.substr(head.find(' ') + 1);
      path = path.substr(0, path.find(' '));
      std::string r =
          response(200, "server=" + name_ + " sni=" + (sni ? sni : "") + " path=" + path);
      ++served_;
      if (SSL_write(ssl, r.data(), static_cast<int>(r.size())) <= 0) break;
    }
    SSL_shutdown(ssl);
  }
  SSL_free(ssl);
  ::close(fd);
}

// ---------------------------------------------------------------------------------------
// RecordingBackend

RecordingBackend::RecordingBackend(std::string name) : name_(std::move(name)) {
  listenFd_ = listenLoopback(port_);
  acceptThread_ = std::thread([this] { acceptLoop(); });
}

RecordingBackend::~RecordingBackend() {
  dead_ = true;
  ::shutdown(listenFd_, SHUT_RDWR);
  if (acceptThread_.joinable()) acceptThread_.join();
  {
    std::lock_guard l(mu_);
    for (int fd : fds_) ::shutdown(fd, SHUT_RDWR);
  }
  for (auto& t : threads_) t.join();
  ::close(listenFd_);
}

int RecordingBackend::servedFor(const std::string& method) const {
  std::lock_guard l(mu_);
  auto it = byMethod_.find(method);
  return it == byMethod_.end() ? 0 : it->second;
}

std::vector<std::string> RecordingBackend::heads() const {
  std::lock_guard l(mu_);
  return heads_;
}

void RecordingBackend::acceptLoop() {
  for (;;) {
    int fd = ::accept4(listenFd_, nullptr, nullptr, SOCK_CLOEXEC);
    if (fd < 0) return;
    if (dead_) {
      ::close(fd);
      return;
    }
    std::lock_guard l(mu_);
    fds_.push_back(fd);
    threads_.emplace_back([this, fd] { serve(fd); });
  }
}

void RecordingBackend::serve(int fd) {
  setTimeouts(fd, std::chrono::milliseconds(10000));
  std::string buf, head, body;
  auto read = [fd](char* b, size_t n) { return static_cast<int>(::recv(fd, b, n, 0)); };
  while (readRequest(read, buf, head, body)) {
    int now = ++concurrent_;
    int m = maxConcurrent_.load();
    while (now > m && !maxConcurrent_.compare_exchange_weak(m, now)) {
    }
    std::string method = head.substr(0, head.find(' '));
    std::string path = head.substr(head.find(' ') + 1);
    path = path.substr(0, path.find(' '));
    {
      std::lock_guard l(mu_);
      ++byMethod_[method];
      heads_.push_back(head);
    }
    if (int ms = queryInt(path, "ms", 0); ms > 0)
      std::this_thread::sleep_for(std::chrono::milliseconds(ms));
    int status = path.rfind("/status", 0) == 0 ? queryInt(path, "code", 200) : 200;
    std::string r = response(status, "server=" + name_ + " path=" + path);
    --concurrent_;
    ++served_;
    if (::send(fd, r.data(), r.size(), MSG_NOSIGNAL) <= 0) break;
  }
  ::close(fd);
}

}  // namespace halb::testing
