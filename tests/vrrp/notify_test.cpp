#include <gtest/gtest.h>

#include <fstream>
#include <sstream>
#include <string>

#include "common/uv.h"
#include "vrrp/hooks.h"

namespace halb::vrrp {
namespace {

std::string readFile(const std::string& path) {
  std::ifstream in(path);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

class NotifyTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/halb-notify-XXXXXX";
    dir_ = ::mkdtemp(tmpl);
    out_ = dir_ + "/out";
  }
  void TearDown() override { std::system(("rm -rf " + dir_).c_str()); }
  std::string dir_, out_;
  uv::Loop loop_;
};

TEST_F(NotifyTest, RunsHooksInOrderWithStatesAsArguments) {
  // The hook is slow on purpose: later changes must queue behind it, not run concurrently.
  NotifyRunner r(loop_, "sleep 0.05; echo >> " + out_, std::chrono::milliseconds(5000));
  r.notify("BACKUP", "INIT");
  r.notify("MASTER", "BACKUP");
  const std::string expected = "BACKUP INIT\nMASTER BACKUP\n";
  ASSERT_TRUE(loop_.runUntil([&] { return readFile(out_).size() >= expected.size(); },
                             std::chrono::seconds(5)))
      << readFile(out_);
  EXPECT_EQ(readFile(out_), expected);
  EXPECT_EQ(r.started(), 2u);
  EXPECT_EQ(r.failed(), 0u);
}

TEST_F(NotifyTest, KillsAHookThatHangs) {
  NotifyRunner r(loop_, "sleep 30 #", std::chrono::milliseconds(50));
  r.notify("MASTER", "BACKUP");
  ASSERT_TRUE(loop_.runUntil([&] { return r.failed() == 1; }, std::chrono::seconds(5)));
}

TEST_F(NotifyTest, WhenIdleWaitsForTheRunningHook) {
  NotifyRunner r(loop_, "sleep 0.05; echo >> " + out_, std::chrono::milliseconds(5000));
  bool idle = false;
  r.whenIdle([&] { idle = true; }, std::chrono::milliseconds(5000));
  EXPECT_TRUE(idle);  // nothing ran: at once
  idle = false;
  r.notify("MASTER", "BACKUP");
  r.whenIdle([&] { idle = true; }, std::chrono::milliseconds(5000));
  EXPECT_FALSE(idle);
  ASSERT_TRUE(loop_.runUntil([&] { return idle; }, std::chrono::seconds(5)));
  EXPECT_EQ(readFile(out_), "MASTER BACKUP\n");
}

TEST_F(NotifyTest, WhenIdleKillsAHookThatOutstaysTheBound) {
  NotifyRunner r(loop_, "sleep 30 #", std::chrono::milliseconds(60000));
  r.notify("MASTER", "BACKUP");
  r.notify("BACKUP", "MASTER");  // queued, dropped at the bound
  bool idle = false;
  r.whenIdle([&] { idle = true; }, std::chrono::milliseconds(50));
  ASSERT_TRUE(loop_.runUntil([&] { return idle; }, std::chrono::seconds(5)));
  EXPECT_EQ(r.started(), 1u);
}

TEST_F(NotifyTest, ArgumentsAreNotReparsedByTheShell) {
  NotifyRunner r(loop_, "printf '%s|' >> " + out_, std::chrono::milliseconds(5000));
  r.notify("MASTER; touch " + dir_ + "/pwned", "BACKUP");
  ASSERT_TRUE(loop_.runUntil([&] { return !readFile(out_).empty(); }, std::chrono::seconds(5)));
  EXPECT_EQ(readFile(out_), "MASTER; touch " + dir_ + "/pwned|BACKUP|");
  EXPECT_FALSE(std::ifstream(dir_ + "/pwned").good());
}

}  // namespace
}  // namespace halb::vrrp
