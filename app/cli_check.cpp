#include <cstdio>

#include "app/cli.h"
#include "config/loader.h"

namespace halb::app {

bool ArgParser::option(const char* longName, const char* shortName, std::string& out) {
  if (done()) return false;
  const std::string& a = args[pos];
  std::string eq = std::string(longName) + "=";
  if (a.rfind(eq, 0) == 0) {
    out = a.substr(eq.size());
    ++pos;
    return true;
  }
  if (a == longName || (shortName && a == shortName)) {
    if (pos + 1 >= args.size()) {
      error = a + " needs a value";
      ++pos;
      return true;
    }
    out = args[pos + 1];
    pos += 2;
    return true;
  }
  return false;
}

bool ArgParser::flag(const char* longName, const char* shortName) {
  if (done()) return false;
  if (args[pos] == longName || (shortName && args[pos] == shortName)) {
    ++pos;
    return true;
  }
  return false;
}

int cmdCheck(const Args& args) {
  std::string file, node;
  bool quiet = false;
  ArgParser p(args);
  while (!p.done()) {
    if (p.flag("--quiet", "-q")) {
      quiet = true;
      continue;
    }
    if (p.option("--config", "-c", file) || p.option("--node", "-n", node)) {
      if (!p.error.empty()) break;
      continue;
    }
    p.error = "unknown argument '" + p.current() + "'";
    break;
  }
  if (p.error.empty() && file.empty()) p.error = "missing -c FILE";
  if (!p.error.empty()) {
    std::fprintf(stderr, "halb check: %s\nusage: halb check -c FILE [--node NAME] [--quiet]\n", p.error.c_str());
    return 2;
  }
  config::LoadOptions opt;
  opt.node = node;
  config::LoadResult res = config::loadConfigFile(file, opt);
  for (const auto& w : res.warnings) std::fprintf(stderr, "%s\n", w.toString().c_str());
  if (!res.ok()) {
    for (const auto& e : res.errors) std::fprintf(stderr, "%s\n", e.toString().c_str());
    std::fprintf(stderr, "%zu error%s\n", res.errors.size(), res.errors.size() == 1 ? "" : "s");
    return 1;
  }
  std::printf("OK\n");
  if (!quiet) std::printf("%s", config::describe(*res.config).c_str());
  return 0;
}

}  // namespace halb::app
