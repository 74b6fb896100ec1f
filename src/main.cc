// The sluice binary: parses the command line and hands each subcommand to the library
// that does the work. Nothing here is linked into the tests, so it stays thin: flag
// values are checked and converted, the library is called, its output printed.
#include <fmt/format.h>

#include <CLI/CLI.hpp>
#include <charconv>
#include <cstdio>
#include <functional>
#include <iterator>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "config/config.h"
#include "rls/ratelimit_config.h"
#include "server/server.h"
#include "sim/simulate.h"
#include "sluice/limiter.h"

namespace sluice {
namespace {

// A command line that parsed but names something impossible ("--period 1fortnight").
// CLI11's own parse errors keep CLI11's exit codes.
constexpr int kExitBadValue = 2;

// A subcommand: its CLI11 node, and what to run once the command line chose it.
struct Command {
  CLI::App* app = nullptr;
  std::function<int()> run;
};

int BadValue(std::string_view command, std::string_view message) {
  fmt::print(stderr, "sluice {}: {}\n", command, message);
  return kExitBadValue;
}

// --- sluice simulate --------------------------------------------------------------

// The flags as typed. They are taken as strings and converted here rather than by
// CLI11, whose integer conversion wraps "-5" to a huge unsigned value and reads "010"
// as octal; this way every bad value gets one clear message and exit status 2.
struct SimulateFlags {
  std::string algorithm = "all";
  std::string limit = "10";
  std::string period = "1s";
  std::string burst;  // empty: equal to the limit
  std::string pattern = "spike";
  std::string rate = "30";
  std::string duration = "10s";
  std::string cost = "1";
  bool csv = false;
};

std::optional<double> ParseRate(std::string_view text) {
  double value = 0;
  const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (text.empty() || ec != std::errc() || end != text.data() + text.size()) return std::nullopt;
  return value;
}

std::string AlgorithmChoices() {
  std::string choices;
  for (Algorithm a : kAllAlgorithms) choices += fmt::format("{}, ", AlgorithmName(a));
  return choices + "or all";
}

int RunSimulate(const SimulateFlags& flags) {
  constexpr std::string_view kCommand = "simulate";
  constexpr std::string_view kDurationForm =
      "expected an integer and a unit (ns, us, ms, s, m, h, d), e.g. 500ms or 10s";
  sim::SimulationSpec spec;

  if (flags.algorithm == "all") {
    spec.algorithms.assign(std::begin(kAllAlgorithms), std::end(kAllAlgorithms));
  } else if (const std::optional<Algorithm> a = ParseAlgorithm(flags.algorithm)) {
    spec.algorithms = {*a};
  } else {
    return BadValue(kCommand, fmt::format("--algorithm: unknown algorithm \"{}\"; expected {}",
                                          flags.algorithm, AlgorithmChoices()));
  }

  const std::optional<uint64_t> limit = sim::ParseCount(flags.limit);
  if (!limit || *limit > kMaxQuantity) {
    return BadValue(kCommand, fmt::format("--limit: \"{}\" is not a whole number from 0 to {}",
                                          flags.limit, kMaxQuantity));
  }
  spec.limit.limit = *limit;

  const std::optional<Duration> period = sim::ParseDuration(flags.period);
  if (!period || *period <= Duration(0)) {
    return BadValue(kCommand, fmt::format("--period: \"{}\" is not a positive duration; {}",
                                          flags.period, kDurationForm));
  }
  spec.limit.period = *period;

  spec.limit.burst = *limit;
  if (!flags.burst.empty()) {
    const std::optional<uint64_t> burst = sim::ParseCount(flags.burst);
    if (!burst || *burst > kMaxQuantity) {
      return BadValue(kCommand, fmt::format("--burst: \"{}\" is not a whole number from 0 to {}",
                                            flags.burst, kMaxQuantity));
    }
    spec.limit.burst = *burst;
  }

  const std::optional<sim::Pattern> pattern = sim::ParsePattern(flags.pattern);
  if (!pattern) {
    return BadValue(kCommand, fmt::format("--pattern: unknown pattern \"{}\"; expected steady, "
                                          "burst or spike",
                                          flags.pattern));
  }
  spec.pattern = *pattern;

  const std::optional<double> rate = ParseRate(flags.rate);
  // Written so NaN fails too.
  if (!rate || !(*rate > 0 && *rate <= sim::kMaxRate)) {
    return BadValue(kCommand,
                    fmt::format("--rate: \"{}\" is not a number of requests per second above 0 "
                                "and at most {}",
                                flags.rate, sim::kMaxRate));
  }
  spec.rate = *rate;

  const std::optional<Duration> duration = sim::ParseDuration(flags.duration);
  if (!duration || *duration <= Duration(0)) {
    return BadValue(kCommand, fmt::format("--duration: \"{}\" is not a positive duration; {}",
                                          flags.duration, kDurationForm));
  }
  spec.duration = *duration;

  const std::optional<uint64_t> cost = sim::ParseCount(flags.cost);
  if (!cost || *cost > kMaxQuantity) {
    return BadValue(kCommand, fmt::format("--cost: \"{}\" is not a whole number from 0 to {}",
                                          flags.cost, kMaxQuantity));
  }
  spec.cost = *cost;

  // What only the combination can get wrong (a log limit too large, too many arrivals).
  const sim::SimulationResult result = sim::Simulate(spec);
  if (!result.error.empty()) return BadValue(kCommand, result.error);
  const std::string out = flags.csv ? sim::FormatCsv(spec, result) : sim::FormatTable(spec, result);
  std::fwrite(out.data(), 1, out.size(), stdout);
  return 0;
}

Command AddSimulate(CLI::App& root) {
  auto flags = std::make_shared<SimulateFlags>();
  CLI::App* app = root.add_subcommand(
      "simulate",
      "Run an arrival pattern through the algorithms on a simulated clock and print the "
      "allowed/denied counts per second");
  app->add_option("--algorithm", flags->algorithm, AlgorithmChoices())->capture_default_str();
  app->add_option("--limit", flags->limit, "Requests allowed per period")->capture_default_str();
  app->add_option("--period", flags->period, "The period of the limit, e.g. 500ms, 1s, 1m")
      ->capture_default_str();
  app->add_option("--burst", flags->burst,
                  "Capacity of token_bucket, leaky_bucket and gcra (default: the limit); the "
                  "window algorithms ignore it");
  app->add_option("--pattern", flags->pattern,
                  "steady (evenly spaced), burst (each second's arrivals in its first 10%) or "
                  "spike (rate/4, with rate*4 from 40% to 60% of the run)")
      ->capture_default_str();
  app->add_option("--rate", flags->rate, "Offered requests per second")->capture_default_str();
  app->add_option("--duration", flags->duration, "Simulated time, e.g. 10s, 5m")
      ->capture_default_str();
  app->add_option("--cost", flags->cost, "Cost of each request")->capture_default_str();
  app->add_flag("--csv", flags->csv, "Print CSV (second,algorithm,allowed,denied)");
  return Command{app, [flags] { return RunSimulate(*flags); }};
}

// --- sluice check-config / serve -------------------------------------------------------

void PrintErrors(const std::vector<config::ConfigError>& errors) {
  for (const config::ConfigError& e : errors) fmt::print(stderr, "{}\n", e.ToString());
}

config::LoadResult Load(const std::string& path) {
  return path.empty()
             ? config::LoadConfigText(config::EmbeddedQuickstart(), config::kEmbeddedQuickstartName)
             : config::LoadConfigFile(path);
}

Command AddCheckConfig(CLI::App& root) {
  auto path = std::make_shared<std::string>();
  CLI::App* app = root.add_subcommand(
      "check-config", "Validate a config file: errors as FILE:LINE:COL: message, exit 1");
  app->add_option("file", *path, "The YAML config file")->required();
  return Command{app, [path] {
                   const config::LoadResult loaded = Load(*path);
                   if (!loaded.errors.empty()) {
                     PrintErrors(loaded.errors);
                     return 1;
                   }
                   // The envoyproxy/ratelimit files it names are part of the config.
                   const std::vector<std::string>& rls = loaded.config->envoy_ratelimit_configs;
                   size_t rls_limits = 0;
                   if (!rls.empty()) {
                     rls::LoadResult rls_loaded = rls::RateLimitConfig::LoadPaths(rls);
                     if (rls_loaded.errors.empty() &&
                         loaded.config->store.backend == config::StoreConfig::Backend::kRedis) {
                       rls_loaded.errors = rls::RedisLimitErrors(*rls_loaded.config);
                     }
                     if (!rls_loaded.errors.empty()) {
                       PrintErrors(rls_loaded.errors);
                       return 1;
                     }
                     rls_limits = rls_loaded.config->limits().size();
                   }
                   fmt::print("{}: ok ({} rules", *path, loaded.config->rules.size());
                   if (!rls.empty()) fmt::print(", {} envoy rate limits", rls_limits);
                   fmt::print(")\n");
                   return 0;
                 }};
}

Command AddServe(CLI::App& root) {
  auto path = std::make_shared<std::string>();
  CLI::App* app = root.add_subcommand(
      "serve", "Run the server (without --config: the embedded quickstart config)");
  app->add_option("--config,-c", *path, "The YAML config file");
  return Command{app, [path] {
                   const config::LoadResult loaded = Load(*path);
                   if (!loaded.errors.empty()) {
                     PrintErrors(loaded.errors);
                     return 1;
                   }
                   // Before any thread starts, so every thread inherits the mask and
                   // only the main thread's sigwait sees the signals.
                   server::Server::BlockSignals();
                   server::Server server(loaded.config, *path);
                   const std::string error = server.Start();
                   if (!error.empty()) {
                     fmt::print(stderr, "sluice serve: {}\n", error);
                     return 1;
                   }
                   return server.Run();
                 }};
}

}  // namespace
}  // namespace sluice

int main(int argc, char** argv) {
  CLI::App app{"sluice: a rate limiter", "sluice"};
  app.set_version_flag("--version", "sluice " SLUICE_VERSION);
  app.require_subcommand(0, 1);
  const std::vector<sluice::Command> commands = {sluice::AddServe(app), sluice::AddCheckConfig(app),
                                                 sluice::AddSimulate(app)};

  CLI11_PARSE(app, argc, argv);
  for (const sluice::Command& command : commands) {
    if (command.app->parsed()) return command.run();
  }
  std::fputs(app.help().c_str(), stdout);
  return 1;
}
