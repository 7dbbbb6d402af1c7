// State-sync benchmark: codec throughput, and replication throughput and lag between two
// statesync::Services over loopback TCP, each on its own control thread with its own libuv
// loop, fed by a producer thread through a ChangeQueue exactly as a data-plane worker does.
//
//   statesync_bench [--rate N] [--seconds S] [--burst N]
//
// Lag is measured exactly: the producer stamps each change's steady-clock time into the entry
// (server id), and the receiving sink subtracts it on apply; both threads share one clock. The
// receiver's own estimate (what /metrics shows: the sender's age + the one-way delay from the
// frame's send time and the clock-offset estimate) is printed next to it.
#include <sys/resource.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "common/log.h"
#include "common/uv.h"
#include "statesync/codec.h"
#include "statesync/service.h"

namespace {

using namespace halb;
using namespace halb::statesync;
using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

int64_t nowNs() {
  return Clock::now().time_since_epoch().count();
}

double percentile(std::vector<double>& v, double q) {
  if (v.empty()) return 0;
  size_t i = std::min(v.size() - 1, static_cast<size_t>(q * static_cast<double>(v.size())));
  std::nth_element(v.begin(), v.begin() + static_cast<long>(i), v.end());
  return v[i];
}

double threadCpuSeconds() {
  rusage u{};
  getrusage(RUSAGE_THREAD, &u);
  return static_cast<double>(u.ru_utime.tv_sec + u.ru_stime.tv_sec) +
         static_cast<double>(u.ru_utime.tv_usec + u.ru_stime.tv_usec) / 1e6;
}

// ------------------------------------------------------------------------------ codec

void benchCodec() {
  constexpr int kEntries = 1'000'000;
  wire::Key key;
  key.fill(7);
  repl::StickEntry s;
  s.backendId = stableId("web");
  s.key.assign("\x0a\x01\x02\x03", 4);  // a source address
  s.serverId = stableId("web/web1");
  s.ttlLeft = 30min;
  s.version = {1700000000, 0};
  std::vector<std::string> frames;
  auto t0 = Clock::now();
  for (int done = 0; done < kEntries;) {
    wire::FrameBuilder b;
    auto w = wire::BatchWriter::updates(b.payload(), static_cast<uint64_t>(done) + 1, 0);
    std::string body;
    for (int i = 0; i < 512 && done < kEntries; ++i, ++done) {
      s.version.seq = static_cast<uint64_t>(done);
      std::memcpy(s.key.data(), &done, 4);
      body.clear();
      wire::encodeEntryBody(body, repl::ChangeKind::StickUpsert, s, {});
      w.addUpdate(repl::ChangeKind::StickUpsert, 800, body);
    }
    w.finish();
    frames.push_back(std::move(b).seal(1, wire::MsgType::Updates, frames.size(), key));
  }
  double enc = std::chrono::duration<double>(Clock::now() - t0).count();
  size_t bytes = 0;
  for (auto& f : frames) bytes += f.size();

  t0 = Clock::now();
  size_t decoded = 0;
  wire::FrameReader reader;
  for (auto& f : frames) {
    reader.feed(wire::bytes(f));
    auto r = reader.next();
    if (!r || !r.value() || !wire::verifyFrame(**r, key)) std::abort();
    auto u = wire::decodeUpdates(r.value()->payload);
    if (!u) std::abort();
    decoded += u->entries.size();
  }
  double dec = std::chrono::duration<double>(Clock::now() - t0).count();
  std::printf(
      "codec  stick upsert: %.0f B/entry on the wire; encode+seal %.2f M entries/s; "
      "read+verify+decode %.2f M entries/s\n",
      static_cast<double>(bytes) / kEntries, kEntries / enc / 1e6,
      static_cast<double>(decoded) / dec / 1e6);

  // Connection entries with both TCP states (continuity on): the heavy kind.
  repl::ConnEntry c;
  c.client = *SocketAddress::parse("198.51.100.7:51234");
  c.frontend = *SocketAddress::parse("192.0.2.100:443");
  c.serverLocal = *SocketAddress::parse("192.0.2.101:40000");
  c.server = *SocketAddress::parse("10.0.1.11:8080");
  c.clientTcp = repl::TcpRepairState{};
  c.clientTcp->sndSeq = 1;
  c.clientTcp->rcvSeq = 2;
  c.clientTcp->mss = 1460;
  c.clientTcp->options = 7;
  c.serverTcp = c.clientTcp;
  c.appState = "keep-alive";
  constexpr int kConns = 200'000;
  t0 = Clock::now();
  frames.clear();
  for (int done = 0; done < kConns;) {
    wire::FrameBuilder b;
    auto w = wire::BatchWriter::updates(b.payload(), 1, 0);
    std::string body;
    for (int i = 0; i < 512 && done < kConns; ++i, ++done) {
      c.id = static_cast<uint64_t>(done);
      body.clear();
      wire::encodeEntryBody(body, repl::ChangeKind::ConnUpdate, {}, c);
      w.addUpdate(repl::ChangeKind::ConnUpdate, 800, body);
    }
    w.finish();
    frames.push_back(std::move(b).seal(1, wire::MsgType::Updates, frames.size(), key));
  }
  enc = std::chrono::duration<double>(Clock::now() - t0).count();
  bytes = 0;
  for (auto& f : frames) bytes += f.size();
  t0 = Clock::now();
  decoded = 0;
  for (auto& f : frames) {
    reader.feed(wire::bytes(f));
    auto r = reader.next();
    if (!r || !r.value() || !wire::verifyFrame(**r, key)) std::abort();
    decoded += wire::decodeUpdates(r.value()->payload)->entries.size();
  }
  dec = std::chrono::duration<double>(Clock::now() - t0).count();
  std::printf(
      "codec  conn update with 2 TCP states: %.0f B/entry; encode+seal %.2f M entries/s; "
      "read+verify+decode %.2f M entries/s\n",
      static_cast<double>(bytes) / kConns, kConns / enc / 1e6,
      static_cast<double>(decoded) / dec / 1e6);
}

// ------------------------------------------------------------------------------ loopback

// The receiving node's stick table, as far as the benchmark cares: it records the lag of each
// applied entry (server id = creation time in steady nanoseconds).
class LagSink : public repl::TableSink, public repl::TableSource {
 public:
  bool applyStick(const repl::StickEntry& e, TimePoint) override {
    int64_t lag = nowNs() - static_cast<int64_t>(e.serverId);
    std::lock_guard lock(mu_);
    lagsMs_.push_back(static_cast<double>(lag) / 1e6);
    applied_.fetch_add(1, std::memory_order_relaxed);
    lastApplyNs_.store(nowNs(), std::memory_order_relaxed);
    return true;
  }
  bool removeStick(uint64_t, const std::string&, repl::Version) override { return true; }
  void forEachStick(const std::function<void(const repl::StickEntry&)>&) const override {}
  void forEachConn(const std::function<void(const repl::ConnEntry&)>&) const override {}
  std::vector<double> takeLags() {
    std::lock_guard lock(mu_);
    return std::move(lagsMs_);
  }
  uint64_t applied() const { return applied_.load(std::memory_order_relaxed); }
  int64_t lastApplyNs() const { return lastApplyNs_.load(std::memory_order_relaxed); }

 private:
  std::mutex mu_;
  std::vector<double> lagsMs_;
  std::atomic<uint64_t> applied_{0};
  std::atomic<int64_t> lastApplyNs_{0};
};

struct NodeThread {
  NodeThread(const std::string& name, std::vector<repl::ChangeQueue*> queues, LagSink& tables) {
    cfg.self.name = name;
    cfg.statesync.enabled = true;
    cfg.statesync.listen = *SocketAddress::parse("127.0.0.1:0");
    ServiceOptions opt;
    std::string k = "bench-shared-secret-0123456789";
    opt.key = std::vector<uint8_t>(k.begin(), k.end());
    service = std::make_unique<Service>(loop, cfg, tables, tables, std::move(queues), Hooks{}, opt);
    std::string err;
    if (!service->start(err)) {
      std::fprintf(stderr, "%s\n", err.c_str());
      std::exit(1);
    }
    stopper = std::make_unique<uv::Async>(loop, [this] {
      cpuSeconds = threadCpuSeconds() - cpuStart;
      service->stop();
      loop.stop();
    });
  }
  void run() {
    thread = std::thread([this] {
      cpuStart = threadCpuSeconds();
      loop.run();
    });
  }
  void stop() {
    stopper->send();
    thread.join();
  }
  uv::Loop loop;
  config::Config cfg;
  std::unique_ptr<Service> service;
  std::unique_ptr<uv::Async> stopper;
  std::thread thread;
  double cpuStart = 0, cpuSeconds = 0;
};

struct RunResult {
  double seconds = 0;
  uint64_t sent = 0, applied = 0;
  std::vector<double> lags;
  double estP50 = 0, estP99 = 0;
  double cpuSender = 0, cpuReceiver = 0;
  uint64_t drops = 0;
};

// rate = 0: as fast as the queue takes them.
RunResult replicate(int rate, double seconds, uint64_t burst) {
  // Large enough that the burst never finds it full (a full queue means lost changes and a
  // resync, which is the data plane's behaviour, not what this measures).
  repl::ChangeQueue queue(1 << 20);
  LagSink senderTables, receiverTables;
  NodeThread a("lb1", {&queue}, senderTables);
  NodeThread b("lb2", {}, receiverTables);
  a.service->setPeer(b.service->listenAddress());
  b.service->setPeer(a.service->listenAddress());
  a.run();
  b.run();
  // Wait for the session (the receiver's table is empty, so in sync = connected + snapshot).
  auto deadline = Clock::now() + 5s;
  while (!(a.service->inSync() && b.service->inSync()) && Clock::now() < deadline)
    std::this_thread::sleep_for(1ms);

  RunResult r;
  uint64_t seq = 0;
  auto push = [&](uint64_t i) {
    repl::Change c;
    c.kind = repl::ChangeKind::StickUpsert;
    c.at = Clock::now();
    c.stick.backendId = 1;
    c.stick.key.assign(reinterpret_cast<const char*>(&i), sizeof i);  // a new user each time
    c.stick.serverId = static_cast<uint64_t>(c.at.time_since_epoch().count());
    c.stick.ttlLeft = 30min;
    c.stick.version = {1, ++seq};
    while (!queue.push(std::move(c)))
      std::this_thread::yield();  // the bench waits; a worker would drop
  };
  auto start = Clock::now();
  if (rate > 0) {
    // Paced in 1 ms slots, as requests arrive.
    uint64_t total = static_cast<uint64_t>(rate * seconds);
    for (uint64_t i = 0; i < total; ++i) {
      auto due = start + std::chrono::nanoseconds(
                             static_cast<int64_t>(1e9 * static_cast<double>(i) / rate));
      if (Clock::now() < due) std::this_thread::sleep_until(due);
      push(i);
    }
    r.sent = total;
  } else {
    for (uint64_t i = 0; i < burst; ++i) push(i);
    r.sent = burst;
  }
  deadline = Clock::now() + 10s;
  while (receiverTables.applied() < r.sent && Clock::now() < deadline)
    std::this_thread::sleep_for(1ms);
  r.seconds =
      static_cast<double>(receiverTables.lastApplyNs() - start.time_since_epoch().count()) / 1e9;
  r.applied = receiverTables.applied();
  r.lags = receiverTables.takeLags();
  a.stop();
  b.stop();
  const Session& rs = b.service->session();
  std::vector<uint64_t> counts;
  double sum = 0;
  rs.lagHistogram().addTo(counts, sum);
  r.estP50 = Histogram::quantile(rs.lagHistogram().bounds(), counts, 0.5) * 1000;
  r.estP99 = Histogram::quantile(rs.lagHistogram().bounds(), counts, 0.99) * 1000;
  r.cpuSender = a.cpuSeconds;
  r.cpuReceiver = b.cpuSeconds;
  r.drops = a.service->session().metrics().overflowDrops;
  return r;
}

}  // namespace

int main(int argc, char** argv) {
  int rate = 20000;
  double seconds = 5;
  uint64_t burst = 500000;
  for (int i = 1; i + 1 < argc; i += 2) {
    std::string a = argv[i];
    if (a == "--rate") rate = std::atoi(argv[i + 1]);
    if (a == "--seconds") seconds = std::atof(argv[i + 1]);
    if (a == "--burst") burst = std::strtoull(argv[i + 1], nullptr, 10);
  }
  std::setvbuf(stdout, nullptr, _IOLBF, 0);
  log::configure(log::Level::Warn, log::Format::Text);
  benchCodec();

  RunResult t = replicate(0, 0, burst);
  std::printf(
      "loopback throughput: %llu new sticky users replicated in %.3f s = %.0f entries/s "
      "(applied %llu, dropped %llu)\n",
      static_cast<unsigned long long>(t.sent), t.seconds,
      static_cast<double>(t.applied) / t.seconds, static_cast<unsigned long long>(t.applied),
      static_cast<unsigned long long>(t.drops));

  RunResult l = replicate(rate, seconds, 0);
  std::vector<double> lags = l.lags;
  double p50 = percentile(lags, 0.50), p99 = percentile(lags, 0.99), p999 = percentile(lags, 0.999);
  double mx = lags.empty() ? 0 : *std::max_element(lags.begin(), lags.end());
  std::printf(
      "loopback lag at %d updates/s for %.0f s (%llu applied): p50 %.2f ms, p99 %.2f ms, "
      "p99.9 %.2f ms, max %.2f ms\n",
      rate, seconds, static_cast<unsigned long long>(l.applied), p50, p99, p999, mx);
  std::printf(
      "  receiver's own estimate (/metrics: sender age + one-way delay via clock offset): p50 %.2f "
      "ms, p99 %.2f ms\n",
      l.estP50, l.estP99);
  std::printf("  control-thread CPU: sender %.1f%%, receiver %.1f%% of one core\n",
              100 * l.cpuSender / seconds, 100 * l.cpuReceiver / seconds);
  return 0;
}
