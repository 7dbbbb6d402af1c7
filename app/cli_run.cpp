#include <unistd.h>

#include <cstdio>

#include "app/cli.h"
#include "app/node.h"
#include "config/loader.h"

namespace halb::app {

int cmdRun(const Args& args) {
  std::string file, node;
  ArgParser p(args);
  while (!p.done()) {
    if (p.option("--config", "-c", file) || p.option("--node", "-n", node)) {
      if (!p.error.empty()) break;
      continue;
    }
    p.error = "unknown argument '" + p.current() + "'";
    break;
  }
  if (p.error.empty() && file.empty()) p.error = "missing -c FILE";
  if (!p.error.empty()) {
    std::fprintf(stderr, "halb run: %s\nusage: halb run -c FILE [--node NAME]\n", p.error.c_str());
    return 2;
  }
  config::LoadOptions opt;
  opt.node = node;
  config::LoadResult res = config::loadConfigFile(file, opt);
  for (const auto& w : res.warnings) std::fprintf(stderr, "%s\n", w.toString().c_str());
  if (!res.ok()) {
    for (const auto& e : res.errors) std::fprintf(stderr, "%s\n", e.toString().c_str());
    std::fprintf(stderr, "halb run: %zu configuration error%s; not starting\n", res.errors.size(),
                 res.errors.size() == 1 ? "" : "s");
    return 1;
  }
  Node n(res.config, file, res.config->self.name);
  return n.run();
}

}  // namespace halb::app
