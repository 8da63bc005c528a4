// The bluegreen executable: flag parsing and dispatch to the components. The only code here that
// is not shared with the tests.
#include <csignal>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <sstream>
#include <string>

#include <CLI/CLI.hpp>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

#include "proxy/config.h"
#include "proxy/proxy_server.h"

namespace {

constexpr const char* kVersion = "0.1.0";

int RunProxy(const std::string& config_path, bool check_only) {
  if (check_only) {
    std::ifstream in(config_path);
    if (!in) {
      std::cerr << "error: cannot read " << config_path << "\n";
      return 2;
    }
    std::stringstream ss;
    ss << in.rdbuf();
    auto cfg = bluegreen::proxy::ParseProxyConfig(ss.str());
    if (!cfg.ok()) {
      std::cerr << config_path << ": invalid config:\n" << cfg.status().message() << "\n";
      return 2;
    }
    std::cout << config_path << ": ok (" << cfg->listeners.size() << " listeners, "
              << cfg->target_groups.size() << " target groups)\n";
    return 0;
  }
  std::signal(SIGPIPE, SIG_IGN);
  bluegreen::proxy::ProxyServer server(config_path);
  bluegreen::Status st = server.Start();
  if (!st.ok()) {
    std::cerr << "error: " << st.message() << "\n";
    return st.code() == bluegreen::StatusCode::kInvalidArgument ? 2 : 1;
  }
  return server.Run();
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"bluegreen: blue/green continuous delivery with a built-in load balancer"};
  app.require_subcommand(1);
  app.set_version_flag("--version", kVersion);
  std::string log_level = "info";
  app.add_option("--log-level", log_level, "trace, debug, info, warn, error")
      ->capture_default_str();

  std::string config_path;
  bool check_only = false;
  CLI::App* proxy = app.add_subcommand(
      "proxy",
      "Run the data plane: listeners, target groups, health checks, swaps.\n"
      "Example: bluegreen proxy --config examples/proxy.yaml");
  proxy->add_option("-c,--config", config_path, "proxy config file (YAML)")->required();
  proxy->add_flag("--check", check_only, "validate the config file and exit");

  CLI::App* version = app.add_subcommand("version", "Print the version");

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }

  auto logger = spdlog::stderr_color_mt("bluegreen");
  spdlog::set_default_logger(logger);
  spdlog::set_level(spdlog::level::from_str(log_level));
  spdlog::set_pattern("%Y-%m-%dT%H:%M:%S.%e %^%l%$ %v");

  if (version->parsed()) {
    std::cout << "bluegreen " << kVersion << "\n";
    return 0;
  }
  if (proxy->parsed()) return RunProxy(config_path, check_only);
  return 2;
}
