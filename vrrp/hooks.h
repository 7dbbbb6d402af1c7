#pragma once
// Control-loop helpers of the VRRP instance: link-state events from rtnetlink, and notify
// hooks run as child processes without blocking the loop.
#include <chrono>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "common/result.h"

namespace halb::uv {
class Loop;
class Poll;
class Process;
class Timer;
}  // namespace halb::uv

namespace halb::vrrp {

// Calls `onChange` whenever the kernel reports a link change (RTM_NEWLINK / RTM_DELLINK); the
// caller re-reads the interfaces it cares about (cheap, and robust to renamed or re-created
// interfaces whose index changed).
class LinkMonitor {
 public:
  static Result<std::unique_ptr<LinkMonitor>> open(uv::Loop& loop, std::function<void()> onChange);
  ~LinkMonitor();
  LinkMonitor(const LinkMonitor&) = delete;
  LinkMonitor& operator=(const LinkMonitor&) = delete;

 private:
  LinkMonitor() = default;
  void onReadable();
  int fd_ = -1;
  std::unique_ptr<uv::Poll> poll_;
  std::function<void()> onChange_;
};

// Runs `command NEW OLD` through /bin/sh for each state change, one at a time and in order.
// While a hook runs, later changes queue (bounded: only the newest few are kept, the states
// in between are stale anyway). A hook that runs longer than `timeout` is killed.
class NotifyRunner {
 public:
  NotifyRunner(uv::Loop& loop, std::string command, std::chrono::milliseconds timeout);
  ~NotifyRunner();
  void notify(const std::string& newState, const std::string& oldState);
  // Calls `done` once no hook runs or waits; a hook still running after `maxWait` is killed
  // (and what was queued dropped). For a clean shutdown of the loop.
  void whenIdle(std::function<void()> done, std::chrono::milliseconds maxWait);
  uint64_t started() const { return started_; }
  uint64_t failed() const { return failed_; }

 private:
  void next();

  uv::Loop& loop_;
  std::string command_;
  std::chrono::milliseconds timeout_;
  std::deque<std::pair<std::string, std::string>> queue_;
  std::unique_ptr<uv::Process> running_;
  std::unique_ptr<uv::Timer> killTimer_;
  std::unique_ptr<uv::Timer> idleTimer_;
  std::function<void()> onIdle_;
  uint64_t started_ = 0, failed_ = 0;
};

}  // namespace halb::vrrp
