#include "common/uv.h"

#include <gtest/gtest.h>

#include <thread>

namespace halb::uv {
namespace {

using namespace std::chrono_literals;

TEST(Uv, TimerFiresAndMayDestroyItselfInItsCallback) {
  Loop loop;
  auto t = std::make_unique<Timer>(loop);
  int fired = 0;
  t->start(5ms, [&] {
    ++fired;
    t.reset();
  });
  EXPECT_TRUE(loop.runUntil([&] { return fired == 1; }, 2s));
  EXPECT_EQ(t, nullptr);
}

TEST(Uv, AsyncWakesTheLoopFromAnotherThread) {
  Loop loop;
  int woken = 0;
  Async a(loop, [&] { ++woken; });
  std::thread th([&] { a.send(); });
  EXPECT_TRUE(loop.runUntil([&] { return woken > 0; }, 2s));
  th.join();
}

TEST(Uv, TcpEchoOverLoopback) {
  Loop loop;
  TcpListener server(loop);
  std::vector<std::unique_ptr<TcpStream>> accepted;
  ASSERT_EQ(server.listen(*SocketAddress::parse("127.0.0.1:0"),
                          [&](std::unique_ptr<TcpStream> s) {
                            TcpStream* sp = s.get();
                            s->startRead([sp](std::span<const char> d) { sp->write(std::string_view(d.data(), d.size())); },
                                         [sp](int) { sp->shutdown(); });
                            accepted.push_back(std::move(s));
                          }),
            0);
  SocketAddress addr = server.local();
  ASSERT_NE(addr.port, 0);
  TcpStream client(loop);
  std::string got;
  int ended = 1;
  ASSERT_EQ(client.connect(addr, [&](int status) {
    ASSERT_EQ(status, 0);
    client.startRead([&](std::span<const char> d) { got.append(d.data(), d.size()); }, [&](int rc) { ended = rc; });
    client.write("hello");
    client.shutdown();
  }), 0);
  EXPECT_TRUE(loop.runUntil([&] { return ended == UV_EOF; }, 5s));
  EXPECT_EQ(got, "hello");
}

TEST(Uv, ProcessReportsExitStatus) {
  Loop loop;
  int64_t status = -1;
  std::string err;
  auto p = Process::spawn(loop, {"/bin/sh", "-c", "exit 3"}, [&](int64_t s, int) { status = s; }, &err);
  ASSERT_NE(p, nullptr) << err;
  EXPECT_TRUE(loop.runUntil([&] { return status >= 0; }, 5s));
  EXPECT_EQ(status, 3);
  EXPECT_EQ(Process::spawn(loop, {"/nonexistent/program"}, [](int64_t, int) {}, &err), nullptr);
  EXPECT_FALSE(err.empty());
}

TEST(Uv, ProcessDroppedBeforeItsExitIsFreedWithTheLoop) {
  // LeakSanitizer (sanitizer build) fails this test if the orphaned handle is not freed.
  auto loop = std::make_unique<Loop>();
  std::string err;
  auto p = Process::spawn(*loop, {"/bin/sleep", "5"}, [](int64_t, int) {}, &err);
  ASSERT_NE(p, nullptr) << err;
  p->kill(SIGKILL);
  p.reset();
  loop.reset();
}

}  // namespace
}  // namespace halb::uv
