#include "balancer/sticky_cookie.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "config/loader.h"
#include "test_util.h"

namespace halb::balancer {
namespace {

std::vector<uint8_t> key(char c) {
  return deriveCookieKey(std::vector<uint8_t>(32, uint8_t(c)));
}

TEST(StickyCookie, RoundTrip) {
  testing::FakeBackend b(config::Algorithm::RoundRobin, {1, 1, 1});
  StickyCookie codec({key('a')});
  for (const auto& s : b.view.servers) {
    std::string v = codec.encode(b.view.id, s.id);
    EXPECT_EQ(v.size(), StickyCookie::kValueChars);
    EXPECT_EQ(
        v.find_first_not_of("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"),
        std::string::npos);
    CookieVerdict verdict;
    EXPECT_EQ(codec.resolve(b.view, v, verdict), &s);
    EXPECT_EQ(verdict, CookieVerdict::Ok);
  }
  // Deterministic: the other node (same key) writes the same value.
  EXPECT_EQ(StickyCookie({key('a')}).encode(1, 2), codec.encode(1, 2));
}

TEST(StickyCookie, TamperedValuesAreRejected) {
  StickyCookie codec({key('a')});
  const std::string good = codec.encode(10, 0x1122334455667788ULL);
  uint64_t id = 0;
  ASSERT_EQ(codec.decode(10, good, id), CookieVerdict::Ok);
  EXPECT_EQ(id, 0x1122334455667788ULL);
  // Every single-character change is caught: in the id part, BadTag; the last character's
  // two spare bits make some changes Malformed instead.
  const std::string alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
  for (size_t i = 0; i < good.size(); ++i) {
    for (char c : alphabet) {
      if (c == good[i]) continue;
      std::string bad = good;
      bad[i] = c;
      CookieVerdict v = codec.decode(10, bad, id);
      EXPECT_TRUE(v == CookieVerdict::BadTag || v == CookieVerdict::Malformed) << bad;
    }
  }
  // The same server's cookie for another backend does not verify.
  EXPECT_EQ(codec.decode(11, good, id), CookieVerdict::BadTag);
  for (std::string_view bad : {"", "short", "AAAAAAAAAAAAAAAAAAAAAAAAAA=",
                               "AAAAAAAAAAAAAAAAAAAAAAAAAAAA", "AAAAAAAAAAAAAAAAAAAAAAAAAA\n"})
    EXPECT_EQ(codec.decode(10, bad, id), CookieVerdict::Malformed) << bad;
}

TEST(StickyCookie, WrongKeyAndRotation) {
  StickyCookie a({key('a')}), b({key('b')});
  uint64_t id = 0;
  EXPECT_EQ(b.decode(1, a.encode(1, 5), id), CookieVerdict::BadTag);
  // Rotation: the new key signs, the old one still verifies.
  StickyCookie rotated({key('b'), key('a')});
  EXPECT_EQ(rotated.decode(1, a.encode(1, 5), id), CookieVerdict::Ok);
  EXPECT_EQ(rotated.encode(1, 5), b.encode(1, 5));
}

TEST(StickyCookie, UnknownAndUnavailableServers) {
  testing::FakeBackend b(config::Algorithm::RoundRobin, {1, 1, 1});
  StickyCookie codec({key('a')});
  CookieVerdict v;
  EXPECT_EQ(codec.resolve(b.view, codec.encode(b.view.id, stableId("b/removed")), v), nullptr);
  EXPECT_EQ(v, CookieVerdict::UnknownServer);
  EXPECT_EQ(codec.resolve(b.view, std::nullopt, v), nullptr);
  EXPECT_EQ(v, CookieVerdict::Absent);
  // Draining keeps sticky users; down or in maintenance does not.
  b.server(0).admin = AdminState::Drain;
  b.server(0).weight = 0;
  EXPECT_EQ(codec.resolve(b.view, codec.encode(b.view.id, b.server(0).id), v), &b.server(0));
  b.server(1).healthy = false;
  EXPECT_EQ(codec.resolve(b.view, codec.encode(b.view.id, b.server(1).id), v), nullptr);
  EXPECT_EQ(v, CookieVerdict::Unavailable);
  b.server(2).admin = AdminState::Maint;
  EXPECT_EQ(codec.resolve(b.view, codec.encode(b.view.id, b.server(2).id), v), nullptr);
}

TEST(StickyCookie, SetCookieHeader) {
  EXPECT_EQ(StickyCookie::setCookieHeader("HALB_SERVER", "abc", false),
            "HALB_SERVER=abc; Path=/; HttpOnly; SameSite=Lax");
  EXPECT_EQ(StickyCookie::setCookieHeader("S", "v", true),
            "S=v; Path=/; HttpOnly; SameSite=Lax; Secure");
}

class CookieKeyTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = ::testing::TempDir() + "halb-cookie-" + std::to_string(::getpid());
    std::filesystem::create_directories(dir_);
    write("sync.key", "0123456789abcdef0123456789abcdef");
    write("cookie.key", "fedcba9876543210fedcba9876543210");
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }
  void write(const std::string& name, const std::string& text) {
    std::ofstream(dir_ + "/" + name) << text;
    std::filesystem::permissions(dir_ + "/" + name, std::filesystem::perms::owner_read |
                                                        std::filesystem::perms::owner_write);
  }
  config::ConfigPtr load(const std::string& yaml) {
    auto r = config::loadConfigString(yaml, dir_ + "/halb.yaml", {});
    for (const auto& e : r.errors) ADD_FAILURE() << e.toString();
    return r.config;
  }
  std::string dir_;
};

TEST_F(CookieKeyTest, Sources) {
  const std::string base =
      "frontends:\n  - {name: f, bind: 127.0.0.1:8080, default_backend: web}\n"
      "backends:\n  - name: web\n    servers: [{name: a, address: 127.0.0.1:9000}]\n"
      "    sticky: {mode: cookie";
  const std::vector<uint8_t> fallback(32, 7);
  auto standalone = load(base + "}\n");
  ASSERT_TRUE(standalone);
  auto k1 = loadCookieKey(*standalone, standalone->backends[0], fallback);
  ASSERT_TRUE(k1);
  EXPECT_EQ(*k1, deriveCookieKey(fallback));
  EXPECT_FALSE(loadCookieKey(*standalone, standalone->backends[0], {}));

  auto pair = load(
      base + "}\nstatesync: {listen: 127.0.0.1:7400, peer: 127.0.0.2:7400, key_file: sync.key}\n");
  ASSERT_TRUE(pair);
  auto k2 = loadCookieKey(*pair, pair->backends[0], fallback);
  ASSERT_TRUE(k2);
  std::string sync = "0123456789abcdef0123456789abcdef";
  EXPECT_EQ(*k2, deriveCookieKey(std::vector<uint8_t>(sync.begin(), sync.end())));

  auto own = load(base + ", key_file: cookie.key}\n");
  ASSERT_TRUE(own);
  auto k3 = loadCookieKey(*own, own->backends[0], fallback);
  ASSERT_TRUE(k3);
  EXPECT_NE(*k3, *k2);
  EXPECT_NE(*k3, *k1);

  // key_file only makes sense with cookie mode, and must exist.
  auto bad = config::loadConfigString(
      "frontends:\n  - {name: f, bind: 127.0.0.1:8080, default_backend: web}\n"
      "backends:\n  - name: web\n    servers: [{name: a, address: 127.0.0.1:9000}]\n"
      "    sticky: {mode: source, key_file: cookie.key}\n",
      dir_ + "/halb.yaml", {});
  ASSERT_EQ(bad.errors.size(), 1u);
  EXPECT_NE(bad.errors[0].message.find("only applies to mode: cookie"), std::string::npos);
  auto missing =
      config::loadConfigString(base + ", key_file: nope.key}\n", dir_ + "/halb.yaml", {});
  EXPECT_FALSE(missing.ok());
}

}  // namespace
}  // namespace halb::balancer
