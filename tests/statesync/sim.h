#pragma once
// A deterministic in-memory network for Sessions: endpoints connect through pipes with a
// latency and an optional bandwidth, which a test can stall, cut, or tamper with. Time is a
// ManualClock that run() advances event by event, ticking each session at its deadline.
#include <gtest/gtest.h>

#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "common/time.h"
#include "statesync/session.h"

namespace halb::statesync::test {

class SimNet {
 public:
  class Endpoint;

  struct Pipe {
    Endpoint* end[2] = {nullptr, nullptr};
    ConnId id[2] = {0, 0};
    bool open[2] = {true, true};
    size_t inflight[2] = {0, 0};  // bytes sent by side i and not yet delivered
    TimePoint linkFree[2] = {};   // bandwidth model: when side i's direction is idle again
  };

  class Endpoint : public Transport {
   public:
    Endpoint(SimNet& net, std::string name) : net_(net), name_(std::move(name)) {}
    const std::string& name() const { return name_; }
    Session* session = nullptr;
    Duration skew{};  // this node's monotonic clock runs this far ahead of the network's
    TimePoint now() const { return net_.clock.now() + skew; }
    Endpoint* peer = nullptr;  // whom connect() reaches
    bool accepting = true;
    size_t bytesPerMs = 0;  // 0 = unlimited
    // Raw endpoints (no session) keep what they receive here, per connection.
    std::map<ConnId, std::string> received;
    std::vector<std::string> sentFrames;  // every frame this endpoint sent, in order
    std::vector<ConnId> accepted;
    std::function<void(ConnId, std::string&)> tamper;  // may rewrite or clear an outgoing frame
    size_t connectCalls = 0;
    std::vector<TimePoint> connectTimes;

    ConnId connect() override {
      ++connectCalls;
      connectTimes.push_back(now());
      ConnId id = net_.nextId_++;
      Endpoint* target = peer;
      net_.at(net_.clock.now() + net_.latency, [this, id, target] {
        if (!target || !target->accepting || net_.partitioned) {
          if (session) session->onConnectFailed(id, now());
          return;
        }
        auto pipe = std::make_shared<Pipe>();
        ConnId tid = net_.nextId_++;
        pipe->end[0] = this;
        pipe->id[0] = id;
        pipe->end[1] = target;
        pipe->id[1] = tid;
        pipes_[id] = {pipe, 0};
        target->pipes_[tid] = {pipe, 1};
        target->accepted.push_back(tid);
        if (session) session->onConnected(id, now());
        if (target->session) target->session->onAccepted(tid, target->now());
      });
      return id;
    }

    void send(ConnId id, std::string frame) override {
      sentFrames.push_back(frame);
      if (tamper) tamper(id, frame);
      auto it = pipes_.find(id);
      if (it == pipes_.end() || frame.empty()) return;
      auto [pipe, side] = it->second;
      if (!pipe->open[side]) return;
      size_t n = frame.size();
      pipe->inflight[side] += n;
      TimePoint start = std::max(net_.clock.now(), pipe->linkFree[side]);
      TimePoint done =
          start +
          (bytesPerMs ? Duration(std::chrono::microseconds(n * 1000 / bytesPerMs)) : Duration{});
      pipe->linkFree[side] = done;
      net_.at(done + net_.latency, [this, pipe, side, n, frame = std::move(frame)] {
        pipe->inflight[side] -= n;
        int other = 1 - side;
        if (!pipe->open[other]) return;
        Endpoint* to = pipe->end[other];
        if (to->session)
          to->session->onData(pipe->id[other], wire::bytes(frame), to->now());
        else
          to->received[pipe->id[other]] += frame;
        if (session && pipe->open[side]) session->onWritable(now());
      });
    }

    size_t queuedBytes(ConnId id) const override {
      auto it = pipes_.find(id);
      return it == pipes_.end() ? 0 : it->second.first->inflight[it->second.second];
    }

    // Graceful: what was sent still arrives, then the other side sees the close.
    void close(ConnId id) override {
      auto it = pipes_.find(id);
      if (it == pipes_.end()) return;
      auto [pipe, side] = it->second;
      pipes_.erase(it);
      pipe->open[side] = false;
      TimePoint when = std::max(net_.clock.now(), pipe->linkFree[side]) + net_.latency;
      net_.at(when, [pipe, side, this] {
        int other = 1 - side;
        if (!pipe->open[other]) return;
        pipe->open[other] = false;
        Endpoint* to = pipe->end[other];
        to->pipes_.erase(pipe->id[other]);
        if (to->session) to->session->onClosed(pipe->id[other], "closed by peer", to->now());
      });
    }

    // Raw use (attackers): send bytes as-is on a connection.
    void rawSend(ConnId id, const std::string& bytes) { send(id, bytes); }
    size_t openConnections() const { return pipes_.size(); }
    std::vector<ConnId> connections() const {
      std::vector<ConnId> ids;
      for (const auto& [id, p] : pipes_) ids.push_back(id);
      return ids;
    }

    // Both ends see the connection die at once (a reset), bytes in flight are lost.
    void cutAll() {
      auto copy = pipes_;
      for (auto& [id, ps] : copy) {
        auto [pipe, side] = ps;
        for (int s = 0; s < 2; ++s) {
          if (!pipe->open[s]) continue;
          pipe->open[s] = false;
          Endpoint* e = pipe->end[s];
          e->pipes_.erase(pipe->id[s]);
          if (e->session) e->session->onClosed(pipe->id[s], "connection reset", e->now());
        }
      }
    }

   private:
    friend class SimNet;
    SimNet& net_;
    std::string name_;
    std::map<ConnId, std::pair<std::shared_ptr<Pipe>, int>> pipes_;
  };

  ManualClock clock;
  Duration latency = std::chrono::microseconds(100);
  bool partitioned = false;

  Endpoint& endpoint(const std::string& name) {
    endpoints_.push_back(std::make_unique<Endpoint>(*this, name));
    return *endpoints_.back();
  }

  void at(TimePoint t, std::function<void()> fn) {
    events_.emplace(std::make_pair(t, seq_++), std::move(fn));
  }

  // Advances time by `d`, delivering events and ticking sessions at their deadlines.
  void run(Duration d) {
    TimePoint end = clock.now() + d;
    for (;;) {
      int spins = 0;
      for (bool progress = true; progress;) {
        progress = false;
        ASSERT_LT(++spins, 1000000) << "the simulation does not advance";
        if (!events_.empty() && events_.begin()->first.first <= clock.now()) {
          auto fn = std::move(events_.begin()->second);
          events_.erase(events_.begin());
          fn();
          progress = true;
          continue;
        }
        for (auto& e : endpoints_) {
          if (e->session && e->session->nextDeadline() <= e->now()) {
            e->session->onTick(e->now());
            progress = true;
          }
        }
      }
      if (clock.now() >= end) return;
      TimePoint next = end;
      if (!events_.empty()) next = std::min(next, events_.begin()->first.first);
      for (auto& e : endpoints_)
        if (e->session && e->session->nextDeadline() != TimePoint::max())
          next = std::min(next, e->session->nextDeadline() - e->skew);
      clock.set(std::max(next, clock.now()));
    }
  }

  // Runs until `done` or `limit` passes; true if done.
  bool runUntil(const std::function<bool()>& done, Duration limit,
                Duration step = std::chrono::milliseconds(1)) {
    TimePoint end = clock.now() + limit;
    while (!done()) {
      if (clock.now() >= end) return false;
      run(step);
    }
    return true;
  }

 private:
  friend class Endpoint;
  std::map<std::pair<TimePoint, uint64_t>, std::function<void()>> events_;
  uint64_t seq_ = 0;
  ConnId nextId_ = 1;
  std::vector<std::unique_ptr<Endpoint>> endpoints_;
};

// Records what a session reports.
struct RecordingEvents : Events {
  std::vector<std::string> log;
  int peerUp = 0, peerLost = 0, syncComplete = 0, authFailures = 0, refused = 0, protocolErrors = 0,
      resyncs = 0;
  std::string lastLoss, lastRefusal, lastAuthFailure, lastProtocolError;
  std::map<uint64_t, bool> transfers;
  std::vector<uint64_t> transfersReceived;
  std::vector<std::vector<repl::TicketKey>> ticketKeys;

  void onTicketKeys(std::vector<repl::TicketKey> keys) override {
    ticketKeys.push_back(std::move(keys));
  }

  void onPeerUp(std::string_view n) override {
    ++peerUp;
    log.push_back("up " + std::string(n));
  }
  void onPeerLost(std::string_view r) override {
    ++peerLost;
    lastLoss = std::string(r);
    log.push_back("lost " + lastLoss);
  }
  void onSyncComplete() override {
    ++syncComplete;
    log.push_back("sync");
  }
  void onAuthFailure(ConnId, std::string_view d) override {
    ++authFailures;
    lastAuthFailure = std::string(d);
  }
  void onRefused(ConnId, std::string_view r) override {
    ++refused;
    lastRefusal = std::string(r);
  }
  void onProtocolError(ConnId, std::string_view d) override {
    ++protocolErrors;
    lastProtocolError = std::string(d);
  }
  void onResync(std::string_view) override { ++resyncs; }
  void onTransferDone(uint64_t id, bool ok) override { transfers[id] = ok; }
  void onTransferReceived(uint64_t id, size_t) override { transfersReceived.push_back(id); }
};

}  // namespace halb::statesync::test
