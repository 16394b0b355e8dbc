#include "bench/serve/serve-bench.h"

#include <httplib.h>
#include <omp.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <mutex>
#include <numeric>
#include <thread>

#include <nlohmann/json.hpp>

#include "engine/server/http-server.h"
#include "kernels/cpu-features.h"
#include "sparse/error.h"

namespace lacuna::bench {
namespace {

using nlohmann::json;
using Clock = std::chrono::steady_clock;

double percentile(std::vector<double> v, double p) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v[std::min(v.size() - 1, static_cast<size_t>(p * static_cast<double>(v.size() - 1) + 0.5))];
}

std::vector<int32_t> prompt_tokens(int i, int n, int64_t vocab) {
  std::vector<int32_t> p{1};
  for (int k = 1; k < n; ++k) p.push_back(static_cast<int32_t>(3 + (i * 7919 + k * 104729) % (vocab - 3)));
  return p;
}

struct Outcome {
  bool ok = false;
  std::string text;
  size_t tokens = 0;
  double ttft = 0;
  std::vector<double> gaps;  // between streamed chunks (a chunk may carry several tokens when the client lags)
};

// One streamed request, read event by event.
Outcome stream_one(int port, const json& request) {
  httplib::Client client("127.0.0.1", port);
  client.set_read_timeout(600, 0);
  Outcome out;
  std::string pending;
  const auto start = Clock::now();
  auto last = start;
  bool first = true;
  httplib::Request req;
  req.method = "POST";
  req.path = "/v1/completions";
  req.body = request.dump();
  req.set_header("Content-Type", "application/json");
  req.content_receiver = [&](const char* data, size_t n, uint64_t, uint64_t) {
    pending.append(data, n);
    for (size_t end; (end = pending.find("\n\n")) != std::string::npos; pending.erase(0, end + 2)) {
      if (!pending.starts_with("data: ")) continue;
      const std::string payload = pending.substr(6, end - 6);
      if (payload == "[DONE]") {
        out.ok = true;
        continue;
      }
      const json j = json::parse(payload);
      if (j.contains("usage") && !j["usage"].is_null()) out.tokens = j["usage"]["completion_tokens"];
      if (j.contains("error") || j["choices"].empty()) continue;
      const std::string text = j["choices"][0]["text"];
      if (text.empty()) continue;
      const auto now = Clock::now();
      if (first) out.ttft = std::chrono::duration<double>(now - start).count(), first = false;
      else out.gaps.push_back(std::chrono::duration<double>(now - last).count());
      last = now;
      out.text += text;
    }
    return true;
  };
  httplib::Response res;
  httplib::Error error = httplib::Error::Success;
  if (!client.send(req, res, error) || res.status != 200) out.ok = false;
  return out;
}

// Where a level's time went, step by step (ServerOptions::on_step): steps
// of decoding sequences only, and steps that also carried prompt tokens.
struct StepTally {
  std::vector<double> decode_only;  // seconds of each step without prompt tokens
  int64_t prompt_steps = 0, prompt_tokens = 0;
  double prompt_seconds = 0;
};

struct Level {
  int concurrency = 0, requests = 0, lost = 0, wrong = 0;
  double seconds = 0, tokens_per_s = 0;
  std::vector<double> ttft, itl;
  StepTally steps;
};

}  // namespace

int run_serve_bench(const ServeBenchOptions& o) {
  if (o.models.empty()) throw Error("bench serve: give at least one .lacuna model");
  const CpuInfo& cpu = cpu_info();
  std::printf("machine: %s, %d threads, isa %s\n", cpu.brand.c_str(), omp_get_max_threads(), isa_level_name(cpu.level()));
  std::printf("load: %d distinct prompts of %d tokens, greedy, max_tokens %d, streamed; per level at most %.0f s and %s requests; "
              "server and clients in this process on 127.0.0.1; prefix reuse %s; KV cache %s; gathering arrivals %lld us\n",
              o.prompts, o.prompt_tokens, o.max_tokens, o.max_seconds, o.requests ? std::to_string(o.requests).c_str() : "4 x clients (>= 8)",
              o.reuse_prefixes ? "on (repeated prompts start from their published KV blocks)" : "off", kv_type_name(o.kv_type),
              static_cast<long long>(o.gather.count()));
  if (o.rounds > 1) std::printf("%d rounds, each running every level in turn; summary: medians over rounds\n", o.rounds);
  std::ofstream csv;
  if (!o.csv_path.empty()) {
    csv.open(o.csv_path);
    csv << "model,round,concurrency,requests,lost,wrong,seconds,output_tokens_per_s,ttft_p50_s,ttft_p90_s,ttft_p99_s,itl_p50_s,itl_p90_s,itl_p99_s,"
           "decode_only_steps,decode_only_seconds,decode_step_p50_s,prompt_steps,prompt_step_seconds,prompt_tokens\n";
  }
  for (const std::string& path : o.models) {
    const auto model = Model::open(path);
    ServerOptions so;
    so.port = 0;
    so.model_name = path;
    so.http_threads = std::max(16, 2 * *std::max_element(o.concurrency.begin(), o.concurrency.end()));
    so.scheduler.max_running = std::max(64, *std::max_element(o.concurrency.begin(), o.concurrency.end()));
    so.scheduler.step_tokens = o.step_tokens;
    so.scheduler.reuse_prefixes = o.reuse_prefixes;
    so.scheduler.kv_type = o.kv_type;
    so.scheduler.gather = o.gather;
    std::mutex tally_mutex;
    StepTally tally;
    so.on_step = [&](const StepInfo& step) {
      const std::lock_guard lock(tally_mutex);
      if (step.prefill_tokens == 0) {
        tally.decode_only.push_back(step.seconds);
      } else {
        ++tally.prompt_steps;
        tally.prompt_tokens += step.prefill_tokens;
        tally.prompt_seconds += step.seconds;
      }
    };
    HttpServer server(model, so);
    const int port = server.bind();
    std::thread serving([&] { server.serve(); });

    // The answers every streamed completion must equal: one client, not streamed.
    std::vector<json> requests;
    std::vector<std::string> expected;
    for (int i = 0; i < o.prompts; ++i) {
      json r = {{"prompt", prompt_tokens(i, o.prompt_tokens, model->config().vocab)},
                {"max_tokens", o.max_tokens},
                {"temperature", 0},
                {"stream_options", {{"include_usage", true}}}};
      httplib::Client client("127.0.0.1", port);
      client.set_read_timeout(600, 0);
      auto res = client.Post("/v1/completions", r.dump(), "application/json");
      if (!res || res->status != 200) throw Error("bench serve: the reference request failed");
      expected.push_back(json::parse(res->body)["choices"][0]["text"]);
      r["stream"] = true;
      requests.push_back(r);
    }
    std::printf("\nmodel %s (%.0f MB)\n%5s %6s %9s %6s %6s %14s %10s %10s %10s %10s %10s %10s\n", path.c_str(),
                static_cast<double>(model->file().file_bytes()) / 1e6, "round", "conc", "requests", "lost", "wrong", "out tokens/s", "ttft p50",
                "ttft p90", "ttft p99", "itl p50", "itl p90", "itl p99");
    auto run_level = [&](int c) {
      Level l;
      l.concurrency = c;
      const int total = o.requests > 0 ? o.requests : std::max(8, 4 * c);
      std::atomic<int> next{0};
      std::atomic<size_t> tokens{0};
      std::mutex mutex;
      {
        const std::lock_guard lock(tally_mutex);
        tally = {};
      }
      const auto start = Clock::now();
      const auto deadline = start + std::chrono::duration<double>(o.max_seconds);
      std::vector<std::thread> clients;
      for (int k = 0; k < c; ++k)
        clients.emplace_back([&] {
          for (int i; (i = next++) < total && Clock::now() < deadline;) {
            const size_t p = static_cast<size_t>(i % o.prompts);
            const Outcome out = stream_one(port, requests[p]);
            tokens += out.tokens;
            const std::lock_guard lock(mutex);
            ++l.requests;
            if (!out.ok) ++l.lost;
            else if (out.text != expected[p]) ++l.wrong;
            if (out.ok) l.ttft.push_back(out.ttft);
            l.itl.insert(l.itl.end(), out.gaps.begin(), out.gaps.end());
          }
        });
      for (auto& t : clients) t.join();
      l.seconds = std::chrono::duration<double>(Clock::now() - start).count();
      l.tokens_per_s = static_cast<double>(tokens) / l.seconds;
      const std::lock_guard lock(tally_mutex);
      l.steps = tally;
      return l;
    };
    // rounds[r][k]: level k of round r. This host's speed drifts by tens of
    // percent between minutes, so ratios are taken within a round.
    std::vector<std::vector<Level>> rounds;
    for (int r = 1; r <= o.rounds; ++r) {
      rounds.emplace_back();
      for (int c : o.concurrency) {
        const Level l = run_level(c);
        std::printf("%5d %6d %9d %6d %6d %14.2f %9.3fs %9.3fs %9.3fs %9.3fs %9.3fs %9.3fs\n", r, c, l.requests, l.lost, l.wrong, l.tokens_per_s,
                    percentile(l.ttft, 0.5), percentile(l.ttft, 0.9), percentile(l.ttft, 0.99), percentile(l.itl, 0.5), percentile(l.itl, 0.9),
                    percentile(l.itl, 0.99));
        const StepTally& st = l.steps;
        const double decode_only_seconds = std::accumulate(st.decode_only.begin(), st.decode_only.end(), 0.0);
        std::printf("      steps: %zu decode only (%.2f s, median %.1f ms), %lld with prompts (%.2f s, %lld prompt tokens)\n", st.decode_only.size(),
                    decode_only_seconds, 1e3 * percentile(st.decode_only, 0.5), static_cast<long long>(st.prompt_steps), st.prompt_seconds,
                    static_cast<long long>(st.prompt_tokens));
        std::fflush(stdout);
        if (csv)
          csv << path << ',' << r << ',' << c << ',' << l.requests << ',' << l.lost << ',' << l.wrong << ',' << l.seconds << ',' << l.tokens_per_s
              << ',' << percentile(l.ttft, 0.5) << ',' << percentile(l.ttft, 0.9) << ',' << percentile(l.ttft, 0.99) << ','
              << percentile(l.itl, 0.5) << ',' << percentile(l.itl, 0.9) << ',' << percentile(l.itl, 0.99) << ',' << st.decode_only.size() << ','
              << decode_only_seconds << ',' << percentile(st.decode_only, 0.5) << ',' << st.prompt_steps << ',' << st.prompt_seconds << ','
              << st.prompt_tokens << '\n';
        rounds.back().push_back(l);
      }
    }
    for (size_t k = 1; k < o.concurrency.size(); ++k) {
      std::vector<double> ratios, first, level;
      for (const auto& round : rounds) {
        ratios.push_back(round[k].tokens_per_s / round[0].tokens_per_s);
        first.push_back(round[0].tokens_per_s);
        level.push_back(round[k].tokens_per_s);
      }
      std::printf("throughput at %d clients / at %d: %.2fx (%s%.1f / %.1f tokens/s)\n", o.concurrency[k], o.concurrency[0], percentile(ratios, 0.5),
                  o.rounds > 1 ? "median of the rounds' ratios; medians " : "", percentile(level, 0.5), percentile(first, 0.5));
    }
    server.shutdown();
    serving.join();
  }
  if (csv) std::printf("\nwrote %s\n", o.csv_path.c_str());
  return 0;
}

}  // namespace lacuna::bench
