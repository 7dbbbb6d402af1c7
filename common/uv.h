#pragma once
// Small RAII wrappers over the libuv handles the control thread uses. Each wrapper owns a
// heap-allocated handle; destroying the wrapper cancels its callbacks and closes the handle,
// and libuv frees the memory in the close callback, so a wrapper may be destroyed from inside
// its own callback. All methods must be called on the loop's thread, except Async::send.
#include <uv.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "common/net.h"
#include "common/time.h"

namespace halb::uv {

// libuv error codes are negative errno values.
std::string errorText(int status);

class Loop {
 public:
  Loop();
  ~Loop();
  Loop(const Loop&) = delete;
  Loop& operator=(const Loop&) = delete;

  uv_loop_t* get() { return &loop_; }
  void run();
  // Runs until `done` returns true or `timeout` passes (tests); true if done.
  bool runUntil(const std::function<bool()>& done, Duration timeout);
  void stop() { uv_stop(&loop_); }
  // The loop's cached time as a steady TimePoint (uv_now is ms; uv_hrtime is ns).
  TimePoint now() const;

 private:
  uv_loop_t loop_{};
};

namespace detail {
// Owns one libuv handle of type H plus the callback state it needs.
template <class H, class State>
struct Box {
  H handle{};
  State state{};
};
void closeAndDelete(uv_handle_t* h, void (*deleter)(uv_handle_t*));
}  // namespace detail

class Timer {
 public:
  explicit Timer(Loop& loop);
  ~Timer();
  Timer(const Timer&) = delete;
  Timer& operator=(const Timer&) = delete;

  void start(Duration timeout, std::function<void()> cb);
  void startRepeating(Duration interval, std::function<void()> cb);
  void stop();
  bool active() const;

 private:
  struct State {
    std::function<void()> cb;
  };
  detail::Box<uv_timer_t, State>* box_;
};

// Wakes the loop from another thread. Several send() calls may coalesce into one callback.
class Async {
 public:
  Async(Loop& loop, std::function<void()> cb);
  ~Async();
  Async(const Async&) = delete;
  Async& operator=(const Async&) = delete;
  void send();

 private:
  struct State {
    std::function<void()> cb;
  };
  detail::Box<uv_async_t, State>* box_;
};

// Readiness of a file descriptor the caller owns (raw sockets, netlink).
class Poll {
 public:
  Poll(Loop& loop, int fd);
  ~Poll();
  Poll(const Poll&) = delete;
  Poll& operator=(const Poll&) = delete;
  // events: UV_READABLE | UV_WRITABLE; cb(status, events).
  void start(int events, std::function<void(int, int)> cb);
  void stop();

 private:
  struct State {
    std::function<void(int, int)> cb;
  };
  detail::Box<uv_poll_t, State>* box_;
};

class Signal {
 public:
  explicit Signal(Loop& loop);
  ~Signal();
  Signal(const Signal&) = delete;
  Signal& operator=(const Signal&) = delete;
  void start(int signum, std::function<void()> cb);

 private:
  struct State {
    std::function<void()> cb;
  };
  detail::Box<uv_signal_t, State>* box_;
};

// A TCP connection: connect or accepted from a TcpListener; buffered writes.
class TcpStream {
 public:
  explicit TcpStream(Loop& loop);
  ~TcpStream();
  TcpStream(const TcpStream&) = delete;
  TcpStream& operator=(const TcpStream&) = delete;

  // Binds the local side first when `local` is given (a source address for the peer link).
  int connect(const SocketAddress& remote, std::function<void(int status)> cb,
              const SocketAddress* local = nullptr);
  // onData gets each chunk; onEnd gets UV_EOF or an error, once; reading stops after it.
  int startRead(std::function<void(std::span<const char>)> onData, std::function<void(int)> onEnd);
  void stopRead();
  // Copies `data`; cb (optional) runs when the kernel took it or the write failed.
  int write(std::string_view data, std::function<void(int status)> cb = {});
  size_t writeQueueBytes() const;
  void setNoDelay(bool on);
  void setKeepAlive(bool on, unsigned delaySeconds);
  // Half-close: sends FIN after queued writes.
  void shutdown(std::function<void(int)> cb = {});
  SocketAddress peer() const;
  SocketAddress local() const;
  int fd() const;
  uv_tcp_t* raw();

 private:
  friend class TcpListener;
  struct State {
    std::function<void(std::span<const char>)> onData;
    std::function<void(int)> onEnd;
    std::function<void(int)> onConnect;
    std::function<void(int)> onShutdown;
  };
  detail::Box<uv_tcp_t, State>* box_;
};

class TcpListener {
 public:
  explicit TcpListener(Loop& loop);
  ~TcpListener();
  TcpListener(const TcpListener&) = delete;
  TcpListener& operator=(const TcpListener&) = delete;

  // Returns 0 or a libuv error (for example UV_EADDRINUSE).
  int listen(const SocketAddress& addr, std::function<void(std::unique_ptr<TcpStream>)> onAccept,
             int backlog = 128);
  SocketAddress local() const;

 private:
  struct State {
    Loop* loop = nullptr;
    std::function<void(std::unique_ptr<TcpStream>)> onAccept;
  };
  detail::Box<uv_tcp_t, State>* box_;
};

// A child process run without blocking the loop (notify hooks). The callback gets the exit
// status, or -1 with the signal number when it was killed.
class Process {
 public:
  // Spawns args[0] with args; returns nullptr and sets `error` when it cannot start.
  static std::unique_ptr<Process> spawn(Loop& loop, const std::vector<std::string>& args,
                                        std::function<void(int64_t exitStatus, int termSignal)> onExit,
                                        std::string* error);
  ~Process();
  int pid() const;
  void kill(int signum);

 private:
  friend class Loop;
  // Frees an orphaned process handle (its owner went away before the child exited) when the
  // loop itself is torn down.
  static void closeOrphan(uv_handle_t* h);
  Process() = default;
  struct State {
    std::function<void(int64_t, int)> onExit;
    bool exited = false;
  };
  detail::Box<uv_process_t, State>* box_ = nullptr;
};

}  // namespace halb::uv
