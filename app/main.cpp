// The halb binary: one executable for the daemon and the operator's tools.
#include <cstdio>
#include <cstring>
#include <string>

#include "app/cli.h"

#ifndef HALB_VERSION
#define HALB_VERSION "unknown"
#endif

namespace {

constexpr const char* kUsage =
    "usage: halb <command> [options]\n"
    "\n"
    "commands:\n"
    "  run -c FILE [--node NAME]     run this node (the daemon; systemd starts it)\n"
    "  check -c FILE [--node NAME]   validate a configuration and print this node's settings\n"
    "  status [ADMIN]                print a running node's state as JSON\n"
    "  metrics [ADMIN]               print a running node's Prometheus metrics\n"
    "  handover [ADMIN]              make a master hand mastership to its peer (maintenance)\n"
    "  reload [ADMIN]                make a running node re-read its configuration\n"
    "  drill --http VIP:PORT ...     drive load through a VIP and report what clients saw\n"
    "  --version                     print the version\n"
    "  --help                        print this help\n"
    "\n"
    "One configuration file serves both nodes of a pair; --node picks the entry of nodes:\n"
    "(default: the hostname). ADMIN is --admin HOST:PORT, or -c FILE [--node NAME] to take\n"
    "the node's admin address from its configuration (default 127.0.0.1:9100).\n"
    "Documentation: docs/configuration.md, docs/operations.md\n";

struct Command {
  const char* name;
  int (*run)(const halb::app::Args&);
};

constexpr Command kCommands[] = {
    {"run", halb::app::cmdRun},           {"check", halb::app::cmdCheck},
    {"status", halb::app::cmdStatus},     {"metrics", halb::app::cmdMetrics},
    {"handover", halb::app::cmdHandover}, {"reload", halb::app::cmdReload},
    {"drill", halb::app::cmdDrill},
};

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fputs(kUsage, stderr);
    return 2;
  }
  std::string cmd = argv[1];
  if (cmd == "--version" || cmd == "version") {
    std::printf("halb %s\n", HALB_VERSION);
    return 0;
  }
  if (cmd == "--help" || cmd == "-h" || cmd == "help") {
    std::fputs(kUsage, stdout);
    return 0;
  }
  halb::app::Args args(argv + 2, argv + argc);
  for (const auto& c : kCommands)
    if (cmd == c.name) return c.run(args);
  std::fprintf(stderr, "halb: unknown command '%s'\n\n%s", cmd.c_str(), kUsage);
  return 2;
}
