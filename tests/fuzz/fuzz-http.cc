// Raw bytes as one HTTP connection to `lacuna serve` (the `tiny` model):
// request line, headers, bodies (Content-Length or chunked), several
// requests kept alive, through cpp-httplib and every endpoint, without a
// socket (HttpServer::answer_connection). The first byte picks the server
// (bit 0: with an API key, "fuzz-key"), the second how much of the answers
// the client reads before it hangs up (0: all; else that many times 64
// bytes), the rest is the connection's bytes.
//
// Beyond the targets' contract (no crash), every answer is checked as a
// client would read it: an HTTP/1.1 status line with an expected status,
// never a byte range, a JSON body that parses (an error's with a message),
// an event stream of JSON events ending in [DONE] (bodies compressed at the
// client's request are not read). A failed check aborts.
#include <algorithm>
#include <cctype>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <set>
#include <string>
#include <thread>

#include <nlohmann/json.hpp>

#include "engine/server/http-server.h"
#include "tests/fuzz/fuzz-input.h"

namespace {

using namespace lacuna;
using nlohmann::json;

[[noreturn]] void finding(const std::string& what, std::string_view answer) {
  std::fprintf(stderr, "fuzz-http: %s in the answer:\n%.*s\n", what.c_str(), static_cast<int>(std::min<size_t>(answer.size(), 4000)),
               answer.data());
  std::abort();
}

// A server serving on a loopback port (httplib ends streams of a server that
// is not running), small enough limits that every refusal can be reached.
class FuzzServer {
 public:
  explicit FuzzServer(std::string api_key) {
    ServerOptions o;
    o.port = 0;
    o.api_key = std::move(api_key);
    o.model_name = "tiny";
    o.http_threads = 2;
    o.max_body_bytes = 64 << 10;
    o.shutdown_timeout = std::chrono::milliseconds(100);
    o.scheduler.max_running = 4;
    o.scheduler.max_queued = 4;
    o.scheduler.kv_bytes = 8 << 20;
    server_ = std::make_unique<HttpServer>(fuzzing::tiny_model(), o);
    server_->bind();
    thread_ = std::thread([this] { server_->serve(); });
  }
  ~FuzzServer() {
    server_->shutdown();
    thread_.join();
  }
  FuzzServer(const FuzzServer&) = delete;
  FuzzServer& operator=(const FuzzServer&) = delete;
  HttpServer& operator*() { return *server_; }

 private:
  std::unique_ptr<HttpServer> server_;
  std::thread thread_;
};

// Lower-case header name -> value.
using Headers = std::map<std::string, std::string>;

std::string lower(std::string s) {
  for (char& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

// A chunked body decoded; false when it does not end with its last chunk.
bool unchunk(std::string_view body, std::string& out) {
  while (true) {
    const size_t line_end = body.find("\r\n");
    if (line_end == std::string_view::npos) return false;
    const size_t size = std::strtoul(std::string(body.substr(0, line_end)).c_str(), nullptr, 16);
    body.remove_prefix(line_end + 2);
    if (size == 0) return body == "\r\n";
    if (body.size() < size + 2 || body.substr(size, 2) != "\r\n") return false;
    out.append(body.substr(0, size));
    body.remove_prefix(size + 2);
  }
}

void check_json(const std::string& body, int status, std::string_view answer) {
  json j;
  try {
    j = json::parse(body);
  } catch (const json::exception& e) {
    finding(std::string("a JSON body that does not parse (") + e.what() + ")", answer);
  }
  if (status >= 400 && !(j.contains("error") && j["error"].contains("message") && j["error"]["message"].is_string()))
    finding("an error without a message", answer);
  if (status == 200 && j.contains("error")) finding("an error with status 200", answer);
}

void check_events(const std::string& body, std::string_view answer) {
  bool done = false;
  for (size_t at = 0; at < body.size();) {
    const size_t end = body.find("\n\n", at);
    if (end == std::string::npos) finding("an event without its blank line", answer);
    const std::string_view event = std::string_view(body).substr(at, end - at);
    at = end + 2;
    if (event.starts_with(": ")) continue;  // keep-alive comment
    if (!event.starts_with("data: ")) finding("an event that is neither data nor a comment", answer);
    if (done) finding("an event after [DONE]", answer);
    const std::string_view data = event.substr(6);
    if (data == "[DONE]") {
      done = true;
      continue;
    }
    json j;
    try {
      j = json::parse(data);
    } catch (const json::exception& e) {
      finding(std::string("an event that is not JSON (") + e.what() + ")", answer);
    }
    if (j.contains("error")) finding("an error event (the forward pass failed, or a request was cancelled)", answer);
  }
  if (!done) finding("a stream that does not end with [DONE]", answer);
}

// One request's answer, read whole.
void check_answer(std::string_view answer) {
  const std::string_view whole = answer;
  constexpr std::string_view kContinue = "HTTP/1.1 100 Continue\r\n\r\n";
  if (answer.starts_with(kContinue)) answer.remove_prefix(kContinue.size());
  const size_t head_end = answer.find("\r\n\r\n");
  if (!answer.starts_with("HTTP/1.1 ") || answer.size() < 12 || head_end == std::string_view::npos)
    finding("no status line and headers", whole);
  const int status = std::atoi(std::string(answer.substr(9, 3)).c_str());
  static const std::set<int> kExpected = {200, 400, 401, 404, 405, 413, 414, 416, 429};
  if (!kExpected.contains(status)) finding("status " + std::to_string(status), whole);
  Headers headers;
  for (size_t at = answer.find("\r\n") + 2; at < head_end;) {
    const size_t end = answer.find("\r\n", at), colon = answer.find(": ", at);
    if (colon > end) finding("a header line without ': '", whole);
    headers[lower(std::string(answer.substr(at, colon - at)))] = std::string(answer.substr(colon + 2, end - colon - 2));
    at = end + 2;
  }
  if (headers.contains("content-range")) finding("a byte range", whole);
  std::string body;
  const std::string_view rest = answer.substr(head_end + 4);
  if (headers["transfer-encoding"] == "chunked") {
    if (!unchunk(rest, body)) finding("a chunked body cut short", whole);
  } else {
    body = rest;
    // A HEAD request's answer has its length, not its body.
    if (!body.empty() && headers.contains("content-length") && std::to_string(body.size()) != headers["content-length"])
      finding("a body of another length than its Content-Length", whole);
  }
  const std::string type = headers["content-type"];
  if (headers.contains("content-encoding")) {
    // Compressed as the client asked (Accept-Encoding): read as such, not checked further.
    if (!std::set<std::string>{"gzip", "br", "deflate"}.contains(headers["content-encoding"])) finding("an unknown Content-Encoding", whole);
  } else if (body.empty()) {
    if (status >= 400 && !headers.contains("content-length")) finding("an error without a body", whole);
  } else if (type == "application/json") {
    check_json(body, status, whole);
  } else if (type == "text/event-stream") {
    check_events(body, whole);
  } else if (!type.starts_with("text/plain")) {  // /metrics
    finding("a body of type '" + type + "'", whole);
  }
  if (status >= 400 && type != "application/json") finding("an error that is not JSON", whole);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 2) return 0;
  static FuzzServer open_server(""), keyed_server("fuzz-key");
  HttpServer& server = *(data[0] & 1 ? keyed_server : open_server);
  const size_t client_reads = data[1] == 0 ? SIZE_MAX : size_t{data[1]} * 64;
  const std::vector<std::string> answers = server.answer_connection(fuzzing::as_text(data + 2, size - 2), client_reads);
  size_t read = 0;
  for (const std::string& answer : answers) {
    read += answer.size();
    if (read < client_reads) check_answer(answer);  // the answer the client hung up in is cut
  }
  return 0;
}
