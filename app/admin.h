#pragma once
// The admin endpoint: a small HTTP/1.1 server on the control loop for /metrics, /status and
// runtime operations. Loopback by default; one request per connection (Connection: close),
// bounded request size and a deadline, so a slow or hostile client costs nothing.
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "common/net.h"
#include "common/uv.h"

namespace halb::app {

struct AdminRequest {
  std::string method;
  std::string path;                          // without the query
  std::map<std::string, std::string> query;  // decoded
  std::string body;
  SocketAddress peer;
};

struct AdminResponse {
  int status = 200;
  std::string contentType = "text/plain; charset=utf-8";
  std::string body;

  static AdminResponse text(int status, std::string body);
  static AdminResponse json(int status, std::string body);
};

class AdminServer {
 public:
  using Handler = std::function<AdminResponse(const AdminRequest&)>;

  explicit AdminServer(uv::Loop& loop);
  ~AdminServer();
  AdminServer(const AdminServer&) = delete;
  AdminServer& operator=(const AdminServer&) = delete;

  // Exact path, or a prefix when `path` ends with '/'. Longest match wins.
  void handle(const std::string& method, const std::string& path, Handler h);
  // Returns 0 or a libuv error.
  int listen(const SocketAddress& addr);
  SocketAddress local() const;

 private:
  struct Conn;
  void onAccept(std::unique_ptr<uv::TcpStream> s);
  void dispatch(Conn& c);
  void finish(Conn* c);

  uv::Loop& loop_;
  std::unique_ptr<uv::TcpListener> listener_;
  std::map<std::pair<std::string, std::string>, Handler> routes_;
  std::vector<std::unique_ptr<Conn>> conns_;
};

// Percent-decoding for query strings and path segments.
std::string urlDecode(std::string_view s);

}  // namespace halb::app
