#include "engine/server/metrics.h"

#include <prometheus/text_serializer.h>

#include <algorithm>

namespace lacuna {
namespace {

using prometheus::Histogram;

// Seconds from 1 ms to about 2 minutes, doubling.
Histogram::BucketBoundaries latency_buckets() {
  Histogram::BucketBoundaries b;
  for (double s = 0.001; s < 150; s *= 2) b.push_back(s);
  return b;
}

Histogram::BucketBoundaries count_buckets() { return {1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024}; }

constexpr auto kRateWindow = std::chrono::seconds(10);

}  // namespace

ServerMetrics::ServerMetrics()
    : registry_(std::make_shared<prometheus::Registry>()),
      requests_(prometheus::BuildCounter().Name("lacuna_requests_total").Help("HTTP requests by endpoint and status").Register(*registry_)),
      expert_tokens_(prometheus::BuildCounter()
                         .Name("lacuna_expert_tokens_total")
                         .Help("Tokens the router sent to each expert of each layer (prompt and generated)")
                         .Register(*registry_)),
      numa_node_tokens_(prometheus::BuildCounter()
                            .Name("lacuna_numa_node_tokens_total")
                            .Help("(token, expert) pairs each NUMA node computed; under slices every node takes part in each")
                            .Register(*registry_)),
      numa_node_busy_(prometheus::BuildCounter()
                          .Name("lacuna_numa_node_busy_seconds_total")
                          .Help("Time each NUMA node's team spent on experts")
                          .Register(*registry_)),
      numa_node_bytes_(prometheus::BuildGauge().Name("lacuna_numa_node_weight_bytes").Help("Expert weight bytes in each NUMA node's memory").Register(*registry_)),
      numa_remote_bytes_(prometheus::BuildCounter()
                             .Name("lacuna_numa_remote_weight_bytes_total")
                             .Help("Expert weight bytes read from another node's memory (0 under experts and slices)")
                             .Register(*registry_)
                             .Add({})),
      numa_imbalance_(prometheus::BuildGauge()
                          .Name("lacuna_numa_load_imbalance")
                          .Help("Max over mean of the NUMA nodes' busy time (1: even)")
                          .Register(*registry_)
                          .Add({})),
      numa_replica_bytes_(prometheus::BuildGauge()
                              .Name("lacuna_numa_replica_bytes")
                              .Help("Memory held by extra copies of hot experts")
                              .Register(*registry_)
                              .Add({})),
      prompt_tokens_(prometheus::BuildCounter().Name("lacuna_prompt_tokens_total").Help("Prompt tokens of finished requests").Register(*registry_).Add({})),
      generated_tokens_(
          prometheus::BuildCounter().Name("lacuna_generated_tokens_total").Help("Generated tokens of finished requests").Register(*registry_).Add({})),
      preemptions_(prometheus::BuildCounter()
                       .Name("lacuna_preemptions_total")
                       .Help("Sequences that gave their KV blocks back and were evaluated again")
                       .Register(*registry_)
                       .Add({})),
      prefix_reused_(prometheus::BuildCounter()
                         .Name("lacuna_prefix_tokens_reused_total")
                         .Help("Prompt positions sequences took from published KV blocks instead of evaluating them")
                         .Register(*registry_)
                         .Add({})),
      kv_published_(prometheus::BuildGauge().Name("lacuna_kv_blocks_published").Help("KV cache blocks kept for prefix reuse").Register(*registry_).Add({})),
      ttft_(prometheus::BuildHistogram()
                .Name("lacuna_time_to_first_token_seconds")
                .Help("From a request's arrival to its first generated token")
                .Register(*registry_)
                .Add({}, latency_buckets())),
      itl_(prometheus::BuildHistogram()
               .Name("lacuna_inter_token_latency_seconds")
               .Help("Between consecutive tokens of a request")
               .Register(*registry_)
               .Add({}, latency_buckets())),
      duration_(prometheus::BuildHistogram()
                    .Name("lacuna_request_duration_seconds")
                    .Help("From a request's arrival to its last token")
                    .Register(*registry_)
                    .Add({}, latency_buckets())),
      batch_sequences_(prometheus::BuildHistogram()
                           .Name("lacuna_batch_sequences")
                           .Help("Sequences in a forward step")
                           .Register(*registry_)
                           .Add({}, count_buckets())),
      batch_tokens_(prometheus::BuildHistogram()
                        .Name("lacuna_batch_tokens")
                        .Help("Tokens in a forward step (decode and prefill)")
                        .Register(*registry_)
                        .Add({}, count_buckets())),
      step_seconds_(prometheus::BuildHistogram()
                        .Name("lacuna_step_seconds")
                        .Help("Duration of a forward step")
                        .Register(*registry_)
                        .Add({}, latency_buckets())),
      queued_(prometheus::BuildGauge().Name("lacuna_queue_length").Help("Requests waiting to join the batch").Register(*registry_).Add({})),
      running_(prometheus::BuildGauge().Name("lacuna_running_sequences").Help("Sequences in the running batch").Register(*registry_).Add({})),
      kv_used_(prometheus::BuildGauge().Name("lacuna_kv_blocks_used").Help("KV cache blocks in use").Register(*registry_).Add({})),
      kv_total_(prometheus::BuildGauge().Name("lacuna_kv_blocks_total").Help("KV cache blocks in the pool").Register(*registry_).Add({})),
      tokens_per_second_(prometheus::BuildGauge()
                             .Name("lacuna_generated_tokens_per_second")
                             .Help("Generated tokens per second over the last 10 seconds")
                             .Register(*registry_)
                             .Add({})) {}

void ServerMetrics::request_done(const std::string& endpoint, int status) {
  requests_.Add({{"endpoint", endpoint}, {"status", std::to_string(status)}}).Increment();
}

void ServerMetrics::tokens(size_t prompt, size_t generated) {
  prompt_tokens_.Increment(static_cast<double>(prompt));
  generated_tokens_.Increment(static_cast<double>(generated));
}

void ServerMetrics::first_token(double seconds) { ttft_.Observe(seconds); }
void ServerMetrics::inter_token(double seconds) { itl_.Observe(seconds); }
void ServerMetrics::request_seconds(double seconds) { duration_.Observe(seconds); }

void ServerMetrics::step(const StepInfo& s) {
  batch_sequences_.Observe(static_cast<double>(s.sequences));
  if (s.routed_tokens) {
    const auto& routed = *s.routed_tokens;
    if (expert_counters_.empty()) {
      for (size_t l = 0; l < routed.size(); ++l) {
        expert_counters_.emplace_back();
        for (size_t e = 0; e < routed[l].size(); ++e)
          expert_counters_.back().push_back(&expert_tokens_.Add({{"layer", std::to_string(l)}, {"expert", std::to_string(e)}}));
      }
      routed_seen_.assign(routed.size(), {});
      for (size_t l = 0; l < routed.size(); ++l) routed_seen_[l].assign(routed[l].size(), 0);
    }
    for (size_t l = 0; l < routed.size(); ++l)
      for (size_t e = 0; e < routed[l].size(); ++e) {
        expert_counters_[l][e]->Increment(static_cast<double>(routed[l][e] - routed_seen_[l][e]));
        routed_seen_[l][e] = routed[l][e];
      }
  }
  if (s.placed && s.numa) numa_step(*s.placed, *s.numa);
  batch_tokens_.Observe(static_cast<double>(s.decode_tokens + s.prefill_tokens));
  step_seconds_.Observe(s.seconds);
  // Every sequence in a step with logits yields a token; decode ones always do.
  const std::lock_guard lock(window_mutex_);
  window_.emplace_back(std::chrono::steady_clock::now(), s.decode_tokens);
}

void ServerMetrics::numa_step(const PlacedExperts& placed, const NumaCounters& numa) {
  const size_t nodes = numa.node_tokens.size();
  numa_seen_.node_tokens.resize(nodes, 0);
  numa_seen_.node_busy_seconds.resize(nodes, 0.0);
  for (size_t n = 0; n < nodes; ++n) {
    const prometheus::Labels node{{"node", std::to_string(n)}};
    numa_node_tokens_.Add(node).Increment(static_cast<double>(numa.node_tokens[n] - numa_seen_.node_tokens[n]));
    const double busy = n < numa.node_busy_seconds.size() ? numa.node_busy_seconds[n] : 0.0;
    numa_node_busy_.Add(node).Increment(std::max(0.0, busy - numa_seen_.node_busy_seconds[n]));
    numa_seen_.node_busy_seconds[n] = busy;
    numa_node_bytes_.Add(node).Set(static_cast<double>(placed.node_bytes()[n]));
  }
  numa_seen_.node_tokens = numa.node_tokens;
  numa_remote_bytes_.Increment(static_cast<double>(numa.remote_weight_bytes - numa_seen_.remote_weight_bytes));
  numa_seen_.remote_weight_bytes = numa.remote_weight_bytes;
  numa_imbalance_.Set(numa.imbalance());
  numa_replica_bytes_.Set(static_cast<double>(placed.placement().replica_bytes));
}

std::string ServerMetrics::render(const SchedulerStats& s) {
  queued_.Set(static_cast<double>(s.queued));
  running_.Set(static_cast<double>(s.running));
  kv_used_.Set(static_cast<double>(s.kv_blocks_used));
  kv_total_.Set(static_cast<double>(s.kv_blocks_total));
  kv_published_.Set(static_cast<double>(s.kv_blocks_published));
  {
    const std::lock_guard lock(window_mutex_);
    preemptions_.Increment(std::max(0.0, static_cast<double>(s.preemptions) - preemptions_seen_));
    preemptions_seen_ = std::max(preemptions_seen_, static_cast<double>(s.preemptions));
    prefix_reused_.Increment(std::max(0.0, static_cast<double>(s.prefix_tokens_reused) - prefix_reused_seen_));
    prefix_reused_seen_ = std::max(prefix_reused_seen_, static_cast<double>(s.prefix_tokens_reused));
    const auto now = std::chrono::steady_clock::now();
    while (!window_.empty() && now - window_.front().first > kRateWindow) window_.pop_front();
    int64_t tokens = 0;
    for (const auto& [when, n] : window_) tokens += n;
    tokens_per_second_.Set(static_cast<double>(tokens) / std::chrono::duration<double>(kRateWindow).count());
  }
  return prometheus::TextSerializer().Serialize(registry_->Collect());
}

}  // namespace lacuna
