// `lacuna serve` and `lacuna batch`: the serving layer (engine/server).
#include <pthread.h>
#include <signal.h>

#include <cstdio>
#include <filesystem>
#include <thread>

#include "engine/cli/commands.h"
#include "engine/cli/numa-options.h"
#include "engine/server/batch-job.h"
#include "engine/server/http-server.h"
#include "sparse/error.h"

namespace lacuna::cli {

void add_kv_type_option(CLI::App* cmd, KvType& type) {
  cmd->add_option_function<std::string>(
         "--kv-type", [&type](const std::string& name) { type = name == kv_type_name(KvType::f16) ? KvType::f16 : KvType::f32; },
         "Keys and values stored as f16 (half the bytes attention reads) or f32")
      ->check(CLI::IsMember({kv_type_name(KvType::f16), kv_type_name(KvType::f32)}))
      ->default_str(kv_type_name(type));
}

void add_gather_option(CLI::App* cmd, std::chrono::microseconds& gather) {
  cmd->add_option_function<int64_t>(
         "--gather-us", [&gather](int64_t us) { gather = std::chrono::microseconds(us); },
         "An idle server waits while requests keep arriving, each within this many microseconds of the last (8x at most), to start them in one step")
      ->check(CLI::Range(int64_t{0}, int64_t{1000000}))
      ->default_str(std::to_string(gather.count()));
}

namespace {

// The scheduler's options, shared by both commands.
void add_scheduler_options(CLI::App* cmd, SchedulerOptions& o, std::shared_ptr<int64_t> kv_mb, NumaCliOptions& numa) {
  cmd->add_option("--max-running", o.max_running, "Sequences in the running batch at once")->check(CLI::Range(1, 4096))->capture_default_str();
  cmd->add_option("--max-queued", o.max_queued, "Requests waiting; more are refused (HTTP 429)")->check(CLI::Range(1, 1 << 20))->capture_default_str();
  cmd->add_option("--step-tokens", o.step_tokens, "Prompt tokens per forward step, beside one per decoding sequence")
      ->check(CLI::Range(1, 1 << 16))
      ->capture_default_str();
  cmd->add_flag("!--no-prefix-reuse", o.reuse_prefixes, "Evaluate every prompt whole: no sequence starts from KV blocks another published");
  cmd->add_option("--kv-mb", *kv_mb, "KV cache pool, MiB (blocks of 16 positions, shared by all sequences)")->check(CLI::Range(1, 1 << 24))->capture_default_str();
  add_kv_type_option(cmd, o.kv_type);
  add_gather_option(cmd, o.gather);
  add_numa_options(cmd, numa);
}

std::string model_name_of(const std::string& path, const std::string& given) {
  return given.empty() ? std::filesystem::path(path).stem().string() : given;
}

void add_serve(CLI::App& app, int& exit_code) {
  auto* cmd = app.add_subcommand("serve", "Serve a model over HTTP: OpenAI-compatible completions and chat, with continuous batching");
  auto path = std::make_shared<std::string>();
  auto o = std::make_shared<ServerOptions>();
  auto kv_mb = std::make_shared<int64_t>(1024);
  auto shutdown_s = std::make_shared<double>(30);
  cmd->add_option("MODEL", *path, "A .lacuna model")->required();
  cmd->add_option("--host", o->host, "Address to listen on")->capture_default_str();
  cmd->add_option("--port", o->port, "Port (0: any free one, printed)")->check(CLI::Range(0, 65535))->capture_default_str();
  cmd->add_option("--api-key", o->api_key, "Require \"Authorization: Bearer KEY\" (all but /health)");
  cmd->add_option("--model-name", o->model_name, "The model's id in the API (default: the file's name)");
  cmd->add_option("--http-threads", o->http_threads, "Connections served at once")->check(CLI::Range(1, 4096))->capture_default_str();
  cmd->add_option("--shutdown-timeout", *shutdown_s, "Seconds running requests get to finish on SIGTERM")->check(CLI::Range(0.0, 3600.0))->capture_default_str();
  auto numa = std::make_shared<NumaCliOptions>();
  add_scheduler_options(cmd, o->scheduler, kv_mb, *numa);
  o->model_name.clear();
  cmd->callback([=, &exit_code] {
    // Signals go to one thread, which shuts the server down gracefully.
    sigset_t signals;
    sigemptyset(&signals);
    sigaddset(&signals, SIGTERM);
    sigaddset(&signals, SIGINT);
    pthread_sigmask(SIG_BLOCK, &signals, nullptr);
    ServerOptions options = *o;
    options.model_name = model_name_of(*path, o->model_name);
    options.scheduler.kv_bytes = *kv_mb << 20;
    options.shutdown_timeout = std::chrono::milliseconds(static_cast<int64_t>(*shutdown_s * 1000));
    const auto model = Model::open(*path, {}, load_options(*numa));
    numa->batch = static_cast<size_t>(options.scheduler.max_running);
    options.scheduler.placed = place_experts(model, *numa);
    HttpServer server(model, options);
    const int port = server.bind();
    std::printf("lacuna serve: %s as \"%s\" on http://%s:%d (POST /v1/completions, /v1/chat/completions; GET /v1/models, /health, /metrics)\n",
                path->c_str(), options.model_name.c_str(), options.host.c_str(), port);
    std::fflush(stdout);
    std::thread watcher([&server, signals] {
      int signal = 0;
      sigwait(&signals, &signal);
      std::fprintf(stderr, "lacuna serve: signal %d, shutting down (running requests get up to the shutdown timeout)\n", signal);
      server.shutdown();
    });
    server.serve();
    // serve() also returns if listening failed; wake the watcher so it can be joined.
    pthread_kill(watcher.native_handle(), SIGTERM);
    watcher.join();
    std::fprintf(stderr, "lacuna serve: stopped\n");
    exit_code = 0;
  });
}

void add_batch(CLI::App& app, int& exit_code) {
  auto* cmd = app.add_subcommand("batch", "Run a JSONL file of completion/chat requests offline, batched; resumable");
  auto path = std::make_shared<std::string>(), in = std::make_shared<std::string>(), out = std::make_shared<std::string>();
  auto o = std::make_shared<BatchOptions>();
  auto kv_mb = std::make_shared<int64_t>(1024);
  auto model_name = std::make_shared<std::string>();
  cmd->add_option("MODEL", *path, "A .lacuna model")->required();
  cmd->add_option("IN", *in, "Requests, one JSON object per line (with an \"id\")")->required();
  cmd->add_option("OUT", *out, "Results, one per line; ids already there are skipped")->required();
  cmd->add_option("--model-name", *model_name, "The model's id in the responses (default: the file's name)");
  cmd->add_flag("!--no-progress", o->progress, "No progress bar");
  auto numa = std::make_shared<NumaCliOptions>();
  add_scheduler_options(cmd, o->scheduler, kv_mb, *numa);
  cmd->callback([=, &exit_code] {
    BatchOptions options = *o;
    options.model_name = model_name_of(*path, *model_name);
    options.scheduler.kv_bytes = *kv_mb << 20;
    const auto model = Model::open(*path, {}, load_options(*numa));
    numa->batch = static_cast<size_t>(options.scheduler.max_running);
    options.scheduler.placed = place_experts(model, *numa);
    const BatchSummary s = run_batch(model, *in, *out, options);
    std::fprintf(stderr, "lacuna batch: %zu lines: %zu done before, %zu succeeded, %zu failed; %lld tokens in %.1f s (%.1f tokens/s)\n", s.lines,
                 s.skipped, s.succeeded, s.failed, static_cast<long long>(s.generated_tokens), s.seconds,
                 s.seconds > 0 ? static_cast<double>(s.generated_tokens) / s.seconds : 0.0);
    exit_code = s.failed ? 3 : 0;
  });
}

}  // namespace

void add_serve_commands(CLI::App& app, int& exit_code) {
  add_serve(app, exit_code);
  add_batch(app, exit_code);
}

}  // namespace lacuna::cli
