#include "engine/runtime/forward.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "kernels/vector/vector-ops.h"
#include "sparse/error.h"

namespace lacuna {

namespace {
// Per-token loops outside the products run on every thread from this many
// floats of work: one thread idled while the other did them alone, about 4
// % of a 512-token prefill's samples (docs/benchmarks.md, "Per-token loops
// on every thread"); below, a parallel region costs more than it saves.
constexpr size_t kParallelFloats = 65536;

// Consecutive tokens of one sequence in a step: tokens first .. first + tokens - 1.
struct QueryBlock {
  KvCache* cache;
  int64_t first, tokens;
};
}  // namespace

// Buffers reused across steps (a decode loop must not allocate per token).
struct Forward::Scratch {
  int64_t tokens = 0;
  std::vector<float> x, xn, q, k, v, attn, out, moe, router;
  std::vector<int64_t> position;  // of each token in its sequence
  std::vector<float> cos, sin;    // [tokens][head_dim / 2]
  // Per expert: its tokens' inputs, gate/up outputs [n][2 ffn], activations [n][ffn] and outputs.
  struct ExpertWork {
    std::vector<float> x, h, a, y;
  };
  std::vector<ExpertWork> work;  // per expert, when node teams run experts side by side
  ExpertWork one_expert;         // otherwise: every expert in turn
  std::vector<std::vector<float>> node_buffer;  // a node's slice outputs before they join the expert's
  std::vector<QueryBlock> query_blocks;  // this step's, for attention
  std::vector<int64_t> logit_rows;       // tokens whose logits were asked for
  std::vector<float> picked, logits;
  std::vector<std::vector<std::pair<int64_t, float>>> routed;  // per expert: (token, weight)
  std::vector<LinearCall> gate_up_calls, down_calls;  // the experts' products, when they run together
  std::vector<SpmmJob> jobs;                          // run_all's
  std::vector<int64_t> chosen_expert;  // [tokens][top_k], the router's picks in rank order
  std::vector<float> chosen_weight;    // and their weights

  // Expert buffers only grow: an expert's token count moves from step to
  // step, and resizing up zero-filled the new part every time (about half a
  // millisecond of a 65 ms 16-sequence decode step of the mini model).
  static void at_least(std::vector<float>& v, size_t size) {
    if (v.size() < size) v.resize(size);
  }

  // Expert e's inputs gathered into `b`, its rows of the batch in routing
  // order, and b's other buffers sized for its tokens.
  void gather(size_t e, ExpertWork& b, size_t hidden, size_t ffn) const {
    const auto& rows = routed[e];
    const size_t n = rows.size();
    at_least(b.x, n * hidden);
    at_least(b.h, n * 2 * ffn);
    at_least(b.a, n * ffn);
    at_least(b.y, n * hidden);
#pragma omp parallel for if (n * hidden > kParallelFloats)
    for (size_t i = 0; i < n; ++i) std::copy_n(&xn[static_cast<size_t>(rows[i].first) * hidden], hidden, &b.x[i * hidden]);
  }

  void resize(const ModelConfig& c, int64_t t) {
    tokens = t;
    const auto n = static_cast<size_t>(t);
    x.resize(n * c.hidden);
    xn.resize(n * c.hidden);
    q.resize(n * c.heads * c.head_dim);
    k.resize(n * c.kv_heads * c.head_dim);
    v.resize(n * c.kv_heads * c.head_dim);
    attn.resize(n * c.heads * c.head_dim);
    out.resize(n * c.hidden);
    moe.resize(n * c.hidden);
    router.resize(n * c.experts);
    chosen_expert.resize(n * c.top_k);
    chosen_weight.resize(n * c.top_k);
    position.resize(n);
    cos.resize(n * c.head_dim / 2);
    sin.resize(n * c.head_dim / 2);
    routed.resize(c.experts);
    work.resize(c.experts);
  }
};

namespace {

// y = x * rsqrt(mean(x^2) + eps) * scale, per row, in f32 (both references).
void rms_norm(const float* x, const std::vector<float>& scale, double eps, int64_t rows, float* y) {
  const auto h = static_cast<int64_t>(scale.size());
#pragma omp parallel for if (rows > 1)
  for (int64_t r = 0; r < rows; ++r) {
    const float* xr = x + r * h;
    float* yr = y + r * h;
    const float sum = kernels::vector_ops().dot(xr, xr, static_cast<size_t>(h));
    const float inv = 1.0f / std::sqrt(sum / static_cast<float>(h) + static_cast<float>(eps));
    for (int64_t i = 0; i < h; ++i) yr[i] = xr[i] * inv * scale[i];
  }
}

// Rotate-half RoPE on one head: pairs (i, i + d/2).
void rope(float* head, const float* cos, const float* sin, int64_t half) {
  for (int64_t i = 0; i < half; ++i) {
    const float a = head[i], b = head[i + half];
    head[i] = a * cos[i] - b * sin[i];
    head[i + half] = b * cos[i] + a * sin[i];
  }
}

// One key or value row (d floats) into the cache, in its type.
void store_kv(const KvCache& cache, const float* row, size_t d, void* into) {
  if (cache.type() == KvType::f16)
    kernels::vector_ops().to_f16(row, static_cast<uint16_t*>(into), d);
  else
    std::copy_n(row, d, static_cast<float*>(into));
}

// Rows [begin, end) of gate/up outputs (row i: `width` gate values then
// `width` up values) -> act(gate) * up, row i written at a + i * a_stride.
void activate_rows(const float* h, size_t width, size_t begin, size_t end, float* a, size_t a_stride, bool gelu) {
  const kernels::VectorOps& ops = kernels::vector_ops();
#pragma omp parallel for if ((end - begin) * width > kParallelFloats)
  for (int64_t i = static_cast<int64_t>(begin); i < static_cast<int64_t>(end); ++i) {
    const float* g = h + static_cast<size_t>(i) * 2 * width;
    ops.gated_activation(g, g + width, a + static_cast<size_t>(i) * a_stride, width, gelu);
  }
}

// y += x over `count` floats (the residual stream).
void add_rows(const float* x, size_t count, float* y) {
#pragma omp parallel for simd if (count > kParallelFloats)
  for (size_t i = 0; i < count; ++i) y[i] += x[i];
}

}  // namespace

Forward::Forward(std::shared_ptr<const Model> model, BatchPolicy policy, std::shared_ptr<const PlacedExperts> placed)
    : model_(std::move(model)), policy_(policy), scratch_(std::make_unique<Scratch>()), placed_(std::move(placed)) {
  const ModelConfig& c = model_->config();
  if (placed_) {
    if (placed_->placement().layers.size() != static_cast<size_t>(c.layers)) throw Error("forward: the NUMA placement is for another model");
    teams_ = std::make_unique<NodeTeams>(placed_->topology());
    numa_.node_tokens.assign(placed_->topology().nodes.size(), 0);
  }
  routed_tokens_.assign(static_cast<size_t>(c.layers), std::vector<uint64_t>(static_cast<size_t>(c.experts), 0));
  for (int64_t i = 0; i < c.head_dim / 2; ++i)
    inv_freq_.push_back(std::pow(c.rope_theta, -2.0 * static_cast<double>(i) / static_cast<double>(c.head_dim)));
}

Forward::~Forward() = default;

void Forward::observe_inputs(LinearInputObserver* observer) {
  if (observer && placed_) throw Error("forward: inputs cannot be observed with a NUMA placement (its copies are not the model's weights)");
  observer_ = observer;
}

void Forward::run(const Linear& weight, const float* x, size_t n, float* y) const {
  if (observer_) observer_->observe(weight, x, n);
  weight.run(x, n, y, policy_);
}

void Forward::step(std::span<const SequenceStep> batch) {
  const Model& m = *model_;
  const ModelConfig& c = m.config();
  int64_t total = 0;
  for (const SequenceStep& s : batch) {
    if (!s.cache) throw Error("forward: a sequence has no kv cache");
    const auto n = static_cast<int64_t>(s.tokens.size());
    if (s.cache->length() + n > s.cache->capacity())
      throw Error("forward: sequence of " + std::to_string(s.cache->length()) + " positions has no room for " + std::to_string(n) +
                  " more (capacity " + std::to_string(s.cache->capacity()) + ")");
    for (int32_t t : s.tokens)
      if (t < 0 || t >= c.vocab) throw Error("forward: token id " + std::to_string(t) + " is outside the vocabulary 0.." + std::to_string(c.vocab - 1));
    total += n;
  }
  // Blocks for the new positions; a pool running out changes nothing but
  // which blocks the caches hold.
  for (const SequenceStep& seq : batch)
    if (!seq.cache->reserve(seq.cache->length() + static_cast<int64_t>(seq.tokens.size())))
      throw Error("forward: the kv cache pool has no free block left");
  if (total == 0) return;
  Scratch& s = *scratch_;
  s.resize(c, total);
  const int64_t h = c.hidden, half = c.head_dim / 2;

  int64_t t = 0;
  for (const SequenceStep& seq : batch)
    for (size_t i = 0; i < seq.tokens.size(); ++i, ++t) {
      s.position[t] = seq.cache->length() + static_cast<int64_t>(i);
      m.embed(seq.tokens[i], &s.x[t * h]);
      for (int64_t j = 0; j < h; ++j) s.x[t * h + j] *= static_cast<float>(c.embedding_multiplier);
      for (int64_t j = 0; j < half; ++j) {
        const double angle = static_cast<double>(s.position[t]) * inv_freq_[j];
        s.cos[t * half + j] = static_cast<float>(std::cos(angle));
        s.sin[t * half + j] = static_cast<float>(std::sin(angle));
      }
    }

  const auto n = static_cast<size_t>(total);
  for (int64_t l = 0; l < c.layers; ++l) {
    const LayerWeights& w = m.layers()[l];
    rms_norm(s.x.data(), w.attn_norm, c.norm_eps, total, s.xn.data());
    const LinearCall qkv[] = {{&w.q, s.xn.data(), n, s.q.data()}, {&w.k, s.xn.data(), n, s.k.data()}, {&w.v, s.xn.data(), n, s.v.data()}};
    run_all(qkv, s.jobs);
    attention(l, batch, s);
    run(w.o, s.attn.data(), n, s.out.data());
    if (c.post_norms) rms_norm(s.out.data(), w.attn_post_norm, c.norm_eps, total, s.out.data());
    add_rows(s.out.data(), n * h, s.x.data());

    rms_norm(s.x.data(), w.moe_norm, c.norm_eps, total, s.xn.data());
    moe(l, w, s);
    if (c.post_norms) rms_norm(s.moe.data(), w.moe_post_norm, c.norm_eps, total, s.moe.data());
    add_rows(s.moe.data(), n * h, s.x.data());
  }
  for (const SequenceStep& seq : batch) seq.cache->set_length(seq.cache->length() + static_cast<int64_t>(seq.tokens.size()));

  // Logits only for the rows asked for.
  std::vector<int64_t>& rows = s.logit_rows;
  rows.clear();
  t = 0;
  for (const SequenceStep& seq : batch) {
    const auto len = static_cast<int64_t>(seq.tokens.size());
    if (seq.logits && len > 0)
      for (int64_t i = seq.all_positions ? 0 : len - 1; i < len; ++i) rows.push_back(t + i);
    t += len;
  }
  if (rows.empty()) return;
  std::vector<float>& picked = s.picked;
  std::vector<float>& logits = s.logits;
  picked.resize(rows.size() * h);
  logits.resize(rows.size() * c.vocab);
  for (size_t r = 0; r < rows.size(); ++r) std::copy_n(&s.x[rows[r] * h], h, &picked[r * h]);
  rms_norm(picked.data(), m.final_norm(), c.norm_eps, static_cast<int64_t>(rows.size()), picked.data());
  run(m.output(), picked.data(), rows.size(), logits.data());
  const auto scale = static_cast<float>(c.output_multiplier);
  size_t r = 0;
  for (const SequenceStep& seq : batch) {
    if (!seq.logits || seq.tokens.empty()) continue;
    const size_t count = seq.all_positions ? seq.tokens.size() : 1;
    for (size_t i = 0; i < count * c.vocab; ++i) seq.logits[i] = logits[r * c.vocab + i] * scale;
    r += count;
  }
}

void Forward::attention(int64_t layer, std::span<const SequenceStep> batch, Scratch& s) {
  const ModelConfig& c = model_->config();
  const int64_t d = c.head_dim, half = d / 2, kv_width = c.kv_heads * d, group = c.heads / c.kv_heads;
  // Query blocks: up to kQueryBlockTokens consecutive tokens of one
  // sequence, which take each block of their cache's keys and values in turn
  // (the keys stay in L1 for all of them, where token by token every query
  // streamed the whole cache from L3: a 4096-token prefill spent 64 % of its
  // samples there, docs/benchmarks.md, "Attention's vector ops").
  constexpr int64_t kQueryBlockTokens = 8;
  std::vector<QueryBlock>& query_blocks = s.query_blocks;
  query_blocks.clear();
  int64_t first = 0;
  for (const SequenceStep& seq : batch) {
    const auto len = static_cast<int64_t>(seq.tokens.size());
    for (int64_t i = 0; i < len; i += kQueryBlockTokens) query_blocks.push_back({seq.cache, first + i, std::min(kQueryBlockTokens, len - i)});
    first += len;
  }
  const auto blocks_count = static_cast<int64_t>(query_blocks.size());
  // RoPE on this step's queries and keys, then the keys and values join the
  // caches. On every thread from an eighth of the other per-token loops'
  // work: each copy goes to cache lines not yet read, and on one thread a
  // 16-sequence decode step of the mini model spent 1.0-1.1 ms here, on
  // two 0.6 (docs/benchmarks.md, "RoPE and the cache copies on both threads").
#pragma omp parallel for if (s.tokens * (c.heads + 2 * c.kv_heads) * d > static_cast<int64_t>(kParallelFloats / 8))
  for (int64_t b = 0; b < blocks_count; ++b) {
    const QueryBlock& qb = query_blocks[static_cast<size_t>(b)];
    for (int64_t t = qb.first; t < qb.first + qb.tokens; ++t) {
      for (int64_t hq = 0; hq < c.heads; ++hq) rope(&s.q[(t * c.heads + hq) * d], &s.cos[t * half], &s.sin[t * half], half);
      for (int64_t hk = 0; hk < c.kv_heads; ++hk) rope(&s.k[(t * c.kv_heads + hk) * d], &s.cos[t * half], &s.sin[t * half], half);
      for (int64_t hk = 0; hk < c.kv_heads; ++hk) {
        store_kv(*qb.cache, &s.k[t * kv_width + hk * d], static_cast<size_t>(d), qb.cache->keys(layer, s.position[t], hk));
        store_kv(*qb.cache, &s.v[t * kv_width + hk * d], static_cast<size_t>(d), qb.cache->values(layer, s.position[t], hk));
      }
    }
  }
  const auto multiplier = static_cast<float>(c.attn_logit_multiplier), cap = static_cast<float>(c.attn_logit_cap);
  // One (query block, key-value head) pair per iteration: the group's query
  // heads also go through each key and value row together.
  int64_t block_tokens = 0;  // the most tokens of any block: 1 when every sequence decodes
  for (const QueryBlock& qb : query_blocks) block_tokens = std::max(block_tokens, qb.tokens);
  const int64_t pairs = blocks_count * c.kv_heads;
  const kernels::VectorOps& ops = kernels::vector_ops();
  const auto positions = static_cast<size_t>(s.position.empty() ? 0 : *std::max_element(s.position.begin(), s.position.end()) + 1);
  const auto dim = static_cast<size_t>(d), heads = static_cast<size_t>(group);
#pragma omp parallel
  {
    // A row of scores per (token, query head) of a block.
    std::vector<float> scores(static_cast<size_t>(block_tokens) * heads * positions);
#pragma omp for schedule(dynamic, 1)
    for (int64_t p = 0; p < pairs; ++p) {
      const QueryBlock& qb = query_blocks[static_cast<size_t>(p / c.kv_heads)];
      const int64_t hk = p % c.kv_heads;
      const KvCache& cache = *qb.cache;
      // Token i of the block sees positions from(i) .. to(i) of its cache.
      const auto to = [&](int64_t i) { return s.position[qb.first + i]; };
      const auto from = [&](int64_t i) { return c.sliding_window > 0 ? std::max<int64_t>(0, to(i) - c.sliding_window + 1) : 0; };
      // Token i's query and output rows of the group's first head (the others follow, d apart).
      const auto query = [&](int64_t i) { return &s.q[((qb.first + i) * c.heads + hk * group) * d]; };
      const auto output = [&](int64_t i) { return &s.attn[((qb.first + i) * c.heads + hk * group) * d]; };
      const auto score_row = [&](int64_t i) { return &scores[static_cast<size_t>(i) * heads * positions]; };
      // Every token of the block goes over the positions any of them sees,
      // a cache block at a time (within a block, rows lie head_dim apart).
      const auto cache_blocks = [&](auto&& visit) {
        const int64_t last = to(qb.tokens - 1);
        for (int64_t u = from(0); u <= last;) {
          const int64_t end = std::min(last + 1, (u / cache.block_positions() + 1) * cache.block_positions());
          for (int64_t i = 0; i < qb.tokens; ++i) visit(i, u, static_cast<size_t>(end - u));
          u = end;
        }
      };
      const bool f16 = cache.type() == KvType::f16;
      cache_blocks([&](int64_t i, int64_t u, size_t count) {
        const void* keys = cache.keys(layer, u, hk);
        if (f16)
          ops.dot_rows_f16(query(i), heads, dim, static_cast<const uint16_t*>(keys), dim, count, dim, score_row(i) + u, positions);
        else
          ops.dot_rows(query(i), heads, dim, static_cast<const float*>(keys), dim, count, dim, score_row(i) + u, positions);
      });
      // Softmax over each token's own positions; the others weigh exactly 0.
      for (int64_t i = 0; i < qb.tokens; ++i)
        for (size_t j = 0; j < heads; ++j) {
          float* score = score_row(i) + j * positions;
          ops.softmax(score + from(i), static_cast<size_t>(to(i) - from(i) + 1), multiplier, cap);
          std::fill(score + from(0), score + from(i), 0.0f);
          std::fill(score + to(i) + 1, score + to(qb.tokens - 1) + 1, 0.0f);
        }
      for (int64_t i = 0; i < qb.tokens; ++i) std::fill_n(output(i), dim * heads, 0.0f);
      cache_blocks([&](int64_t i, int64_t u, size_t count) {
        const void* values = cache.values(layer, u, hk);
        if (f16)
          ops.weighted_row_sum_f16(score_row(i) + u, heads, positions, static_cast<const uint16_t*>(values), dim, count, dim, output(i), dim);
        else
          ops.weighted_row_sum(score_row(i) + u, heads, positions, static_cast<const float*>(values), dim, count, dim, output(i), dim);
      });
    }
  }
}

void Forward::moe(int64_t layer, const LayerWeights& w, Scratch& s) {
  const ModelConfig& c = model_->config();
  const int64_t h = c.hidden, e_count = c.experts, ffn = c.ffn;
  // Router in f32, softmax over all experts, top-k (ties to the lower index),
  // each token on its own (any thread), then the picks joined in token order.
  const bool parallel = static_cast<size_t>(s.tokens * h) > kParallelFloats;
#pragma omp parallel if (parallel)
  {
    std::vector<int64_t> order(e_count);
    std::vector<float> prob(e_count);
#pragma omp for
    for (int64_t t = 0; t < s.tokens; ++t) {
      float* logit = &s.router[t * e_count];
      kernels::vector_ops().dot_rows(&s.xn[t * h], 1, 0, w.router.data(), static_cast<size_t>(h), static_cast<size_t>(e_count), static_cast<size_t>(h),
                                     logit, 0);
      const float top = *std::max_element(logit, logit + e_count);
      float sum = 0;
      for (int64_t e = 0; e < e_count; ++e) sum += prob[e] = std::exp(logit[e] - top);
      for (float& p : prob) p /= sum;
      std::iota(order.begin(), order.end(), 0);
      std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) { return prob[a] > prob[b]; });
      float chosen = 0;
      for (int64_t j = 0; j < c.top_k; ++j) chosen += prob[order[j]];
      for (int64_t j = 0; j < c.top_k; ++j) {
        s.chosen_expert[t * c.top_k + j] = order[j];
        s.chosen_weight[t * c.top_k + j] = c.renormalize_top_k ? prob[order[j]] / chosen : prob[order[j]];
      }
    }
  }
  for (auto& r : s.routed) r.clear();
  for (int64_t t = 0; t < s.tokens; ++t)
    for (int64_t j = 0; j < c.top_k; ++j) s.routed[s.chosen_expert[t * c.top_k + j]].emplace_back(t, s.chosen_weight[t * c.top_k + j]);
  // Experts are added in index order, so a token's sum depends neither on
  // the rest of the batch nor on where the experts ran.
  std::fill(s.moe.begin(), s.moe.end(), 0.0f);
  auto add_output = [&](int64_t e, const std::vector<float>& y) {
    const auto& tokens = s.routed[e];
#pragma omp parallel for if (tokens.size() * h > kParallelFloats)
    for (size_t i = 0; i < tokens.size(); ++i) {
      float* out = &s.moe[tokens[i].first * h];
      const float weight = tokens[i].second;
      for (int64_t j = 0; j < h; ++j) out[j] += weight * y[i * h + j];
    }
  };
  for (int64_t e = 0; e < e_count; ++e) routed_tokens_[static_cast<size_t>(layer)][static_cast<size_t>(e)] += s.routed[e].size();
  const NumaPolicy placement = placed_ ? placed_->placement().layers[layer].policy : NumaPolicy::none;
  if (placement == NumaPolicy::experts || placement == NumaPolicy::slices) {
    // Node teams run experts side by side: each expert keeps its own buffers.
    for (int64_t e = 0; e < e_count; ++e) s.gather(static_cast<size_t>(e), s.work[e], static_cast<size_t>(h), static_cast<size_t>(ffn));
    run_placed_experts(layer, s);
    for (int64_t e = 0; e < e_count; ++e) add_output(e, s.work[e].y);
    return;
  }
  const bool gelu = c.activation == ExpertActivation::gelu_tanh;
  if (!placed_ && run_experts_together(w, s, gelu)) {
    for (int64_t e = 0; e < e_count; ++e) add_output(e, s.work[e].y);
    return;
  }
  // The caller's threads, on the model's weights or their unbound or
  // interleaved copies, one expert after another through one set of
  // buffers (one per expert held ~170 MB after a 512-token prompt).
  const auto nodes = static_cast<uint64_t>(placed_ ? placed_->topology().nodes.size() : 1);
  Scratch::ExpertWork& b = s.one_expert;
  for (int64_t e = 0; e < e_count; ++e) {
    const size_t n = s.routed[e].size();
    if (n == 0) continue;
    const bool copied = placed_ && !placed_->copies(layer, e).empty();
    const Linear& gate_up = copied ? placed_->copies(layer, e)[0].gate_up : w.gate_up[e];
    const Linear& down = copied ? placed_->copies(layer, e)[0].down : w.down[e];
    s.gather(static_cast<size_t>(e), b, static_cast<size_t>(h), static_cast<size_t>(ffn));
    run(gate_up, b.x.data(), n, b.h.data());
    activate_rows(b.h.data(), ffn, 0, n, b.a.data(), ffn, gelu);
    run(down, b.a.data(), n, b.y.data());
    add_output(e, b.y);
    // Unbound or interleaved weights: a node's share of their pages is local.
    if (placed_) {
      numa_.remote_weight_bytes += (gate_up.bytes() + down.bytes()) * (nodes - 1) / nodes;
      for (uint64_t& t : numa_.node_tokens) t += n;
      numa_.critical_pairs += static_cast<double>(n) / static_cast<double>(nodes);
    }
  }
}

bool Forward::run_experts_together(const LayerWeights& w, Scratch& s, bool gelu) {
  const ModelConfig& c = model_->config();
  const auto h = static_cast<size_t>(c.hidden), ffn = static_cast<size_t>(c.ffn);
  // Only where every product is one kernel over all of its expert's tokens:
  // the small batches of decode steps, whose buffers per expert are small.
  for (size_t e = 0; e < s.routed.size(); ++e) {
    const size_t n = s.routed[e].size();
    if (n > 0 && (!w.gate_up[e].single_kernel(n, policy_) || !w.down[e].single_kernel(n, policy_))) return false;
  }
  std::vector<LinearCall>& gate_up = s.gate_up_calls;
  std::vector<LinearCall>& down = s.down_calls;
  gate_up.clear();
  down.clear();
  for (size_t e = 0; e < s.routed.size(); ++e) {
    const size_t n = s.routed[e].size();
    if (n == 0) continue;
    Scratch::ExpertWork& b = s.work[e];
    s.gather(e, b, h, ffn);
    gate_up.push_back({&w.gate_up[e], b.x.data(), n, b.h.data()});
    down.push_back({&w.down[e], b.a.data(), n, b.y.data()});
  }
  run_all(gate_up, s.jobs);
  // The experts side by side (each activate_rows then runs on its thread alone).
  size_t rows = 0;
  for (const LinearCall& call : gate_up) rows += call.n;
  const auto experts = static_cast<int64_t>(s.routed.size());
#pragma omp parallel for schedule(dynamic, 1) if (rows * ffn > kParallelFloats)
  for (int64_t e = 0; e < experts; ++e) {
    Scratch::ExpertWork& b = s.work[static_cast<size_t>(e)];
    const size_t n = s.routed[static_cast<size_t>(e)].size();
    if (n > 0) activate_rows(b.h.data(), ffn, 0, n, b.a.data(), ffn, gelu);
  }
  run_all(down, s.jobs);
  return true;
}

void Forward::run_all(std::span<const LinearCall> calls, std::vector<SpmmJob>& jobs) const {
  jobs.clear();
  for (const LinearCall& call : calls) {
    if (call.n == 0) continue;
    const SpmmUkernel* kernel = call.weight->single_kernel(call.n, policy_);
    if (!kernel) {
      for (const LinearCall& each : calls) run(*each.weight, each.x, each.n, each.y);
      return;
    }
    jobs.push_back({kernel, &call.weight->weight(), call.x, call.n, call.y});
  }
  if (observer_)
    for (const LinearCall& call : calls) observer_->observe(*call.weight, call.x, call.n);
  spmm_run_all(jobs);
}

void Forward::run_placed_experts(int64_t layer, Scratch& s) {
  const ModelConfig& c = model_->config();
  const auto h = static_cast<size_t>(c.hidden), ffn = static_cast<size_t>(c.ffn);
  const auto e_count = static_cast<size_t>(c.experts);
  const LayerPlacement& lp = placed_->placement().layers[layer];
  const int nodes = teams_->size();
  const bool gelu = c.activation == ExpertActivation::gelu_tanh;
  s.node_buffer.resize(static_cast<size_t>(nodes));
  auto copies = [&](size_t e) -> const std::vector<NodeExpert>& { return placed_->copies(static_cast<size_t>(layer), e); };
  if (lp.policy == NumaPolicy::experts) {
    // Each holder of an expert takes a consecutive share of its tokens, run
    // exactly as the whole product would run them.
    std::vector<uint64_t> counts(e_count);
    for (size_t e = 0; e < e_count; ++e) counts[e] = s.routed[e].size();
    const auto share = share_tokens(lp, counts, nodes);
    const auto per_node = node_tokens(lp, share, nodes);
    for (int n = 0; n < nodes; ++n) numa_.node_tokens[static_cast<size_t>(n)] += per_node[static_cast<size_t>(n)];
    numa_.critical_pairs += static_cast<double>(*std::max_element(per_node.begin(), per_node.end()));
    teams_->run([&](int node) {
      for (size_t e = 0; e < e_count; ++e) {
        Scratch::ExpertWork& b = s.work[e];
        const size_t n = counts[e];
        size_t begin = 0;
        for (size_t k = 0; k < share[e].size(); ++k) {
          const size_t end = begin + share[e][k];
          const NodeExpert& copy = copies(e)[k];
          if (copy.node == node && begin < end) {
            copy.gate_up.run_part(b.x.data(), n, begin, end, b.h.data(), policy_);
            activate_rows(b.h.data(), ffn, begin, end, b.a.data(), ffn, gelu);
            copy.down.run_part(b.a.data(), n, begin, end, b.y.data(), policy_);
          }
          begin = end;
        }
      }
    });
    return;
  }
  // Slices: every node computes its gate/up rows for all of an expert's
  // tokens; once every activation is whole, its rows of the down projection.
  for (size_t e = 0; e < e_count; ++e) {
    for (uint64_t& t : numa_.node_tokens) t += s.routed[e].size();
    size_t widest = 0;
    for (const NodeExpert& copy : copies(e)) widest = std::max<size_t>(widest, copy.ffn.end - copy.ffn.begin);
    numa_.critical_pairs += static_cast<double>(s.routed[e].size() * widest) / static_cast<double>(ffn);
  }
  // body(e, copy, n, width, buffer) on each node's team, for every slice the
  // node holds of an expert with tokens: `width` rows of the slice's `range`.
  auto on_slices = [&](RowRange NodeExpert::*range, const auto& body) {
    teams_->run([&](int node) {
      std::vector<float>& buffer = s.node_buffer[static_cast<size_t>(node)];
      for (size_t e = 0; e < e_count; ++e) {
        const size_t n = s.routed[e].size();
        for (const NodeExpert& copy : copies(e)) {
          const size_t width = (copy.*range).end - (copy.*range).begin;
          if (copy.node == node && n > 0 && width > 0) body(e, copy, n, width, buffer);
        }
      }
    });
  };
  on_slices(&NodeExpert::ffn, [&](size_t e, const NodeExpert& copy, size_t n, size_t width, std::vector<float>& buffer) {
    buffer.resize(n * 2 * width);
    copy.gate_up.run(s.work[e].x.data(), n, buffer.data(), policy_);
    activate_rows(buffer.data(), width, 0, n, s.work[e].a.data() + copy.ffn.begin, ffn, gelu);
  });
  on_slices(&NodeExpert::out, [&](size_t e, const NodeExpert& copy, size_t n, size_t width, std::vector<float>& buffer) {
    buffer.resize(n * width);
    copy.down.run(s.work[e].a.data(), n, buffer.data(), policy_);
    for (size_t i = 0; i < n; ++i) std::copy_n(&buffer[i * width], width, &s.work[e].y[i * h + copy.out.begin]);
  });
}

NumaCounters Forward::numa_counters() const {
  NumaCounters c = numa_;
  if (teams_) c.node_busy_seconds = teams_->busy_seconds();
  return c;
}

double NumaCounters::imbalance() const {
  if (node_busy_seconds.empty()) return 1;
  const double total = std::accumulate(node_busy_seconds.begin(), node_busy_seconds.end(), 0.0);
  if (total <= 0) return 1;
  return *std::max_element(node_busy_seconds.begin(), node_busy_seconds.end()) / (total / static_cast<double>(node_busy_seconds.size()));
}

}  // namespace lacuna
