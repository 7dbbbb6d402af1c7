#pragma once
// One halb node: the control thread (libuv loop) that owns every service — data-plane
// engine, VRRP instance, state sync, health checks, admin endpoint — and wires them together.
// This is the only place where the libraries meet (DESIGN.md: app/ wires, libraries never
// include each other's internals).
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "common/json.h"
#include "common/prom.h"
#include "common/uv.h"
#include "config/config.h"

namespace halb::app {

class AdminServer;

class Node {
 public:
  Node(config::ConfigPtr config, std::string configPath, std::string nodeName);
  ~Node();
  Node(const Node&) = delete;
  Node& operator=(const Node&) = delete;

  // Starts every service and runs the control loop until a clean stop. Returns the process
  // exit status.
  int run();

  // Begins a graceful stop (SIGTERM): stop hooks run newest first, each may finish later.
  void stop();
  // Re-reads the configuration file (SIGHUP). An invalid file changes nothing.
  void reload();

  uv::Loop& loop() { return loop_; }
  const config::ConfigPtr& config() const { return config_; }
  AdminServer& admin() { return *admin_; }
  const std::string& name() const { return nodeName_; }

  // Registration points for the services' wiring code.
  void addMetrics(std::function<void(PromWriter&)> fn);
  void addStatus(std::string key, std::function<void(JsonWriter&)> fn);
  void onStop(std::function<void(std::function<void()> done)> fn);
  void onReload(std::function<void(const config::ConfigPtr& next)> fn);

  std::string metricsText();
  std::string statusJson();

 private:
  struct Services;
  bool startServices();
  bool startDataPlane();  // false: the engine could not start (e.g. a bind error)
  void runStopHooks();
  void notifySystemd(const std::string& state);

  uv::Loop loop_;
  config::ConfigPtr config_;
  std::string configPath_;
  std::string nodeName_;
  std::unique_ptr<AdminServer> admin_;
  std::unique_ptr<Services> services_;
  std::vector<std::function<void(PromWriter&)>> metrics_;
  std::vector<std::pair<std::string, std::function<void(JsonWriter&)>>> status_;
  std::vector<std::function<void(std::function<void()>)>> stopHooks_;
  std::vector<std::function<void(const config::ConfigPtr&)>> reloadHooks_;
  std::vector<std::unique_ptr<uv::Signal>> signals_;
  bool stopping_ = false;
  TimePoint startedAt_;
  uint64_t reloads_ = 0, reloadFailures_ = 0;
};

}  // namespace halb::app
