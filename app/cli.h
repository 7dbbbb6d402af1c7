#pragma once
// Subcommands of the `halb` binary. Each takes the arguments after its name and returns the
// process exit status.
#include <string>
#include <vector>

namespace halb::app {

using Args = std::vector<std::string>;

int cmdCheck(const Args& args);
int cmdRun(const Args& args);
int cmdStatus(const Args& args);
int cmdMetrics(const Args& args);
int cmdHandover(const Args& args);
int cmdReload(const Args& args);
int cmdDrill(const Args& args);  // app/drill.cpp

// Small argument helpers shared by the subcommands.
struct ArgParser {
  explicit ArgParser(const Args& a) : args(a) {}
  // Matches "--name VALUE", "-n VALUE" or "--name=VALUE" at the current position.
  bool option(const char* longName, const char* shortName, std::string& out);
  bool flag(const char* longName, const char* shortName = nullptr);
  bool done() const { return pos >= args.size(); }
  const std::string& current() const { return args[pos]; }
  std::string error;  // set when an option lacks its value

  const Args& args;
  size_t pos = 0;
};

}  // namespace halb::app
