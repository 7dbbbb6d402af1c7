// Fuzzes the HTTP router with arbitrary request fields against routes of every kind
// (host exact/wildcard, path exact/prefix/regex, header/cookie present/value/regex, method).
// Input: fields separated by '\n': method, host, path, then "name:value" header lines; a
// header named "cookie-<name>" stands for a cookie.
#include <cstddef>
#include <cstdint>
#include <map>
#include <string>
#include <string_view>

#include "balancer/router.h"
#include "config/loader.h"

namespace {

using namespace halb;

struct Request : balancer::RequestView {
  std::string m, h, p;
  std::map<std::string, std::string, std::less<>> headers, cookies;
  std::string_view method() const override { return m; }
  std::string_view host() const override { return h; }
  std::string_view path() const override { return p; }
  std::optional<std::string_view> header(std::string_view n) const override {
    auto it = headers.find(n);
    return it == headers.end() ? std::nullopt : std::optional<std::string_view>(it->second);
  }
  std::optional<std::string_view> cookie(std::string_view n) const override {
    auto it = cookies.find(n);
    return it == cookies.end() ? std::nullopt : std::optional<std::string_view>(it->second);
  }
};

const config::Config& fuzzConfig() {
  static config::ConfigPtr cfg = [] {
    auto r = config::loadConfigString(
        "frontends:\n  - name: f\n    bind: 127.0.0.1:8080\n    default_backend: d\n    routes:\n"
        "      - {backend: a, match: {host: api.example.com, path: /exact}}\n"
        "      - {backend: a, match: {host: '*.example.com', path_prefix: /v1/}}\n"
        "      - {backend: a, match: {path_regex: '^/(a|b)*/[0-9]+$', method: [GET, POST]}}\n"
        "      - {backend: a, match: {headers: [{name: x-a}, {name: x-b, value: v}, {name: x-c, "
        "regex: '^[a-z]+$'}]}}\n"
        "      - {backend: a, match: {cookies: [{name: s, regex: '(x|y)+z'}]}}\n"
        "backends:\n  - {name: a, servers: [{name: s, address: 127.0.0.1:9000}]}\n"
        "  - {name: d, servers: [{name: s, address: 127.0.0.1:9001}]}\n",
        "fuzz.yaml", {.node = "", .checkFiles = false});
    if (!r.ok()) __builtin_trap();
    return r.config;
  }();
  return *cfg;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static balancer::Router router(fuzzConfig().frontends[0]);
  std::string_view in(reinterpret_cast<const char*>(data), size);
  Request r;
  std::string* fields[] = {&r.m, &r.h, &r.p};
  size_t field = 0;
  while (!in.empty()) {
    size_t nl = in.find('\n');
    std::string_view line = in.substr(0, nl);
    in = nl == std::string_view::npos ? std::string_view() : in.substr(nl + 1);
    if (field < 3) {
      *fields[field++] = std::string(line);
      continue;
    }
    size_t colon = line.find(':');
    std::string name(line.substr(0, colon));
    std::string value(colon == std::string_view::npos ? std::string_view()
                                                      : line.substr(colon + 1));
    if (name.rfind("cookie-", 0) == 0)
      r.cookies[name.substr(7)] = value;
    else
      r.headers[name] = value;
  }
  const std::string* backend = router.route(r);
  if (!backend) __builtin_trap();  // there is a default backend
  int i = router.matchIndex(r);
  if (i < -1 || i >= static_cast<int>(fuzzConfig().frontends[0].routes.size())) __builtin_trap();
  return 0;
}
