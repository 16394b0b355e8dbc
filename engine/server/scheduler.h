#pragma once
// Continuous (iteration-level) batching: requests join and leave the running
// batch at every forward step. Each step takes one token of every decoding
// sequence, then fills a token budget with chunks of prompts (prefill
// interleaved with decode); KV caches draw blocks from one bounded pool, and
// when it runs out the youngest sequence is preempted (its blocks freed, its
// tokens evaluated again later); full blocks are published for sequences
// that start with the same tokens to reuse. Requests wait in a bounded queue
// (tbb::concurrent_bounded_queue); one thread runs the steps, with
// BatchPolicy::invariant: a request's answer does not depend on the load.
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <string_view>
#include <thread>
#include <unordered_map>
#include <vector>

#include <tbb/concurrent_queue.h>

#include "engine/runtime/generate.h"
#include "sparse/error.h"

namespace lacuna {

struct SchedulerOptions {
  int32_t max_running = 64;   // sequences in the batch at once
  int32_t max_queued = 256;   // requests waiting; more are refused (QueueFull)
  int32_t step_tokens = 256;  // prompt tokens per step, beside one token per decoding sequence
  int64_t kv_bytes = 1ll << 30;  // the KV block pool (at least one whole context)
  int64_t kv_block_positions = 16;
  // f16 halves the bytes attention reads at every step (docs/benchmarks.md,
  // "The f16 KV cache in the server"); the server's invariant forward pass
  // keeps its answers independent of the batch either way.
  KvType kv_type = KvType::f16;
  // When a request wakes an idle scheduler, it waits while more keep coming,
  // each within this long of the one before (8x this at most), so that a
  // burst of requests is evaluated in one step rather than the first alone
  // and the others a step later. 0: start at once.
  std::chrono::microseconds gather{1000};
  // A new or returning sequence starts from the KV blocks of the longest
  // prefix of its tokens that an earlier sequence evaluated and published
  // (KvBlockPool), evaluating only the rest. Off: every prompt is evaluated.
  bool reuse_prefixes = true;
  std::shared_ptr<const PlacedExperts> placed;  // experts placed on NUMA nodes; nullptr: the model's own, unbound
};

// Thrown by submit when the queue is full or the scheduler is draining.
struct QueueFull : Error {
  using Error::Error;
};
struct ShuttingDown : Error {
  using Error::Error;
};

// Called on the scheduler's thread: keep them short. on_token returns false
// to cancel the request; on_done is called exactly once per accepted request.
struct RequestCallbacks {
  std::function<bool(const Generation::Token& token)> on_token;
  std::function<void(const GenerateResult& result)> on_done;
};

struct SchedulerStats {
  int64_t queued = 0, running = 0, kv_blocks_used = 0, kv_blocks_total = 0;
  int64_t steps = 0, preemptions = 0;
  int64_t kv_blocks_published = 0;    // blocks kept for prefix reuse (in use or not)
  int64_t prefix_tokens_reused = 0;   // positions sequences started with instead of evaluating them
};

// Called after each forward step (on the scheduler's thread).
struct StepInfo {
  int64_t sequences = 0, decode_tokens = 0, prefill_tokens = 0;
  double seconds = 0;
  // Tokens routed to each [layer][expert] since the scheduler started (valid during the call).
  const std::vector<std::vector<uint64_t>>* routed_tokens = nullptr;
  // With experts placed on NUMA nodes: the placement, and its counters since the start.
  const PlacedExperts* placed = nullptr;
  const NumaCounters* numa = nullptr;
};

class Scheduler {
 public:
  Scheduler(std::shared_ptr<const Model> model, const SchedulerOptions& options, std::function<void(const StepInfo&)> on_step = {});
  // Cancels what is still queued or running and stops the thread.
  ~Scheduler();
  Scheduler(const Scheduler&) = delete;
  Scheduler& operator=(const Scheduler&) = delete;

  // Thread-safe. Checks the request (throws lacuna::Error naming the
  // problem: empty prompt, invalid token id, prompt + max_tokens beyond the
  // context, bad sampling options), then queues it; throws QueueFull or
  // ShuttingDown. Returns the request's id.
  uint64_t submit(std::vector<int32_t> prompt, const GenerateOptions& options, RequestCallbacks callbacks);
  // Thread-safe; a request already finished is ignored.
  void cancel(uint64_t id);
  // Refuses new requests, waits up to `timeout` for the others to finish,
  // then cancels what remains; returns when everything is done.
  void drain(std::chrono::milliseconds timeout);
  SchedulerStats stats() const;
  const Model& model() const { return *model_; }

 private:
  struct Sequence;
  void run();
  void take_cancellations();
  void gather_arrivals();
  void admit();
  bool shares_unevaluated_prefix(const Sequence& s) const;
  void step();
  bool make_room(Sequence& s, int64_t positions, const std::vector<Sequence*>& in_step);
  void finish(Sequence& s);

  std::shared_ptr<const Model> model_;
  SchedulerOptions options_;
  std::function<void(const StepInfo&)> on_step_;
  Forward forward_;
  std::shared_ptr<KvBlockPool> pool_;
  tbb::concurrent_bounded_queue<Sequence*> queue_;  // owned: taken back into a unique_ptr when popped; nullptr: stop
  std::atomic<uint64_t> next_id_{1};
  std::atomic<bool> accepting_{true};
  std::atomic<int64_t> waiting_{0}, running_count_{0}, steps_{0}, preemptions_{0}, prefix_tokens_reused_{0};

  // The cancel flag of every accepted, unfinished request.
  std::mutex cancel_mutex_;
  std::unordered_map<uint64_t, std::shared_ptr<std::atomic<bool>>> cancel_flags_;

  // The scheduler thread's own state.
  std::vector<std::unique_ptr<Sequence>> running_;  // in admission order
  std::deque<std::unique_ptr<Sequence>> ready_;     // off the queue or preempted: first in line
  bool stop_seen_ = false;                           // drain()'s empty entry came off the queue

  // Signalled whenever a request finishes (drain waits on it).
  std::mutex done_mutex_;
  std::condition_variable done_;
  std::thread thread_;
};

}  // namespace lacuna
