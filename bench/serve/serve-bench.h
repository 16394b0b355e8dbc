#pragma once
// `lacuna bench serve`: a load test of `lacuna serve`. The server runs in
// this process on a loopback port (nothing leaves the machine); C clients
// stream greedy completions for a bounded time or number of requests, at
// each concurrency C. Reports output tokens/s, time to first token and
// inter-token latency percentiles, and checks every streamed answer against
// the non-streamed single-client answer for the same prompt.
#include <chrono>
#include <string>
#include <vector>

#include "engine/server/scheduler.h"

namespace lacuna::bench {

struct ServeBenchOptions {
  std::vector<std::string> models;  // .lacuna files
  std::vector<int> concurrency = {1, 4, 16, 64};
  int prompt_tokens = 32;
  int max_tokens = 32;
  int prompts = 8;           // distinct prompts, used in turn
  int requests = 0;          // per concurrency level; 0: 4 per client, at least 8
  double max_seconds = 60;   // per concurrency level
  int rounds = 1;            // every level run this many times in turn; ratios are medians of each round's
  int step_tokens = SchedulerOptions{}.step_tokens;  // the server's prompt tokens per step
  bool reuse_prefixes = SchedulerOptions{}.reuse_prefixes;
  KvType kv_type = SchedulerOptions{}.kv_type;
  std::chrono::microseconds gather = SchedulerOptions{}.gather;
  std::string csv_path;
};

int run_serve_bench(const ServeBenchOptions& o);

}  // namespace lacuna::bench
