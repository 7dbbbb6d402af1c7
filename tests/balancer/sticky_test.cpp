#include "balancer/sticky.h"

#include <gtest/gtest.h>

#include <map>

#include "balancer/pool_manager.h"
#include "config/loader.h"

namespace halb::balancer {
namespace {

using namespace std::chrono_literals;

struct Req : RequestView {
  std::map<std::string, std::string, std::less<>> headers, cookies;
  std::string_view method() const override { return "GET"; }
  std::string_view host() const override { return "h"; }
  std::string_view path() const override { return "/"; }
  std::optional<std::string_view> header(std::string_view n) const override {
    auto it = headers.find(n);
    return it == headers.end() ? std::nullopt : std::optional<std::string_view>(it->second);
  }
  std::optional<std::string_view> cookie(std::string_view n) const override {
    auto it = cookies.find(n);
    return it == cookies.end() ? std::nullopt : std::optional<std::string_view>(it->second);
  }
};

class StickyTest : public ::testing::Test {
 protected:
  StickyTest() {
    std::string yaml =
        "frontends:\n  - {name: f, bind: 127.0.0.1:8080, default_backend: ck}\nbackends:\n";
    for (auto [name, sticky] :
         {std::pair{"ck", "{mode: cookie}"}, std::pair{"src", "{mode: source}"},
          std::pair{"app", "{mode: app_cookie, name: SID}"},
          std::pair{"hdr", "{mode: header, name: X-User}"}})
      yaml += std::string("  - name: ") + name +
              "\n    algorithm: round_robin\n    health: {type: none}\n"
              "    sticky: " +
              sticky +
              "\n    servers:\n"
              "      - {name: a, address: 10.0.0.1:80}\n      - {name: b, address: 10.0.0.2:80}\n"
              "      - {name: c, address: 10.0.0.3:80}\n";
    auto r = config::loadConfigString(yaml, "t.yaml", {.node = "", .checkFiles = false});
    for (const auto& e : r.errors) ADD_FAILURE() << e.toString();
    cfg = r.config;
    pm = std::make_unique<PoolManager>(PoolManager::Options{}, cfg, clock.now());
    tables = makeStickTables(stickTableSpecs(*cfg));
    auto c = CookieCodecs::load(*cfg, std::vector<uint8_t>(32, 9));
    EXPECT_TRUE(c);
    codecs = std::move(c).value();
  }
  const BackendView& backend(const char* name) { return *pm->snapshot()->findBackend(name); }
  StickyPick pick(const char* name, const Req* req, const PickContext& ctx = {}) {
    auto& sel = selectors[name];
    if (!sel) sel = makeSelector(config::Algorithm::RoundRobin, 0);
    return pickSticky(backend(name), *sel, ctx, req, tables.get(), &codecs, clock.now(),
                      [this](repl::Change&& c) { changes.push_back(std::move(c)); });
  }

  ManualClock clock;
  config::ConfigPtr cfg;
  std::unique_ptr<PoolManager> pm;
  std::unique_ptr<StickTables> tables;
  CookieCodecs codecs;
  std::map<std::string, std::unique_ptr<Selector>> selectors;
  std::vector<repl::Change> changes;
};

TEST_F(StickyTest, CookieMode) {
  Req req;
  StickyPick first = pick("ck", &req);
  ASSERT_NE(first.server, nullptr);
  EXPECT_FALSE(first.sticky);
  EXPECT_EQ(first.cookieVerdict, CookieVerdict::Absent);
  ASSERT_FALSE(first.setCookie.empty());
  req.cookies["HALB_SERVER"] = first.setCookie;
  for (int i = 0; i < 5; ++i) {
    StickyPick p = pick("ck", &req);
    EXPECT_EQ(p.server, first.server);
    EXPECT_TRUE(p.sticky);
    EXPECT_TRUE(p.setCookie.empty());
  }
  // A forged cookie is ignored, and replaced.
  req.cookies["HALB_SERVER"] = std::string(27, 'A');
  StickyPick forged = pick("ck", &req);
  EXPECT_EQ(forged.cookieVerdict, CookieVerdict::BadTag);
  EXPECT_FALSE(forged.setCookie.empty());
  // The cookie's server is excluded on a retry: another server, and a new cookie.
  req.cookies["HALB_SERVER"] = first.setCookie;
  const uint64_t tried[] = {first.server->id};
  PickContext retry;
  retry.exclude = tried;
  StickyPick p = pick("ck", &req, retry);
  EXPECT_NE(p.server, first.server);
  EXPECT_FALSE(p.setCookie.empty());
  EXPECT_TRUE(changes.empty());  // cookie mode needs no table
}

TEST_F(StickyTest, SourceModeStickAndFailOver) {
  IpAddress client = IpAddress::fromV4(0xc0000201);
  PickContext ctx;
  ctx.clientAddress = &client;
  StickyPick first = pick("src", nullptr, ctx);
  ASSERT_NE(first.server, nullptr);
  const uint64_t firstId = first.server->id;  // views die with their snapshot: keep ids
  ASSERT_EQ(changes.size(), 1u);
  EXPECT_EQ(changes[0].kind, repl::ChangeKind::StickUpsert);
  EXPECT_EQ(changes[0].stick.key, std::string("\xc0\x00\x02\x01", 4));
  for (int i = 0; i < 5; ++i) EXPECT_EQ(pick("src", nullptr, ctx).server->id, firstId);
  // Draining keeps the user; maintenance moves it, and the table follows.
  pm->setAdmin(firstId, AdminState::Drain, clock.now());
  EXPECT_EQ(pick("src", nullptr, ctx).server->id, firstId);
  pm->setAdmin(firstId, AdminState::Maint, clock.now());
  StickyPick moved = pick("src", nullptr, ctx);
  const uint64_t movedId = moved.server->id;
  EXPECT_NE(movedId, firstId);
  EXPECT_FALSE(moved.sticky);
  EXPECT_EQ(changes.back().stick.serverId, movedId);
  pm->setAdmin(firstId, AdminState::Ready, clock.now());
  EXPECT_EQ(pick("src", nullptr, ctx).server->id, movedId);  // stays where it went
}

TEST_F(StickyTest, AppCookieAndHeaderModes) {
  Req req;
  StickyPick anon = pick("app", &req);  // no session yet: balanced, nothing recorded
  ASSERT_NE(anon.server, nullptr);
  EXPECT_TRUE(changes.empty());
  // The server's response sets SID=s1: learnt.
  learnAppCookie(backend("app"), "s1", anon.server->id, *tables, clock.now(), {});
  req.cookies["SID"] = "s1";
  for (int i = 0; i < 4; ++i) EXPECT_EQ(pick("app", &req).server->id, anon.server->id);
  // A session the table does not know yet is learnt from the request.
  req.cookies["SID"] = "s2";
  uint64_t s2 = pick("app", &req).server->id;
  for (int i = 0; i < 4; ++i) EXPECT_EQ(pick("app", &req).server->id, s2);

  Req h;
  h.headers["x-user"] = "alice";
  uint64_t alice = pick("hdr", &h).server->id;
  for (int i = 0; i < 4; ++i) EXPECT_EQ(pick("hdr", &h).server->id, alice);
  h.headers["x-user"] = "";  // empty identifies nobody
  pick("hdr", &h);
  EXPECT_EQ(tables->size(backend("hdr").id), 1u);
  // Entries expire with the table's TTL (30 min by default).
  clock.advance(31min);
  h.headers["x-user"] = "alice";
  pick("hdr", &h);
  EXPECT_FALSE(changes.empty());
  EXPECT_EQ(changes.back().kind, repl::ChangeKind::StickUpsert);
}

}  // namespace
}  // namespace halb::balancer
