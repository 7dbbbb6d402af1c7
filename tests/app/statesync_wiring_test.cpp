// The state-sync wiring of a node: the Service starts from the configuration, reports into
// the node's /metrics and /status, and drives VRRP's hooks (preemption gate, peer loss).
#include "app/statesync_wiring.h"

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <fstream>

#include "app/node.h"

namespace halb::app {
namespace {

using namespace std::chrono_literals;

class KeyFile {
 public:
  KeyFile() : path_("/tmp/halb-sync-key-" + std::to_string(::getpid())) {
    std::ofstream(path_) << "wiring-test-shared-secret-0123456789\n";
    ::chmod(path_.c_str(), 0600);
  }
  ~KeyFile() { ::unlink(path_.c_str()); }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

config::ConfigPtr makeConfig(const std::string& name, const std::string& keyFile,
                             std::optional<SocketAddress> peer, Duration syncWait = 5s) {
  auto c = std::make_shared<config::Config>();
  c->self.name = name;
  c->statesync.enabled = true;
  c->statesync.listen = *SocketAddress::parse("127.0.0.1:0");
  c->statesync.peer = peer;
  c->statesync.keyFile = keyFile;
  c->statesync.syncWait = syncWait;
  c->statesync.reconnectMin = 10ms;
  c->statesync.reconnectMax = 100ms;
  return c;
}

struct Vrrp {  // what vrrp::Instance would record
  std::vector<bool> syncReady;
  std::vector<std::string> peerLost;
};

StateSyncPorts portsFor(Vrrp& v) {
  StateSyncPorts p;
  p.setSyncReady = [&v](bool r) { v.syncReady.push_back(r); };
  p.onPeerLost = [&v](std::string_view why) { v.peerLost.emplace_back(why); };
  return p;
}

// Two nodes, two loops, one thread: run each loop a little in turn.
bool pump(Node& a, Node& b, const std::function<bool()>& done, Duration limit = 5s) {
  auto end = SteadyClock::now() + limit;
  while (!done()) {
    if (SteadyClock::now() > end) return false;
    a.loop().runUntil([] { return false; }, 2ms);
    b.loop().runUntil([] { return false; }, 2ms);
  }
  return true;
}

TEST(StateSyncWiring, PairSyncsOpensTheGateAndReports) {
  KeyFile key;
  Node a(makeConfig("lb1", key.path(), std::nullopt), "test.yaml", "lb1");
  Vrrp va, vb;
  std::string err;
  auto sa = StateSyncNode::start(a, portsFor(va), err);
  ASSERT_TRUE(sa) << err;
  Node b(makeConfig("lb2", key.path(), sa->service().listenAddress()), "test.yaml", "lb2");
  auto sb = StateSyncNode::start(b, portsFor(vb), err);
  ASSERT_TRUE(sb) << err;
  sa->service().setPeer(sb->service().listenAddress());

  ASSERT_TRUE(pump(a, b, [&] { return !va.syncReady.empty() && !vb.syncReady.empty(); }));
  EXPECT_EQ(va.syncReady, std::vector<bool>{true});  // vrrp's gate opens once, on sync
  EXPECT_NE(a.statusJson().find("\"statesync\":{\"enabled\":true,\"state\":\"in_sync\""),
            std::string::npos)
      << a.statusJson();
  EXPECT_NE(b.metricsText().find("halb_statesync_in_sync 1"), std::string::npos);

  // lb2 becomes master: a new epoch, above the wall-clock second, which lb1 learns.
  StateSyncNode::Takeover t = sb->becameMaster();
  EXPECT_GE(t.epoch, 1'700'000'000u);
  ASSERT_TRUE(pump(a, b, [&] { return sa->service().peerEpoch() == t.epoch; }));
  EXPECT_GT(sb->becameMaster().epoch, t.epoch);

  // lb2 goes away without a goodbye: lb1 hears of it at once (vrrp's fast death hint).
  sb.reset();
  ASSERT_TRUE(pump(
      a, b, [&] { return !va.peerLost.empty(); }, 2s));
}

TEST(StateSyncWiring, AbsentWithoutConfigAndFailsLoudlyOnABadKey) {
  auto c = std::make_shared<config::Config>();
  c->self.name = "lb1";
  Node a(c, "test.yaml", "lb1");
  std::string err;
  EXPECT_EQ(StateSyncNode::start(a, {}, err), nullptr);
  EXPECT_TRUE(err.empty());
  Node b(makeConfig("lb1", "/nonexistent/sync.key", std::nullopt), "test.yaml", "lb1");
  EXPECT_EQ(StateSyncNode::start(b, {}, err), nullptr);
  EXPECT_NE(err.find("key"), std::string::npos) << err;
}

}  // namespace
}  // namespace halb::app
