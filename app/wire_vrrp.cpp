#include "app/wire_vrrp.h"

#include "app/admin.h"
#include "app/node.h"
#include "common/log.h"
#include "config/loader.h"
#include "vrrp/instance.h"

namespace halb::app {

namespace {
// What a running VRRP instance was built from, for spotting changes on reload.
std::string vrrpFingerprint(const config::Config& c) {
  std::string out = config::describe(c);
  auto from = out.find("vips:"), to = out.find("statesync:");
  return from == std::string::npos
             ? out
             : out.substr(from, to == std::string::npos ? std::string::npos : to - from);
}
}  // namespace

bool wireVrrp(Node& node, vrrp::Hooks hooks, std::unique_ptr<vrrp::Instance>& out, std::string& error) {
  const config::Config& cfg = *node.config();
  if (!cfg.vrrp.enabled) return true;
  HALB_LOG(Info, "vrrp") << "control thread scheduling: " << vrrp::raiseControlThreadPriority();

  auto instance = std::make_unique<vrrp::Instance>(node.loop(), cfg, std::move(hooks));
  if (error = instance->start(); !error.empty()) return false;
  vrrp::Instance* p = instance.get();
  node.addStatus("vrrp", [p](JsonWriter& j) { p->writeStatus(j); });
  node.addMetrics([p](PromWriter& w) { p->writeMetrics(w); });
  node.onStop([p](std::function<void()> done) {
    p->stop(/*graceful=*/true);
    p->whenHooksIdle(std::move(done));
  });
  // VRRP settings are read at start; changing them live would re-run an election anyway.
  node.onReload([before = vrrpFingerprint(cfg)](const config::ConfigPtr& next) {
    if (vrrpFingerprint(*next) != before) {
      HALB_LOG(Warn, "vrrp") << "VRRP settings or VIPs changed; they take effect after a restart "
                                "(run `halb handover` on the master first)";
    }
  });
  node.admin().handle("POST", "/handover", [p](const AdminRequest&) {
    if (!p->handover()) return AdminResponse::text(409, "not master: nothing to hand over\n");
    return AdminResponse::text(200, "handed over: sent priority 0 and released the VIPs\n");
  });
  out = std::move(instance);
  return true;
}

}  // namespace halb::app
