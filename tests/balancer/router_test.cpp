#include "balancer/router.h"

#include <gtest/gtest.h>

#include <map>

#include "config/loader.h"

namespace halb::balancer {
namespace {

struct FakeRequest : RequestView {
  std::string m = "GET", h = "www.example.com", p = "/";
  std::map<std::string, std::string> headers, cookies;

  std::string_view method() const override { return m; }
  std::string_view host() const override { return h; }
  std::string_view path() const override { return p; }
  std::optional<std::string_view> header(std::string_view n) const override {
    auto it = headers.find(std::string(n));
    return it == headers.end() ? std::nullopt : std::optional<std::string_view>(it->second);
  }
  std::optional<std::string_view> cookie(std::string_view n) const override {
    auto it = cookies.find(std::string(n));
    return it == cookies.end() ? std::nullopt : std::optional<std::string_view>(it->second);
  }
};

class RouterTest : public ::testing::Test {
 protected:
  void load(const std::string& routes, bool withDefault = true) {
    std::string yaml = "frontends:\n  - name: f\n    bind: 127.0.0.1:8080\n";
    if (withDefault) yaml += "    default_backend: dflt\n";
    yaml += "    routes:\n" + routes + "backends:\n";
    for (const char* b : {"dflt", "a", "b", "c"})
      yaml += std::string("  - {name: ") + b + ", servers: [{name: s, address: 127.0.0.1:9000}]}\n";
    auto r = config::loadConfigString(yaml, "t.yaml", {.node = "", .checkFiles = false});
    for (const auto& e : r.errors) ADD_FAILURE() << e.toString();
    ASSERT_TRUE(r.config);
    cfg = r.config;
    router = std::make_unique<Router>(cfg->frontends[0]);
  }
  std::string route(const FakeRequest& r) {
    const std::string* b = router->route(r);
    return b ? *b : "(none)";
  }
  config::ConfigPtr cfg;
  std::unique_ptr<Router> router;
};

TEST_F(RouterTest, Hosts) {
  load(
      "      - {backend: a, match: {host: api.example.com}}\n"
      "      - {backend: b, match: {host: ['*.example.com', example.org]}}\n");
  FakeRequest r;
  r.h = "api.example.com";
  EXPECT_EQ(route(r), "a");
  r.h = "api.example.com.";  // absolute form
  EXPECT_EQ(route(r), "a");
  r.h = "www.example.com";
  EXPECT_EQ(route(r), "b");
  r.h = "a.b.example.com";  // a wildcard covers several labels, like nginx
  EXPECT_EQ(route(r), "b");
  r.h = "example.com";  // but not the bare domain
  EXPECT_EQ(route(r), "dflt");
  r.h = "badexample.com";
  EXPECT_EQ(route(r), "dflt");
  r.h = "example.org";
  EXPECT_EQ(route(r), "b");
  r.h = "";
  EXPECT_EQ(route(r), "dflt");
}

TEST_F(RouterTest, Paths) {
  load(
      "      - {backend: a, match: {path: /exact}}\n"
      "      - {backend: b, match: {path_prefix: /v1/}}\n"
      "      - {backend: c, match: {path_regex: '^/users/[0-9]+$'}}\n");
  FakeRequest r;
  r.p = "/exact";
  EXPECT_EQ(route(r), "a");
  r.p = "/exact/";
  EXPECT_EQ(route(r), "dflt");
  r.p = "/v1/things";
  EXPECT_EQ(route(r), "b");
  r.p = "/v1";
  EXPECT_EQ(route(r), "dflt");
  r.p = "/users/42";
  EXPECT_EQ(route(r), "c");
  r.p = "/users/42x";
  EXPECT_EQ(route(r), "dflt");
  // Huge input: linear time, no crash (std::regex overflows its stack here).
  load("      - {backend: a, match: {path_regex: '^/(a|b)*$'}}\n");
  r.p = "/" + std::string(200000, 'a');
  EXPECT_EQ(route(r), "a");
}

TEST_F(RouterTest, UnanchoredRegexSearches) {
  load("      - {backend: a, match: {path_regex: '\\.(css|js)$'}}\n");
  FakeRequest r;
  r.p = "/static/site.css";
  EXPECT_EQ(route(r), "a");
  r.p = "/static/site.css.map";
  EXPECT_EQ(route(r), "dflt");
}

TEST_F(RouterTest, HeadersAndCookies) {
  load(
      "      - {backend: a, match: {headers: [{name: X-Canary}]}}\n"
      "      - {backend: b, match: {headers: [{name: x-env, value: staging}], cookies: [{name: "
      "beta, value: '1'}]}}\n"
      "      - {backend: c, match: {cookies: [{name: session, regex: '^adm-'}]}}\n");
  FakeRequest r;
  EXPECT_EQ(route(r), "dflt");
  r.headers["x-canary"] = "";  // present, even empty
  EXPECT_EQ(route(r), "a");
  r.headers.clear();
  r.headers["x-env"] = "staging";
  EXPECT_EQ(route(r), "dflt");  // all conditions must hold
  r.cookies["beta"] = "1";
  EXPECT_EQ(route(r), "b");
  r.headers["x-env"] = "Staging";  // values are exact
  EXPECT_EQ(route(r), "dflt");
  r.cookies["session"] = "adm-123";
  EXPECT_EQ(route(r), "c");
  r.cookies["session"] = "user-adm-123";
  EXPECT_EQ(route(r), "dflt");
}

TEST_F(RouterTest, MethodsAndFirstMatchWins) {
  load(
      "      - {backend: a, match: {method: [POST, put], path_prefix: /api/}}\n"
      "      - {backend: b, match: {path_prefix: /api/}}\n"
      "      - {backend: c, match: {path_prefix: /api/admin}}\n");
  FakeRequest r;
  r.p = "/api/admin/x";
  EXPECT_EQ(route(r), "b");  // c is shadowed by b: order decides, not specificity
  EXPECT_EQ(router->matchIndex(r), 1);
  r.m = "PUT";
  EXPECT_EQ(route(r), "a");
  r.m = "DELETE";
  EXPECT_EQ(route(r), "b");
}

TEST_F(RouterTest, NoDefaultBackend) {
  load("      - {backend: a, match: {host: a.example}}\n", false);
  FakeRequest r;
  EXPECT_EQ(router->route(r), nullptr);
  EXPECT_EQ(router->matchIndex(r), -1);
  r.h = "a.example";
  EXPECT_EQ(route(r), "a");
}

TEST_F(RouterTest, EmptyMatchMatchesEverything) {
  load("      - {backend: a}\n");
  FakeRequest r;
  EXPECT_EQ(route(r), "a");
}

TEST(RouterConfig, InvalidRegexIsAConfigError) {
  auto r = config::loadConfigString(
      "frontends:\n  - name: f\n    bind: 127.0.0.1:8080\n    routes:\n"
      "      - {backend: a, match: {path_regex: '^/(a'}}\n"
      "      - {backend: a, match: {path_regex: '^(?=x)'}}\n"  // lookahead: not RE2
      "backends:\n  - {name: a, servers: [{name: s, address: 127.0.0.1:9000}]}\n",
      "t.yaml", {.node = "", .checkFiles = false});
  ASSERT_EQ(r.errors.size(), 2u);
  EXPECT_EQ(r.errors[0].line, 5);
  EXPECT_NE(r.errors[0].message.find("invalid regular expression"), std::string::npos);
}

}  // namespace
}  // namespace halb::balancer
