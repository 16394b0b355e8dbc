#include "engine/server/scheduler.h"

#include <algorithm>

#include "sparse/error.h"

namespace lacuna {
namespace {

double seconds_since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

}  // namespace

struct Scheduler::Sequence {
  Sequence(uint64_t i, const Model& m, const GenerateOptions& o, std::vector<int32_t> prompt, RequestCallbacks c,
           std::shared_ptr<std::atomic<bool>> flag)
      : id(i),
        capacity(std::min<int64_t>(m.config().max_context, static_cast<int64_t>(prompt.size()) + o.max_tokens)),
        scores_prompt(o.prompt_logprobs >= 0),
        generation(m, o, std::move(prompt)),
        callbacks(std::move(c)),
        cancelled(std::move(flag)) {}
  // Tokens of the history not in the cache yet: the prompt's rest, or the token sampled last.
  size_t pending() const { return generation.history().size() - static_cast<size_t>(cache ? cache->length() : 0); }

  uint64_t id;
  int64_t capacity;
  bool scores_prompt;  // needs every prompt position's logits: evaluates its whole prompt
  Generation generation;
  RequestCallbacks callbacks;
  std::shared_ptr<std::atomic<bool>> cancelled;
  std::unique_ptr<KvCache> cache;  // none while waiting or preempted
  std::vector<float> logits, rows;  // rows: every position's, for prompt scoring
  size_t step_tokens = 0;  // in the current step
};

Scheduler::Scheduler(std::shared_ptr<const Model> model, const SchedulerOptions& options, std::function<void(const StepInfo&)> on_step)
    : model_(model), options_(options), on_step_(std::move(on_step)), forward_(std::move(model), BatchPolicy::invariant, options.placed) {
  const ModelConfig& c = model_->config();
  if (options_.max_running < 1 || options_.max_queued < 1 || options_.step_tokens < 1 || options_.kv_block_positions < 1)
    throw Error("scheduler: max_running, max_queued, step_tokens and kv_block_positions must be >= 1");
  const KvBlockPool probe(c, options_.kv_block_positions, 1, options_.kv_type);
  const int64_t blocks = options_.kv_bytes / static_cast<int64_t>(probe.block_bytes());
  const int64_t one_context = (c.max_context + options_.kv_block_positions - 1) / options_.kv_block_positions;
  if (blocks < one_context)
    throw Error("scheduler: a KV pool of " + std::to_string(options_.kv_bytes >> 20) + " MiB holds " + std::to_string(blocks) +
                " blocks, fewer than one whole context needs (" + std::to_string(one_context) + " blocks of " +
                std::to_string(probe.block_bytes()) + " bytes)");
  pool_ = std::make_shared<KvBlockPool>(c, options_.kv_block_positions, blocks, options_.kv_type);
  queue_.set_capacity(options_.max_queued);
  thread_ = std::thread([this] { run(); });
}

Scheduler::~Scheduler() { drain(std::chrono::milliseconds(0)); }

uint64_t Scheduler::submit(std::vector<int32_t> prompt, const GenerateOptions& options, RequestCallbacks callbacks) {
  validate_request(prompt, options, nullptr, model_->config());
  if (!accepting_) throw ShuttingDown("the server is shutting down");
  const uint64_t id = next_id_++;
  auto flag = std::make_shared<std::atomic<bool>>(false);
  auto s = std::make_unique<Sequence>(id, *model_, options, std::move(prompt), std::move(callbacks), flag);
  {
    const std::lock_guard lock(cancel_mutex_);
    cancel_flags_.emplace(id, flag);
  }
  ++waiting_;
  ++running_count_;
  // Checked again after counting it, so that drain() either waits for this
  // request or this request sees that drain() began.
  const bool shutting_down = !accepting_;
  if (shutting_down || !queue_.try_push(s.get())) {
    --waiting_;
    {
      const std::lock_guard lock(cancel_mutex_);
      cancel_flags_.erase(id);
    }
    {
      const std::lock_guard lock(done_mutex_);
      --running_count_;
    }
    done_.notify_all();
    if (shutting_down) throw ShuttingDown("the server is shutting down");
    throw QueueFull("the queue is full (" + std::to_string(options_.max_queued) + " requests waiting)");
  }
  s.release();  // the queue owns it now
  return id;
}

void Scheduler::cancel(uint64_t id) {
  const std::lock_guard lock(cancel_mutex_);
  if (auto it = cancel_flags_.find(id); it != cancel_flags_.end()) *it->second = true;
}

void Scheduler::drain(std::chrono::milliseconds timeout) {
  accepting_ = false;
  std::unique_lock lock(done_mutex_);
  if (!done_.wait_for(lock, timeout, [&] { return running_count_ == 0; })) {
    {
      const std::lock_guard cancel_lock(cancel_mutex_);
      for (auto& [id, flag] : cancel_flags_) *flag = true;
    }
    done_.wait(lock, [&] { return running_count_ == 0; });
  }
  lock.unlock();
  if (thread_.joinable()) {
    // Nothing is queued or running: the thread waits on the queue, or soon
    // will; an empty entry tells it to end (abort() would miss a wait that
    // had not begun yet).
    queue_.push(nullptr);
    thread_.join();
  }
}

SchedulerStats Scheduler::stats() const {
  return {waiting_, running_count_ - waiting_, pool_->blocks_in_use(), pool_->max_blocks(), steps_, preemptions_, pool_->blocks_published(),
          prefix_tokens_reused_};
}

void Scheduler::run() {
  while (!stop_seen_ || !running_.empty() || !ready_.empty()) {
    if (running_.empty() && ready_.empty()) {
      Sequence* raw = nullptr;
      queue_.pop(raw);  // waits
      if (!raw) {
        stop_seen_ = true;  // drain() is done: nothing is queued or running
        continue;
      }
      ready_.emplace_back(raw);
      gather_arrivals();
    }
    admit();
    if (!running_.empty()) step();
  }
}

void Scheduler::gather_arrivals() {
  if (options_.gather.count() <= 0) return;
  using clock = std::chrono::steady_clock;
  const auto start = clock::now();
  for (auto last = start; static_cast<int32_t>(ready_.size()) < options_.max_running;) {
    const auto now = clock::now();
    if (now - last >= options_.gather || now - start >= 8 * options_.gather) return;
    Sequence* raw = nullptr;
    if (!queue_.try_pop(raw)) {
      std::this_thread::sleep_for(std::chrono::microseconds(50));
      continue;
    }
    if (!raw) {
      stop_seen_ = true;  // drain(): the queue holds nothing after it
      return;
    }
    ready_.emplace_back(raw);
    last = clock::now();
  }
}

// Whether s should wait for a running sequence still evaluating tokens it
// shares with s (in whole blocks s could adopt), to start from its published
// blocks rather than evaluate the same tokens beside it: the choices of a
// request with n > 1, the same prompt sent twice at once.
bool Scheduler::shares_unevaluated_prefix(const Sequence& s) const {
  if (!options_.reuse_prefixes || s.scores_prompt) return false;
  const std::vector<int32_t>& mine = s.generation.history();
  const auto block = static_cast<size_t>(options_.kv_block_positions);
  const size_t reusable = (mine.size() - 1) / block * block;
  for (const auto& r : running_) {
    if (!r->cache || r->generation.finished()) continue;
    const std::vector<int32_t>& theirs = r->generation.history();
    const size_t limit = std::min(reusable, theirs.size());
    const size_t shared = static_cast<size_t>(std::mismatch(mine.begin(), mine.begin() + static_cast<std::ptrdiff_t>(limit), theirs.begin()).first - mine.begin());
    if (shared / block * block > static_cast<size_t>(r->cache->length())) return true;
  }
  return false;
}

void Scheduler::admit() {
  const int64_t positions = options_.kv_block_positions;
  int64_t free_blocks = pool_->max_blocks() - pool_->blocks_in_use();
  // Back to the front of the line, in order. Counted against max_running, so
  // that no more than that many requests leave the bounded queue to wait here.
  std::vector<std::unique_ptr<Sequence>> waiting_for_prefix;
  while (static_cast<int32_t>(running_.size() + waiting_for_prefix.size()) < options_.max_running) {
    std::unique_ptr<Sequence> s;
    if (!ready_.empty()) {
      s = std::move(ready_.front());
      ready_.pop_front();
    } else if (Sequence* raw = nullptr; !stop_seen_ && queue_.try_pop(raw)) {
      if (!raw) {
        stop_seen_ = true;
        break;
      }
      s.reset(raw);
    } else {
      break;
    }
    if (*s->cancelled) {
      s->generation.cancel();
      --waiting_;
      finish(*s);
      continue;
    }
    if (shares_unevaluated_prefix(*s)) {
      waiting_for_prefix.push_back(std::move(s));
      continue;
    }
    // Room for what it holds now and the next token; later growth may preempt.
    const int64_t needed = (static_cast<int64_t>(s->generation.history().size()) + 1 + positions - 1) / positions;
    if (needed > free_blocks) {
      ready_.push_front(std::move(s));
      break;
    }
    free_blocks -= needed;
    s->cache = std::make_unique<KvCache>(model_->config(), s->capacity, pool_);
    if (options_.reuse_prefixes && !s->scores_prompt) {
      // The last token is evaluated in any case: its logits give the next one.
      const std::vector<int32_t>& history = s->generation.history();
      prefix_tokens_reused_ += s->cache->adopt(history, static_cast<int64_t>(history.size()) - 1);
    }
    --waiting_;
    running_.push_back(std::move(s));
  }
  for (auto it = waiting_for_prefix.rbegin(); it != waiting_for_prefix.rend(); ++it) ready_.push_front(std::move(*it));
}

// Blocks for `positions` positions of s, preempting the youngest sequences
// outside this step; false when s itself had to go.
bool Scheduler::make_room(Sequence& s, int64_t positions, const std::vector<Sequence*>& in_step) {
  while (!s.cache->reserve(positions)) {
    Sequence* victim = nullptr;
    for (auto it = running_.rbegin(); it != running_.rend() && !victim; ++it)
      if ((*it)->cache && it->get() != &s && std::find(in_step.begin(), in_step.end(), it->get()) == in_step.end()) victim = it->get();
    if (!victim) victim = &s;
    victim->cache.reset();  // its blocks go back to the pool; its history is evaluated again when it returns
    ++preemptions_;
    if (victim == &s) return false;
  }
  return true;
}

void Scheduler::step() {
  for (auto& s : running_)
    if (*s->cancelled) s->generation.cancel();
  // One token for every decoding sequence, then prompt chunks within the budget.
  std::vector<Sequence*> in_step;
  int64_t budget = options_.step_tokens, decode = 0, prefill = 0;
  for (int pass = 0; pass < 2; ++pass)
    for (auto& s : running_) {
      if (!s->cache || s->generation.finished()) continue;
      const size_t pending = s->pending();
      const bool decoding = pending == 1;
      if (decoding != (pass == 0) || (!decoding && budget <= 0)) continue;
      const size_t n = decoding ? 1 : std::min<size_t>(pending, static_cast<size_t>(budget));
      if (!make_room(*s, s->cache->length() + static_cast<int64_t>(n), in_step)) continue;
      s->step_tokens = n;
      in_step.push_back(s.get());
      (decoding ? decode : prefill) += static_cast<int64_t>(n);
      if (!decoding) budget -= static_cast<int64_t>(n);
    }
  // Sequences that lost their blocks wait in line, oldest first.
  for (auto it = running_.rbegin(); it != running_.rend(); ++it)
    if (!(*it)->cache && !(*it)->generation.finished()) {
      ++waiting_;
      ready_.push_front(std::move(*it));
    }
  std::erase_if(running_, [](const std::unique_ptr<Sequence>& s) { return !s; });

  if (!in_step.empty()) {
    std::vector<SequenceStep> batch;
    std::vector<PromptChunk> chunks;
    batch.reserve(in_step.size());
    chunks.reserve(in_step.size());
    for (Sequence* s : in_step) {
      const std::vector<int32_t>& history = s->generation.history();
      const auto from = static_cast<size_t>(s->cache->length());
      const PromptChunk& chunk = chunks.emplace_back(s->generation, from, s->step_tokens, from + s->step_tokens == history.size(), s->logits, s->rows);
      batch.push_back({s->cache.get(), std::span(history).subspan(from, s->step_tokens), chunk.output(), chunk.every_position()});
    }
    const auto start = std::chrono::steady_clock::now();
    try {
      forward_.step(batch);
    } catch (const std::exception&) {
      // Nothing the requests did (they were checked): end them, serve the others.
      for (Sequence* s : in_step) s->generation.fail();
      batch.clear();
    }
    ++steps_;
    if (on_step_) {
      const NumaCounters numa = forward_.numa_counters();
      on_step_({static_cast<int64_t>(in_step.size()), decode, prefill, seconds_since(start), &forward_.routed_tokens(), forward_.placed(),
                forward_.placed() ? &numa : nullptr});
    }
    for (size_t i = 0; i < batch.size(); ++i) {
      Sequence& s = *in_step[i];
      if (options_.reuse_prefixes) s.cache->publish(s.generation.history());
      chunks[i].take();
      if (!chunks[i].last()) continue;
      if (s.generation.prompt_only()) {
        s.generation.end_prompt();
        continue;
      }
      const Generation::Token t = s.generation.next(s.logits, s.cache->length() + 1 >= s.capacity);
      bool go_on = true;
      try {
        if (s.callbacks.on_token) go_on = s.callbacks.on_token(t);
      } catch (...) {
        go_on = false;
      }
      if (!go_on || *s.cancelled) s.generation.cancel();
    }
  }
  for (auto& s : running_)
    if (s->generation.finished()) {
      finish(*s);
      s.reset();
    }
  std::erase_if(running_, [](const std::unique_ptr<Sequence>& s) { return !s; });
}

void Scheduler::finish(Sequence& s) {
  s.cache.reset();
  try {
    if (s.callbacks.on_done) s.callbacks.on_done(s.generation.result());
  } catch (...) {
    // A failing observer must not stop the other requests.
  }
  {
    const std::lock_guard lock(cancel_mutex_);
    cancel_flags_.erase(s.id);
  }
  {
    const std::lock_guard lock(done_mutex_);
    --running_count_;
  }
  done_.notify_all();
}

}  // namespace lacuna
