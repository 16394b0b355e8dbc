#include "engine/server/http-server.h"

#include <httplib.h>
#include <sys/socket.h>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <cstring>
#include <condition_variable>
#include <deque>
#include <map>
#include <mutex>
#include <random>
#include <utility>

#include "engine/server/metrics.h"
#include "engine/server/openai-api.h"
#include "sparse/error.h"

namespace lacuna {
namespace {

using nlohmann::json;
using Clock = std::chrono::steady_clock;

double seconds_between(Clock::time_point a, Clock::time_point b) { return std::chrono::duration<double>(b - a).count(); }

// How long a streaming handler waits for tokens before it writes a
// keep-alive comment, which is also how it notices a client that left.
constexpr auto kHeartbeat = std::chrono::milliseconds(500);
// How long shutdown waits for streams to send their last events once every
// request has ended (a client that stopped reading must not hold it up).
constexpr auto kStreamsFlush = std::chrono::seconds(10);

// What the scheduler's thread hands to the request's HTTP thread: each
// choice's tokens as they come, then its result.
struct Channel {
  explicit Channel(size_t n) : choices(n) {}
  std::mutex mutex;
  std::condition_variable changed;
  // Not yet sent, in the order they came: text of choice `index`, and with
  // logprobs asked, each token (its chunk may carry no text); `last`: the
  // choice has ended (its result is in `choices`); `echo`: the prompt, first
  // (with the prompt's logprobs when asked).
  struct Piece {
    int32_t index = 0;
    std::string text;
    std::optional<StreamedToken> token;
    bool last = false;
    bool echo = false;
    std::vector<TokenLogprobs> prompt_logprobs = {};
  };
  std::deque<Piece> pieces;
  struct Choice {
    GenerateResult result;
    Clock::time_point last_token;
    size_t tokens = 0;
    size_t token_bytes = 0;  // text_offset of the next token
  };
  std::vector<Choice> choices;
  size_t ended = 0;
  Clock::time_point arrived = Clock::now();
  bool done() const { return ended == choices.size(); }
};

// A stream with echo: choice `index`'s prompt goes out before its answer,
// whose text_offsets then count the prompt's bytes. Under channel.mutex.
void push_echo(Channel& channel, const ApiRequest& r, int32_t index, std::span<const TokenLogprobs> prompt_logprobs) {
  Channel::Piece piece;
  piece.index = index;
  piece.echo = true;
  piece.prompt_logprobs.assign(prompt_logprobs.begin(), prompt_logprobs.end());
  channel.pieces.push_back(std::move(piece));
  channel.choices[static_cast<size_t>(index)].token_bytes = echo_offset_bytes(r);
}

// What the scheduler ended a choice with when it did not finish it.
std::optional<HttpError> failure_of(const GenerateResult& result) {
  if (result.finish_reason == "error") return HttpError{500, "the forward pass failed; the request was ended", "server_error", "", ""};
  if (result.finish_reason == "cancelled") return HttpError{503, "the server shut down before the request finished", "server_error", "", ""};
  return std::nullopt;
}

// httplib's server, with a connection that is not a socket answered as a
// socket's would be (HttpServer::answer_connection).
class ConnectionServer : public httplib::Server {
 public:
  // As httplib's own loop over a kept-alive socket: at most
  // keep_alive_max_count requests, the last answered with Connection: close.
  template <class OnAnswer>
  void answer(httplib::Stream& connection, OnAnswer&& on_answer) {
    bool closed = false;
    for (size_t left = keep_alive_max_count_; left > 0 && !closed; --left) {
      const bool ok = process_request(connection, left == 1, closed, nullptr);
      if (!on_answer() || !ok) break;
    }
  }
};

// A connection in memory: reads `requests`, then the end of the stream (the
// client closed its side); writes go to `written` until the client has read
// `client_reads` bytes, and fail from there (the client left).
class MemoryConnection final : public httplib::Stream {
 public:
  MemoryConnection(std::string_view requests, size_t client_reads) : requests_(requests), client_reads_(client_reads) {}
  bool is_readable() const override { return true; }
  bool is_writable() const override { return total_written_ < client_reads_; }
  ssize_t read(char* p, size_t n) override {
    n = std::min(n, requests_.size());
    std::memcpy(p, requests_.data(), n);
    requests_.remove_prefix(n);
    return static_cast<ssize_t>(n);
  }
  ssize_t write(const char* p, size_t n) override {
    const size_t accepted = std::min(n, client_reads_ - total_written_);
    written.append(p, accepted);
    total_written_ += accepted;
    return accepted == n ? static_cast<ssize_t>(n) : -1;
  }
  void get_remote_ip_and_port(std::string& ip, int& port) const override { ip = "127.0.0.1", port = 0; }
  void get_local_ip_and_port(std::string& ip, int& port) const override { ip = "127.0.0.1", port = 0; }
  socket_t socket() const override { return INVALID_SOCKET; }
  bool hung_up() const { return total_written_ == client_reads_; }

  std::string written;  // since the last answer was taken

 private:
  std::string_view requests_;
  size_t client_reads_;
  size_t total_written_ = 0;
};

const HttpError kUnauthorized{401, "a valid API key is required (Authorization: Bearer KEY)", "authentication_error", "", ""};

void send_json(httplib::Response& res, int status, const json& body) {
  res.status = status;
  res.set_content(body.dump(), "application/json");
}

void send_error(httplib::Response& res, const HttpError& e) { send_json(res, e.status, error_body(e)); }

std::string sse(const json& event) { return "data: " + event.dump() + "\n\n"; }

}  // namespace

struct HttpServer::Impl {
  Impl(std::shared_ptr<const Model> m, const ServerOptions& o)
      : model(std::move(m)), options(o), scheduler(model, o.scheduler, [this](const StepInfo& s) {
          metrics.step(s);
          if (options.on_step) options.on_step(s);
        }) {}

  std::shared_ptr<const Model> model;
  ServerOptions options;
  ServerMetrics metrics;
  Scheduler scheduler;
  ConnectionServer http;
  std::atomic<bool> draining{false};
  std::atomic<int> listening{-1};
  // Streams whose last events may still be on their way: stop() would cut them.
  std::mutex streams_mutex;
  std::condition_variable streams_done;
  int open_streams = 0;
  std::atomic<uint64_t> next_response{1};
  std::mutex shutdown_mutex;
  std::map<std::string, std::string> endpoint_methods;  // path -> the one method it answers
  std::mt19937_64 seeds{std::random_device{}()};
  std::mutex seeds_mutex;

  // `Authorization: Bearer KEY`, the scheme in any case (RFC 7235). The key
  // is compared in time independent of where it differs, so that response
  // times do not reveal how much of a guess was right.
  bool authorized(const httplib::Request& req) const {
    if (options.api_key.empty()) return true;
    const std::string header = req.get_header_value("Authorization");
    constexpr std::string_view kScheme = "bearer ";
    if (header.size() != kScheme.size() + options.api_key.size()) return false;
    unsigned char differs = 0;
    for (size_t i = 0; i < kScheme.size(); ++i) differs |= static_cast<unsigned char>(std::tolower(static_cast<unsigned char>(header[i])) ^ kScheme[i]);
    for (size_t i = 0; i < options.api_key.size(); ++i) differs |= static_cast<unsigned char>(header[kScheme.size() + i] ^ options.api_key[i]);
    return differs == 0;
  }

  uint64_t fresh_seed() {
    const std::lock_guard lock(seeds_mutex);
    return seeds();
  }

  void routes();
  void complete(const httplib::Request& req, httplib::Response& res, Endpoint endpoint);
};

void HttpServer::Impl::routes() {
  // Debian's cpp-httplib listens with a backlog of 5: dozens of clients
  // connecting at once would see connections reset. The listening socket is
  // kept here so that bind() can listen again with the system's maximum.
  http.set_socket_options([this](socket_t sock) {
    httplib::default_socket_options(sock);
    listening = sock;
  });
  http.new_task_queue = [n = options.http_threads] { return new httplib::ThreadPool(static_cast<size_t>(n)); };
  http.set_payload_max_length(options.max_body_bytes);
  // Byte ranges are defined for GET alone (RFC 9110, 14.2), and every answer
  // here is made for its request, so a Range header is ignored. Left to
  // httplib, it cut answers and errors alike to the range (a 200 with half a
  // JSON body, or a 416 after the completion had run). A Range header
  // httplib cannot parse it refuses with 416 before routing, keeping the
  // ranges it read before the bad one, so the error handler drops them too.
  // The handlers see the request const, but it is httplib's own non-const
  // object. Every answer says so (httplib would otherwise offer "bytes" to
  // HEAD requests).
  const auto ignore_ranges = [](const httplib::Request& req) { const_cast<httplib::Request&>(req).ranges.clear(); };
  http.set_default_headers({{"Accept-Ranges", "none"}});
  http.set_pre_routing_handler([ignore_ranges](const httplib::Request& req, httplib::Response&) {
    ignore_ranges(req);
    return httplib::Server::HandlerResponse::Unhandled;
  });
  // Errors httplib answers itself (404, 413, 400 on a broken request line) get a JSON body too;
  // an endpoint asked with another method than its own gets 405 naming it.
  http.set_error_handler([this, ignore_ranges](const httplib::Request& req, httplib::Response& res) {
    ignore_ranges(req);
    if (!res.body.empty()) return;
    if (const auto own = endpoint_methods.find(req.path); res.status == 404 && own != endpoint_methods.end()) {
      res.set_header("Allow", own->second);
      return send_json(res, 405, error_body({405, req.path + " takes " + own->second + ", not " + req.method, "invalid_request_error", "", ""}));
    }
    const std::string message = res.status == 404   ? "no such endpoint"
                                : res.status == 400 ? "the HTTP request is malformed (its request line, a header, or the body's encoding)"
                                : res.status == 413 ? "the request body is too large"
                                : res.status == 414 ? "the request line is too long"
                                : res.status == 416 ? "the Range header is malformed (byte ranges are not served: send the request without one)"
                                                    : "the request failed (HTTP " + std::to_string(res.status) + ")";
    send_json(res, res.status, error_body({res.status, message, res.status == 404 ? "not_found_error" : "invalid_request_error", "", ""}));
  });
  http.set_exception_handler([](const httplib::Request&, httplib::Response& res, std::exception_ptr ep) {
    std::string what = "unknown error";
    try {
      std::rethrow_exception(ep);
    } catch (const std::exception& e) {
      what = e.what();
    } catch (...) {
    }
    send_json(res, 500, error_body({500, "internal error: " + what, "server_error", "", ""}));
  });
  const auto get = [this](const char* path, httplib::Server::Handler handler) {
    http.Get(path, std::move(handler));
    endpoint_methods[path] = "GET";
  };
  const auto post = [this](const char* path, httplib::Server::Handler handler) {
    http.Post(path, std::move(handler));
    endpoint_methods[path] = "POST";
  };
  get("/health", [this](const httplib::Request&, httplib::Response& res) {
    if (draining) return send_json(res, 503, {{"status", "shutting down"}});
    send_json(res, 200, {{"status", "ok"}});
  });
  get("/metrics", [this](const httplib::Request& req, httplib::Response& res) {
    if (!authorized(req)) return send_error(res, kUnauthorized);
    res.set_content(metrics.render(scheduler.stats()), "text/plain; version=0.0.4");
  });
  get("/v1/models", [this](const httplib::Request& req, httplib::Response& res) {
    if (!authorized(req)) return send_error(res, kUnauthorized);
    send_json(res, 200,
              {{"object", "list"},
               {"data", json::array({{{"id", options.model_name}, {"object", "model"}, {"created", 0}, {"owned_by", "lacuna"}}})}});
  });
  for (const auto& [path, answer] : {std::pair{"/tokenize", &tokenize_json}, std::pair{"/detokenize", &detokenize_json}})
    post(path, [this, name = std::string(path + 1), answer = answer](const httplib::Request& req, httplib::Response& res) {
      auto reply_error = [&](const HttpError& e) {
        send_error(res, e);
        metrics.request_done(name, e.status);
      };
      if (!authorized(req)) return reply_error(kUnauthorized);
      try {
        send_json(res, 200, answer(parse_body(req.body), *model));
        metrics.request_done(name, 200);
      } catch (const HttpError& e) {
        reply_error(e);
      }
    });
  post("/v1/completions", [this](const httplib::Request& req, httplib::Response& res) { complete(req, res, Endpoint::completions); });
  post("/v1/chat/completions", [this](const httplib::Request& req, httplib::Response& res) { complete(req, res, Endpoint::chat_completions); });
}

void HttpServer::Impl::complete(const httplib::Request& req, httplib::Response& res, Endpoint endpoint) {
  const std::string name = endpoint == Endpoint::completions ? "completions" : "chat_completions";
  auto reply_error = [&](const HttpError& e) {
    send_error(res, e);
    metrics.request_done(name, e.status);
  };
  if (!authorized(req)) return reply_error(kUnauthorized);
  if (draining) return reply_error({503, "the server is shutting down", "server_error", "", ""});
  ApiRequest r;
  try {
    r = parse_request_body(req.body, endpoint, *model, fresh_seed());
  } catch (const HttpError& e) {
    return reply_error(e);
  }
  auto channel = std::make_shared<Channel>(static_cast<size_t>(r.n));
  // One copy of the request for every choice's callbacks (it holds the prompt).
  auto request = std::make_shared<const ApiRequest>(r);
  auto callbacks_of = [this, channel, request](int32_t index) {
    RequestCallbacks callbacks;
    callbacks.on_token = [this, channel, request, index](const Generation::Token& token) {
      const auto now = Clock::now();
      const std::lock_guard lock(channel->mutex);
      Channel::Choice& choice = channel->choices[static_cast<size_t>(index)];
      const bool first = choice.tokens++ == 0;
      if (first)
        metrics.first_token(seconds_between(channel->arrived, now));
      else
        metrics.inter_token(seconds_between(choice.last_token, now));
      choice.last_token = now;
      // A stream's chunks; a whole answer is written from the results.
      if (request->stream && request->echo && first) push_echo(*channel, *request, index, token.prompt_logprobs);
      if (request->stream && token.logprobs) {
        channel->pieces.push_back({index, std::string(token.text), StreamedToken{token.id, *token.logprobs, choice.token_bytes}});
        choice.token_bytes += token_offset_bytes(*request, token.id);
      } else if (request->stream && !token.text.empty()) {
        channel->pieces.push_back({index, std::string(token.text), std::nullopt});
      }
      channel->changed.notify_all();
      return true;
    };
    callbacks.on_done = [this, channel, request, index](const GenerateResult& result) {
      metrics.tokens(request->prompt.size(), result.tokens.size());
      const std::lock_guard lock(channel->mutex);
      Channel::Choice& choice = channel->choices[static_cast<size_t>(index)];
      choice.result = result;
      // No token came (max_tokens 0): the prompt is the whole answer.
      if (request->stream && request->echo && choice.tokens == 0 && !failure_of(result)) push_echo(*channel, *request, index, result.prompt_logprobs);
      if (request->stream) channel->pieces.push_back({index, "", std::nullopt, true});
      if (++channel->ended == channel->choices.size()) metrics.request_seconds(seconds_between(channel->arrived, Clock::now()));
      channel->changed.notify_all();
    };
    return callbacks;
  };
  // One sequence per choice; if one cannot start, none does.
  auto ids_in_scheduler = std::make_shared<std::vector<uint64_t>>();
  auto cancel_submitted = [&] {
    for (uint64_t id : *ids_in_scheduler) scheduler.cancel(id);
  };
  try {
    for (int32_t i = 0; i < r.n; ++i) ids_in_scheduler->push_back(scheduler.submit(r.prompt, choice_options(r, i), callbacks_of(i)));
  } catch (const QueueFull& e) {
    cancel_submitted();
    return reply_error({429, std::string(e.what()) + "; retry later", "rate_limit_error", "", "queue_full"});
  } catch (const ShuttingDown& e) {
    cancel_submitted();
    return reply_error({503, e.what(), "server_error", "", ""});
  } catch (const Error& e) {
    cancel_submitted();
    return reply_error({400, e.what(), "invalid_request_error", "", ""});
  }
  const ResponseIds ids{(endpoint == Endpoint::completions ? "cmpl-" : "chatcmpl-") + std::to_string(next_response++),
                        std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch()).count(),
                        options.model_name};
  // A finished request's status: what the scheduler ended its first failed choice with.
  auto failure = [](const Channel& c) -> std::optional<HttpError> {
    for (const Channel::Choice& choice : c.choices)
      if (auto e = failure_of(choice.result)) return e;
    return std::nullopt;
  };

  if (!r.stream) {
    std::unique_lock lock(channel->mutex);
    channel->changed.wait(lock, [&] { return channel->done(); });
    if (auto e = failure(*channel)) return reply_error(*e);
    std::vector<GenerateResult> results;
    for (Channel::Choice& choice : channel->choices) results.push_back(std::move(choice.result));
    send_json(res, 200, response_json(r, results, ids));
    metrics.request_done(name, 200);
    return;
  }
  metrics.request_done(name, 200);
  {
    const std::lock_guard lock(streams_mutex);
    ++open_streams;
  }
  res.set_header("Cache-Control", "no-cache");
  auto started = std::make_shared<bool>(false);
  res.set_chunked_content_provider(
      "text/event-stream",
      [channel, r, ids, started, failure](size_t, httplib::DataSink& sink) {
        std::string out;
        if (!*started && r.endpoint == Endpoint::chat_completions) {
          for (int32_t i = 0; i < r.n; ++i) {
            json first = chunk_json(r, i, "", "", ids);
            first["choices"][0]["delta"] = {{"role", "assistant"}, {"content", ""}};
            out += sse(first);
          }
        }
        *started = true;
        bool finished = false;
        {
          std::unique_lock lock(channel->mutex);
          channel->changed.wait_for(lock, kHeartbeat, [&] { return channel->done() || !channel->pieces.empty(); });
          for (const Channel::Piece& piece : channel->pieces) {
            const GenerateResult& result = channel->choices[static_cast<size_t>(piece.index)].result;
            if (piece.echo)
              out += sse(echo_chunk_json(r, piece.index, piece.prompt_logprobs, ids));
            else if (!piece.last)
              out += sse(chunk_json(r, piece.index, piece.text, "", ids, piece.token ? &*piece.token : nullptr));
            else if (!failure_of(result))
              out += sse(chunk_json(r, piece.index, "", finish_reason_name(result.finish_reason), ids));
          }
          channel->pieces.clear();
          if (channel->done()) {
            finished = true;
            if (auto e = failure(*channel)) {
              out += sse(error_body(*e));
            } else if (r.include_usage) {
              size_t completion_tokens = 0;
              for (const Channel::Choice& choice : channel->choices) completion_tokens += choice.result.tokens.size();
              json usage = chunk_json(r, 0, "", "", ids);
              usage["choices"] = json::array();
              usage["usage"] = usage_json(r, completion_tokens);
              out += sse(usage);
            }
            out += "data: [DONE]\n\n";
          }
        }
        if (out.empty()) out = ": keep-alive\n\n";
        if (!sink.write(out.data(), out.size())) return false;  // the client left
        if (finished) sink.done();
        return true;
      },
      [this, ids_in_scheduler](bool success) {
        // The client left before the end: stop generating for it.
        if (!success)
          for (uint64_t id : *ids_in_scheduler) scheduler.cancel(id);
        {
          const std::lock_guard lock(streams_mutex);
          --open_streams;
        }
        streams_done.notify_all();
      });
}

HttpServer::HttpServer(std::shared_ptr<const Model> model, const ServerOptions& options)
    : impl_(std::make_unique<Impl>(std::move(model), options)) {
  impl_->routes();
}

HttpServer::~HttpServer() { shutdown(); }

int HttpServer::bind() {
  Impl& m = *impl_;
  const int port = m.options.port == 0 ? m.http.bind_to_any_port(m.options.host) : (m.http.bind_to_port(m.options.host, m.options.port) ? m.options.port : -1);
  if (port < 0) throw Error("cannot listen on " + m.options.host + ":" + std::to_string(m.options.port) + " (in use, or not an address of this host)");
  if (m.listening >= 0) ::listen(m.listening, SOMAXCONN);  // Linux: a second listen() sets the backlog
  return port;
}

void HttpServer::serve() { impl_->http.listen_after_bind(); }

std::vector<std::string> HttpServer::answer_connection(std::string_view requests, size_t client_reads) {
  MemoryConnection connection(requests, client_reads);
  std::vector<std::string> answers;
  impl_->http.answer(connection, [&] {
    if (!connection.written.empty()) answers.push_back(std::exchange(connection.written, {}));
    return !connection.hung_up();
  });
  return answers;
}

void HttpServer::shutdown() {
  Impl& m = *impl_;
  const std::lock_guard lock(m.shutdown_mutex);
  if (m.draining.exchange(true)) return;
  m.scheduler.drain(m.options.shutdown_timeout);
  {
    // Every request has ended; let the streams write their last events.
    std::unique_lock streams(m.streams_mutex);
    m.streams_done.wait_for(streams, kStreamsFlush, [&] { return m.open_streams == 0; });
  }
  m.http.stop();
}

}  // namespace lacuna
