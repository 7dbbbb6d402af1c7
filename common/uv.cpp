#include "common/uv.h"

#include <cerrno>
#include <cstring>

namespace halb::uv {

std::string errorText(int status) {
  if (status == 0) return "ok";
  return std::string(uv_err_name(status)) + " (" + uv_strerror(status) + ")";
}

Loop::Loop() { uv_loop_init(&loop_); }

Loop::~Loop() {
  // Handles still open belong to wrappers that outlive the loop by mistake, or to libuv
  // itself; close them so the loop can be freed without leaking.
  uv_walk(
      &loop_,
      [](uv_handle_t* h, void*) {
        if (uv_is_closing(h)) return;
        if (h->type == UV_PROCESS && h->data) Process::closeOrphan(h);
        else uv_close(h, nullptr);
      },
      nullptr);
  uv_run(&loop_, UV_RUN_DEFAULT);
  uv_loop_close(&loop_);
}

void Loop::run() { uv_run(&loop_, UV_RUN_DEFAULT); }

bool Loop::runUntil(const std::function<bool()>& done, Duration timeout) {
  TimePoint deadline = SteadyClock::now() + timeout;
  uv_timer_t tick;
  uv_timer_init(&loop_, &tick);
  // A periodic tick bounds each blocking wait so `done` and the deadline are re-checked.
  uv_timer_start(&tick, [](uv_timer_t*) {}, 5, 5);
  bool ok = false;
  while (!(ok = done()) && SteadyClock::now() < deadline) uv_run(&loop_, UV_RUN_ONCE);
  uv_close(reinterpret_cast<uv_handle_t*>(&tick), nullptr);
  uv_run(&loop_, UV_RUN_NOWAIT);
  return ok;
}

TimePoint Loop::now() const { return SteadyClock::now(); }

namespace detail {
void closeAndDelete(uv_handle_t* h, void (*deleter)(uv_handle_t*)) {
  if (!uv_is_closing(h)) uv_close(h, deleter);
}
}  // namespace detail

namespace {

template <class B>
void deleteBox(uv_handle_t* h) {
  delete static_cast<B*>(h->data);
}

template <class B>
B* newBox() {
  auto* b = new B();
  b->handle.data = b;
  return b;
}

uint64_t ceilMillis(Duration d) {
  if (d.count() <= 0) return 0;
  return static_cast<uint64_t>((d.count() + 999'999) / 1'000'000);
}

}  // namespace

// ---------------------------------------------------------------------------- Timer

Timer::Timer(Loop& loop) : box_(newBox<detail::Box<uv_timer_t, State>>()) {
  uv_timer_init(loop.get(), &box_->handle);
}

Timer::~Timer() {
  uv_timer_stop(&box_->handle);
  box_->state.cb = nullptr;
  detail::closeAndDelete(reinterpret_cast<uv_handle_t*>(&box_->handle),
                         deleteBox<detail::Box<uv_timer_t, State>>);
}

void Timer::start(Duration timeout, std::function<void()> cb) {
  box_->state.cb = std::move(cb);
  uv_timer_start(
      &box_->handle,
      [](uv_timer_t* t) {
        auto* b = static_cast<detail::Box<uv_timer_t, State>*>(t->data);
        auto cb = b->state.cb;  // the callback may restart or destroy this timer
        if (cb) cb();
      },
      ceilMillis(timeout), 0);
}

void Timer::startRepeating(Duration interval, std::function<void()> cb) {
  box_->state.cb = std::move(cb);
  uint64_t ms = std::max<uint64_t>(1, ceilMillis(interval));
  uv_timer_start(
      &box_->handle,
      [](uv_timer_t* t) {
        auto* b = static_cast<detail::Box<uv_timer_t, State>*>(t->data);
        auto cb = b->state.cb;
        if (cb) cb();
      },
      ms, ms);
}

void Timer::stop() { uv_timer_stop(&box_->handle); }

bool Timer::active() const {
  return uv_is_active(reinterpret_cast<const uv_handle_t*>(&box_->handle)) != 0;
}

// ---------------------------------------------------------------------------- Async

Async::Async(Loop& loop, std::function<void()> cb) : box_(newBox<detail::Box<uv_async_t, State>>()) {
  box_->state.cb = std::move(cb);
  uv_async_init(loop.get(), &box_->handle, [](uv_async_t* a) {
    auto* b = static_cast<detail::Box<uv_async_t, State>*>(a->data);
    auto cb = b->state.cb;
    if (cb) cb();
  });
}

Async::~Async() {
  box_->state.cb = nullptr;
  detail::closeAndDelete(reinterpret_cast<uv_handle_t*>(&box_->handle),
                         deleteBox<detail::Box<uv_async_t, State>>);
}

void Async::send() { uv_async_send(&box_->handle); }

// ---------------------------------------------------------------------------- Poll

Poll::Poll(Loop& loop, int fd) : box_(newBox<detail::Box<uv_poll_t, State>>()) {
  uv_poll_init(loop.get(), &box_->handle, fd);
}

Poll::~Poll() {
  uv_poll_stop(&box_->handle);
  box_->state.cb = nullptr;
  detail::closeAndDelete(reinterpret_cast<uv_handle_t*>(&box_->handle),
                         deleteBox<detail::Box<uv_poll_t, State>>);
}

void Poll::start(int events, std::function<void(int, int)> cb) {
  box_->state.cb = std::move(cb);
  uv_poll_start(&box_->handle, events, [](uv_poll_t* p, int status, int ev) {
    auto* b = static_cast<detail::Box<uv_poll_t, State>*>(p->data);
    auto cb = b->state.cb;
    if (cb) cb(status, ev);
  });
}

void Poll::stop() { uv_poll_stop(&box_->handle); }

// ---------------------------------------------------------------------------- Signal

Signal::Signal(Loop& loop) : box_(newBox<detail::Box<uv_signal_t, State>>()) {
  uv_signal_init(loop.get(), &box_->handle);
}

Signal::~Signal() {
  uv_signal_stop(&box_->handle);
  box_->state.cb = nullptr;
  detail::closeAndDelete(reinterpret_cast<uv_handle_t*>(&box_->handle),
                         deleteBox<detail::Box<uv_signal_t, State>>);
}

void Signal::start(int signum, std::function<void()> cb) {
  box_->state.cb = std::move(cb);
  uv_signal_start(
      &box_->handle,
      [](uv_signal_t* s, int) {
        auto* b = static_cast<detail::Box<uv_signal_t, State>*>(s->data);
        auto cb = b->state.cb;
        if (cb) cb();
      },
      signum);
}

// ---------------------------------------------------------------------------- TcpStream

namespace {


constexpr size_t kReadChunk = 64 * 1024;

struct WriteReq {
  uv_write_t req{};
  std::string data;
  std::function<void(int)> cb;
};

}  // namespace

TcpStream::TcpStream(Loop& loop) : box_(newBox<detail::Box<uv_tcp_t, State>>()) {
  uv_tcp_init(loop.get(), &box_->handle);
}

TcpStream::~TcpStream() {
  // Callbacks of requests still in flight (writes, connect) see a cleared state and do nothing.
  box_->state = State{};
  detail::closeAndDelete(reinterpret_cast<uv_handle_t*>(&box_->handle),
                         deleteBox<detail::Box<uv_tcp_t, State>>);
}

uv_tcp_t* TcpStream::raw() { return &box_->handle; }

int TcpStream::connect(const SocketAddress& remote, std::function<void(int)> cb,
                       const SocketAddress* local) {
  if (local) {
    sockaddr_storage ls;
    local->toSockaddr(ls);
    if (int rc = uv_tcp_bind(&box_->handle, reinterpret_cast<sockaddr*>(&ls), 0); rc != 0) return rc;
  }
  sockaddr_storage rs;
  remote.toSockaddr(rs);
  box_->state.onConnect = std::move(cb);
  auto* req = new uv_connect_t();
  int rc = uv_tcp_connect(req, &box_->handle, reinterpret_cast<sockaddr*>(&rs), [](uv_connect_t* r, int status) {
    auto* b = static_cast<detail::Box<uv_tcp_t, State>*>(r->handle->data);
    delete r;
    auto cb = std::move(b->state.onConnect);
    if (cb) cb(status);
  });
  if (rc != 0) delete req;
  return rc;
}

int TcpStream::startRead(std::function<void(std::span<const char>)> onData, std::function<void(int)> onEnd) {
  box_->state.onData = std::move(onData);
  box_->state.onEnd = std::move(onEnd);
  return uv_read_start(
      reinterpret_cast<uv_stream_t*>(&box_->handle),
      [](uv_handle_t*, size_t, uv_buf_t* buf) {
        // One buffer per read call; libuv hands it back to the read callback.
        buf->base = new char[kReadChunk];
        buf->len = kReadChunk;
      },
      [](uv_stream_t* s, ssize_t n, const uv_buf_t* buf) {
        std::unique_ptr<char[]> owned(buf->base);
        auto* b = static_cast<detail::Box<uv_tcp_t, State>*>(s->data);
        if (n > 0) {
          auto cb = b->state.onData;
          if (cb) cb(std::span<const char>(buf->base, static_cast<size_t>(n)));
        } else if (n < 0) {
          uv_read_stop(s);
          auto cb = std::move(b->state.onEnd);
          b->state.onData = nullptr;
          if (cb) cb(static_cast<int>(n));
        }
      });
}

void TcpStream::stopRead() { uv_read_stop(reinterpret_cast<uv_stream_t*>(&box_->handle)); }

int TcpStream::write(std::string_view data, std::function<void(int)> cb) {
  auto* w = new WriteReq();
  w->data.assign(data);
  w->cb = std::move(cb);
  uv_buf_t buf = uv_buf_init(w->data.data(), static_cast<unsigned>(w->data.size()));
  int rc = uv_write(&w->req, reinterpret_cast<uv_stream_t*>(&box_->handle), &buf, 1,
                    [](uv_write_t* r, int status) {
                      std::unique_ptr<WriteReq> w(reinterpret_cast<WriteReq*>(r));
                      // A write cancelled by close belongs to a stream whose owner is gone.
                      if (status != UV_ECANCELED && w->cb) w->cb(status);
                    });
  if (rc != 0) delete w;
  return rc;
}

size_t TcpStream::writeQueueBytes() const {
  return uv_stream_get_write_queue_size(reinterpret_cast<const uv_stream_t*>(&box_->handle));
}

void TcpStream::setNoDelay(bool on) { uv_tcp_nodelay(&box_->handle, on ? 1 : 0); }

void TcpStream::setKeepAlive(bool on, unsigned delaySeconds) {
  uv_tcp_keepalive(&box_->handle, on ? 1 : 0, delaySeconds);
}

void TcpStream::shutdown(std::function<void(int)> cb) {
  box_->state.onShutdown = std::move(cb);
  auto* req = new uv_shutdown_t();
  int rc = uv_shutdown(req, reinterpret_cast<uv_stream_t*>(&box_->handle), [](uv_shutdown_t* r, int status) {
    auto* b = static_cast<detail::Box<uv_tcp_t, State>*>(r->handle->data);
    delete r;
    if (status == UV_ECANCELED) return;
    auto cb = std::move(b->state.onShutdown);
    if (cb) cb(status);
  });
  if (rc != 0) delete req;
}

SocketAddress TcpStream::peer() const {
  sockaddr_storage ss{};
  int len = sizeof ss;
  if (uv_tcp_getpeername(&box_->handle, reinterpret_cast<sockaddr*>(&ss), &len) != 0) return {};
  return SocketAddress::fromSockaddr(reinterpret_cast<sockaddr*>(&ss));
}

SocketAddress TcpStream::local() const {
  sockaddr_storage ss{};
  int len = sizeof ss;
  if (uv_tcp_getsockname(&box_->handle, reinterpret_cast<sockaddr*>(&ss), &len) != 0) return {};
  return SocketAddress::fromSockaddr(reinterpret_cast<sockaddr*>(&ss));
}

int TcpStream::fd() const {
  uv_os_fd_t fd = -1;
  uv_fileno(reinterpret_cast<const uv_handle_t*>(&box_->handle), &fd);
  return fd;
}

// ---------------------------------------------------------------------------- TcpListener

TcpListener::TcpListener(Loop& loop) : box_(newBox<detail::Box<uv_tcp_t, State>>()) {
  box_->state.loop = &loop;
  uv_tcp_init(loop.get(), &box_->handle);
}

TcpListener::~TcpListener() {
  box_->state.onAccept = nullptr;
  detail::closeAndDelete(reinterpret_cast<uv_handle_t*>(&box_->handle),
                         deleteBox<detail::Box<uv_tcp_t, State>>);
}

int TcpListener::listen(const SocketAddress& addr, std::function<void(std::unique_ptr<TcpStream>)> onAccept,
                        int backlog) {
  sockaddr_storage ss;
  addr.toSockaddr(ss);
  if (int rc = uv_tcp_bind(&box_->handle, reinterpret_cast<sockaddr*>(&ss), 0); rc != 0) return rc;
  box_->state.onAccept = std::move(onAccept);
  return uv_listen(reinterpret_cast<uv_stream_t*>(&box_->handle), backlog, [](uv_stream_t* server, int status) {
    auto* b = static_cast<detail::Box<uv_tcp_t, State>*>(server->data);
    if (status < 0 || !b->state.onAccept) return;
    auto client = std::make_unique<TcpStream>(*b->state.loop);
    if (uv_accept(server, reinterpret_cast<uv_stream_t*>(client->raw())) != 0) return;
    auto cb = b->state.onAccept;
    cb(std::move(client));
  });
}

SocketAddress TcpListener::local() const {
  sockaddr_storage ss{};
  int len = sizeof ss;
  if (uv_tcp_getsockname(&box_->handle, reinterpret_cast<sockaddr*>(&ss), &len) != 0) return {};
  return SocketAddress::fromSockaddr(reinterpret_cast<sockaddr*>(&ss));
}

// ---------------------------------------------------------------------------- Process

std::unique_ptr<Process> Process::spawn(Loop& loop, const std::vector<std::string>& args,
                                        std::function<void(int64_t, int)> onExit, std::string* error) {
  if (args.empty()) {
    if (error) *error = "empty command";
    return nullptr;
  }
  std::unique_ptr<Process> p(new Process());
  p->box_ = newBox<detail::Box<uv_process_t, State>>();
  p->box_->state.onExit = std::move(onExit);
  std::vector<char*> argv;
  for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  uv_stdio_container_t stdio[3];
  stdio[0].flags = UV_IGNORE;
  stdio[1].flags = UV_INHERIT_FD;
  stdio[1].data.fd = 1;
  stdio[2].flags = UV_INHERIT_FD;
  stdio[2].data.fd = 2;
  uv_process_options_t opts{};
  opts.file = argv[0];
  opts.args = argv.data();
  opts.stdio = stdio;
  opts.stdio_count = 3;
  opts.exit_cb = [](uv_process_t* h, int64_t status, int sig) {
    auto* b = static_cast<detail::Box<uv_process_t, State>*>(h->data);
    b->state.exited = true;
    auto cb = std::move(b->state.onExit);
    // An owner that went away before the exit left the handle to close itself here.
    if (!cb) {
      uv_close(reinterpret_cast<uv_handle_t*>(h), deleteBox<detail::Box<uv_process_t, State>>);
      return;
    }
    cb(status, sig);
  };
  int rc = uv_spawn(loop.get(), &p->box_->handle, &opts);
  if (rc != 0) {
    if (error) *error = errorText(rc);
    // uv_spawn initialises the handle even on failure; it still needs closing.
    uv_close(reinterpret_cast<uv_handle_t*>(&p->box_->handle), deleteBox<detail::Box<uv_process_t, State>>);
    p->box_ = nullptr;
    return nullptr;
  }
  return p;
}

Process::~Process() {
  if (!box_) return;
  box_->state.onExit = nullptr;
  if (box_->state.exited)
    uv_close(reinterpret_cast<uv_handle_t*>(&box_->handle), deleteBox<detail::Box<uv_process_t, State>>);
}

void Process::closeOrphan(uv_handle_t* h) {
  uv_close(h, deleteBox<detail::Box<uv_process_t, State>>);
}

int Process::pid() const { return box_ ? box_->handle.pid : -1; }

void Process::kill(int signum) {
  if (box_ && !box_->state.exited) uv_process_kill(&box_->handle, signum);
}

}  // namespace halb::uv
