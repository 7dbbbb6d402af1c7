#pragma once
// HTTP routing: the first route whose match holds wins; otherwise the frontend's default
// backend. Built once per configuration (regexes compiled then), read by all workers.
#include <memory>
#include <optional>
#include <string_view>
#include <vector>

#include "config/config.h"

namespace halb::balancer {

// The parts of a request that routes can match; the HTTP parser provides it.
class RequestView {
 public:
  virtual ~RequestView() = default;
  virtual std::string_view method() const = 0;
  virtual std::string_view host() const = 0;  // lower case, without port
  virtual std::string_view path() const = 0;  // without the query string
  // First value of a header (name given in lower case), or nullopt.
  virtual std::optional<std::string_view> header(std::string_view lowerName) const = 0;
  virtual std::optional<std::string_view> cookie(std::string_view name) const = 0;
};

class Router {
 public:
  explicit Router(const config::Frontend& frontend);
  ~Router();
  Router(const Router&) = delete;
  Router& operator=(const Router&) = delete;

  // The backend name to use, or nullptr when no route matches and there is no default.
  const std::string* route(const RequestView& request) const;
  // Index of the matching route in frontend.routes, or -1.
  int matchIndex(const RequestView& request) const;

 private:
  struct Compiled;
  const config::Frontend& frontend_;
  std::vector<std::unique_ptr<Compiled>> routes_;
};

}  // namespace halb::balancer
