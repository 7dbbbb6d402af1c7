#pragma once
// Real loopback servers and a blocking client with deadlines, for the data-plane integration
// tests. Plain POSIX sockets and threads: independent of the code under test.
#include <atomic>
#include <chrono>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace halb::testing {

// A small HTTP/1.1 origin server. Paths:
//   /            200, body "server=<name> path=<path> xff=<X-Forwarded-For> fwd=<Forwarded>"
//   /echo        200 with the request body (Content-Length or chunked request)
//   /chunked     200 chunked body of 3 chunks
//   /big?n=N     200 with N bytes
//   /slow?ms=N   waits N ms, then as /
//   /hang        never answers
//   /reset       closes without answering
//   /close       answers with Connection: close and closes
//   /ws          101 Switching Protocols, then echoes bytes (tunnel)
class HttpBackend {
 public:
  explicit HttpBackend(std::string name);
  ~HttpBackend();
  uint16_t port() const { return port_; }
  const std::string& name() const { return name_; }
  // Closes the listener and every connection (a crashed server).
  void kill();
  int connectionsAccepted() const { return accepted_.load(); }
  int requestsServed() const { return served_.load(); }
  std::string lastRequestHead() const;

 private:
  void acceptLoop();
  void serve(int fd);

  std::string name_;
  int listenFd_ = -1;
  uint16_t port_ = 0;
  std::atomic<bool> dead_{false};
  std::atomic<int> accepted_{0}, served_{0};
  std::thread acceptThread_;
  mutable std::mutex mu_;
  std::vector<int> fds_;
  std::vector<std::thread> threads_;
  std::string lastHead_;
};

// TCP echo server with half-close: echoes until the client's FIN, then sends its own FIN.
// Optionally sends a greeting "<name>\n" first. Records the first bytes received (PROXY v2).
class EchoBackend {
 public:
  explicit EchoBackend(std::string name, bool greet = true);
  ~EchoBackend();
  uint16_t port() const { return port_; }
  void kill();
  std::string firstBytes() const;
  int connectionsAccepted() const { return accepted_.load(); }

 private:
  void acceptLoop();
  void serve(int fd);
  std::string name_;
  bool greet_;
  int listenFd_ = -1;
  uint16_t port_ = 0;
  std::atomic<bool> dead_{false};
  std::atomic<int> accepted_{0};
  std::thread acceptThread_;
  mutable std::mutex mu_;
  std::vector<int> fds_;
  std::vector<std::thread> threads_;
  std::string first_;
};

// A blocking client connection with a deadline on every operation.
class Client {
 public:
  explicit Client(uint16_t port,
                  std::chrono::milliseconds timeout = std::chrono::milliseconds(5000));
  ~Client();
  bool ok() const { return fd_ >= 0; }
  int fd() const { return fd_; }
  bool send(std::string_view data);
  void shutdownWrite();
  // Reads one HTTP response (head + body by Content-Length/chunked/close). Returns false on
  // timeout or error; `status` 0 then.
  struct Response {
    int status = 0;
    std::string head;
    std::string body;
    bool closed = false;  // the connection was closed after it
  };
  bool readResponse(Response& r);
  // Reads exactly n bytes, or until EOF/timeout; returns what it got.
  std::string readN(size_t n);
  // Reads until EOF (true) or timeout (false).
  bool readToEof(std::string& out);

 private:
  bool fill();  // reads more into buf_; false on EOF/error/timeout
  int fd_ = -1;
  std::string buf_;
  bool eof_ = false;
};

// GET helper: one request on a new connection.
Client::Response get(uint16_t port, const std::string& path, const std::string& extraHeaders = "");

}  // namespace halb::testing
