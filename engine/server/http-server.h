#pragma once
// `lacuna serve`: an OpenAI-compatible HTTP server (Debian's cpp-httplib)
// over the continuous-batching scheduler. Endpoints: POST /v1/completions and
// /v1/chat/completions (JSON or server-sent events), GET /v1/models,
// /health, /metrics (Prometheus text, prometheus-cpp). docs/server.md.
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "engine/server/scheduler.h"

namespace lacuna {

struct ServerOptions {
  std::string host = "127.0.0.1";
  int port = 8080;            // 0: any free port (bind() says which)
  std::string api_key;        // when set, requests need "Authorization: Bearer <key>" (/health does not)
  std::string model_name = "lacuna";
  int http_threads = 128;     // connections served at once (a streaming request holds one)
  size_t max_body_bytes = 4 << 20;
  std::chrono::milliseconds shutdown_timeout{30000};
  SchedulerOptions scheduler;
  // Called after every forward step, after the metrics took it, on the
  // scheduler's thread (keep it short); for a load test's step accounting.
  std::function<void(const StepInfo&)> on_step;
};

class HttpServer {
 public:
  HttpServer(std::shared_ptr<const Model> model, const ServerOptions& options);
  ~HttpServer();
  HttpServer(const HttpServer&) = delete;
  HttpServer& operator=(const HttpServer&) = delete;

  // Binds the listening socket; returns the port. Throws lacuna::Error when it cannot.
  int bind();
  // Serves until shutdown(); call bind() first.
  void serve();
  // Graceful: refuses new requests (503), lets running ones finish within
  // the shutdown timeout, cancels the rest, stops listening. Thread-safe;
  // also from a signal-watching thread.
  void shutdown();

  // One connection without a socket, for tests and fuzzing of the HTTP
  // layer: the requests in `requests` are read one after another as a
  // keep-alive connection's, and what the server wrote in answer to each is
  // returned, one string per request (a streamed answer whole, when it
  // ends). A client that stops reading after `client_reads` bytes is one
  // that hung up: the write that passes it fails. Call while serve() runs
  // (httplib ends streams when its server is not running); thread-safe as
  // concurrent connections are.
  std::vector<std::string> answer_connection(std::string_view requests, size_t client_reads = SIZE_MAX);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace lacuna
