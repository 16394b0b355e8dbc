// The serving layer: the scheduler against generate() (the single-sequence
// reference), and the real HTTP server on a loopback port driven over HTTP
// with cpp-httplib's client; then `lacuna batch`'s job.
#include <gtest/gtest.h>
#include <httplib.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <functional>
#include <future>
#include <mutex>
#include <numeric>
#include <set>
#include <thread>

#include "engine/model/convert.h"
#include "engine/model/synth.h"
#include "engine/numa/topology.h"
#include "engine/server/batch-job.h"
#include "engine/server/http-server.h"
#include "engine/server/openai-api.h"
#include "sparse/convert.h"
#include "sparse/error.h"
#include "tests/test-util.h"
#include "sparse/quantize.h"

namespace lacuna {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

using testing::scratch;

// The tiny Mixtral (random weights, a real tokenizer), pruned to 50 %.
std::shared_ptr<const Model> tiny() {
  static const std::shared_ptr<const Model> model = [] {
    const fs::path ckpt = scratch() / "hf", out = scratch() / "tiny.lacuna";
    synthesize_checkpoint(ckpt.string(), SynthOptions{.arch = Arch::mixtral, .preset = "tiny", .seed = 7});
    ConvertOptions o;
    o.sparsity = 0.5;
    o.prune = PruneMethod::magnitude;
    convert_checkpoint(ckpt.string(), out.string(), o);
    return Model::open(out.string());
  }();
  return model;
}

// What one sequence generates alone, with the kernels the server runs (the
// batch-invariant policy) and its KV cache type: the reference every
// batched answer must equal.
// The fastest policy may run other kernels on a long prompt (oneDNN on the
// weight widened to f32, say), whose sums differ in their last bits and can
// flip a near-tied greedy choice of this random model.
GenerateResult alone(const std::vector<int32_t>& prompt, const GenerateOptions& o, KvType kv_type = SchedulerOptions{}.kv_type) {
  Forward forward(tiny(), BatchPolicy::invariant);
  KvCache cache(tiny()->config(), static_cast<int64_t>(prompt.size()) + o.max_tokens, kv_type);
  GenerateRequest r;
  r.prompt = prompt;
  r.options = o;
  r.cache = &cache;
  return generate(forward, {r})[0];
}

GenerateOptions greedy(int32_t max_tokens) {
  GenerateOptions o;
  o.sampling.temperature = 0;
  o.max_tokens = max_tokens;
  o.stop_at_eos = false;
  return o;
}

// A greedy request as the HTTP API and lacuna batch run it: ending at the
// end-of-sequence token, as they do by default.
GenerateOptions greedy_to_eos(int32_t max_tokens) {
  GenerateOptions o = greedy(max_tokens);
  o.stop_at_eos = true;
  return o;
}

std::vector<int32_t> prompt_of(int i, size_t length) {
  std::vector<int32_t> p{1};
  for (size_t k = 1; k < length; ++k) p.push_back(static_cast<int32_t>(3 + (i * 37 + static_cast<int>(k) * 11) % 500));
  return p;
}

// Results of requests run through a scheduler, by index.
std::vector<GenerateResult> schedule(const SchedulerOptions& so, const std::vector<std::pair<std::vector<int32_t>, GenerateOptions>>& requests,
                                     int64_t* preemptions = nullptr) {
  Scheduler scheduler(tiny(), so);
  std::vector<std::promise<GenerateResult>> done(requests.size());
  for (size_t i = 0; i < requests.size(); ++i)
    scheduler.submit(requests[i].first, requests[i].second, {{}, [&done, i](const GenerateResult& r) { done[i].set_value(r); }});
  std::vector<GenerateResult> out;
  for (auto& d : done) out.push_back(d.get_future().get());
  if (preemptions) *preemptions = scheduler.stats().preemptions;
  return out;
}

// The server's forward pass: a token's logits are bitwise the same whatever
// else shares the step (with the fastest kernels they differ in the last bits,
// enough to flip a greedy choice between near-equal logits).
TEST(Scheduler, InvariantBatchingGivesBitwiseTheSameLogits) {
  const auto model = tiny();
  const auto vocab = static_cast<size_t>(model->config().vocab);
  const std::vector<int32_t> mine = prompt_of(0, 21);
  auto logits_with = [&](size_t others) {
    Forward forward(model, BatchPolicy::invariant);
    std::vector<std::unique_ptr<KvCache>> caches;
    std::vector<std::vector<int32_t>> prompts{mine};
    for (size_t i = 1; i <= others; ++i) prompts.push_back(prompt_of(static_cast<int>(i), 5 + 13 * i));
    std::vector<float> out(vocab);
    std::vector<SequenceStep> batch;
    for (size_t i = 0; i < prompts.size(); ++i) {
      caches.push_back(std::make_unique<KvCache>(model->config(), 128));
      batch.push_back({caches.back().get(), prompts[i], i == 0 ? out.data() : nullptr, false});
    }
    forward.step(batch);
    return out;
  };
  const std::vector<float> alone_logits = logits_with(0);
  for (size_t others : {1u, 4u, 9u}) EXPECT_EQ(logits_with(others), alone_logits) << others << " other sequences";
}

// The same at the level of one weight, for each format and dtype, batches
// below, at and above the kernels' tile sizes (the single-token csr kernel
// takes up to 15 tokens at once, so larger batches go in chunks; int8 bitmap
// weights are expanded for oneDNN's s8 product from 24 tokens, or 129 where
// the AMX tiles run; dense int8 ones go to it above 64). The values' float
// products and sums round, and the shape is one where oneDNN's bf16 rows
// change with the batch on the AMX host: with small multiples of powers of
// two (summed exactly in any order) and 512 x 2048, dense bf16 and f32
// weights passed while the server's answers on them changed with its load.
TEST(Scheduler, InvariantProductsDoNotDependOnTheBatch) {
  constexpr size_t kRows = 256, kCols = 4096, kTokens = 200;
  for (DType dtype : {DType::f32, DType::bf16, DType::int8})
    for (Format format : {Format::bitmap, Format::csr, Format::bsr, Format::dense}) {
      std::vector<float> w(kRows * kCols);
      for (size_t i = 0; i < w.size(); ++i) w[i] = (i * 2654435761u) % 10 < 7 ? 0.0f : std::cos(static_cast<float>(i) * 0.011f) * 0.05f;
      const Linear linear(pack(quantize_matrix(w.data(), kRows, kCols, dtype), format, BlockShape{16, 1}));
      std::vector<float> x(kTokens * kCols);
      for (size_t i = 0; i < x.size(); ++i) x[i] = std::sin(static_cast<float>(i) * 0.37f) * 1.3f;
      std::vector<float> alone(kTokens * kRows), many(kTokens * kRows);
      for (size_t t = 0; t < kTokens; ++t) linear.run(&x[t * kCols], 1, &alone[t * kRows], BatchPolicy::invariant);
      for (size_t n : {2u, 5u, 16u, 17u, 31u, 32u, 64u, 65u, 200u}) {
        linear.run(x.data(), n, many.data(), BatchPolicy::invariant);
        EXPECT_TRUE(std::equal(many.begin(), many.begin() + static_cast<ptrdiff_t>(n * kRows), alone.begin()))
            << dtype_name(dtype) << " " << format_name(format) << " n=" << n;
      }
    }
}

TEST(Scheduler, BatchedRequestsOfDifferentLengthsMatchEachAlone) {
  std::vector<std::pair<std::vector<int32_t>, GenerateOptions>> requests;
  for (int i = 0; i < 10; ++i) {
    GenerateOptions o = greedy(5 + i * 3);
    if (i % 3 == 1) o.sampling = {.temperature = 0.9f, .top_k = 20, .top_p = 0.9f, .repetition_penalty = 1.1f, .seed = 100u + static_cast<uint64_t>(i)};
    requests.push_back({prompt_of(i, 3 + static_cast<size_t>(i) * 17), o});
  }
  for (KvType kv_type : {KvType::f16, KvType::f32}) {
    SchedulerOptions so;
    so.step_tokens = 24;  // long prompts go in several chunks, interleaved with the others' decoding
    so.kv_type = kv_type;
    const auto results = schedule(so, requests);
    for (size_t i = 0; i < requests.size(); ++i) {
      const GenerateResult want = alone(requests[i].first, requests[i].second, kv_type);
      EXPECT_EQ(results[i].tokens, want.tokens) << "request " << i << ", " << kv_type_name(kv_type);
      EXPECT_EQ(results[i].text, want.text) << "request " << i << ", " << kv_type_name(kv_type);
      EXPECT_EQ(results[i].finish_reason, "length");
    }
  }
}

TEST(Scheduler, APoolTooSmallForEveryonePreemptsAndStillMatches) {
  const ModelConfig& c = tiny()->config();
  SchedulerOptions so;
  const KvBlockPool probe(c, 16, 1, so.kv_type);
  so.kv_bytes = static_cast<int64_t>(probe.block_bytes()) * (c.max_context / 16 + 4);  // one context and 4 blocks
  std::vector<std::pair<std::vector<int32_t>, GenerateOptions>> requests;
  for (int i = 0; i < 6; ++i) {
    GenerateOptions o = greedy(60);
    // A preempted sequence evaluates its prompt again: its scores must be neither lost nor doubled.
    if (i % 2) o.logprobs = 1, o.prompt_logprobs = 2;
    requests.push_back({prompt_of(i, 90), o});
  }
  int64_t preemptions = 0;
  const auto results = schedule(so, requests, &preemptions);
  EXPECT_GT(preemptions, 0);
  for (size_t i = 0; i < requests.size(); ++i) {
    const GenerateResult want = alone(requests[i].first, requests[i].second);
    EXPECT_EQ(results[i].tokens, want.tokens) << i;
    ASSERT_EQ(results[i].logprobs.size(), want.logprobs.size()) << i;
    ASSERT_EQ(results[i].prompt_logprobs.size(), want.prompt_logprobs.size()) << i;
    EXPECT_EQ(results[i].prompt_logprobs.size(), i % 2 ? requests[i].first.size() - 1 : 0u) << i;
    for (size_t k = 0; k < want.prompt_logprobs.size(); ++k) {
      EXPECT_EQ(results[i].prompt_logprobs[k].logprob, want.prompt_logprobs[k].logprob) << i << " " << k;
      EXPECT_EQ(results[i].prompt_logprobs[k].top, want.prompt_logprobs[k].top) << i << " " << k;
    }
    for (size_t k = 0; k < want.logprobs.size(); ++k) EXPECT_EQ(results[i].logprobs[k].logprob, want.logprobs[k].logprob) << i << " " << k;
  }
}

// Block i of `tokens` in a pool of four-position blocks.
std::span<const int32_t> block_of(const std::vector<int32_t>& tokens, size_t i) { return std::span(tokens).subspan(4 * i, 4); }

TEST(KvBlockPool, PublishedBlocksAreFoundByTheirWholePrefixAndGivenNewContentsLast) {
  KvBlockPool pool(tiny()->config(), 4, 3);
  const std::vector<int32_t> tokens = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10};
  std::byte* a = pool.acquire();
  std::byte* b = pool.acquire();
  const KvBlockPool::PrefixId after_a = pool.publish(KvBlockPool::kEmptyPrefix, block_of(tokens, 0), a);
  const KvBlockPool::PrefixId after_b = pool.publish(after_a, block_of(tokens, 1), b);
  EXPECT_NE(after_a, after_b);
  // A second block for a prefix already published is not published: the first one's prefix is the one to follow.
  EXPECT_EQ(pool.publish(after_a, block_of(tokens, 1), a), after_b);
  EXPECT_THROW(pool.publish(after_b, block_of(tokens, 0), a), Error);  // a block under two prefixes
  EXPECT_THROW(pool.publish(after_b, std::span(tokens).first(3), pool.acquire()), Error);  // not a whole block
  EXPECT_EQ(pool.blocks_published(), 2);
  pool.release(a);
  pool.release(b);
  EXPECT_EQ(pool.blocks_in_use(), 1);  // published and held by none: free to take
  const KvBlockPool::Found whole = pool.lookup(tokens, 5);
  EXPECT_EQ(whole.blocks, (std::vector<std::byte*>{a, b}));
  EXPECT_EQ(whole.prefix, after_b);
  EXPECT_EQ(pool.blocks_in_use(), 3);
  const KvBlockPool::Found first = pool.lookup(tokens, 1);  // a second hold on a
  EXPECT_EQ(first.blocks, (std::vector<std::byte*>{a}));
  EXPECT_EQ(first.prefix, after_a);
  std::vector<int32_t> other_second = tokens;
  other_second[5] = 99;
  EXPECT_EQ(pool.lookup(other_second, 5).blocks, (std::vector<std::byte*>{a}));  // a third
  std::vector<int32_t> other_first = tokens;
  other_first[0] = 99;
  EXPECT_TRUE(pool.lookup(other_first, 5).blocks.empty());  // b's block alone matches, but not the prefix before it
  const KvBlockPool::Found none = pool.lookup(tokens, 0);
  EXPECT_TRUE(none.blocks.empty());
  EXPECT_EQ(none.prefix, KvBlockPool::kEmptyPrefix);
  for (int i = 0; i < 3; ++i) pool.release(a);
  EXPECT_EQ(pool.blocks_in_use(), 2);
  pool.release(b);  // released after a: a gets new contents first
  // The third block, held since the refused publish, is the never-published one.
  EXPECT_EQ(pool.acquire(), a);
  EXPECT_EQ(pool.blocks_published(), 1);
  EXPECT_TRUE(pool.lookup(tokens, 5).blocks.empty());  // the prefix's first block is gone
  EXPECT_EQ(pool.acquire(), b);
  EXPECT_EQ(pool.blocks_published(), 0);
  EXPECT_EQ(pool.acquire(), nullptr);  // all three held
}

// A block given new contents and published again under other tokens does
// not lead to the blocks published after its old contents: their prefix is
// gone, not changed.
TEST(KvBlockPool, ABlockGivenNewContentsLeavesTheBlocksAfterItOutOfReach) {
  KvBlockPool pool(tiny()->config(), 4, 2);
  const std::vector<int32_t> tokens = {1, 2, 3, 4, 5, 6, 7, 8};
  const std::vector<int32_t> other = {9, 9, 9, 9, 5, 6, 7, 8};
  std::byte* a = pool.acquire();
  std::byte* b = pool.acquire();
  pool.publish(pool.publish(KvBlockPool::kEmptyPrefix, block_of(tokens, 0), a), block_of(tokens, 1), b);
  pool.release(a);
  pool.release(b);
  ASSERT_EQ(pool.acquire(), a);
  pool.publish(KvBlockPool::kEmptyPrefix, block_of(other, 0), a);
  EXPECT_EQ(pool.lookup(other, 2).blocks, (std::vector<std::byte*>{a}));  // not b: b holds the keys and values after 1 2 3 4
  EXPECT_TRUE(pool.lookup(tokens, 2).blocks.empty());
  pool.release(a);
  pool.release(a);
  EXPECT_EQ(pool.blocks_published(), 2);
  EXPECT_EQ(pool.acquire(), b);  // out of reach, released longest ago
  EXPECT_EQ(pool.blocks_published(), 1);
}

TEST(KvBlockPool, ACacheAdoptsWholePublishedBlocksAndKeepsThemAsTheyAre) {
  auto pool = std::make_shared<KvBlockPool>(tiny()->config(), 4, 8);
  const std::vector<int32_t> tokens = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10};
  {
    KvCache first(tiny()->config(), 16, pool);
    ASSERT_TRUE(first.reserve(10));
    first.set_length(10);
    first.publish(tokens);  // the two full blocks
    EXPECT_EQ(pool->blocks_published(), 2);
  }
  KvCache second(tiny()->config(), 16, pool);
  EXPECT_EQ(second.adopt(tokens, 9), 8);
  EXPECT_EQ(second.length(), 8);
  EXPECT_THROW(second.truncate(7), Error);  // into blocks others may read
  EXPECT_NO_THROW(second.truncate(8));
  EXPECT_THROW(second.adopt(tokens, 9), Error);  // not empty
  KvCache third(tiny()->config(), 16, pool);
  EXPECT_EQ(third.adopt(tokens, 7), 4);  // whole blocks within the limit
  EXPECT_EQ(pool->blocks_in_use(), 2);   // two blocks, held three times
  ASSERT_TRUE(third.reserve(8));
  third.set_length(8);
  third.publish(tokens);  // its second block: the prefix is published already
  EXPECT_EQ(pool->blocks_published(), 2);
  EXPECT_THROW(third.truncate(7), Error);  // into a block it published
}

// A cache gives its blocks back last first, so a full pool gives a prefix's
// last block new contents before its first.
TEST(KvBlockPool, ACacheGivesItsLastBlockBackFirst) {
  auto pool = std::make_shared<KvBlockPool>(tiny()->config(), 4, 2);
  const std::vector<int32_t> tokens = {1, 2, 3, 4, 5, 6, 7, 8, 9};
  {
    KvCache first(tiny()->config(), 16, pool);
    ASSERT_TRUE(first.reserve(8));
    first.set_length(8);
    first.publish(tokens);
  }
  const KvBlockPool::Found both = pool->lookup(tokens, 2);
  ASSERT_EQ(both.blocks.size(), 2u);
  pool->release(both.blocks[0]);
  pool->release(both.blocks[1]);  // held by none again, in the order a cache gives them back
  {
    KvCache first(tiny()->config(), 16, pool);
    EXPECT_EQ(first.adopt(tokens, 8), 8);
  }
  EXPECT_EQ(pool->acquire(), both.blocks[1]);
  EXPECT_EQ(pool->lookup(tokens, 2).blocks, (std::vector<std::byte*>{both.blocks[0]}));
}

// A sequence starts from the KV blocks an earlier one published for the
// same leading tokens, and answers bit for bit as if it had evaluated them.
TEST(Scheduler, SequencesStartFromTheBlocksOfTheirPrefixAndAnswerTheSame) {
  const std::vector<int32_t> shared = prompt_of(3, 70);
  std::vector<int32_t> branch(shared.begin(), shared.begin() + 50);
  const std::vector<int32_t> tail = prompt_of(4, 30);
  branch.insert(branch.end(), tail.begin(), tail.end());
  GenerateOptions o = greedy(20);
  o.logprobs = 2;
  GenerateOptions scored = o;
  scored.prompt_logprobs = 1;
  const std::vector<std::pair<std::vector<int32_t>, GenerateOptions>> requests = {
      {shared, o}, {branch, o}, {shared, o}, {shared, scored}, {prompt_of(5, 40), o}};
  // Positions each should take from the blocks (of 16) published before it:
  // none; the 3 whole blocks of the 50 shared tokens; 4 blocks, leaving the
  // last prompt token to evaluate; none (it scores its prompt); none.
  const int64_t reused[] = {0, 48, 64, 0, 0};
  for (bool reuse : {true, false}) {
    SchedulerOptions so;
    so.step_tokens = 24;  // prompts in chunks that do not end on block boundaries
    so.reuse_prefixes = reuse;
    Scheduler scheduler(tiny(), so);
    int64_t before = 0;
    for (size_t i = 0; i < requests.size(); ++i) {
      std::promise<GenerateResult> done;
      scheduler.submit(requests[i].first, requests[i].second, {{}, [&done](const GenerateResult& r) { done.set_value(r); }});
      const GenerateResult got = done.get_future().get();
      const GenerateResult want = alone(requests[i].first, requests[i].second);
      EXPECT_EQ(got.tokens, want.tokens) << i;
      ASSERT_EQ(got.logprobs.size(), want.logprobs.size()) << i;
      for (size_t k = 0; k < want.logprobs.size(); ++k) {
        EXPECT_EQ(got.logprobs[k].logprob, want.logprobs[k].logprob) << i << " " << k;
        EXPECT_EQ(got.logprobs[k].top, want.logprobs[k].top) << i << " " << k;
      }
      ASSERT_EQ(got.prompt_logprobs.size(), want.prompt_logprobs.size()) << i;
      for (size_t k = 0; k < want.prompt_logprobs.size(); ++k) EXPECT_EQ(got.prompt_logprobs[k].logprob, want.prompt_logprobs[k].logprob) << i << " " << k;
      const SchedulerStats stats = scheduler.stats();
      EXPECT_EQ(stats.prefix_tokens_reused - before, reuse ? reused[i] : 0) << "request " << i;
      before = stats.prefix_tokens_reused;
      EXPECT_EQ(stats.kv_blocks_used, 0) << "blocks still held after request " << i;
      if (!reuse) {
        EXPECT_EQ(stats.kv_blocks_published, 0);
      }
    }
  }
}

// Sequences admitted together with the same prompt (a request's n choices):
// one evaluates it, the others wait for its blocks and start from them.
TEST(Scheduler, ThePromptOfSequencesAdmittedTogetherIsEvaluatedOnce) {
  for (bool reuse : {true, false}) {
    SchedulerOptions so;
    so.step_tokens = 24;
    so.reuse_prefixes = reuse;
    Scheduler scheduler(tiny(), so);
    // The scheduler's thread held inside a step while the four are queued, so that one admit() takes them all.
    std::promise<void> holding;
    std::atomic<bool> release{false};
    std::once_flag once;
    const uint64_t holder = scheduler.submit(prompt_of(9, 5), greedy(400), {[&](const Generation::Token&) {
                                                                          std::call_once(once, [&] { holding.set_value(); });
                                                                          while (!release) std::this_thread::sleep_for(std::chrono::milliseconds(1));
                                                                          return true;
                                                                        },
                                                                        {}});
    holding.get_future().wait();
    const std::vector<int32_t> prompt = prompt_of(6, 70);
    constexpr int kSame = 4;
    std::vector<std::promise<GenerateResult>> done(kSame);
    std::vector<GenerateOptions> options;
    for (int i = 0; i < kSame; ++i) {
      GenerateOptions o;
      o.max_tokens = 12;
      o.sampling = {.temperature = 0.9f, .top_k = 0, .top_p = 1.0f, .repetition_penalty = 1.0f, .seed = 40u + static_cast<uint64_t>(i)};
      options.push_back(o);
      scheduler.submit(prompt, o, {{}, [&done, i](const GenerateResult& r) { done[static_cast<size_t>(i)].set_value(r); }});
    }
    release = true;
    for (int i = 0; i < kSame; ++i) {
      const GenerateResult got = done[static_cast<size_t>(i)].get_future().get();
      EXPECT_EQ(got.tokens, alone(prompt, options[static_cast<size_t>(i)]).tokens) << i;
    }
    scheduler.cancel(holder);
    // The first evaluates the 70 tokens; each other starts from their first 64 (4 blocks).
    EXPECT_EQ(scheduler.stats().prefix_tokens_reused, reuse ? (kSame - 1) * 64 : 0);
  }
}

// Requests reaching an idle scheduler 20 ms apart start in one step when
// each comes within the gathering window of the one before; with no window
// the first starts alone. The answers are the same either way.
TEST(Scheduler, AnIdleSchedulerGathersABurstOfArrivalsIntoOneStep) {
  constexpr size_t kRequests = 4;
  for (const std::chrono::microseconds gather : {std::chrono::microseconds(200000), std::chrono::microseconds(0)}) {
    SchedulerOptions so;
    so.gather = gather;
    std::mutex mutex;
    std::vector<int64_t> sequences_per_step;
    Scheduler scheduler(tiny(), so, [&](const StepInfo& step) {
      const std::lock_guard lock(mutex);
      sequences_per_step.push_back(step.sequences);
    });
    std::vector<std::promise<GenerateResult>> done(kRequests);
    for (size_t i = 0; i < kRequests; ++i) {
      scheduler.submit(prompt_of(static_cast<int>(i), 20), greedy(3), {{}, [&done, i](const GenerateResult& r) { done[i].set_value(r); }});
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    for (size_t i = 0; i < kRequests; ++i)
      EXPECT_EQ(done[i].get_future().get().tokens, alone(prompt_of(static_cast<int>(i), 20), greedy(3)).tokens) << i << ", gather " << gather.count();
    const std::lock_guard lock(mutex);
    ASSERT_FALSE(sequences_per_step.empty());
    if (gather.count() > 0)
      EXPECT_EQ(sequences_per_step.front(), static_cast<int64_t>(kRequests));
    else
      EXPECT_LT(sequences_per_step.front(), static_cast<int64_t>(kRequests));
  }
}

TEST(Scheduler, RefusesBadRequestsAndAFullQueue) {
  SchedulerOptions so;
  so.max_running = 1;
  so.max_queued = 1;
  Scheduler scheduler(tiny(), so);
  EXPECT_THROW(scheduler.submit({}, greedy(4), {}), Error);
  EXPECT_THROW(scheduler.submit({1, 512}, greedy(4), {}), Error);
  EXPECT_THROW(scheduler.submit({1, 2}, greedy(600), {}), Error);
  // One running (held at its first token), one queued, the third refused.
  std::promise<void> first_token;
  std::atomic<bool> release{false};
  std::atomic<int> finished{0};
  scheduler.submit({1, 2}, greedy(400), {[&](const Generation::Token&) {
                                            static std::once_flag once;
                                            std::call_once(once, [&] { first_token.set_value(); });
                                            while (!release) std::this_thread::sleep_for(std::chrono::milliseconds(1));
                                            return true;
                                          },
                                          [&](const GenerateResult&) { ++finished; }});
  first_token.get_future().wait();
  scheduler.submit({1, 3}, greedy(2), {{}, [&](const GenerateResult&) { ++finished; }});
  EXPECT_THROW(scheduler.submit({1, 4}, greedy(2), {}), QueueFull);
  release = true;
  scheduler.drain(std::chrono::milliseconds(0));  // cancels the long one
  EXPECT_EQ(finished, 2);
  EXPECT_THROW(scheduler.submit({1, 4}, greedy(2), {}), ShuttingDown);
}

uint64_t placed_bytes(const PlacedExperts& p) {
  uint64_t bytes = 0;
  for (uint64_t b : p.node_bytes()) bytes += b;
  return bytes;
}

// ---- The HTTP server -------------------------------------------------------

class Server : public ::testing::Test {
 protected:
  void start(ServerOptions o = {}) {
    o.port = 0;
    o.model_name = "tiny";
    server_ = std::make_unique<HttpServer>(tiny(), o);
    port_ = server_->bind();
    thread_ = std::thread([this] { server_->serve(); });
  }
  void TearDown() override {
    if (server_) server_->shutdown();
    if (thread_.joinable()) thread_.join();
  }
  httplib::Client client() const {
    httplib::Client c("127.0.0.1", port_);
    c.set_read_timeout(60, 0);
    return c;
  }
  httplib::Result post(const std::string& path, const std::string& body, const httplib::Headers& headers = {}) const {
    return client().Post(path.c_str(), headers, body, "application/json");
  }
  // A streaming POST whose body goes to `receive` as it arrives (false: hang up). True when it completed.
  bool post_streaming(const std::string& body, const std::function<bool(const char*, size_t)>& receive) const {
    httplib::Client c = client();
    httplib::Request req;
    req.method = "POST";
    req.path = "/v1/completions";
    req.body = body;
    req.set_header("Content-Type", "application/json");
    req.content_receiver = [&](const char* data, size_t n, uint64_t, uint64_t) { return receive(data, n); };
    httplib::Response res;
    httplib::Error error = httplib::Error::Success;
    return c.send(req, res, error);
  }
  // Each choice's streamed text, its finish reason, how many chunks gave one,
  // and (completions) its chunks' logprobs lists joined, with how many chunks carried some.
  struct StreamedChoice {
    std::string text, finish;
    int finishes = 0;
    json logprobs = {{"tokens", json::array()}, {"token_logprobs", json::array()}, {"top_logprobs", json::array()}, {"text_offset", json::array()}};
    int scored_chunks = 0;
  };
  static std::vector<StreamedChoice> read_stream_choices(const std::string& body, bool chat) {
    std::vector<StreamedChoice> choices;
    size_t at = 0;
    bool done = false;
    while ((at = body.find("data: ", at)) != std::string::npos) {
      const size_t end = body.find("\n\n", at);
      const std::string data = body.substr(at + 6, end - at - 6);
      at = end;
      if (data == "[DONE]") {
        done = true;
        break;
      }
      const json j = json::parse(data);
      EXPECT_FALSE(j.contains("error")) << data;
      if (j["choices"].empty()) continue;  // the usage chunk
      const json& c = j["choices"][0];
      const auto index = c["index"].get<size_t>();
      if (index >= choices.size()) choices.resize(index + 1);
      StreamedChoice& choice = choices[index];
      EXPECT_EQ(choice.finishes, 0) << "a chunk of choice " << index << " after its last: " << data;
      if (chat) {
        if (c["delta"].contains("content")) choice.text += c["delta"]["content"].get<std::string>();
      } else {
        choice.text += c["text"].get<std::string>();
        if (!c["logprobs"].is_null()) {
          ++choice.scored_chunks;
          for (auto& [list, values] : choice.logprobs.items())
            for (const json& v : c["logprobs"][list]) values.push_back(v);
        }
      }
      if (!c["finish_reason"].is_null()) {
        choice.finish = c["finish_reason"];
        ++choice.finishes;
      }
    }
    EXPECT_TRUE(done) << "no [DONE] in " << body;
    EXPECT_EQ(body.find("data: ", at), std::string::npos) << "events after [DONE]";
    return choices;
  }
  static std::pair<std::string, std::string> read_stream(const std::string& body, bool chat) {
    const std::vector<StreamedChoice> choices = read_stream_choices(body, chat);
    EXPECT_EQ(choices.size(), 1u) << body;
    if (choices.empty()) return {};
    return {choices[0].text, choices[0].finish};
  }
  std::unique_ptr<HttpServer> server_;
  int port_ = 0;
  std::thread thread_;
};

TEST_F(Server, CompletionEqualsTheSingleSequenceResultStreamedOrNot) {
  start();
  const std::string prompt = "The night train to the coast";
  const json request = {{"prompt", prompt}, {"max_tokens", 12}, {"temperature", 0}};
  auto res = post("/v1/completions", request.dump());
  ASSERT_TRUE(res);
  ASSERT_EQ(res->status, 200) << res->body;
  const json j = json::parse(res->body);
  GenerateOptions o = greedy_to_eos(12);
  const GenerateResult want = alone(tiny()->tokenizer()->encode(prompt, true), o);
  EXPECT_EQ(j["object"], "text_completion");
  EXPECT_EQ(j["model"], "tiny");
  EXPECT_EQ(j["choices"][0]["text"], want.text);
  EXPECT_EQ(j["choices"][0]["finish_reason"], finish_reason_name(want.finish_reason));
  EXPECT_EQ(j["usage"]["completion_tokens"], want.tokens.size());
  EXPECT_EQ(j["usage"]["prompt_tokens"], tiny()->tokenizer()->encode(prompt, true).size());

  json streamed = request;
  streamed["stream"] = true;
  streamed["stream_options"] = {{"include_usage", true}};
  auto sres = post("/v1/completions", streamed.dump());
  ASSERT_TRUE(sres);
  ASSERT_EQ(sres->status, 200);
  EXPECT_EQ(sres->get_header_value("Content-Type"), "text/event-stream");
  const auto [text, finish] = read_stream(sres->body, false);
  EXPECT_EQ(text, want.text);
  EXPECT_EQ(finish, finish_reason_name(want.finish_reason));
  EXPECT_NE(sres->body.find("\"usage\":{\"completion_tokens\":" + std::to_string(want.tokens.size())), std::string::npos);
}

TEST_F(Server, ChatAppliesTheTemplateAndStreamsTheSameAnswer) {
  start();
  const json messages = json::array({{{"role", "system"}, {"content", "Be brief."}}, {{"role", "user"}, {"content", "Where is the train?"}}});
  const json request = {{"messages", messages}, {"max_tokens", 10}, {"temperature", 0}, {"seed", 3}};
  auto res = post("/v1/chat/completions", request.dump());
  ASSERT_TRUE(res);
  ASSERT_EQ(res->status, 200) << res->body;
  const json j = json::parse(res->body);
  GenerateOptions o = greedy_to_eos(10);
  const GenerateResult want = alone(apply_chat_template(*tiny(), messages), o);
  EXPECT_EQ(j["object"], "chat.completion");
  EXPECT_EQ(j["choices"][0]["message"]["role"], "assistant");
  EXPECT_EQ(j["choices"][0]["message"]["content"], want.text);
  json streamed = request;
  streamed["stream"] = true;
  auto sres = post("/v1/chat/completions", streamed.dump());
  ASSERT_TRUE(sres);
  EXPECT_NE(sres->body.find("\"role\":\"assistant\""), std::string::npos);
  EXPECT_EQ(read_stream(sres->body, true).first, want.text);
}

// The model's log-probabilities after each position of `prompt`, worked out
// here from the forward pass's logits (testing::log_softmax), not by the server.
std::vector<std::vector<double>> reference_logprobs_at_every_position(const std::vector<int32_t>& prompt) {
  Forward forward(tiny(), BatchPolicy::invariant);
  KvCache cache(tiny()->config(), static_cast<int64_t>(prompt.size()), SchedulerOptions{}.kv_type);
  const auto vocab = static_cast<size_t>(tiny()->config().vocab);
  std::vector<float> logits(prompt.size() * vocab);
  const SequenceStep step{&cache, prompt, logits.data(), true};
  forward.step(std::span(&step, 1));
  std::vector<std::vector<double>> out;
  for (size_t p = 0; p < prompt.size(); ++p) out.push_back(testing::log_softmax(std::span(logits).subspan(p * vocab, vocab)));
  return out;
}

std::vector<double> reference_logprobs(const std::vector<int32_t>& prompt) { return reference_logprobs_at_every_position(prompt).back(); }

TEST_F(Server, LogprobsAreTheModelsAndStreamTheSame) {
  start();
  const std::vector<int32_t> prompt = prompt_of(3, 20);
  const json request = {{"prompt", prompt}, {"max_tokens", 6}, {"temperature", 0}, {"logprobs", 3}};
  auto res = post("/v1/completions", request.dump());
  ASSERT_TRUE(res);
  ASSERT_EQ(res->status, 200) << res->body;
  const json answer = json::parse(res->body);
  const json lp = answer["choices"][0]["logprobs"];
  const size_t n = answer["usage"]["completion_tokens"];
  ASSERT_EQ(n, 6u);
  for (const char* list : {"tokens", "token_logprobs", "top_logprobs", "text_offset"}) ASSERT_EQ(lp[list].size(), n) << list;
  GenerateOptions same = greedy_to_eos(6);
  const std::vector<int32_t> answer_tokens = alone(prompt, same).tokens;
  ASSERT_EQ(answer_tokens.size(), n);
  EXPECT_EQ(lp["text_offset"][0], 0);

  // The first token against the reference: greedy took the most likely token,
  // and the three alternatives are the three most likely, with their values.
  const std::vector<double> want = reference_logprobs(prompt);
  std::vector<int32_t> ids(want.size());
  std::iota(ids.begin(), ids.end(), 0);
  std::partial_sort(ids.begin(), ids.begin() + 3, ids.end(), [&](int32_t a, int32_t b) { return want[a] > want[b]; });
  EXPECT_NEAR(lp["token_logprobs"][0].get<double>(), want[ids[0]], 1e-4);
  std::vector<double> top;
  for (const auto& [name, value] : lp["top_logprobs"][0].items()) top.push_back(value.get<double>());
  std::sort(top.rbegin(), top.rend());
  ASSERT_EQ(top.size(), 3u);
  for (size_t i = 0; i < 3; ++i) EXPECT_NEAR(top[i], want[ids[i]], 1e-4);
  EXPECT_EQ(lp["tokens"][0], tiny()->tokenizer()->token_bytes(ids[0]));
  // Every later token: greedy again heads its alternatives; offsets count the tokens' bytes.
  for (size_t i = 0; i < n; ++i) {
    double best = -1e30;
    for (const auto& [name, value] : lp["top_logprobs"][i].items()) best = std::max(best, value.get<double>());
    EXPECT_EQ(lp["token_logprobs"][i].get<double>(), best);
    EXPECT_LE(best, 0.0);
    if (i > 0) {
      EXPECT_EQ(lp["text_offset"][i].get<size_t>() - lp["text_offset"][i - 1].get<size_t>(),
                tiny()->tokenizer()->token_bytes(answer_tokens[i - 1]).size());
    }
  }

  // Streamed: the same lists, one token per chunk.
  json streamed = request;
  streamed["stream"] = true;
  auto sres = post("/v1/completions", streamed.dump());
  ASSERT_TRUE(sres);
  ASSERT_EQ(sres->status, 200);
  const std::vector<StreamedChoice> chunks = read_stream_choices(sres->body, false);
  ASSERT_EQ(chunks.size(), 1u);
  EXPECT_EQ(chunks[0].scored_chunks, static_cast<int>(n));
  for (const char* list : {"tokens", "token_logprobs", "top_logprobs", "text_offset"}) EXPECT_EQ(chunks[0].logprobs[list], lp[list]) << list;

  // The chat API's shape: logprobs true, top_logprobs alternatives.
  const json chat = {{"messages", json::array({{{"role", "user"}, {"content", "Where is the train?"}}})},
                     {"max_tokens", 4},
                     {"temperature", 0},
                     {"logprobs", true},
                     {"top_logprobs", 2}};
  res = post("/v1/chat/completions", chat.dump());
  ASSERT_TRUE(res);
  ASSERT_EQ(res->status, 200) << res->body;
  const json reply = json::parse(res->body);
  const json& content = reply["choices"][0]["logprobs"]["content"];
  ASSERT_EQ(content.size(), reply["usage"]["completion_tokens"].get<size_t>());
  for (const json& t : content) {
    EXPECT_TRUE(t["token"].is_string());
    EXPECT_TRUE(t["bytes"].is_array());
    ASSERT_EQ(t["top_logprobs"].size(), 2u);
    EXPECT_EQ(t["logprob"], t["top_logprobs"][0]["logprob"]);
    EXPECT_EQ(t["token"], t["top_logprobs"][0]["token"]);
  }
  // Without logprobs asked, a choice carries none.
  res = post("/v1/chat/completions", json{{"messages", chat["messages"]}, {"max_tokens", 2}}.dump());
  ASSERT_TRUE(res);
  EXPECT_TRUE(json::parse(res->body)["choices"][0]["logprobs"].is_null());
  res = post("/v1/chat/completions", json{{"messages", chat["messages"]}, {"top_logprobs", 2}}.dump());
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 400);
  EXPECT_NE(res->body.find("'top_logprobs' needs 'logprobs': true"), std::string::npos) << res->body;
}

TEST_F(Server, EchoWithLogprobsScoresThePrompt) {
  start();
  // Longer than a step's 256 prompt tokens: the scores cross two steps.
  const std::vector<int32_t> prompt = prompt_of(9, 300);
  const json request = {{"prompt", prompt}, {"max_tokens", 1}, {"temperature", 0}, {"logprobs", 1}, {"echo", true}};
  auto res = post("/v1/completions", request.dump());
  ASSERT_TRUE(res);
  ASSERT_EQ(res->status, 200) << res->body;
  const json answer = json::parse(res->body);
  const json& lp = answer["choices"][0]["logprobs"];
  ASSERT_EQ(lp["token_logprobs"].size(), prompt.size() + 1);
  EXPECT_TRUE(lp["token_logprobs"][0].is_null());
  EXPECT_TRUE(lp["top_logprobs"][0].is_null());
  EXPECT_EQ(lp["tokens"][0], "<s>");
  EXPECT_EQ(lp["text_offset"][1], 0);  // <s> adds no text
  const std::vector<std::vector<double>> want = reference_logprobs_at_every_position(prompt);
  for (size_t i = 1; i < prompt.size(); ++i) EXPECT_NEAR(lp["token_logprobs"][i].get<double>(), want[i - 1][static_cast<size_t>(prompt[i])], 1e-4) << i;
  // The echoed text is the prompt's, then the answer's.
  const std::string prompt_text = tiny()->tokenizer()->decode(prompt);
  const std::string text = answer["choices"][0]["text"];
  EXPECT_EQ(text.substr(0, prompt_text.size()), prompt_text);
  EXPECT_EQ(answer["usage"]["prompt_tokens"], prompt.size());
  // A batch of one prompt (as lm-evaluation-harness sends it) is that prompt.
  json batched = request;
  batched["prompt"] = json::array({prompt});
  res = post("/v1/completions", batched.dump());
  ASSERT_TRUE(res);
  ASSERT_EQ(res->status, 200) << res->body;
  EXPECT_EQ(json::parse(res->body)["choices"][0]["logprobs"], lp);
  batched["prompt"] = json::array({prompt, prompt});
  res = post("/v1/completions", batched.dump());
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 400);
  EXPECT_NE(res->body.find("one prompt per request"), std::string::npos) << res->body;
  // Echo alone: the text, no logprobs.
  res = post("/v1/completions", json{{"prompt", {"The night train"}}, {"max_tokens", 2}, {"echo", true}}.dump());
  ASSERT_TRUE(res);
  ASSERT_EQ(res->status, 200) << res->body;
  EXPECT_EQ(json::parse(res->body)["choices"][0]["text"].get<std::string>().rfind("The night train", 0), 0u);
  EXPECT_TRUE(json::parse(res->body)["choices"][0]["logprobs"].is_null());

  // max_tokens 0 scores the prompt alone: the same values, no token.
  json scored = request;
  scored["max_tokens"] = 0;
  res = post("/v1/completions", scored.dump());
  ASSERT_TRUE(res);
  ASSERT_EQ(res->status, 200) << res->body;
  const json only = json::parse(res->body);
  EXPECT_EQ(only["choices"][0]["text"], prompt_text);
  EXPECT_EQ(only["choices"][0]["finish_reason"], "length");
  EXPECT_EQ(only["usage"]["completion_tokens"], 0);
  for (const char* list : {"tokens", "token_logprobs", "top_logprobs", "text_offset"}) {
    json want_list = lp[list];
    want_list.erase(want_list.size() - 1);  // the answer's token
    EXPECT_EQ(only["choices"][0]["logprobs"][list], want_list) << list;
  }
  res = post("/v1/completions", json{{"prompt", "x"}, {"max_tokens", 0}}.dump());
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 400);
  EXPECT_NE(res->body.find("0 only with 'echo'"), std::string::npos) << res->body;
}

// Streamed, echo sends the prompt (and its logprobs) first: the chunks
// join to the non-streamed answer, with and without logprobs, with tokens
// and with none (max_tokens 0).
TEST_F(Server, EchoStreamsThePromptFirst) {
  start();
  const std::vector<int32_t> prompt = prompt_of(9, 40);
  for (const json& request : {json{{"prompt", prompt}, {"max_tokens", 5}, {"temperature", 0}, {"logprobs", 2}, {"echo", true}},
                              json{{"prompt", prompt}, {"max_tokens", 0}, {"logprobs", 2}, {"echo", true}},
                              json{{"prompt", "The night train"}, {"max_tokens", 4}, {"temperature", 0}, {"echo", true}}}) {
    auto res = post("/v1/completions", request.dump());
    ASSERT_TRUE(res);
    ASSERT_EQ(res->status, 200) << res->body;
    const json want = json::parse(res->body)["choices"][0];
    json streamed = request;
    streamed["stream"] = true;
    auto sres = post("/v1/completions", streamed.dump());
    ASSERT_TRUE(sres);
    ASSERT_EQ(sres->status, 200) << sres->body;
    const std::vector<StreamedChoice> got = read_stream_choices(sres->body, false);
    ASSERT_EQ(got.size(), 1u) << sres->body;
    EXPECT_EQ(got[0].text, want["text"]) << request;
    EXPECT_EQ(got[0].finish, want["finish_reason"]) << request;
    if (want["logprobs"].is_null()) {
      EXPECT_EQ(got[0].scored_chunks, 0);
    } else {
      for (const char* list : {"tokens", "token_logprobs", "top_logprobs", "text_offset"})
        EXPECT_EQ(got[0].logprobs[list], want["logprobs"][list]) << request << " " << list;
    }
    // The prompt's chunk comes first: a text prompt as given, token ids decoded.
    const size_t first = sres->body.find("data: ");
    const json chunk = json::parse(sres->body.substr(first + 6, sres->body.find("\n\n", first) - first - 6));
    EXPECT_EQ(chunk["choices"][0]["text"], request["prompt"].is_string() ? request["prompt"].get<std::string>() : tiny()->tokenizer()->decode(prompt));
  }
}

TEST_F(Server, PenaltiesReachTheSampler) {
  start();
  const std::vector<int32_t> prompt = prompt_of(5, 12);
  GenerateOptions plain = greedy_to_eos(16);
  const GenerateResult unpenalised = alone(prompt, plain);
  for (const auto& [frequency, presence] : {std::pair{2.0f, 0.0f}, std::pair{0.5f, 2.0f}}) {
    const json request = {{"prompt", prompt}, {"max_tokens", 16}, {"temperature", 0}, {"frequency_penalty", frequency}, {"presence_penalty", presence}};
    auto res = post("/v1/completions", request.dump());
    ASSERT_TRUE(res);
    ASSERT_EQ(res->status, 200) << res->body;
    GenerateOptions o = plain;
    o.sampling.frequency_penalty = frequency;
    o.sampling.presence_penalty = presence;
    const GenerateResult want = alone(prompt, o);
    EXPECT_EQ(json::parse(res->body)["choices"][0]["text"], want.text);
    // This random model repeats one token; the penalties change the answer.
    EXPECT_NE(want.tokens, unpenalised.tokens);
  }
}

TEST_F(Server, EachOfNChoicesSamplesWithItsOwnSeed) {
  start();
  const std::vector<int32_t> prompt = prompt_of(3, 20);
  constexpr int kChoices = 3;
  std::vector<GenerateResult> want;
  size_t completion_tokens = 0;
  for (int i = 0; i < kChoices; ++i) {
    GenerateOptions o;
    o.max_tokens = 8;
    o.sampling = {.temperature = 0.9f, .top_k = 0, .top_p = 1.0f, .repetition_penalty = 1.0f, .seed = 77u + static_cast<uint64_t>(i)};
    want.push_back(alone(prompt, o));
    completion_tokens += want.back().tokens.size();
  }
  ASSERT_NE(want[0].tokens, want[1].tokens);  // the seeds differ, and so do the samples
  json request = {{"prompt", prompt}, {"max_tokens", 8}, {"temperature", 0.9}, {"top_k", 0}, {"seed", 77}, {"n", kChoices}, {"logprobs", 2}};
  auto res = post("/v1/completions", request.dump());
  ASSERT_TRUE(res);
  ASSERT_EQ(res->status, 200) << res->body;
  json j = json::parse(res->body);
  ASSERT_EQ(j["choices"].size(), static_cast<size_t>(kChoices));
  for (size_t i = 0; i < kChoices; ++i) {
    const json& c = j["choices"][i];
    EXPECT_EQ(c["index"], i);
    EXPECT_EQ(c["text"], want[i].text) << "choice " << i;
    EXPECT_EQ(c["finish_reason"], finish_reason_name(want[i].finish_reason));
    EXPECT_EQ(c["logprobs"]["tokens"].size(), want[i].tokens.size());
  }
  EXPECT_EQ(j["usage"]["prompt_tokens"], prompt.size());
  EXPECT_EQ(j["usage"]["completion_tokens"], completion_tokens);
  // best_of equal to n asks for the same.
  request["best_of"] = kChoices;
  res = post("/v1/completions", request.dump());
  ASSERT_TRUE(res);
  ASSERT_EQ(res->status, 200) << res->body;
  EXPECT_EQ(json::parse(res->body)["choices"], j["choices"]);
  // Streamed: each choice's chunks carry its index and end once; the usage counts them all.
  request["stream"] = true;
  request["stream_options"] = {{"include_usage", true}};
  res = post("/v1/completions", request.dump());
  ASSERT_TRUE(res);
  ASSERT_EQ(res->status, 200) << res->body;
  const auto streamed = read_stream_choices(res->body, false);
  ASSERT_EQ(streamed.size(), static_cast<size_t>(kChoices));
  for (size_t i = 0; i < kChoices; ++i) {
    EXPECT_EQ(streamed[i].text, want[i].text) << "choice " << i;
    EXPECT_EQ(streamed[i].finishes, 1);
    EXPECT_EQ(streamed[i].finish, finish_reason_name(want[i].finish_reason));
  }
  EXPECT_NE(res->body.find("\"completion_tokens\":" + std::to_string(completion_tokens) + ","), std::string::npos) << res->body;
  // Chat: the role first in every choice; greedy choices are all the same answer.
  const json messages = {{{"role", "user"}, {"content", "hello"}}};
  const GenerateResult greedy_answer = alone(apply_chat_template(*tiny(), messages), greedy_to_eos(6));
  res = post("/v1/chat/completions", json{{"messages", messages}, {"max_tokens", 6}, {"temperature", 0}, {"n", 2}, {"stream", true}}.dump());
  ASSERT_TRUE(res);
  ASSERT_EQ(res->status, 200) << res->body;
  const auto chat = read_stream_choices(res->body, true);
  ASSERT_EQ(chat.size(), 2u);
  for (const StreamedChoice& c : chat) EXPECT_EQ(c.text, greedy_answer.text);
  size_t roles = 0;
  for (size_t at = res->body.find("\"role\":\"assistant\""); at != std::string::npos; at = res->body.find("\"role\":\"assistant\"", at + 1)) ++roles;
  EXPECT_EQ(roles, 2u);
}

TEST_F(Server, LogitBiasReachesTheSampler) {
  start();
  const std::vector<int32_t> prompt = prompt_of(5, 12);
  GenerateOptions plain = greedy_to_eos(16);
  const GenerateResult unbiased = alone(prompt, plain);
  ASSERT_FALSE(unbiased.tokens.empty());
  const int32_t first = unbiased.tokens[0];
  GenerateOptions o = plain;
  o.sampling.logit_bias = {{first, -100.0f}, {7, 2.5f}};
  const GenerateResult want = alone(prompt, o);
  EXPECT_NE(want.tokens[0], first);
  const json bias = {{std::to_string(first), -100}, {"7", 2.5}};
  auto res = post("/v1/completions", json{{"prompt", prompt}, {"max_tokens", 16}, {"temperature", 0}, {"logit_bias", bias}}.dump());
  ASSERT_TRUE(res);
  ASSERT_EQ(res->status, 200) << res->body;
  EXPECT_EQ(json::parse(res->body)["choices"][0]["text"], want.text);
  // Chat takes it too.
  const json messages = {{{"role", "user"}, {"content", "hello"}}};
  const std::vector<int32_t> chat_prompt = apply_chat_template(*tiny(), messages);
  const int32_t chat_first = alone(chat_prompt, plain).tokens.at(0);
  GenerateOptions chat_o = plain;
  chat_o.sampling.logit_bias = {{chat_first, -100.0f}};
  const GenerateResult chat_want = alone(chat_prompt, chat_o);
  EXPECT_NE(chat_want.tokens.at(0), chat_first);
  res = post("/v1/chat/completions",
             json{{"messages", messages}, {"max_tokens", 16}, {"temperature", 0}, {"logit_bias", {{std::to_string(chat_first), -100}}}}.dump());
  ASSERT_TRUE(res);
  ASSERT_EQ(res->status, 200) << res->body;
  EXPECT_EQ(json::parse(res->body)["choices"][0]["message"]["content"], chat_want.text);
}

TEST_F(Server, ConcurrentClientsEachGetTheirOwnAnswer) {
  start();
  constexpr int kClients = 12;
  std::vector<json> requests;
  for (int i = 0; i < kClients; ++i)
    requests.push_back({{"prompt", prompt_of(i, 4 + static_cast<size_t>(i) * 9)},
                        {"max_tokens", 6 + i},
                        {"temperature", i % 2 ? 0.8 : 0.0},
                        {"seed", 1000 + i},
                        {"stream", i % 3 == 0}});
  std::vector<std::string> got(kClients);
  std::vector<std::thread> clients;
  for (int i = 0; i < kClients; ++i)
    clients.emplace_back([&, i] {
      auto res = post("/v1/completions", requests[static_cast<size_t>(i)].dump());
      if (!res || res->status != 200) return;
      got[static_cast<size_t>(i)] = requests[static_cast<size_t>(i)]["stream"] ? read_stream(res->body, false).first
                                                                                 : json::parse(res->body)["choices"][0]["text"].get<std::string>();
    });
  for (auto& t : clients) t.join();
  for (int i = 0; i < kClients; ++i) {
    const json& r = requests[static_cast<size_t>(i)];
    GenerateOptions o;
    o.max_tokens = r["max_tokens"];
    o.sampling = {.temperature = r["temperature"].get<float>(), .top_k = 0, .top_p = 1.0f, .repetition_penalty = 1.0f, .seed = r["seed"]};
    EXPECT_EQ(got[static_cast<size_t>(i)], alone(r["prompt"].get<std::vector<int32_t>>(), o).text) << "client " << i;
  }
}

TEST_F(Server, AClientThatLeavesIsCancelledAndTheServerGoesOn) {
  start();
  const json request = {{"prompt", {1, 5, 9}}, {"max_tokens", 400}, {"temperature", 0}, {"stream", true}};
  int chunks = 0;
  EXPECT_FALSE(post_streaming(request.dump(), [&](const char*, size_t) { return ++chunks < 2; }));  // leave after the first chunk
  // The sequence leaves the batch long before 400 tokens.
  bool idle = false;
  for (int i = 0; i < 100 && !idle; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    auto m = client().Get("/metrics");
    idle = m && m->body.find("lacuna_running_sequences 0") != std::string::npos && m->body.find("lacuna_queue_length 0") != std::string::npos;
  }
  EXPECT_TRUE(idle);
  auto m = client().Get("/metrics");
  ASSERT_TRUE(m);
  const std::string counter = "\nlacuna_generated_tokens_total ";
  const size_t at = m->body.find(counter);
  ASSERT_NE(at, std::string::npos);
  EXPECT_LT(std::stod(m->body.substr(at + counter.size())), 400);
  auto next = post("/v1/completions", json{{"prompt", {1, 2}}, {"max_tokens", 3}}.dump());
  ASSERT_TRUE(next);
  EXPECT_EQ(next->status, 200);
}

TEST_F(Server, AFullQueueAnswers429WithAJsonError) {
  // One running, one waiting: of many clients arriving together, the rest are refused.
  ServerOptions o;
  o.scheduler.max_running = 1;
  o.scheduler.max_queued = 1;
  start(o);
  constexpr int kClients = 16;
  const std::string body = json{{"prompt", {1, 5}}, {"max_tokens", 400}, {"temperature", 0}}.dump();
  std::vector<std::pair<int, std::string>> results(kClients);  // status, body
  std::vector<std::thread> clients;
  for (int i = 0; i < kClients; ++i)
    clients.emplace_back([&, i] {
      auto res = post("/v1/completions", body);
      results[static_cast<size_t>(i)] = res ? std::pair{res->status, res->body} : std::pair{0, httplib::to_string(res.error())};
    });
  for (auto& t : clients) t.join();
  int refused = 0, answered = 0;
  std::string first_answer;
  for (const auto& [status, response] : results) {
    ASSERT_NE(status, 0) << "no answer: " << response;
    const json j = json::parse(response);
    if (status == 429) {
      ++refused;
      EXPECT_EQ(j["error"]["code"], "queue_full");
      EXPECT_EQ(j["error"]["type"], "rate_limit_error");
      EXPECT_NE(j["error"]["message"].get<std::string>().find("queue is full"), std::string::npos);
    } else {
      ASSERT_EQ(status, 200) << response;
      ++answered;
      const std::string text = j["choices"][0]["text"];
      if (first_answer.empty()) first_answer = text;
      EXPECT_EQ(text, first_answer);  // the same greedy request: the same answer
    }
  }
  EXPECT_GE(answered, 1);
  EXPECT_GE(refused, 1);
  // More choices than the queue holds: refused whole, and the choices that
  // got in are cancelled, so the server soon answers the next request. The
  // end-of-sequence token is banned, so that the first choice runs its 500
  // tokens and cannot end (freeing its place) before the third is submitted.
  ASSERT_GE(tiny()->config().eos_id, 0);
  const json no_eos = {{std::to_string(tiny()->config().eos_id), -100}};
  auto res = post("/v1/completions", json{{"prompt", {1, 5}}, {"max_tokens", 500}, {"temperature", 0}, {"n", 3}, {"logit_bias", no_eos}}.dump());
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 429) << res->body;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  do {
    res = post("/v1/completions", json{{"prompt", {1, 5}}, {"max_tokens", 2}, {"temperature", 0}}.dump());
    ASSERT_TRUE(res);
  } while (res->status == 429 && std::chrono::steady_clock::now() < deadline);
  EXPECT_EQ(res->status, 200) << res->body;
}

std::string oversized_body() {
  std::string body = "{\"prompt\": \"";
  body.append(70 << 10, 'a');
  return body + "\"}";
}

TEST_F(Server, BadRequestsGetClearJsonErrorsAndTheServerKeepsServing) {
  ServerOptions o;
  o.max_body_bytes = 64 << 10;
  start(o);
  struct Case {
    std::string body;
    int status;
    std::string message, param;
  };
  const std::vector<Case> cases = {
      {"{\"prompt\": \"x\", ", 400, "not valid JSON", ""},
      {"{\"prompt\": \"x\", \"max_tokens\": 1e999}", 400, "not valid JSON", ""},  // beyond double: nlohmann's out_of_range
      // The parser's message quotes the first byte of a three-byte character; the error body must still be JSON.
      {"{\"prompt\": \xe2\x96\x81}", 400, "not valid JSON", ""},
      {"[1, 2]", 400, "must be a JSON object", ""},
      {"{\"max_tokens\": 4}", 400, "'prompt' is required", "prompt"},
      {"{\"prompt\": 7}", 400, "must be a string or a non-empty array of token ids", "prompt"},
      {"{\"prompt\": [1, 512]}", 400, "outside the vocabulary", "prompt"},
      {"{\"prompt\": \"x\", \"max_tokens\": \"8\"}", 400, "must be an integer, not a string", "max_tokens"},
      {"{\"prompt\": \"x\", \"max_tokens\": 0}", 400, "at least 1", "max_tokens"},
      {"{\"prompt\": \"x\", \"max_tokens\": 100000}", 400, "exceeds the model's context of 512", "max_tokens"},
      {"{\"prompt\": \"x\", \"temperature\": -1}", 400, "'temperature' must be in [0, 2]", "temperature"},
      {"{\"prompt\": \"x\", \"stream\": \"yes\"}", 400, "must be a boolean", "stream"},
      {"{\"prompt\": \"x\", \"n\": 0}", 400, "'n' must be in 1..128", "n"},
      {"{\"prompt\": \"x\", \"n\": 129}", 400, "'n' must be in 1..128", "n"},
      {"{\"prompt\": \"x\", \"n\": 2, \"best_of\": 3}", 400, "'best_of' must equal 'n'", "best_of"},
      {"{\"prompt\": \"x\", \"logprobs\": 21}", 400, "'logprobs' must be in 0..20", "logprobs"},
      {"{\"prompt\": \"x\", \"presence_penalty\": 3}", 400, "'presence_penalty' must be in [-2, 2]", "presence_penalty"},
      {"{\"prompt\": \"x\", \"frequency_penalty\": \"a\"}", 400, "must be a number, not a string", "frequency_penalty"},
      {"{\"prompt\": \"x\", \"logprobs\": \"2\"}", 400, "must be an integer 0..20, not a string", "logprobs"},
      {"{\"prompt\": \"x\", \"logprobs\": true}", 400, "'logprobs' must be an integer 0..20", "logprobs"},
      {"{\"prompt\": \"x\", \"stop\": [1]}", 400, "'stop' must be a string or an array", "stop"},
      {"{\"prompt\": \"x\", \"logit_bias\": [1]}", 400, "'logit_bias' must be an object", "logit_bias"},
      {"{\"prompt\": \"x\", \"logit_bias\": {\"a\": 1}}", 400, "key \"a\" is not a token id 0..511", "logit_bias"},
      {"{\"prompt\": \"x\", \"logit_bias\": {\"512\": 1}}", 400, "key \"512\" is not a token id", "logit_bias"},
      {"{\"prompt\": \"x\", \"logit_bias\": {\"-1\": 1}}", 400, "key \"-1\" is not a token id", "logit_bias"},
      {"{\"prompt\": \"x\", \"logit_bias\": {\"5x\": 1}}", 400, "key \"5x\" is not a token id", "logit_bias"},
      {"{\"prompt\": \"x\", \"logit_bias\": {\"5\": \"1\"}}", 400, "value of token 5 must be a number", "logit_bias"},
      {"{\"prompt\": \"x\", \"logit_bias\": {\"5\": 101}}", 400, "value of token 5 must be in [-100, 100]", "logit_bias"},
      {"{\"prompt\": \"x\", \"best_of\": 3}", 400, "'best_of' must equal 'n'", "best_of"},
      {"{\"prompt\": \"x\", \"suffix\": \"end\"}", 400, "'suffix' (insertion) is not supported", "suffix"},
      {"{\"prompt\": \"caf\xc3\"}", 400, "not valid UTF-8", ""},
      {"{\"prompt\": \"\xff\"}", 400, "not valid UTF-8", ""},
      {oversized_body(), 413, "too large", ""},
  };
  for (const Case& c : cases) {
    auto res = post("/v1/completions", c.body);
    ASSERT_TRUE(res) << c.body.substr(0, 60);
    EXPECT_EQ(res->status, c.status) << c.body.substr(0, 60) << " -> " << res->body;
    const json e = json::parse(res->body);
    EXPECT_NE(e["error"]["message"].get<std::string>().find(c.message), std::string::npos) << res->body;
    if (!c.param.empty()) {
      EXPECT_EQ(e["error"]["param"], c.param) << res->body;
    }
  }
  // A prompt longer than the context.
  std::vector<int32_t> long_prompt(600, 5);
  auto res = post("/v1/completions", json{{"prompt", long_prompt}}.dump());
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 400);
  EXPECT_EQ(json::parse(res->body)["error"]["code"], "context_length_exceeded");
  // Chat messages of the wrong shape.
  res = post("/v1/chat/completions", json{{"messages", {{{"role", "robot"}, {"content", "hi"}}}}}.dump());
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 400);
  EXPECT_NE(res->body.find("not system, user or assistant"), std::string::npos);
  // Chat features Lacuna does not have are refused, naming them; their empty forms are not.
  const json hi = {{{"role", "user"}, {"content", "hi"}}};
  for (const auto& [field, value, message] :
       {std::tuple{"tools", json::array({{{"type", "function"}, {"function", {{"name", "f"}}}}}), "'tools' (tool calls) is not supported"},
        std::tuple{"functions", json::array({{{"name", "f"}}}), "'functions' (tool calls) is not supported"},
        std::tuple{"response_format", json{{"type", "json_object"}}, "constrained (JSON) output is not supported"},
        std::tuple{"response_format", json("json"), "'response_format' must be an object, not a string"}}) {
    res = post("/v1/chat/completions", json{{"messages", hi}, {field, value}}.dump());
    ASSERT_TRUE(res);
    EXPECT_EQ(res->status, 400) << field;
    const json e = json::parse(res->body)["error"];
    EXPECT_EQ(e["param"], field);
    EXPECT_NE(e["message"].get<std::string>().find(message), std::string::npos) << res->body;
  }
  res = post("/v1/chat/completions", json{{"messages", hi}, {"max_tokens", 2}, {"tools", json::array()}, {"response_format", {{"type", "text"}}}}.dump());
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 200) << res->body;
  // Unknown fields are ignored.
  res = post("/v1/completions", json{{"prompt", "x"}, {"max_tokens", 2}, {"user", "someone"}, {"my_extension", {1, 2}}}.dump());
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 200) << res->body;
  auto missing = client().Get("/v2/nothing");
  ASSERT_TRUE(missing);
  EXPECT_EQ(missing->status, 404);
  EXPECT_EQ(json::parse(missing->body)["error"]["type"], "not_found_error");
  auto metrics = client().Get("/metrics");
  ASSERT_TRUE(metrics);
  EXPECT_NE(metrics->body.find("lacuna_requests_total{endpoint=\"completions\",status=\"400\"}"), std::string::npos);
  EXPECT_NE(metrics->body.find("lacuna_time_to_first_token_seconds_bucket"), std::string::npos);
  // Every token the model ran went to top_k experts in every layer.
  double routed = 0;
  for (size_t at = metrics->body.find("\nlacuna_expert_tokens_total{"); at != std::string::npos;
       at = metrics->body.find("\nlacuna_expert_tokens_total{", at + 1))
    routed += std::stod(metrics->body.substr(metrics->body.find("} ", at) + 2));
  const ModelConfig& c = tiny()->config();
  EXPECT_GT(routed, 0);
  EXPECT_EQ(std::fmod(routed, static_cast<double>(c.top_k * c.layers)), 0.0) << routed;
}

// Experts placed on a simulated 2-node machine: the same answer as the
// unplaced model, and /metrics shows every node's tokens, no remote read.
TEST_F(Server, PlacedExpertsAnswerTheSameAndReportTheirNodes) {
  ServerOptions o;
  const Topology topology = simulate_topology(discover_topology(), 2);
  o.scheduler.placed = std::make_shared<const PlacedExperts>(*tiny(), topology, plan_model_placement(*tiny(), 2, NumaPolicy::experts, 0, 1, {}));
  start(o);
  const std::string prompt = "The night train to the coast";
  auto res = post("/v1/completions", json{{"prompt", prompt}, {"max_tokens", 8}, {"temperature", 0}}.dump());
  ASSERT_TRUE(res);
  ASSERT_EQ(res->status, 200) << res->body;
  GenerateOptions g = greedy_to_eos(8);
  EXPECT_EQ(json::parse(res->body)["choices"][0]["text"], alone(tiny()->tokenizer()->encode(prompt, true), g).text);
  auto metrics = client().Get("/metrics");
  ASSERT_TRUE(metrics);
  const std::string& m = metrics->body;
  auto value = [&](const std::string& series) {
    const size_t at = m.find("\n" + series + " ");
    EXPECT_NE(at, std::string::npos) << series << " missing from\n" << m;
    return at == std::string::npos ? -1.0 : std::stod(m.substr(at + series.size() + 2));
  };
  double routed = 0;
  for (size_t at = m.find("\nlacuna_expert_tokens_total{"); at != std::string::npos; at = m.find("\nlacuna_expert_tokens_total{", at + 1))
    routed += std::stod(m.substr(m.find("} ", at) + 2));
  EXPECT_EQ(value("lacuna_numa_node_tokens_total{node=\"0\"}") + value("lacuna_numa_node_tokens_total{node=\"1\"}"), routed);
  EXPECT_GT(value("lacuna_numa_node_busy_seconds_total{node=\"1\"}"), 0);
  EXPECT_EQ(value("lacuna_numa_remote_weight_bytes_total"), 0);
  EXPECT_EQ(value("lacuna_numa_replica_bytes"), 0);
  EXPECT_GE(value("lacuna_numa_load_imbalance"), 1);
  EXPECT_EQ(value("lacuna_numa_node_weight_bytes{node=\"0\"}") + value("lacuna_numa_node_weight_bytes{node=\"1\"}"),
            static_cast<double>(placed_bytes(*o.scheduler.placed)));
}

TEST_F(Server, TokenizeAndDetokenizeAreTheModelsTokenizer) {
  start();
  const Tokenizer& tok = *tiny()->tokenizer();
  const std::string text = "The night train left at nine.";
  auto res = post("/tokenize", json{{"prompt", text}}.dump());
  ASSERT_TRUE(res);
  ASSERT_EQ(res->status, 200) << res->body;
  json j = json::parse(res->body);
  EXPECT_EQ(j["tokens"].get<std::vector<int32_t>>(), tok.encode(text, true));
  EXPECT_EQ(j["count"], j["tokens"].size());
  EXPECT_EQ(j["max_model_len"], 512);
  const std::vector<int32_t> plain = tok.encode(text, false);
  res = post("/tokenize", json{{"prompt", text}, {"add_special_tokens", false}}.dump());
  ASSERT_TRUE(res);
  EXPECT_EQ(json::parse(res->body)["tokens"].get<std::vector<int32_t>>(), plain);
  // Messages: the chat template's tokens, which a chat completion counts as its prompt.
  const json messages = {{{"role", "user"}, {"content", "Where is the train?"}}};
  res = post("/tokenize", json{{"messages", messages}}.dump());
  ASSERT_TRUE(res);
  ASSERT_EQ(res->status, 200) << res->body;
  j = json::parse(res->body);
  EXPECT_EQ(j["tokens"].get<std::vector<int32_t>>(), apply_chat_template(*tiny(), messages));
  auto chat = post("/v1/chat/completions", json{{"messages", messages}, {"max_tokens", 1}}.dump());
  ASSERT_TRUE(chat);
  EXPECT_EQ(json::parse(chat->body)["usage"]["prompt_tokens"], j["count"]);
  res = post("/detokenize", json{{"tokens", plain}}.dump());
  ASSERT_TRUE(res);
  ASSERT_EQ(res->status, 200) << res->body;
  EXPECT_EQ(json::parse(res->body)["prompt"], text);
  for (const auto& [path, body, message, param] :
       {std::tuple{"/tokenize", std::string("{}"), "'prompt' (a string) or 'messages' is required", "prompt"},
        std::tuple{"/tokenize", std::string("{\"prompt\": [1, 2]}"), "'prompt' (a string) or 'messages' is required", "prompt"},
        std::tuple{"/tokenize", std::string("{\"prompt\": \"x\", \"add_special_tokens\": 1}"), "must be a boolean", "add_special_tokens"},
        std::tuple{"/tokenize", std::string("{\"messages\": [{\"role\": \"robot\", \"content\": \"hi\"}]}"), "not system, user or assistant", "messages"},
        std::tuple{"/tokenize", std::string("{\"prompt\": "), "not valid JSON", ""},
        std::tuple{"/detokenize", std::string("{\"tokens\": [1, 512]}"), "token id 512 is outside the vocabulary 0..511", "tokens"},
        std::tuple{"/detokenize", std::string("{\"tokens\": \"1 2\"}"), "'tokens' must be an array of token ids", "tokens"},
        std::tuple{"/detokenize", std::string("[1]"), "must be a JSON object", ""}}) {
    res = post(path, body);
    ASSERT_TRUE(res);
    EXPECT_EQ(res->status, 400) << path << " " << body;
    const json e = json::parse(res->body)["error"];
    EXPECT_NE(e["message"].get<std::string>().find(message), std::string::npos) << res->body;
    EXPECT_EQ(e["param"], *param ? json(param) : json()) << res->body;
  }
}

// Byte ranges are defined for GET alone (RFC 9110, 14.2) and every answer is
// made per request: a Range header is ignored, never cuts an answer or an
// error; one httplib cannot parse is refused with a JSON 416. An endpoint
// asked with another method answers 405 naming its own.
TEST_F(Server, RangeHeadersAreIgnoredAndOtherMethodsAnswer405) {
  start();
  const std::string body = json{{"prompt", "The night train"}, {"max_tokens", 6}, {"temperature", 0}}.dump();
  auto plain = post("/v1/completions", body);
  ASSERT_TRUE(plain);
  ASSERT_EQ(plain->status, 200) << plain->body;
  for (const char* range : {"bytes=5-", "bytes=0-0,3-4", "bytes=500000-", "bytes=-10"}) {
    auto res = post("/v1/completions", body, {{"Range", range}});
    ASSERT_TRUE(res);
    EXPECT_EQ(res->status, 200) << range;
    EXPECT_FALSE(res->has_header("Content-Range")) << range;
    EXPECT_EQ(res->get_header_value("Content-Type"), "application/json") << range;
    EXPECT_EQ(json::parse(res->body)["choices"][0]["text"], json::parse(plain->body)["choices"][0]["text"]) << range;
    auto error = post("/v1/completions", "{\"prompt\": ", {{"Range", range}});
    ASSERT_TRUE(error);
    EXPECT_EQ(error->status, 400) << range;
    EXPECT_NE(json::parse(error->body)["error"]["message"].get<std::string>().find("not valid JSON"), std::string::npos) << error->body;
  }
  json streamed = json::parse(body);
  streamed["stream"] = true;
  auto sres = post("/v1/completions", streamed.dump(), {{"Range", "bytes=0-10"}});
  ASSERT_TRUE(sres);
  EXPECT_EQ(sres->status, 200);
  EXPECT_EQ(read_stream(sres->body, false).first, json::parse(plain->body)["choices"][0]["text"]);
  auto metrics = client().Get("/metrics", {{"Range", "bytes=0-5"}});
  ASSERT_TRUE(metrics);
  EXPECT_EQ(metrics->status, 200);
  EXPECT_NE(metrics->body.find("lacuna_requests_total"), std::string::npos);
  // The second: httplib has read the first range when it finds the second bad.
  for (const char* range : {"bytes=abc", "bytes=0-0,3-1"}) {
    auto malformed = post("/v1/completions", body, {{"Range", range}});
    ASSERT_TRUE(malformed);
    EXPECT_EQ(malformed->status, 416) << range;
    EXPECT_FALSE(malformed->has_header("Content-Range")) << range;
    EXPECT_NE(json::parse(malformed->body)["error"]["message"].get<std::string>().find("Range header is malformed"), std::string::npos);
  }
  auto head = client().Head("/health");
  ASSERT_TRUE(head);
  EXPECT_EQ(head->get_header_value("Accept-Ranges"), "none");

  auto get = client().Get("/v1/completions");
  ASSERT_TRUE(get);
  EXPECT_EQ(get->status, 405);
  EXPECT_EQ(get->get_header_value("Allow"), "POST");
  EXPECT_NE(json::parse(get->body)["error"]["message"].get<std::string>().find("/v1/completions takes POST, not GET"), std::string::npos);
  auto put = client().Put("/health", "x", "text/plain");
  ASSERT_TRUE(put);
  EXPECT_EQ(put->status, 405);
  EXPECT_EQ(put->get_header_value("Allow"), "GET");
  auto unknown = client().Get("/v1/nothing");
  ASSERT_TRUE(unknown);
  EXPECT_EQ(unknown->status, 404);
}

// answer_connection (the HTTP fuzz target's way in) reads kept-alive
// requests one after another and answers each as over a socket; a client
// that stops reading ends its stream there.
TEST_F(Server, AConnectionInMemoryIsAnsweredAsASocketIs) {
  start();
  const std::string body = json{{"prompt", "The night train"}, {"max_tokens", 5}, {"temperature", 0}}.dump();
  auto over_socket = post("/v1/completions", body);
  ASSERT_TRUE(over_socket);
  const std::string request = "POST /v1/completions HTTP/1.1\r\nContent-Length: " + std::to_string(body.size()) + "\r\n\r\n" + body;
  const std::vector<std::string> answers = server_->answer_connection("GET /health HTTP/1.1\r\n\r\n" + request + "GET /nowhere HTTP/1.1\r\n\r\n");
  ASSERT_EQ(answers.size(), 3u);
  EXPECT_TRUE(answers[0].starts_with("HTTP/1.1 200 OK\r\n")) << answers[0];
  EXPECT_NE(answers[0].find("\r\n\r\n{\"status\":\"ok\"}"), std::string::npos) << answers[0];
  ASSERT_TRUE(answers[1].starts_with("HTTP/1.1 200 OK\r\n")) << answers[1];
  const json in_memory = json::parse(answers[1].substr(answers[1].find("\r\n\r\n") + 4));
  EXPECT_EQ(in_memory["choices"][0]["text"], json::parse(over_socket->body)["choices"][0]["text"]);
  EXPECT_TRUE(answers[2].starts_with("HTTP/1.1 404 Not Found\r\n")) << answers[2];

  json streamed = json::parse(body);
  streamed["stream"] = true;
  streamed["max_tokens"] = 200;
  const std::string stream_body = streamed.dump();
  const std::vector<std::string> cut = server_->answer_connection(
      "POST /v1/completions HTTP/1.1\r\nContent-Length: " + std::to_string(stream_body.size()) + "\r\n\r\n" + stream_body + request, 300);
  ASSERT_EQ(cut.size(), 1u);  // the client left in the first answer: the second request is not read
  EXPECT_EQ(cut[0].size(), 300u);
  EXPECT_TRUE(cut[0].starts_with("HTTP/1.1 200 OK\r\n")) << cut[0];

  // What httplib refuses itself gets a JSON error saying what was wrong.
  const std::vector<std::string> malformed = server_->answer_connection("NONSENSE\r\n\r\n");
  ASSERT_FALSE(malformed.empty());
  EXPECT_TRUE(malformed[0].starts_with("HTTP/1.1 400 Bad Request\r\n")) << malformed[0];
  EXPECT_NE(malformed[0].find("\"the HTTP request is malformed"), std::string::npos) << malformed[0];
}

TEST_F(Server, AnApiKeyIsRequiredWhenSet) {
  ServerOptions o;
  o.api_key = "sesame";
  start(o);
  const std::string body = json{{"prompt", {1, 2}}, {"max_tokens", 2}}.dump();
  auto none = post("/v1/completions", body);
  ASSERT_TRUE(none);
  EXPECT_EQ(none->status, 401);
  EXPECT_EQ(json::parse(none->body)["error"]["type"], "authentication_error");
  auto wrong = post("/v1/completions", body, {{"Authorization", "Bearer open"}});
  ASSERT_TRUE(wrong);
  EXPECT_EQ(wrong->status, 401);
  for (const char* near_miss : {"Bearer sesamf", "Bearer sesam", "Bearer sesamee", "Bearersesame", "Basic sesame"}) {
    auto refused = post("/v1/completions", body, {{"Authorization", near_miss}});
    ASSERT_TRUE(refused);
    EXPECT_EQ(refused->status, 401) << near_miss;
  }
  for (const char* accepted : {"Bearer sesame", "bearer sesame", "BEARER sesame"}) {  // the scheme's case does not matter
    auto right = post("/v1/completions", body, {{"Authorization", accepted}});
    ASSERT_TRUE(right);
    EXPECT_EQ(right->status, 200) << accepted;
  }
  auto models = client().Get("/v1/models");
  ASSERT_TRUE(models);
  EXPECT_EQ(models->status, 401);
  auto tokenize = post("/tokenize", json{{"prompt", "x"}}.dump());
  ASSERT_TRUE(tokenize);
  EXPECT_EQ(tokenize->status, 401);
  auto health = client().Get("/health");
  ASSERT_TRUE(health);
  EXPECT_EQ(health->status, 200);
}

TEST_F(Server, ShutdownLetsRunningRequestsFinishAndRefusesNewOnes) {
  start();
  // A streamed request, surely running once its first chunk arrived.
  const std::string request =
      json{{"prompt", {1, 7}}, {"max_tokens", 40}, {"temperature", 0}, {"stream", true}, {"stream_options", {{"include_usage", true}}}}.dump();
  std::string body;
  std::promise<void> first_chunk;
  std::once_flag once;
  auto answer = std::async(std::launch::async, [&] {
    return post_streaming(request, [&](const char* data, size_t n) {
      body.append(data, n);
      std::call_once(once, [&] { first_chunk.set_value(); });
      return true;
    });
  });
  first_chunk.get_future().wait();
  std::thread stopper([&] { server_->shutdown(); });
  const bool completed = answer.get();
  stopper.join();
  EXPECT_TRUE(completed);
  read_stream(body, false);  // ends with [DONE], no error event
  EXPECT_NE(body.find("\"completion_tokens\":40"), std::string::npos) << body;
  EXPECT_FALSE(client().Get("/health"));  // no longer listening
}

// ---- lacuna batch ------------------------------------------------------------

std::vector<json> read_jsonl(const fs::path& p) {
  std::vector<json> out;
  std::ifstream in(p);
  for (std::string line; std::getline(in, line);) out.push_back(json::parse(line));
  return out;
}

TEST(Batch, MalformedLinesAreReportedAndTheRestAnswered) {
  const fs::path in = scratch() / "requests.jsonl", out = scratch() / "results.jsonl";
  {
    std::ofstream f(in);
    f << json{{"id", "a"}, {"prompt", {1, 5, 9}}, {"max_tokens", 5}, {"temperature", 0}}.dump() << "\n";
    f << "{\"id\": \"b\", \"prompt\": \n";
    f << "{\"id\": \"g\", \"prompt\": \"x\", \"max_tokens\": 1e999}\n";
    f << "{\"id\": \"h\", \"prompt\": \"\xff\"}\n";  // the error record quotes no invalid byte
    f << "\xe2\x96\x81whi\n";  // valid UTF-8, but the parser's message quotes the character's first byte alone
    f << json{{"custom_id", "i"}, {"url", 5}, {"body", {{"prompt", "x"}}}}.dump() << "\n";
    f << json{{"id", "c"}, {"messages", {{{"role", "user"}, {"content", "Hi"}}}}, {"max_tokens", 4}, {"temperature", 0}}.dump() << "\n";
    f << json{{"id", "d"}, {"prompt", "x"}, {"max_tokens", -3}}.dump() << "\n";
    f << json{{"custom_id", "e"}, {"method", "POST"}, {"url", "/v1/completions"}, {"body", {{"prompt", {1, 2}}, {"max_tokens", 3}, {"logprobs", 1}}}}.dump() << "\n";
    f << json{{"id", "f"}, {"prompt", {1, 5, 9}}, {"max_tokens", 6}, {"temperature", 0.8}, {"top_k", 0}, {"seed", 5}, {"n", 2}}.dump() << "\n";
  }
  BatchOptions o;
  o.progress = false;
  const BatchSummary s = run_batch(tiny(), in.string(), out.string(), o);
  EXPECT_EQ(s.lines, 10u);
  EXPECT_EQ(s.succeeded, 4u);
  EXPECT_EQ(s.failed, 6u);
  std::map<std::string, json> by_id;
  for (const json& j : read_jsonl(out)) by_id[j["id"]] = j;
  ASSERT_EQ(by_id.size(), 10u);
  // n = 2: one line, choice i sampled with seed 5 + i.
  ASSERT_EQ(by_id["f"]["response"]["choices"].size(), 2u);
  size_t f_tokens = 0;
  for (size_t i = 0; i < 2; ++i) {
    GenerateOptions g;
    g.max_tokens = 6;
    g.sampling = {.temperature = 0.8f, .top_k = 0, .top_p = 1.0f, .repetition_penalty = 1.0f, .seed = 5u + i};
    const GenerateResult want = alone({1, 5, 9}, g);
    EXPECT_EQ(by_id["f"]["response"]["choices"][i]["text"], want.text) << "choice " << i;
    f_tokens += want.tokens.size();
  }
  EXPECT_EQ(by_id["f"]["response"]["usage"]["completion_tokens"], f_tokens);
  EXPECT_EQ(by_id["a"]["response"]["choices"][0]["text"], alone({1, 5, 9}, greedy_to_eos(5)).text);
  EXPECT_NE(by_id["line-2"]["error"]["message"].get<std::string>().find("not valid JSON"), std::string::npos);
  EXPECT_NE(by_id["line-3"]["error"]["message"].get<std::string>().find("not valid JSON"), std::string::npos);
  EXPECT_NE(by_id["line-4"]["error"]["message"].get<std::string>().find("not valid UTF-8"), std::string::npos);
  EXPECT_NE(by_id["line-5"]["error"]["message"].get<std::string>().find("not valid JSON"), std::string::npos);
  EXPECT_EQ(by_id["i"]["error"]["param"], "url");
  EXPECT_EQ(by_id["c"]["response"]["object"], "chat.completion");
  EXPECT_EQ(by_id["d"]["error"]["param"], "max_tokens");
  EXPECT_EQ(by_id["e"]["response"]["usage"]["completion_tokens"], 3);
  EXPECT_EQ(by_id["e"]["response"]["choices"][0]["logprobs"]["token_logprobs"].size(), 3u);
  EXPECT_TRUE(by_id["a"]["response"]["choices"][0]["logprobs"].is_null());
}

TEST(Batch, ARerunSkipsWhatIsDoneAndDropsACutOffLine) {
  const fs::path in = scratch() / "resume.jsonl", out = scratch() / "resume-out.jsonl";
  {
    std::ofstream f(in);
    for (int i = 0; i < 8; ++i) f << json{{"id", std::to_string(100 + i)}, {"prompt", prompt_of(i, 6)}, {"max_tokens", 4}, {"temperature", 0}}.dump() << "\n";
  }
  BatchOptions o;
  o.progress = false;
  run_batch(tiny(), in.string(), out.string(), o);
  const std::vector<json> full = read_jsonl(out);
  ASSERT_EQ(full.size(), 8u);
  // An interrupted run: three complete lines and half of a fourth.
  {
    std::ofstream f(out, std::ios::trunc);
    for (int i = 0; i < 3; ++i) f << full[static_cast<size_t>(i)].dump() << "\n";
    f << full[3].dump().substr(0, 20);
  }
  const BatchSummary s = run_batch(tiny(), in.string(), out.string(), o);
  EXPECT_EQ(s.skipped, 3u);
  EXPECT_EQ(s.succeeded, 5u);
  std::map<std::string, json> resumed;
  for (const json& j : read_jsonl(out)) EXPECT_TRUE(resumed.emplace(j["id"], j).second) << "id twice: " << j["id"];
  ASSERT_EQ(resumed.size(), 8u);
  for (const json& j : full) EXPECT_EQ(resumed[j["id"]]["response"]["choices"], j["response"]["choices"]) << j["id"];
}

}  // namespace
}  // namespace lacuna
