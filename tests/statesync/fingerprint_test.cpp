#include "statesync/fingerprint.h"

#include <gtest/gtest.h>

namespace halb::statesync {
namespace {

config::Config base() {
  config::Config c;
  config::Backend web;
  web.name = "web";
  web.id = stableId("web");
  web.sticky.mode = config::StickyMode::Source;
  for (const char* s : {"web1", "web2"}) {
    config::Server srv;
    srv.name = s;
    srv.id = stableId(std::string("web/") + s);
    srv.address = *SocketAddress::parse("10.0.0.1:80");
    web.servers.push_back(srv);
  }
  c.backends.push_back(web);
  config::Frontend fe;
  fe.name = "www";
  fe.bind.push_back(*SocketAddress::parse("192.0.2.100:80"));
  c.frontends.push_back(fe);
  return c;
}

TEST(ConfigFingerprint, CoversWhatGivesEntriesTheirMeaning) {
  const Sha256Digest fp = configFingerprint(base());
  auto changed = [&](auto edit) {
    config::Config c = base();
    edit(c);
    return configFingerprint(c) != fp;
  };
  EXPECT_TRUE(changed([](auto& c) { c.backends[0].sticky.mode = config::StickyMode::AppCookie; }));
  EXPECT_TRUE(changed([](auto& c) { c.backends[0].sticky.ttl = std::chrono::minutes(5); }));
  EXPECT_TRUE(changed([](auto& c) { c.backends[0].servers.pop_back(); }));
  EXPECT_TRUE(changed([](auto& c) { c.backends[0].servers[1].id = 99; }));
  EXPECT_TRUE(changed([](auto& c) { c.backends[0].name = "web2"; }));
  EXPECT_TRUE(changed([](auto& c) { c.frontends[0].continuity = true; }));
  // Not replicated, so not compared: a weight change or a new timeout must not stop sync.
  EXPECT_FALSE(changed([](auto& c) { c.backends[0].servers[0].weight = 7; }));
  EXPECT_FALSE(changed(
      [](auto& c) { c.backends[0].servers[0].address = *SocketAddress::parse("10.9.9.9:81"); }));
  EXPECT_FALSE(changed([](auto& c) { c.timeouts.connect = std::chrono::seconds(9); }));
  EXPECT_FALSE(changed([](auto& c) { c.frontends[0].bind[0].port = 8080; }));  // continuity off
  EXPECT_FALSE(
      changed([](auto& c) { std::swap(c.backends[0].servers[0], c.backends[0].servers[1]); }));
}

}  // namespace
}  // namespace halb::statesync
