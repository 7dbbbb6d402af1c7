#pragma once
// TLS peers for the data-plane tests, on plain OpenSSL and POSIX sockets (independent of the
// code under test): a blocking TLS client with a deadline on every operation, a TLS HTTP
// origin server, and an HTTP server that counts how many requests it serves at once.
#include <openssl/ssl.h>

#include <atomic>
#include <chrono>
#include <map>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace halb::testing {

struct TlsClientOptions {
  std::string sni;                 // empty: none
  std::string alpn;                // wire format, e.g. "\x08http/1.1"; empty: none
  SSL_SESSION* session = nullptr;  // resume this one
  int maxVersion = 0;              // 0 = TLS 1.3
  std::chrono::milliseconds timeout{5000};
};

class TlsClient {
 public:
  TlsClient(uint16_t port, const TlsClientOptions& o);
  ~TlsClient();
  bool ok() const { return ok_; }
  const std::string& error() const { return error_; }
  std::string peerCommonName() const;
  std::string alpn() const;
  bool resumed() const;
  int version() const;
  // The session (one reference for the caller; SSL_SESSION_free it).
  SSL_SESSION* session() const;
  bool send(const std::string& data);
  // One HTTP response with a Content-Length body (or until close); status 0 on failure.
  struct Response {
    int status = 0;
    std::string head, body;
  };
  Response request(const std::string& req);
  // Bytes until `n` arrived, EOF or timeout.
  std::string readN(size_t n);
  // Sends close_notify (so the session stays resumable).
  void close();

 private:
  bool fill();
  int fd_ = -1;
  SSL_CTX* ctx_ = nullptr;
  SSL* ssl_ = nullptr;
  bool ok_ = false;
  std::string error_;
  std::string buf_;
};

// An HTTP/1.1 origin over TLS: answers every request with 200 and the body
// "server=<name> sni=<servername> path=<path>"; keep-alive.
class TlsHttpBackend {
 public:
  TlsHttpBackend(std::string name, const std::string& certFile, const std::string& keyFile);
  ~TlsHttpBackend();
  uint16_t port() const { return port_; }
  int requestsServed() const { return served_.load(); }
  int handshakes() const { return handshakes_.load(); }
  int resumed() const { return resumed_.load(); }

 private:
  void acceptLoop();
  void serve(int fd);
  std::string name_;
  SSL_CTX* ctx_ = nullptr;
  int listenFd_ = -1;
  uint16_t port_ = 0;
  std::atomic<bool> dead_{false};
  std::atomic<int> served_{0}, handshakes_{0}, resumed_{0};
  std::thread acceptThread_;
  std::mutex mu_;
  std::vector<int> fds_;
  std::vector<std::thread> threads_;
};

// An HTTP/1.1 origin that records what it saw: every request head, requests by method, and
// the most requests it ever served at once. Paths: "/slow?ms=N" waits N ms; "/status?code=N"
// answers N; anything else 200 "server=<name>". Keep-alive.
class RecordingBackend {
 public:
  explicit RecordingBackend(std::string name);
  ~RecordingBackend();
  uint16_t port() const { return port_; }
  int maxConcurrent() const { return maxConcurrent_.load(); }
  int served() const { return served_.load(); }
  int servedFor(const std::string& method) const;
  std::vector<std::string> heads() const;

 private:
  void acceptLoop();
  void serve(int fd);
  std::string name_;
  int listenFd_ = -1;
  uint16_t port_ = 0;
  std::atomic<bool> dead_{false};
  std::atomic<int> concurrent_{0}, maxConcurrent_{0}, served_{0};
  std::thread acceptThread_;
  mutable std::mutex mu_;
  std::map<std::string, int> byMethod_;
  std::vector<std::string> heads_;
  std::vector<int> fds_;
  std::vector<std::thread> threads_;
};

}  // namespace halb::testing
