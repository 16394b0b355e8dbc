#pragma once
// The server's Prometheus metrics (prometheus-cpp's registry and text
// format): requests by endpoint and status, tokens, time to first token,
// per-token latency, batch sizes, the scheduler's queue and KV pool, and the
// tokens the router sent to each expert, and with experts placed on NUMA
// nodes, each node's tokens, busy time and weights, their imbalance, remote
// weight reads and replica memory.
#include <chrono>
#include <deque>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include <prometheus/counter.h>
#include <prometheus/family.h>
#include <prometheus/gauge.h>
#include <prometheus/histogram.h>
#include <prometheus/registry.h>

#include "engine/server/scheduler.h"

namespace lacuna {

class ServerMetrics {
 public:
  ServerMetrics();
  void request_done(const std::string& endpoint, int status);
  void tokens(size_t prompt, size_t generated);
  void first_token(double seconds);
  void inter_token(double seconds);
  void request_seconds(double seconds);
  void step(const StepInfo& s);
  // The text for GET /metrics, with the scheduler's current state.
  std::string render(const SchedulerStats& s);

 private:
  std::shared_ptr<prometheus::Registry> registry_;
  prometheus::Family<prometheus::Counter>& requests_;
  prometheus::Family<prometheus::Counter>& expert_tokens_;
  std::vector<std::vector<prometheus::Counter*>> expert_counters_;  // [layer][expert], made on the first step
  std::vector<std::vector<uint64_t>> routed_seen_;                 // the counts already added
  void numa_step(const PlacedExperts& placed, const NumaCounters& numa);
  prometheus::Family<prometheus::Counter>&numa_node_tokens_, &numa_node_busy_;
  prometheus::Family<prometheus::Gauge>& numa_node_bytes_;
  prometheus::Counter& numa_remote_bytes_;
  prometheus::Gauge &numa_imbalance_, &numa_replica_bytes_;
  NumaCounters numa_seen_;  // the counts already added
  prometheus::Counter &prompt_tokens_, &generated_tokens_, &preemptions_, &prefix_reused_;
  prometheus::Gauge& kv_published_;
  prometheus::Histogram &ttft_, &itl_, &duration_, &batch_sequences_, &batch_tokens_, &step_seconds_;
  prometheus::Gauge &queued_, &running_, &kv_used_, &kv_total_, &tokens_per_second_;
  // Generated tokens of the last steps, for tokens/s over a sliding window.
  std::mutex window_mutex_;
  std::deque<std::pair<std::chrono::steady_clock::time_point, int64_t>> window_;
  double preemptions_seen_ = 0, prefix_reused_seen_ = 0;
};

}  // namespace lacuna
