// qwen-server: the engine behind an HTTP API and a browser chat page.
//
//   GET  /                      the chat page (web/chat.html, embedded at build time)
//   POST /                      {"prompt", "history"} -> {"response", "history", "status", "time"}
//   POST /v1/chat/completions   OpenAI chat completions, whole or streamed as server-sent events
//   POST /v1/completions        OpenAI text completions: the raw prompt, no chat template
//   GET  /v1/models             the one model served
//   GET  /health                {"status": "ok"}
//
// The HTTP threads (libmicrohttpd, one per connection) parse and check a request, turn it into prompt tokens
// and hand a Job to the one engine thread, which owns the engine and runs the jobs one at a time; the
// generated text flows back to the HTTP thread through the job. All the JSON and HTTP code lives in this
// file: the headers know nothing of it.
//
// Every request is bounded, whatever the client sends: the request line and headers by --max-header-bytes,
// the body by --max-body (any transfer encoding; compressed bodies are refused), JSON nesting to 64 levels,
// the time a request may take to arrive and a connection may stay idle by --timeout, open connections by
// --max-connections, waiting generations by --max-queue, and requests parsed and tokenized at once by
// kParseSlots. Shutdown takes at most 5 s for the running generations plus 2 s for their answers.
//
// Usage: ./qwen-server -m weights.bin [--port 6006] ... (./qwen-server -h lists the options). Exit status:
// 0 after SIGINT/SIGTERM, 1 when the model does not load or the port is taken, 2 for a command-line mistake.
#include "cli.hpp"

#include <microhttpd.h>
#include <nlohmann/json.hpp>

#include <arpa/inet.h>
#include <climits>
#include <csignal>
#include <ctime>
#include <deque>
#include <netdb.h>
#include <optional>
#include <pthread.h>
#include <random>
#include <set>
#include <sys/socket.h>

#include "chat_html.h"  // build/chat_html.h: unsigned char chat_html[]; unsigned int chat_html_len;

using json = nlohmann::json;

// ============================================================================
// Command line
// ============================================================================

struct ServerArgs {
    std::string model_path;
    std::string host = "127.0.0.1";
    int port = 6006;
    int context = 0;                 // KV-cache tokens; 0 = the model's max_seq_len, at most 4096
    bool cpu = false;                // use the CPU engine even when a GPU is present
    int threads = 0;                 // CPU engine threads; 0 = all cores
    int max_tokens = 512;            // default cap on generated tokens per request
    size_t max_body = 1 << 20;       // largest accepted request body in bytes
    int max_queue = 32;              // requests that may wait for the engine; more are answered 503
    size_t max_header_bytes = 32768; // request line + headers of one request
    int timeout = 30;                // seconds for a request to arrive whole; idle connections closed after it
    int max_connections = 128;       // open connections, each with its own thread
    std::vector<std::string> allow_hosts;  // Host header names accepted besides the loopback ones ("*": any)
    double shutdown_grace = 5;       // seconds generations get to finish after SIGTERM
    cli::SamplingFlags sampling;     // defaults for requests that do not say; unset: the model's generation config
};

static const std::string kUsage = std::string(
    "usage: qwen-server -m weights.bin [options]\n"
    "  -m, --model PATH         weights.bin (tools/export.py) or a GGUF file (required)\n"
    "  --host ADDR              address to listen on (default 127.0.0.1)\n"
    "  --port N                 port (default 6006)\n"
    "  -c, --ctx-size N         context size in tokens (default: min(model max, 4096))\n"
    "  --cpu                    use the CPU engine even when a GPU is present\n"
    "  -t, --threads N          CPU engine threads (default: all cores)\n"
    "  -n, --n-predict N        default limit on generated tokens per request (default 512)\n"
    "sampling defaults for requests that do not give them:\n") +
    cli::SamplingFlags::HELP +
    "limits (a request over one gets a 4xx, a connection over one is closed):\n"
    "  --max-body BYTES          largest request body, however it is sent (default 1048576; more: 413)\n"
    "  --max-queue N             requests that may wait while one runs; more get 503 (default 32;\n"
    "                            0 = only the running one)\n"
    "  --max-header-bytes N      request line and headers of one request (default 32768; more: 414 or 431)\n"
    "  --timeout SECONDS         a request must arrive whole within this time, and a connection idle this\n"
    "                            long (between requests, or not reading its answer) is closed (default 30)\n"
    "  --max-connections N       open connections, each with its own thread; more are refused (default 128)\n"
    "  --allow-host NAME         also answer requests whose Host header names NAME (repeatable; '*' = any).\n"
    "                            On a loopback address only localhost, 127.x.x.x and [::1] are answered\n"
    "                            otherwise (DNS rebinding); on other addresses any Host unless this is given\n"
    "  --shutdown-grace SECONDS  after SIGINT/SIGTERM, how long generations may still run (default 5); then\n"
    "                            the running one ends and queued ones get 503\n"
    "  -h, --help                show this help\n";

// A mistake on the command line (cli::UsageError): one line on stderr with a pointer to -h, and exit status 2.
using cli::parse_int;
using cli::usage_error;
using cli::UsageError;

// Returns nullopt for -h (usage printed); throws UsageError for anything it does not understand.
static std::optional<ServerArgs> parse_args(int argc, char** argv) {
    ServerArgs a;
    for (int i = 1; i < argc; i++) {
        std::string flag = argv[i];
        if (flag == "-h" || flag == "--help") {
            fputs(kUsage.c_str(), stdout);
            return std::nullopt;
        }
        if (flag == "--cpu") {
            a.cpu = true;
            continue;
        }
        auto value = [&]() -> std::string {
            if (i + 1 >= argc) usage_error("%s needs a value", flag.c_str());
            return argv[++i];
        };
        if (a.sampling.take(flag, value)) continue;
        if (flag == "-m" || flag == "--model") a.model_path = value();
        else if (flag == "--host") a.host = value();
        else if (flag == "--port") a.port = int(parse_int(flag, value(), 1, 65535));
        else if (flag == "-c" || flag == "--ctx-size") a.context = int(parse_int(flag, value(), 1, 1 << 20));
        else if (flag == "-t" || flag == "--threads") a.threads = int(parse_int(flag, value(), 0, 1024));
        else if (flag == "-n" || flag == "--n-predict") a.max_tokens = int(parse_int(flag, value(), 1, 1 << 20));
        else if (flag == "--max-body") a.max_body = size_t(parse_int(flag, value(), 1, 1ll << 32));
        else if (flag == "--max-queue") a.max_queue = int(parse_int(flag, value(), 0, 1024));
        else if (flag == "--max-header-bytes") a.max_header_bytes = size_t(parse_int(flag, value(), 4096, 1 << 24));
        else if (flag == "--timeout") a.timeout = int(parse_int(flag, value(), 1, 86400));
        else if (flag == "--max-connections") a.max_connections = int(parse_int(flag, value(), 4, 65536));
        else if (flag == "--allow-host") a.allow_hosts.push_back(value());
        else if (flag == "--shutdown-grace") a.shutdown_grace = double(parse_int(flag, value(), 0, 3600));
        else if (flag[0] == '-') usage_error("unknown option %s", flag.c_str());
        else usage_error("unexpected argument '%s'", flag.c_str());
    }
    if (a.model_path.empty()) usage_error("-m weights.bin is required");
    return a;
}

// ============================================================================
// Jobs and the engine thread
// ============================================================================

// One generation on its way through the engine thread. The HTTP thread that made it fills the inputs and
// then reads the output; the engine thread writes the output. Output fields are guarded by `mu`.
struct Job {
    std::vector<int> prompt;              // (n_prompt) token ids
    qwen::SamplingParams sampling;
    qwen::GenerateOptions options;
    std::atomic<bool> cancel{false};      // set when the client has gone, or at shutdown
    std::atomic<bool> started{false};     // the engine began it (false at the end: cancelled while queued)

    std::mutex mu;
    std::condition_variable cv;
    std::string pending;                  // text generated and not yet taken by the reader
    bool done = false;
    qwen::GenerateResult result;          // complete once done
    std::string error;                    // non-empty if the engine failed

    // Engine side.
    void push(const std::string& text) {
        std::lock_guard<std::mutex> lock(mu);
        pending += text;
        cv.notify_all();
    }
    void finish(qwen::GenerateResult r, std::string err) {
        std::lock_guard<std::mutex> lock(mu);
        result = std::move(r);
        error = std::move(err);
        done = true;
        cv.notify_all();
    }

    // Reader side: waits for new text and moves it into `text`. Returns false, with `text` empty, once the
    // job is finished and everything has been read. Pieces that arrive together come out as one.
    bool next(std::string& text) {
        std::unique_lock<std::mutex> lock(mu);
        cv.wait(lock, [&] { return done || !pending.empty(); });
        text = std::move(pending);
        pending.clear();
        return !text.empty();
    }
    void wait() {
        std::unique_lock<std::mutex> lock(mu);
        cv.wait(lock, [&] { return done; });
    }
};

// The one thread that touches the engine. Jobs wait in a FIFO queue and run one at a time; the Session keeps
// the KV cache of the previous prompt, so a chat follow-up that extends it only prefills its new tokens.
// Each waiting job holds a connection and its thread, so the queue is bounded: max_waiting jobs wait while
// one runs, and the others are answered 503 at once.
// Batching would go here: take up to N queued jobs and advance all of them in each decode step (this needs
// an engine that keeps one KV cache per sequence and a forward pass over a batch of positions).
class EngineWorker {
  public:
    EngineWorker(qwen::Engine& engine, const qwen::Tokenizer& tok, size_t max_waiting)
        : session_(engine, tok), max_waiting_(max_waiting) {
        thread_ = std::thread([this] { run(); });
    }
    ~EngineWorker() { stop(); }

    enum class Submit { QUEUED, SHUTTING_DOWN, BUSY };

    // Queues a job, unless the server is shutting down or max_waiting jobs wait already besides the one
    // running (a job queued on an idle engine runs at once: it does not count as waiting).
    Submit submit(std::shared_ptr<Job> job) {
        std::lock_guard<std::mutex> lock(mu_);
        if (closed_) return Submit::SHUTTING_DOWN;
        if (queue_.size() + (running_ ? 1 : 0) > max_waiting_) return Submit::BUSY;
        queue_.push_back(std::move(job));
        cv_.notify_all();
        return Submit::QUEUED;
    }

    // Shutdown, in steps: refuse new jobs, give the current ones up to `grace` seconds, cancel the rest (the
    // queued ones then end without running, answered 503).
    void drain(double grace) {
        std::unique_lock<std::mutex> lock(mu_);
        closed_ = true;
        auto idle = [&] { return queue_.empty() && !running_; };
        if (!cv_.wait_for(lock, std::chrono::duration<double>(grace), idle)) {
            if (running_) running_->cancel = true;
            for (auto& job : queue_) job->cancel = true;
        }
    }

    void stop() {
        {
            std::lock_guard<std::mutex> lock(mu_);
            closed_ = quit_ = true;
            cv_.notify_all();
        }
        if (thread_.joinable()) thread_.join();
    }

  private:
    void run() {
        for (;;) {
            std::shared_ptr<Job> job;
            {
                std::unique_lock<std::mutex> lock(mu_);
                cv_.wait(lock, [&] { return quit_ || !queue_.empty(); });
                if (queue_.empty()) return;  // quit_ with nothing left to do
                job = queue_.front();
                queue_.pop_front();
                running_ = job;
            }
            execute(*job);
            std::lock_guard<std::mutex> lock(mu_);
            running_.reset();
            cv_.notify_all();
        }
    }

    void execute(Job& job) {
        qwen::GenerateResult r;
        std::string error;
        if (job.cancel) {
            r.finish_reason = "cancelled";
        } else {
            job.started = true;
            try {
                qwen::Sampler sampler(job.sampling);
                r = session_.generate(job.prompt, sampler, job.options, [&](const std::string& text) {
                    job.push(text);
                    return !job.cancel;
                });
            } catch (const std::exception& e) {
                error = e.what();
                session_.reset();  // the cache may hold a half-finished step
            }
        }
        job.finish(std::move(r), std::move(error));
    }

    qwen::Session session_;
    const size_t max_waiting_;        // queued jobs, not counting the running one
    std::mutex mu_;
    std::condition_variable cv_;
    std::deque<std::shared_ptr<Job>> queue_;
    std::shared_ptr<Job> running_;
    bool closed_ = false, quit_ = false;
    std::thread thread_;
};

// ============================================================================
// Request parsing: JSON fields -> prompt tokens, sampling parameters, options
// ============================================================================

// An error answered in OpenAI's shape: {"error": {"message", "type", "code"}} with this HTTP status.
struct ApiError {
    int status;
    std::string message;
    std::string code;
};

static ApiError bad_request(const std::string& message, const std::string& code = "invalid_request") {
    return {400, message, code};
}

static json error_body(const ApiError& e) {
    std::string type = e.status == 413 ? "request_too_large"
                     : e.status == 404 ? "not_found_error"
                     : e.status >= 500 ? "server_error"
                                       : "invalid_request_error";
    return {{"error", {{"message", e.message}, {"type", type}, {"code", e.code}}}};
}

// JSON must be valid UTF-8, and generated text may not be (a random or confused model can emit bytes that do
// not form characters): answers go through qwen::utf8_sanitize, which writes U+FFFD for each bad sequence.
static std::string dump(const json& j) { return j.dump(-1, ' ', false, json::error_handler_t::replace); }

// Arrays and objects may nest this deep in a request: more than any API use needs, and it bounds the
// recursion of every copy, comparison and dump of the parsed value (100k levels would overflow the stack).
constexpr int kMaxJsonDepth = 64;

// The deepest nesting of arrays and objects in a JSON text, counted up to `limit` + 1; brackets inside
// strings do not count. The text need not be valid JSON: the parser checks that afterwards.
static int json_depth(const std::string& text, int limit) {
    int depth = 0, deepest = 0;
    bool in_string = false;
    for (size_t i = 0; i < text.size() && deepest <= limit; i++) {
        char c = text[i];
        if (in_string) {
            if (c == '\\') i++;  // the escaped character, whatever it is
            else if (c == '"') in_string = false;
        } else if (c == '"') {
            in_string = true;
        } else if (c == '[' || c == '{') {
            deepest = std::max(deepest, ++depth);
        } else if (c == ']' || c == '}') {
            depth--;
        }
    }
    return deepest;
}

static json parse_body(const std::string& text) {
    if (!qwen::utf8_valid(text)) throw bad_request("the request body is not valid UTF-8", "invalid_utf8");
    if (json_depth(text, kMaxJsonDepth) > kMaxJsonDepth)
        throw bad_request("the request body nests arrays and objects deeper than " + std::to_string(kMaxJsonDepth) +
                              " levels",
                          "json_too_deep");
    json body = json::parse(text, nullptr, /*allow_exceptions=*/false);
    if (body.is_discarded()) throw bad_request("the request body is not valid JSON", "invalid_json");
    if (!body.is_object()) throw bad_request("the request body must be a JSON object", "invalid_json");
    return body;
}

// Optional typed fields: absent or null -> nullopt; the wrong type -> 400 naming the field.
static std::optional<double> opt_number(const json& body, const char* key) {
    auto it = body.find(key);
    if (it == body.end() || it->is_null()) return std::nullopt;
    if (!it->is_number()) throw bad_request(std::string("'") + key + "' must be a number", "invalid_type");
    return it->get<double>();
}

// An integer field, exact for JSON integers; values beyond 64 bits saturate (they are limits, capped anyway).
static std::optional<long long> opt_integer(const json& body, const char* key) {
    std::optional<double> v = opt_number(body, key);
    if (!v) return std::nullopt;
    const json& j = body[key];
    if (j.is_number_unsigned()) return (long long)std::min<uint64_t>(j.get<uint64_t>(), LLONG_MAX);
    if (j.is_number_integer()) return j.get<long long>();
    if (*v != std::floor(*v)) throw bad_request(std::string("'") + key + "' must be an integer", "invalid_type");
    return *v >= 9.2e18 ? LLONG_MAX : *v <= -9.2e18 ? LLONG_MIN : (long long)*v;
}

// A seed is any 64-bit integer: 0 .. 2^64-1 as the CLI takes it, a negative one as its two's complement.
static std::optional<uint64_t> opt_seed(const json& body) {
    std::optional<double> v = opt_number(body, "seed");
    if (!v) return std::nullopt;
    const json& j = body["seed"];
    if (j.is_number_unsigned()) return j.get<uint64_t>();
    if (j.is_number_integer()) return uint64_t(j.get<long long>());
    if (*v == std::floor(*v) && std::fabs(*v) < 9.2e18) return uint64_t((long long)*v);
    throw bad_request("'seed' must be an integer in [-2^63, 2^64 - 1], got " + j.dump(), "invalid_value");
}

static std::optional<bool> opt_bool(const json& body, const char* key) {
    auto it = body.find(key);
    if (it == body.end() || it->is_null()) return std::nullopt;
    if (!it->is_boolean()) throw bad_request(std::string("'") + key + "' must be true or false", "invalid_type");
    return it->get<bool>();
}

// Message content is a string, or (newer OpenAI clients) a list of parts of which the text ones count.
static std::string content_text(const json& content, const std::string& where) {
    if (content.is_string()) return content.get<std::string>();
    if (content.is_null()) return "";
    if (content.is_array()) {
        std::string text;
        for (const json& part : content) {
            auto type = part.is_object() ? part.find("type") : part.end();
            auto piece = part.is_object() ? part.find("text") : part.end();
            if (!part.is_object() || type == part.end() || *type != "text" || piece == part.end() ||
                !piece->is_string())
                throw bad_request(where + ": only text content parts ({\"type\": \"text\", \"text\": \"...\"}) "
                                  "are supported");
            text += piece->get<std::string>();
        }
        return text;
    }
    throw bad_request(where + ".content must be a string");
}

// [{"role", "content"}, ...] as OpenAI sends it.
static std::vector<qwen::Message> parse_messages(const json& list, const std::string& field) {
    if (!list.is_array()) throw bad_request("'" + field + "' must be a list of messages");
    std::vector<qwen::Message> msgs;
    for (size_t i = 0; i < list.size(); i++) {
        const json& m = list[i];
        std::string where = field + "[" + std::to_string(i) + "]";
        if (!m.is_object() || !m.contains("role") || !m["role"].is_string())
            throw bad_request(where + " must be an object with a string 'role'");
        std::string role = m["role"].get<std::string>();
        if (role == "developer") role = "system";  // OpenAI's newer name for the system role
        if (role != "system" && role != "user" && role != "assistant")
            throw bad_request(where + ".role must be system, user or assistant, got '" + role + "'");
        auto content = m.find("content");
        msgs.push_back({role, content == m.end() ? std::string() : content_text(*content, where)});
    }
    return msgs;
}

// Everything a generation request says besides its prompt.
struct GenerationParams {
    qwen::SamplingParams sampling;
    int max_tokens = 0;
    std::vector<std::string> stop;
    bool stream = false;
    bool include_usage = false;  // stream_options.include_usage: a last chunk with the token counts
};

// ============================================================================
// HTTP layer: libmicrohttpd with every limit set; requests and answers as the handlers see them
// ============================================================================
// libmicrohttpd bounds what a client controls below the application: one memory pool per connection holds
// the request line and headers (414 or 431 beyond it), idle connections time out, each connection has its
// own thread (a slow client holds only its own), and stopping the daemon closes every connection. It never
// compresses an answer or serves byte ranges, answers HTTP/1.0 clients without chunking, and serves
// pipelined requests in turn. This layer adds the rest: the body limit counted over whatever transfer
// encoding, compressed bodies and non-JSON content types refused (a browser page on another site can send
// those without asking: a preflight guards only JSON), the Host check against DNS rebinding, a deadline for
// each request to arrive whole, and one log line per request.

struct HttpRequest {
    std::string method, path, body;
};

struct HttpResponse {
    int status = 200;
    std::string content_type = "application/json";
    std::string body;
    std::vector<std::pair<std::string, std::string>> headers;
    // A streamed answer instead of `body`: next() blocks until the next chunk is ready and returns false at
    // the end; closed(whole) is called once when the answer is done with, whole = false if it was cut short.
    std::function<bool(std::string& chunk)> next;
    std::function<void(bool whole)> closed;

    void set_json(const json& j) {
        body = dump(j);
        content_type = "application/json";
    }
};

static std::string local_time_string() {
    time_t t = time(nullptr);
    struct tm tm;
    localtime_r(&t, &tm);
    char buf[32];
    strftime(buf, sizeof buf, "%Y-%m-%d %H:%M:%S", &tm);
    return buf;
}

// One line on stderr per HTTP request, printed when the last holder lets go of it: once the answer is sent,
// or for a stream when the stream has ended (the stream holds it too).
struct RequestLog {
    std::string method, path, detail;
    int status = 0;
    double start = qwen::now_seconds();

    RequestLog(std::string m, std::string p) : method(std::move(m)), path(std::move(p)) {}
    ~RequestLog() {
        fprintf(stderr, "%s %s %s %d %.3fs%s%s\n", local_time_string().c_str(), method.c_str(),
                qwen::utf8_sanitize(path).c_str(), status, qwen::now_seconds() - start, detail.empty() ? "" : " ",
                detail.c_str());
    }
    void add_detail(const std::string& d) { detail += (detail.empty() ? "" : "; ") + d; }
    // The decode rate counts the tokens after the first (whose time is the prefill's): "-" when there are none.
    void describe(const qwen::GenerateResult& r) {
        char rate[32] = "-";
        if (r.completion_tokens > 1 && r.decode_seconds > 0)
            snprintf(rate, sizeof rate, "%.1f", (r.completion_tokens - 1) / r.decode_seconds);
        char buf[160];
        snprintf(buf, sizeof buf, "prompt %d (%d new) + %d tokens, %s, %s tok/s", r.prompt_tokens,
                 r.prefill_tokens, r.completion_tokens, r.finish_reason.c_str(), rate);
        detail = buf;
    }
};
using LogPtr = std::shared_ptr<RequestLog>;

using Handler = std::function<void(const HttpRequest&, HttpResponse&, LogPtr)>;

struct Route {
    std::string method, path;  // GET routes answer HEAD too
    Handler handler;
};

struct HttpLimits {
    size_t max_body = 1 << 20;         // request body bytes, however sent (413)
    size_t max_header_bytes = 32768;   // the per-connection memory for the request line and headers (414, 431)
    int timeout = 30;                  // seconds for a request to arrive whole, and for a connection to idle
    int max_connections = 128;         // open connections (each has a thread)
    bool check_host = true;            // refuse a Host header that names no allowed host (403)
    std::vector<std::string> allow_hosts;  // besides localhost, 127.x.x.x, [::1]; "*" = any
};

// True if the Host header names a loopback host, or one of `allowed` (any port; names are case-insensitive).
static bool host_allowed(const std::string& header, const std::vector<std::string>& allowed) {
    std::string h;
    for (char c : header) h += char(tolower(uint8_t(c)));
    size_t end = h[0] == '[' ? h.find(']') : h.find(':');
    if (h[0] == '[' && end++ == std::string::npos) return false;
    std::string name = h.substr(0, end), port = end < h.size() ? h.substr(end) : "";
    if (!port.empty() && (port[0] != ':' || port.find_first_not_of("0123456789", 1) != std::string::npos))
        return false;
    in_addr v4;
    bool loopback = name == "localhost" || (name.size() > 10 && name.compare(name.size() - 10, 10, ".localhost") == 0) ||
                    name == "[::1]" || (inet_pton(AF_INET, name.c_str(), &v4) == 1 && (ntohl(v4.s_addr) >> 24) == 127);
    for (const std::string& a : allowed) {
        std::string lower;
        for (char c : a) lower += char(tolower(uint8_t(c)));
        loopback = loopback || lower == "*" || lower == name;
    }
    return loopback;
}

// The media type of a Content-Type header, lowercased, without parameters ("application/json; charset=utf-8"
// -> "application/json").
static std::string media_type(const char* header) {
    std::string t;
    for (const char* p = header; *p && *p != ';'; p++)
        if (*p != ' ' && *p != '\t') t += char(tolower(uint8_t(*p)));
    return t;
}

class HttpServer {
  public:
    HttpServer(HttpLimits limits, std::vector<Route> routes) : limits_(std::move(limits)), routes_(std::move(routes)) {}
    ~HttpServer() { stop(); }

    // Serves on a listening socket, which it owns from now on; throws if the daemon does not start.
    void start(int listen_fd) {
        const unsigned flags = MHD_USE_THREAD_PER_CONNECTION | MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_POLL |
                               MHD_USE_ITC;
        daemon_ = MHD_start_daemon(flags, 0, nullptr, nullptr, &HttpServer::on_request, this,
                                   MHD_OPTION_LISTEN_SOCKET, MHD_socket(listen_fd),
                                   MHD_OPTION_CONNECTION_LIMIT, unsigned(limits_.max_connections),
                                   MHD_OPTION_CONNECTION_TIMEOUT, unsigned(limits_.timeout),
                                   MHD_OPTION_CONNECTION_MEMORY_LIMIT, limits_.max_header_bytes,
                                   MHD_OPTION_NOTIFY_COMPLETED, &HttpServer::on_completed, this,
                                   MHD_OPTION_NOTIFY_CONNECTION, &HttpServer::on_connection, this,
                                   MHD_OPTION_END);
        if (!daemon_) {
            close(listen_fd);
            throw std::runtime_error("the HTTP daemon did not start");
        }
        watchdog_ = std::thread([this] { watch(); });
    }

    // Shutdown, in steps: stop accepting connections; wait up to `seconds` for the answers being made;
    // stop (every connection closed, its thread joined). False if answers were still being made.
    void stop_accepting() {
        if (daemon_ && listen_fd_ < 0) listen_fd_ = MHD_quiesce_daemon(daemon_);  // the socket is ours again
    }
    bool wait_idle(double seconds) {
        std::unique_lock<std::mutex> lock(mu_);
        return cv_.wait_for(lock, std::chrono::duration<double>(seconds), [&] { return answering_ == 0; });
    }
    void stop() {
        if (!daemon_) return;
        MHD_stop_daemon(daemon_);  // closes the listening socket unless it was handed back
        daemon_ = nullptr;
        if (listen_fd_ >= 0) close(listen_fd_);
        {
            std::lock_guard<std::mutex> lock(mu_);
            stopping_ = true;
            cv_.notify_all();
        }
        watchdog_.join();
    }

  private:
    // A TCP connection, watched for the arrival deadline: the request being received must be in whole
    // within limits_.timeout of the connection's start or of the previous answer.
    struct Connection {
        int fd;
        double since;           // when the current request began to arrive
        bool receiving = true;  // its headers or body are still arriving
        bool cut = false;       // shut down for missing the deadline
    };

    // A request from its headers to its answer.
    struct Pending {
        HttpRequest req;
        const Route* route = nullptr;
        LogPtr log;
        size_t received = 0;     // body bytes so far, kept or not
        std::unique_ptr<HttpResponse> refusal;  // set: the body is read and dropped, then this is the answer
        bool answering = false;  // counted in answering_
        bool streamed = false;
    };

    // A streamed answer being sent. libmicrohttpd calls read() from the connection's thread whenever the
    // socket can take more; it may block there until the next chunk is ready.
    struct Stream {
        std::function<bool(std::string&)> next;
        std::function<void(bool)> closed;
        MHD_Connection* connection;
        unsigned timeout;
        std::string chunk;
        size_t sent = 0;
        bool whole = false;

        static ssize_t read(void* cls, uint64_t, char* buf, size_t max) {
            auto* s = static_cast<Stream*>(cls);
            try {
                if (s->sent == s->chunk.size()) {
                    s->chunk.clear();
                    s->sent = 0;
                    // The time spent here counts as idleness: no timeout while the engine makes the chunk;
                    // setting it again from 0 restarts the clock.
                    MHD_set_connection_option(s->connection, MHD_CONNECTION_OPTION_TIMEOUT, 0u);
                    bool more = s->next(s->chunk);
                    MHD_set_connection_option(s->connection, MHD_CONNECTION_OPTION_TIMEOUT, s->timeout);
                    if (!more || s->chunk.empty()) {
                        s->whole = !more;
                        return more ? MHD_CONTENT_READER_END_WITH_ERROR : MHD_CONTENT_READER_END_OF_STREAM;
                    }
                }
                size_t n = std::min(max, s->chunk.size() - s->sent);
                memcpy(buf, s->chunk.data() + s->sent, n);
                s->sent += n;
                return ssize_t(n);
            } catch (const std::exception&) {
                return MHD_CONTENT_READER_END_WITH_ERROR;
            }
        }
        static void free(void* cls) {
            auto* s = static_cast<Stream*>(cls);
            if (s->closed) s->closed(s->whole);
            delete s;
        }
    };

    static constexpr size_t kStreamBlock = 16 * 1024;  // largest piece of a chunk handed over at once

    // A refused request's body is read and dropped up to this size; beyond it the connection is closed.
    size_t discard_limit() const { return std::max(limits_.max_body, size_t(64) << 20); }

    // ---- libmicrohttpd's callbacks ----

    static void on_connection(void* cls, MHD_Connection* c, void** socket_context,
                              MHD_ConnectionNotificationCode code) {
        auto* self = static_cast<HttpServer*>(cls);
        std::lock_guard<std::mutex> lock(self->mu_);
        if (code == MHD_CONNECTION_NOTIFY_STARTED) {
            int fd = MHD_get_connection_info(c, MHD_CONNECTION_INFO_CONNECTION_FD)->connect_fd;
            auto* k = new Connection{fd, qwen::now_seconds()};
            self->connections_.insert(k);
            *socket_context = k;
        } else {  // closed: libmicrohttpd closes the socket after this returns, so the watchdog never sees it
            auto* k = static_cast<Connection*>(*socket_context);
            self->connections_.erase(k);
            delete k;
        }
    }

    Connection* connection_of(MHD_Connection* c) {
        return static_cast<Connection*>(MHD_get_connection_info(c, MHD_CONNECTION_INFO_SOCKET_CONTEXT)->socket_context);
    }

    void set_receiving(MHD_Connection* c, bool receiving) {
        std::lock_guard<std::mutex> lock(mu_);
        Connection* k = connection_of(c);
        k->receiving = receiving;
        k->since = qwen::now_seconds();
    }

    // Called when the headers are in (no Pending yet), for each piece of the body, and once the whole
    // request is in (*upload_size == 0).
    static MHD_Result on_request(void* cls, MHD_Connection* c, const char* url, const char* method,
                                 const char* version, const char* upload, size_t* upload_size, void** con_cls) {
        auto* self = static_cast<HttpServer*>(cls);
        try {
            auto* p = static_cast<Pending*>(*con_cls);
            if (!p) {
                p = new Pending;
                *con_cls = p;
                p->req.method = method;
                p->req.path = url;
                p->log = std::make_shared<RequestLog>(method, url);
                HttpResponse refusal;
                if (self->check_headers(c, version, *p, refusal)) return MHD_YES;
                // Refused. A body on its way is read and dropped before the answer: closing a connection with
                // unread data resets it, and a client still sending would never see the answer. Answered at
                // once (then closed) when the client waits for "100 Continue", or the body is too big to read.
                const char* expect = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Expect");
                const char* length = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Content-Length");
                if ((expect && strcasecmp(expect, "100-continue") == 0) ||
                    (length && strtoull(length, nullptr, 10) > self->discard_limit()))
                    return self->respond(c, *p, refusal);
                p->refusal = std::make_unique<HttpResponse>(std::move(refusal));
                return MHD_YES;
            }
            if (*upload_size > 0) {  // a piece of the body (chunked or not: the limit counts what arrives)
                p->received += *upload_size;
                if (p->received > self->discard_limit()) return MHD_NO;  // not worth reading: close
                if (!p->refusal && p->received > self->limits_.max_body) {
                    p->refusal = std::make_unique<HttpResponse>();
                    refuse(*p->refusal, p->log, too_large(self->limits_.max_body));
                    std::string().swap(p->req.body);
                }
                if (!p->refusal) p->req.body.append(upload, *upload_size);
                *upload_size = 0;
                return MHD_YES;
            }
            self->set_receiving(c, false);
            {
                std::lock_guard<std::mutex> lock(self->mu_);
                self->answering_++;
                p->answering = true;
            }
            if (p->refusal) return self->respond(c, *p, *p->refusal);
            HttpResponse res;
            self->run(*p, res);
            return self->respond(c, *p, res);
        } catch (const std::exception&) {
            return MHD_NO;  // closes the connection
        }
    }

    static void on_completed(void* cls, MHD_Connection* c, void** con_cls, MHD_RequestTerminationCode code) {
        auto* self = static_cast<HttpServer*>(cls);
        std::unique_ptr<Pending> p(static_cast<Pending*>(*con_cls));  // its log line is printed when it goes
        if (!p) return;
        *con_cls = nullptr;
        std::lock_guard<std::mutex> lock(self->mu_);
        Connection* k = self->connection_of(c);
        if (code != MHD_REQUEST_TERMINATED_COMPLETED_OK && !p->streamed)
            p->log->add_detail(k->cut ? "not sent whole within --timeout"
                               : code == MHD_REQUEST_TERMINATED_TIMEOUT_REACHED ? "connection idle past --timeout"
                                                                                : "connection closed before the answer");
        k->receiving = true;  // the next request on this connection, if any, starts arriving now
        k->since = qwen::now_seconds();
        if (p->answering) {
            self->answering_--;
            self->cv_.notify_all();
        }
    }

    // ---- checks, dispatch, answers ----

    static ApiError too_large(size_t max_body) {
        return {413, "the request body is too large: the limit is " + std::to_string(max_body) + " bytes (--max-body)",
                "body_too_large"};
    }

    static void refuse(HttpResponse& res, const LogPtr& log, const ApiError& e) {
        res.status = e.status;
        res.set_json(error_body(e));
        res.next = nullptr;
        res.closed = nullptr;
        log->detail = e.message;
    }

    // The checks made once the headers are in, before any of the body is read. False, with the refusal in
    // `res`, if the request is refused.
    bool check_headers(MHD_Connection* c, const char* version, Pending& p, HttpResponse& res) {
        auto header = [c](const char* name) { return MHD_lookup_connection_value(c, MHD_HEADER_KIND, name); };
        auto refused = [&](const ApiError& e) {
            refuse(res, p.log, e);
            return false;
        };
        const char* host = header("Host");
        if (!host && strcmp(version, "HTTP/1.0") != 0)
            return refused({400, "an HTTP/1.1 request needs a Host header", "bad_request"});
        if (host && limits_.check_host && !host_allowed(host, limits_.allow_hosts))
            return refused({403, std::string("the Host header '") + host + "' names no host this server answers "
                                 "(localhost, 127.x.x.x, [::1]; add names with --allow-host)", "host_not_allowed"});

        std::string allowed;  // methods of the routes on this path
        const std::string method = p.req.method == "HEAD" ? "GET" : p.req.method;
        for (const Route& r : routes_) {
            if (r.path != p.req.path) continue;
            if (r.method == method) p.route = &r;
            allowed += (allowed.empty() ? "" : ", ") + r.method;
        }
        if (allowed.empty())
            return refused({404, "no such endpoint: " + p.req.method + " " + p.req.path, "not_found"});
        if (!p.route) {
            res.headers.push_back({"Allow", allowed});
            return refused({405, p.req.method + " is not allowed here; use " + allowed, "method_not_allowed"});
        }
        if (method != "POST") return true;

        const char* encoding = header("Content-Encoding");
        if (encoding && strcasecmp(encoding, "identity") != 0)
            return refused({415, std::string("compressed request bodies are not accepted (Content-Encoding: ") +
                                     encoding + "); send the JSON as it is", "unsupported_encoding"});
        const char* length = header("Content-Length");
        if (length && strtoull(length, nullptr, 10) > limits_.max_body) return refused(too_large(limits_.max_body));
        const char* type = header("Content-Type");
        if (!type || media_type(type) != "application/json")
            return refused({415, std::string("the request body must be JSON, sent with the header "
                                             "'Content-Type: application/json' (got ") +
                                     (type ? "'" + std::string(type) + "'" : "no Content-Type") + ")",
                            "unsupported_media_type"});
        return true;
    }

    // Runs the route's handler; every failure becomes an answer in OpenAI's error shape.
    void run(Pending& p, HttpResponse& res) {
        try {
            p.route->handler(p.req, res, p.log);
        } catch (const ApiError& e) {
            refuse(res, p.log, e);
        } catch (const qwen::Error& e) {  // e.g. the tokenizer refusing its input
            refuse(res, p.log, bad_request(e.what()));
        } catch (const std::exception& e) {
            refuse(res, p.log, {500, std::string("internal error: ") + e.what(), "internal_error"});
        }
    }

    MHD_Result respond(MHD_Connection* c, Pending& p, HttpResponse& res) {
        p.log->status = res.status;
        MHD_Response* r = nullptr;
        if (res.next) {
            p.streamed = true;
            auto* s = new Stream{std::move(res.next), std::move(res.closed), c, unsigned(limits_.timeout)};
            r = MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, kStreamBlock, &Stream::read, s, &Stream::free);
            if (!r) Stream::free(s);
        } else {
            r = MHD_create_response_from_buffer(res.body.size(), res.body.data(), MHD_RESPMEM_MUST_COPY);
        }
        if (!r) return MHD_NO;
        MHD_add_response_header(r, "Content-Type", res.content_type.c_str());
        for (const auto& [name, value] : res.headers) MHD_add_response_header(r, name.c_str(), value.c_str());
        MHD_Result queued = MHD_queue_response(c, unsigned(res.status), r);
        MHD_destroy_response(r);  // the connection holds it now (or, if not queued, the stream is closed)
        return queued;
    }

    // Shuts down the socket of a connection whose request has not arrived whole in time (libmicrohttpd's
    // own timeout counts idleness only: a byte every few seconds would keep a request arriving forever).
    void watch() {
        std::unique_lock<std::mutex> lock(mu_);
        while (!stopping_) {
            cv_.wait_for(lock, std::chrono::milliseconds(250));
            double now = qwen::now_seconds();
            for (Connection* k : connections_) {
                if (k->receiving && !k->cut && now - k->since > limits_.timeout) {
                    ::shutdown(k->fd, SHUT_RDWR);
                    k->cut = true;
                }
            }
        }
    }

    const HttpLimits limits_;
    const std::vector<Route> routes_;
    MHD_Daemon* daemon_ = nullptr;
    int listen_fd_ = -1;  // the listening socket once libmicrohttpd has handed it back
    std::mutex mu_;  // guards everything below, and each Connection
    std::condition_variable cv_;
    std::set<Connection*> connections_;
    int answering_ = 0;  // requests in whole, not yet answered to the end
    bool stopping_ = false;
    std::thread watchdog_;
};

// ============================================================================
// The server: shared state and the handlers
// ============================================================================

// Parsing and tokenizing a request is the costly part of it before the engine (up to --max-body of JSON,
// whose parsed tree takes up to ~30 times its size, and the tokenizer's work): only kParseSlots requests do
// it at once, so memory stays bounded however many arrive together.
constexpr int kParseSlots = 2;

// At most n holders at a time; the others wait their turn.
class Gate {
  public:
    explicit Gate(int n) : free_(n) {}
    class Pass {
      public:
        explicit Pass(Gate& g) : g_(g) {}
        ~Pass() {
            std::lock_guard<std::mutex> lock(g_.mu_);
            g_.free_++;
            g_.cv_.notify_one();
        }
        Pass(const Pass&) = delete;
        Pass& operator=(const Pass&) = delete;

      private:
        Gate& g_;
    };
    Pass enter() {
        std::unique_lock<std::mutex> lock(mu_);
        cv_.wait(lock, [&] { return free_ > 0; });
        free_--;
        return Pass(*this);
    }

  private:
    std::mutex mu_;
    std::condition_variable cv_;
    int free_;
};

// What the handlers share. The HTTP threads tokenize prompts themselves, concurrently: the tokenizer is
// read-only after construction. Only the engine thread touches the engine.
struct ServerContext {
    const qwen::Model& model;
    const qwen::Tokenizer& tok;
    EngineWorker& worker;
    Gate& parse_gate;                  // held while a request is parsed and tokenized
    std::string model_id;              // the weights file name without ".bin" / ".gguf"
    int context_size = 0;              // tokens the KV cache holds
    qwen::SamplingParams sampling;     // defaults for requests that do not say (valid: checked at start)
    int max_tokens = 512;
    int max_queue = 32;                // requests that may wait for the engine (--max-queue)
};

// The token limit is the field max_key if present (max_completion_tokens; POST / calls it max_length), else
// max_tokens. Error messages name the field the client sent.
static GenerationParams parse_generation(const json& body, const ServerContext& ctx, const char* max_key) {
    GenerationParams g;
    g.sampling = ctx.sampling;
    // Each value is checked as the engine holds it, a float, and a refusal quotes what the client sent:
    // top_p 1.0000001 is a float above 1, and "got 1" (that float printed) would contradict the rule.
    using P = qwen::SamplingParams;
    const std::pair<const char*, float P::*> fields[] = {
        {"temperature", &P::temperature}, {"top_p", &P::top_p}, {"min_p", &P::min_p},
        {"presence_penalty", &P::presence_penalty}, {"repetition_penalty", &P::repetition_penalty}};
    for (const auto& [key, member] : fields) {
        std::optional<double> v = opt_number(body, key);
        if (!v) continue;
        if (std::fabs(*v) > std::numeric_limits<float>::max())  // would become inf, and be reported as such
            throw bad_request(std::string(key) + " is out of range, got " + body[key].dump(), "invalid_value");
        float f = float(*v);
        P one = ctx.sampling;  // the defaults are valid, so only this value can fail
        one.*member = f;
        try {
            qwen::validate(one);
        } catch (const qwen::Error& e) {
            std::string rule = e.what();
            throw bad_request(rule.substr(0, rule.rfind(", got ")) + ", got " + body[key].dump(), "invalid_sampling");
        }
        g.sampling.*member = f;
    }
    if (auto v = opt_integer(body, "top_k")) {
        if (*v < -1) throw bad_request("top_k must be >= 0 (0 or -1 = off), got " + std::to_string(*v),
                                       "invalid_sampling");
        g.sampling.top_k = int(std::min<long long>(std::max<long long>(*v, 0), 1 << 30));  // vLLM's off is -1
    }
    if (auto v = opt_seed(body)) g.sampling.seed = *v;
    else g.sampling.seed = (uint64_t(std::random_device{}()) << 32) | std::random_device{}();

    g.max_tokens = ctx.max_tokens;
    for (const char* key : {max_key, "max_tokens"}) {
        std::optional<long long> max = opt_integer(body, key);
        if (!max) continue;
        if (*max < 1) throw bad_request(std::string("'") + key + "' must be at least 1", "invalid_value");
        g.max_tokens = int(std::min<long long>(*max, 1 << 30));
        break;
    }
    if (auto n = opt_integer(body, "n"); n && *n != 1) throw bad_request("only n = 1 is supported", "invalid_value");

    auto stop = body.find("stop");
    if (stop != body.end() && !stop->is_null()) {
        if (!stop->is_string() && !(stop->is_array() && stop->size() <= 16))
            throw bad_request("'stop' must be a string or a list of at most 16 strings", "invalid_type");
        for (const json& s : stop->is_string() ? json::array({*stop}) : *stop) {
            if (!s.is_string()) throw bad_request("'stop' must contain only strings", "invalid_type");
            if (!s.get<std::string>().empty()) g.stop.push_back(s.get<std::string>());
        }
    }
    g.stream = opt_bool(body, "stream").value_or(false);
    auto so = body.find("stream_options");
    if (so != body.end() && so->is_object()) g.include_usage = opt_bool(*so, "include_usage").value_or(false);
    return g;
}

// Checks the prompt fits, caps max_tokens at the room left, and queues the job.
static std::shared_ptr<Job> start_job(const ServerContext& ctx, std::vector<int> prompt, const GenerationParams& g) {
    int n = int(prompt.size());
    if (n == 0) throw bad_request("the prompt is empty", "empty_prompt");
    if (n >= ctx.context_size)  // the context must also hold at least one generated token
        throw bad_request("the prompt is " + std::to_string(n) + " tokens; the context holds " +
                              std::to_string(ctx.context_size) + ", one of them for the answer: the prompt is " +
                              std::to_string(n + 1 - ctx.context_size) + " tokens too long",
                          "context_length_exceeded");
    auto job = std::make_shared<Job>();
    job->prompt = std::move(prompt);
    job->sampling = g.sampling;
    job->options.max_new_tokens = std::min(g.max_tokens, ctx.context_size - n);
    job->options.stop_ids = ctx.model.chat.stop_ids;
    job->options.stop = g.stop;
    switch (ctx.worker.submit(job)) {
        case EngineWorker::Submit::QUEUED: return job;
        case EngineWorker::Submit::SHUTTING_DOWN: break;
        case EngineWorker::Submit::BUSY:
            throw ApiError{503, "the server is busy (the queue for the model is full: --max-queue " +
                                    std::to_string(ctx.max_queue) + "); try again later",
                           "server_busy"};
    }
    throw ApiError{503, "the server is shutting down", "shutting_down"};
}

// Waits for the whole answer; an engine failure becomes a 500, a job dropped from the queue at shutdown a 503.
static const qwen::GenerateResult& finish_job(Job& job) {
    job.wait();
    if (!job.error.empty()) throw ApiError{500, "generation failed: " + job.error, "engine_error"};
    if (!job.started) throw ApiError{503, "the server is shutting down", "shutting_down"};
    return job.result;
}

// A job cancelled by shutdown was cut short, which clients know as "length".
static std::string finish_reason(const qwen::GenerateResult& r) {
    return r.finish_reason == "cancelled" ? "length" : r.finish_reason;
}

static json usage_json(const qwen::GenerateResult& r) {
    return {{"prompt_tokens", r.prompt_tokens},
            {"completion_tokens", r.completion_tokens},
            {"total_tokens", r.prompt_tokens + r.completion_tokens}};
}

static std::string random_id(const std::string& prefix) {
    static const char kChars[] = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
    std::random_device rd;
    std::string id = prefix;
    for (int i = 0; i < 24; i++) id += kChars[rd() % (sizeof kChars - 1)];
    return id;
}

// ---- streaming -------------------------------------------------------------------------------------
// A stream is a sequence of server-sent events, each sent as its own chunk as soon as it is made: the first
// event (if any) at once, then the job's text as it arrives, then the end. A client that goes away cancels
// the job, and the engine moves on to the next one.

// Builds the JSON of one event from (text piece, finish reason or "" while running).
using ChunkMaker = std::function<json(const std::string& text, const std::string& finish)>;

class EventStream {
  public:
    EventStream(std::shared_ptr<Job> job, LogPtr log, json first_event, ChunkMaker make_chunk,
                std::optional<json> usage_chunk)
        : job_(std::move(job)), log_(std::move(log)), make_chunk_(std::move(make_chunk)),
          usage_chunk_(std::move(usage_chunk)) {
        if (!first_event.is_null()) ready_.push_back(event(first_event));
    }

    // The next event, waiting for the engine if need be; false after [DONE].
    bool next(std::string& out) {
        if (ready_.empty() && !ended_) produce();
        if (ready_.empty()) return false;
        out = std::move(ready_.front());
        ready_.pop_front();
        return true;
    }

    void closed(bool whole) {
        if (whole) return;
        job_->cancel = true;
        log_->add_detail("client disconnected");
    }

  private:
    static std::string event(const json& j) { return "data: " + dump(j) + "\n\n"; }

    void produce() {
        std::string text;
        if (job_->next(text)) {
            ready_.push_back(event(make_chunk_(qwen::utf8_sanitize(text), "")));
            return;
        }
        ended_ = true;
        log_->describe(job_->result);
        if (!job_->error.empty()) {
            // Headers are gone already: report the failure as an error event, as OpenAI does mid-stream.
            log_->status = 500;
            ready_.push_back(event(error_body({500, "generation failed: " + job_->error, "engine_error"})));
        } else if (!job_->started) {  // dropped from the queue at shutdown
            log_->status = 503;
            ready_.push_back(event(error_body({503, "the server is shutting down", "shutting_down"})));
        } else {
            ready_.push_back(event(make_chunk_("", finish_reason(job_->result))));
            if (usage_chunk_) {
                json u = *usage_chunk_;
                u["usage"] = usage_json(job_->result);
                ready_.push_back(event(u));
            }
        }
        ready_.push_back("data: [DONE]\n\n");
    }

    std::shared_ptr<Job> job_;
    LogPtr log_;
    ChunkMaker make_chunk_;
    std::optional<json> usage_chunk_;
    std::deque<std::string> ready_;  // events made and not yet sent
    bool ended_ = false;             // the job is done and its last events are in ready_
};

static void stream_job(HttpResponse& res, std::shared_ptr<Job> job, LogPtr log, json first_event,
                       ChunkMaker make_chunk, std::optional<json> usage_chunk) {
    auto stream = std::make_shared<EventStream>(std::move(job), std::move(log), std::move(first_event),
                                                std::move(make_chunk), std::move(usage_chunk));
    res.content_type = "text/event-stream";
    res.headers.push_back({"Cache-Control", "no-cache"});
    res.next = [stream](std::string& chunk) { return stream->next(chunk); };
    res.closed = [stream](bool whole) { stream->closed(whole); };
}

// ---- handlers ----------------------------------------------------------------------------------------

// The fields every completion object and stream chunk starts with.
static json response_head(const ServerContext& ctx, const std::string& id_prefix, const char* object) {
    return {{"id", random_id(id_prefix)}, {"object", object}, {"created", (long long)time(nullptr)},
            {"model", ctx.model_id}};
}

// With stream_options.include_usage, the stream's last chunk: no choices, then the usage (added at the end).
static std::optional<json> usage_chunk(const json& head, const GenerationParams& g) {
    if (!g.include_usage) return std::nullopt;
    json u = head;
    u["choices"] = json::array();
    return u;
}

static void handle_chat_completions(const ServerContext& ctx, const HttpRequest& req, HttpResponse& res,
                                    LogPtr log) {
    GenerationParams g;
    std::vector<int> prompt;
    {
        Gate::Pass pass = ctx.parse_gate.enter();
        json body = parse_body(req.body);
        if (!body.contains("messages")) throw bad_request("'messages' is required", "missing_field");
        std::vector<qwen::Message> msgs = parse_messages(body["messages"], "messages");
        if (msgs.empty()) throw bad_request("'messages' must not be empty", "invalid_value");
        g = parse_generation(body, ctx, "max_completion_tokens");
        qwen::ChatOptions opts;
        // Qwen3's thinking switch, as vLLM takes it (chat_template_kwargs) or as a plain field.
        std::optional<bool> thinking = opt_bool(body, "enable_thinking");
        if (body.contains("chat_template_kwargs") && body["chat_template_kwargs"].is_object())
            if (auto t = opt_bool(body["chat_template_kwargs"], "enable_thinking")) thinking = t;
        if (thinking) opts.enable_thinking = *thinking;
        prompt = qwen::chat_tokens(ctx.tok, ctx.model.chat, msgs, opts);
    }
    auto job = start_job(ctx, std::move(prompt), g);

    json head = response_head(ctx, "chatcmpl-", "chat.completion.chunk");
    if (g.stream) {
        auto chunk = [head](const json& delta, const json& finish) {
            json c = head;
            c["choices"] = json::array({{{"index", 0}, {"delta", delta}, {"logprobs", nullptr},
                                         {"finish_reason", finish}}});
            return c;
        };
        json first = chunk({{"role", "assistant"}, {"content", ""}}, nullptr);
        ChunkMaker make = [chunk](const std::string& text, const std::string& finish) {
            if (finish.empty()) return chunk({{"content", text}}, nullptr);
            return chunk(json::object(), finish);
        };
        stream_job(res, job, log, first, make, usage_chunk(head, g));
        return;
    }
    const qwen::GenerateResult& r = finish_job(*job);
    log->describe(r);
    json message = {{"role", "assistant"}, {"content", qwen::utf8_sanitize(r.text)}};
    json out = head;
    out["object"] = "chat.completion";
    out["choices"] = json::array(
        {{{"index", 0}, {"message", message}, {"logprobs", nullptr}, {"finish_reason", finish_reason(r)}}});
    out["usage"] = usage_json(r);
    res.set_json(out);
}

static void handle_completions(const ServerContext& ctx, const HttpRequest& req, HttpResponse& res, LogPtr log) {
    GenerationParams g;
    std::vector<int> prompt;
    {
        Gate::Pass pass = ctx.parse_gate.enter();
        json body = parse_body(req.body);
        auto p = body.find("prompt");
        if (p != body.end() && p->is_array() && p->size() == 1) p = p->begin();  // a list holding one prompt
        if (p == body.end() || !p->is_string())
            throw bad_request("'prompt' is required and must be a string", "missing_field");
        g = parse_generation(body, ctx, "max_completion_tokens");
        prompt = ctx.tok.encode(p->get<std::string>(), /*parse_special=*/true);
    }
    auto job = start_job(ctx, std::move(prompt), g);

    json head = response_head(ctx, "cmpl-", "text_completion");
    auto choice = [](const std::string& text, const json& finish) {
        return json::array({{{"index", 0}, {"text", text}, {"logprobs", nullptr}, {"finish_reason", finish}}});
    };
    if (g.stream) {
        ChunkMaker make = [head, choice](const std::string& text, const std::string& finish) {
            json c = head;
            c["choices"] = choice(text, finish.empty() ? json(nullptr) : json(finish));
            return c;
        };
        stream_job(res, job, log, json(), make, usage_chunk(head, g));
        return;
    }
    const qwen::GenerateResult& r = finish_job(*job);
    log->describe(r);
    json out = head;
    out["choices"] = choice(qwen::utf8_sanitize(r.text), finish_reason(r));
    out["usage"] = usage_json(r);
    res.set_json(out);
}

// The original endpoint: {"prompt", "history", "max_length", "temperature", "top_p"} in, {"response",
// "history", "status", "time"} out. History is [[user, assistant], ...] pairs or a list of OpenAI-style
// messages; the answer's history comes back in the same form with the new turn added, rebuilt from the text
// that was read (messages as {"role", "content"}), never the client's JSON echoed. max_length caps the
// generated tokens.
static void handle_seed(const ServerContext& ctx, const HttpRequest& req, HttpResponse& res, LogPtr log) {
    GenerationParams g;
    std::vector<int> prompt;
    std::string prompt_text;
    json history = json::array();
    bool pairs = true;
    {
        Gate::Pass pass = ctx.parse_gate.enter();
        json body = parse_body(req.body);
        if (!body.contains("prompt") || !body["prompt"].is_string())
            throw bad_request("'prompt' is required and must be a string", "missing_field");
        prompt_text = body["prompt"].get<std::string>();
        const json none = json::array();
        auto given = body.find("history");
        const json& list = given == body.end() || given->is_null() ? none : *given;
        if (!list.is_array()) throw bad_request("'history' must be a list");

        std::vector<qwen::Message> msgs;
        pairs = list.empty() || list[0].is_array();
        if (pairs) {
            for (size_t i = 0; i < list.size(); i++) {
                const json& h = list[i];
                if (!h.is_array() || h.size() != 2 || !h[0].is_string() || !h[1].is_string())
                    throw bad_request("history[" + std::to_string(i) + "] must be a [user, assistant] pair of strings");
                msgs.push_back({"user", h[0].get<std::string>()});
                msgs.push_back({"assistant", h[1].get<std::string>()});
                history.push_back({msgs[msgs.size() - 2].content, msgs.back().content});
            }
        } else {
            msgs = parse_messages(list, "history");
            for (size_t i = 0; i < msgs.size(); i++)
                history.push_back({{"role", list[i]["role"]}, {"content", msgs[i].content}});
        }
        msgs.push_back({"user", prompt_text});
        g = parse_generation(body, ctx, "max_length");
        prompt = qwen::chat_tokens(ctx.tok, ctx.model.chat, msgs);
    }
    g.stream = false;
    auto job = start_job(ctx, std::move(prompt), g);
    const qwen::GenerateResult& r = finish_job(*job);
    log->describe(r);

    std::string answer = qwen::utf8_sanitize(r.text);
    if (pairs) {
        history.push_back({prompt_text, answer});
    } else {
        history.push_back({{"role", "user"}, {"content", prompt_text}});
        history.push_back({{"role", "assistant"}, {"content", answer}});
    }
    json out = {{"response", answer}, {"history", history}, {"status", 200}, {"time", local_time_string()}};
    res.set_json(out);
}

// ============================================================================
// Routing, shutdown and main
// ============================================================================

static std::vector<Route> routes(const ServerContext& ctx) {
    auto page = [](const HttpRequest&, HttpResponse& res, LogPtr) {
        res.body.assign(reinterpret_cast<const char*>(chat_html), chat_html_len);
        res.content_type = "text/html; charset=utf-8";
    };
    auto health = [](const HttpRequest&, HttpResponse& res, LogPtr) { res.body = R"({"status":"ok"})"; };
    auto models = [&ctx](const HttpRequest&, HttpResponse& res, LogPtr) {
        json m = {{"id", ctx.model_id}, {"object", "model"}, {"created", 0}, {"owned_by", "qwen"},
                  {"context_length", ctx.context_size}};
        res.set_json({{"object", "list"}, {"data", json::array({m})}});
    };
    auto with_ctx = [&ctx](void (*f)(const ServerContext&, const HttpRequest&, HttpResponse&, LogPtr)) {
        return [&ctx, f](const HttpRequest& req, HttpResponse& res, LogPtr log) { f(ctx, req, res, log); };
    };
    return {{"GET", "/", page},
            {"POST", "/", with_ctx(handle_seed)},
            {"GET", "/health", health},
            {"GET", "/v1/models", models},
            {"POST", "/v1/chat/completions", with_ctx(handle_chat_completions)},
            {"POST", "/v1/completions", with_ctx(handle_completions)}};
}

// A listening TCP socket on host:port; throws with the reason (the host does not resolve, or the errno of
// the failed bind: "Address already in use"). SO_REUSEADDR allows a quick restart (old connections in
// TIME_WAIT); without SO_REUSEPORT a port in use is an error, not shared. `loopback` tells whether the
// address is 127.x.x.x or ::1.
static int listen_on(const std::string& host, int port, bool& loopback) {
    addrinfo hints{}, *found = nullptr;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE;
    int rc = getaddrinfo(host.c_str(), std::to_string(port).c_str(), &hints, &found);
    if (rc != 0) throw std::runtime_error(gai_strerror(rc));
    std::unique_ptr<addrinfo, void (*)(addrinfo*)> guard(found, freeaddrinfo);
    int err = 0;
    for (addrinfo* a = found; a; a = a->ai_next) {
        int fd = socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC, a->ai_protocol);
        if (fd < 0) {
            err = errno;
            continue;
        }
        int yes = 1;
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof yes);
        if (bind(fd, a->ai_addr, a->ai_addrlen) == 0 && listen(fd, SOMAXCONN) == 0) {
            if (a->ai_family == AF_INET)
                loopback = (ntohl(reinterpret_cast<sockaddr_in*>(a->ai_addr)->sin_addr.s_addr) >> 24) == 127;
            else
                loopback = IN6_IS_ADDR_LOOPBACK(&reinterpret_cast<sockaddr_in6*>(a->ai_addr)->sin6_addr);
            return fd;
        }
        err = errno;
        close(fd);
    }
    throw std::runtime_error(strerror(err));
}

// SIGINT and SIGTERM are blocked in every thread (main blocks them before any thread starts, and threads
// inherit the mask) and taken by this watcher with sigwait, so shutdown runs as ordinary code in main.
// Before the server is up, a signal ends the process as it would by default; a second signal during the
// shutdown ends it at once (status 1).
class ShutdownWatcher {
  public:
    ShutdownWatcher() {
        sigemptyset(&signals_);
        sigaddset(&signals_, SIGINT);
        sigaddset(&signals_, SIGTERM);
        pthread_sigmask(SIG_BLOCK, &signals_, nullptr);
        thread_ = std::thread([this] { watch(); });
    }
    ~ShutdownWatcher() { finish(); }

    // The server is up: from now on a signal shuts it down gracefully. Returns the signal's name once one came.
    const char* serve_until_signal() {
        std::unique_lock<std::mutex> lock(mu_);
        serving_ = true;
        cv_.wait(lock, [&] { return signal_ != 0; });
        return signal_ == SIGINT ? "SIGINT" : "SIGTERM";
    }

    // Shutdown is over (or the server never started): wake the watcher's sigwait and wait for it to end.
    void finish() {
        {
            std::lock_guard<std::mutex> lock(mu_);
            if (finished_) return;
            finished_ = true;
        }
        pthread_kill(thread_.native_handle(), SIGTERM);  // pending until its sigwait takes it
        thread_.join();
    }

  private:
    void watch() {
        for (;;) {
            int sig = 0;
            sigwait(&signals_, &sig);
            std::lock_guard<std::mutex> lock(mu_);
            if (finished_) return;
            if (!serving_) {  // still starting up
                signal(sig, SIG_DFL);
                pthread_sigmask(SIG_UNBLOCK, &signals_, nullptr);
                raise(sig);
            }
            if (signal_) {
                fprintf(stderr, "qwen-server: second signal, exiting now\n");
                _exit(1);
            }
            signal_ = sig;
            cv_.notify_all();
        }
    }

    sigset_t signals_;
    std::mutex mu_;
    std::condition_variable cv_;
    bool serving_ = false, finished_ = false;
    int signal_ = 0;
    std::thread thread_;
};

// A weights file rewritten in place under a server that reads it (the CPU engine maps it) faults with
// SIGBUS at the next read of a page it lost: say why in one line, then die of the signal as before.
static void on_sigbus(int) {
    static const char kMsg[] = "qwen-server: SIGBUS reading the weights file: it was truncated or rewritten in "
                               "place while in use (replace a served file with mv, never cp onto it)\n";
    ssize_t ignored = write(STDERR_FILENO, kMsg, sizeof kMsg - 1);
    (void)ignored;
    signal(SIGBUS, SIG_DFL);
    raise(SIGBUS);
}

static std::string model_id_from_path(const std::string& path) {
    std::string name = path.substr(path.find_last_of('/') + 1);
    for (std::string ext : {".bin", ".gguf"})
        if (name.size() > ext.size() && name.compare(name.size() - ext.size(), ext.size(), ext) == 0)
            name.resize(name.size() - ext.size());
    return name;
}

static int serve(const ServerArgs& args, ShutdownWatcher& watcher) {
    qwen::Model model = qwen::load_model(args.model_path);
    qwen::Tokenizer tok(model.vocab);
    qwen::SamplingParams sampling = args.sampling.resolve(model.chat);
    int context = cli::context_for(model, args.context);
    std::unique_ptr<qwen::Engine> engine = cli::open_engine(model, context, args.cpu, args.threads, false, "qwen-server");
    fprintf(stderr, "qwen-server: %s engine, context %d tokens\n", engine->name(), context);
    if (std::string(engine->name()) == "cpu") {
        signal(SIGBUS, on_sigbus);
    } else {  // the weights are on the GPU: let the file go, so that replacing it cannot harm this server
        model.file = qwen::MappedFile();
        model.weights = qwen::Weights();
    }
    EngineWorker worker(*engine, tok, size_t(args.max_queue));
    Gate parse_gate(kParseSlots);
    ServerContext ctx{model, tok, worker, parse_gate, model_id_from_path(args.model_path), context, sampling,
                      args.max_tokens, args.max_queue};

    bool loopback = false;
    int fd = -1;
    try {
        fd = listen_on(args.host, args.port, loopback);
    } catch (const std::runtime_error& e) {
        fprintf(stderr, "qwen-server: error: cannot listen on %s:%d: %s\n", args.host.c_str(), args.port, e.what());
        return 1;
    }
    HttpLimits limits;
    limits.max_body = args.max_body;
    limits.max_header_bytes = args.max_header_bytes;
    limits.timeout = args.timeout;
    limits.max_connections = args.max_connections;
    limits.check_host = loopback || !args.allow_hosts.empty();
    limits.allow_hosts = args.allow_hosts;
    HttpServer http(limits, routes(ctx));
    http.start(fd);
    fprintf(stderr, "qwen-server: %s (context %d tokens) on http://%s:%d/\n", ctx.model_id.c_str(), context,
            args.host.c_str(), args.port);

    const char* sig = watcher.serve_until_signal();
    // Stop accepting connections, give the running and queued generations up to 5 s (then cancel them: a
    // running one ends "length", a queued one gets 503), give their answers 2 s to be sent, then close every
    // connection. Only a prefill in progress can hold this up, and not past the last 2 s.
    fprintf(stderr, "qwen-server: %s, shutting down\n", sig);
    http.stop_accepting();
    worker.drain(args.shutdown_grace);
    if (!http.wait_idle(2.0)) {
        fprintf(stderr, "qwen-server: answers still unfinished 2 s after the grace period; exiting\n");
        fflush(stderr);
        _exit(0);
    }
    http.stop();
    watcher.finish();
    fprintf(stderr, "qwen-server: stopped\n");
    return 0;
}

int main(int argc, char** argv) {
    std::optional<ServerArgs> args;
    try {
        args = parse_args(argc, argv);
    } catch (const UsageError& e) {
        fprintf(stderr, "qwen-server: error: %s (see qwen-server -h)\n", e.what());
        return 2;
    }
    if (!args) return 0;  // -h
    signal(SIGPIPE, SIG_IGN);  // a client that hangs up must not end the server
    ShutdownWatcher watcher;   // before any other thread starts
    try {
        return serve(*args, watcher);
    } catch (const UsageError& e) {
        fprintf(stderr, "qwen-server: error: %s (see qwen-server -h)\n", e.what());
        return 2;
    } catch (const std::exception& e) {
        fprintf(stderr, "qwen-server: error: %s\n", e.what());
        return 1;
    }
}
