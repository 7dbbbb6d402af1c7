#include "vrrp/hooks.h"

#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "common/log.h"
#include "common/uv.h"

namespace halb::vrrp {

Result<std::unique_ptr<LinkMonitor>> LinkMonitor::open(uv::Loop& loop,
                                                       std::function<void()> onChange) {
  std::unique_ptr<LinkMonitor> m(new LinkMonitor());
  m->onChange_ = std::move(onChange);
  m->fd_ = ::socket(AF_NETLINK, SOCK_RAW | SOCK_NONBLOCK | SOCK_CLOEXEC, NETLINK_ROUTE);
  if (m->fd_ < 0) return Error{std::string("netlink socket: ") + std::strerror(errno)};
  sockaddr_nl sa{};
  sa.nl_family = AF_NETLINK;
  sa.nl_groups = RTMGRP_LINK;
  if (::bind(m->fd_, reinterpret_cast<sockaddr*>(&sa), sizeof sa) != 0)
    return Error{std::string("netlink bind: ") + std::strerror(errno)};
  m->poll_ = std::make_unique<uv::Poll>(loop, m->fd_);
  LinkMonitor* self = m.get();
  m->poll_->start(UV_READABLE, [self](int status, int) {
    if (status == 0) self->onReadable();
  });
  return m;
}

LinkMonitor::~LinkMonitor() {
  poll_.reset();
  if (fd_ >= 0) ::close(fd_);
}

void LinkMonitor::onReadable() {
  char buf[16384];
  bool changed = false;
  for (int i = 0; i < 64; ++i) {
    ssize_t n = ::recv(fd_, buf, sizeof buf, MSG_DONTWAIT);
    if (n < 0) {
      // ENOBUFS: we missed events; re-reading the interfaces covers that.
      if (errno == ENOBUFS) changed = true;
      break;
    }
    for (auto* h = reinterpret_cast<nlmsghdr*>(buf); NLMSG_OK(h, static_cast<unsigned>(n));
         h = NLMSG_NEXT(h, n))
      if (h->nlmsg_type == RTM_NEWLINK || h->nlmsg_type == RTM_DELLINK) changed = true;
  }
  if (changed && onChange_) onChange_();
}

NotifyRunner::NotifyRunner(uv::Loop& loop, std::string command, std::chrono::milliseconds timeout)
    : loop_(loop), command_(std::move(command)), timeout_(timeout) {}

NotifyRunner::~NotifyRunner() {
  killTimer_.reset();
  idleTimer_.reset();
  // A hook still running is left to finish; uv::Process closes its handle on exit.
  running_.reset();
}

void NotifyRunner::notify(const std::string& newState, const std::string& oldState) {
  constexpr size_t kMaxQueued = 4;
  if (queue_.size() >= kMaxQueued) queue_.pop_front();
  queue_.emplace_back(newState, oldState);
  if (!running_) next();
}

void NotifyRunner::whenIdle(std::function<void()> done, std::chrono::milliseconds maxWait) {
  if (!running_ && queue_.empty()) {
    done();
    return;
  }
  onIdle_ = std::move(done);
  if (!idleTimer_) idleTimer_ = std::make_unique<uv::Timer>(loop_);
  idleTimer_->start(maxWait, [this] {
    queue_.clear();
    if (running_) {
      HALB_LOG(Warn, "vrrp") << "notify hook still running at shutdown; killing it";
      running_->kill(SIGKILL);  // its exit callback reports idle
    }
  });
}

void NotifyRunner::next() {
  while (!queue_.empty() && !running_) {
    std::string now = queue_.front().first, old = queue_.front().second;
    queue_.pop_front();
    // sh -c 'COMMAND "$1" "$2"' halb-notify NEW OLD: the command may carry its own arguments,
    // the states arrive as positional parameters, never re-parsed by the shell.
    std::vector<std::string> args{"/bin/sh",     "-c", command_ + " \"$1\" \"$2\"",
                                  "halb-notify", now,  old};
    std::string error;
    running_ = uv::Process::spawn(
        loop_, args,
        [this, now](int64_t status, int sig) {
          if (status != 0 || sig != 0) {
            ++failed_;
            HALB_LOG(Warn, "vrrp")
                << "notify hook for " << now << " exited with status " << status
                << (sig ? " (signal " + std::to_string(sig) + ")" : std::string());
          }
          if (killTimer_) killTimer_->stop();
          // Destroying the Process from inside its own exit callback is allowed (uv.h).
          running_.reset();
          next();
        },
        &error);
    ++started_;
    if (!running_) {
      ++failed_;
      HALB_LOG(Warn, "vrrp") << "notify hook cannot start: " << error;
      continue;
    }
    if (!killTimer_) killTimer_ = std::make_unique<uv::Timer>(loop_);
    killTimer_->start(timeout_, [this] {
      if (!running_) return;
      HALB_LOG(Warn, "vrrp") << "notify hook still running after " << timeout_.count()
                             << " ms; killing it";
      running_->kill(SIGKILL);
    });
  }
  if (!running_ && queue_.empty() && onIdle_) {
    if (idleTimer_) idleTimer_->stop();
    auto done = std::move(onIdle_);
    onIdle_ = nullptr;
    done();
  }
}

}  // namespace halb::vrrp
