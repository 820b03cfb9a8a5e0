// qwen-server: the engine behind an HTTP API and a browser chat page.
//
//   GET  /                      the chat page (web/chat.html, embedded at build time)
//   POST /                      {"prompt", "history"} -> {"response", "history", "status", "time"}
//   POST /v1/chat/completions   OpenAI chat completions, whole or streamed as server-sent events
//   POST /v1/completions        OpenAI text completions: the raw prompt, no chat template
//   GET  /v1/models             the one model served
//   GET  /health                {"status": "ok"}
//
// The HTTP threads parse and check a request, turn it into prompt tokens and hand a Job to the one engine
// thread, which owns the engine and runs the jobs one at a time; the generated text flows back to the HTTP
// thread through the job. All the JSON and HTTP code lives in this file: the headers know nothing of it.
//
// Usage: ./qwen-server -m weights.bin [--port 6006] ... (./qwen-server -h lists the options). Exit status:
// 0 after SIGINT/SIGTERM, 1 when the model does not load or the port is taken, 2 for a command-line mistake.
#include "cli.hpp"

#include <httplib.h>
#include <nlohmann/json.hpp>

#include <csignal>
#include <ctime>
#include <deque>
#include <optional>
#include <pthread.h>
#include <random>

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
    // Sampling defaults for requests that do not say; unset ones come from the model's generation config.
    std::optional<float> temperature, top_p, min_p, repetition_penalty, presence_penalty;
    std::optional<int> top_k;
};

static const char* kUsage =
    "usage: qwen-server -m weights.bin [options]\n"
    "  -m, --model PATH          weights file written by tools/export.py (required)\n"
    "  --host ADDR               address to listen on (default 127.0.0.1)\n"
    "  --port N                  port (default 6006)\n"
    "  -c, --ctx-size N          context size in tokens (default: min(model max, 4096))\n"
    "  --cpu                     use the CPU engine even when a GPU is present\n"
    "  -t, --threads N           CPU engine threads (default: all cores)\n"
    "  -n, --n-predict N         default limit on generated tokens per request (default 512)\n"
    "  --temp X                  default temperature (0 = greedy; default: the model's)\n"
    "  --top-p X                 default top-p\n"
    "  --top-k N                 default top-k (0 = off)\n"
    "  --min-p X                 default min-p\n"
    "  --repeat-penalty X        default repetition penalty (1 = off)\n"
    "  --presence-penalty X      default presence penalty (0 = off)\n"
    "  --max-body BYTES          largest request body accepted (default 1048576)\n"
    "  --max-queue N             requests that may wait for the engine; more get 503 (default 32)\n"
    "  -h, --help                show this help\n";

// A mistake on the command line: one line on stderr with a pointer to -h, and exit status 2.
struct UsageError : std::runtime_error {
    using std::runtime_error::runtime_error;
};

static long long parse_int(const std::string& flag, const std::string& s, long long lo, long long hi) {
    char* end = nullptr;
    errno = 0;
    long long v = strtoll(s.c_str(), &end, 10);
    if (s.empty() || *end != '\0' || errno != 0 || v < lo || v > hi)
        throw UsageError(flag + " expects an integer in [" + std::to_string(lo) + ", " + std::to_string(hi) +
                         "], got '" + s + "'");
    return v;
}

static float parse_float(const std::string& flag, const std::string& s) {
    char* end = nullptr;
    errno = 0;
    float v = strtof(s.c_str(), &end);
    if (s.empty() || *end != '\0' || std::isnan(v)) throw UsageError(flag + " expects a number, got '" + s + "'");
    if (std::isinf(v)) throw UsageError(flag + " is out of range, got '" + s + "'");
    return v;
}

// Returns nullopt for -h (usage printed); throws UsageError for anything it does not understand.
static std::optional<ServerArgs> parse_args(int argc, char** argv) {
    ServerArgs a;
    for (int i = 1; i < argc; i++) {
        std::string flag = argv[i];
        if (flag == "-h" || flag == "--help") {
            fputs(kUsage, stdout);
            return std::nullopt;
        }
        if (flag == "--cpu") {
            a.cpu = true;
            continue;
        }
        auto value = [&]() -> std::string {
            if (i + 1 >= argc) throw UsageError(flag + " needs a value");
            return argv[++i];
        };
        if (flag == "-m" || flag == "--model") a.model_path = value();
        else if (flag == "--host") a.host = value();
        else if (flag == "--port") a.port = int(parse_int(flag, value(), 1, 65535));
        else if (flag == "-c" || flag == "--ctx-size") a.context = int(parse_int(flag, value(), 1, 1 << 20));
        else if (flag == "-t" || flag == "--threads") a.threads = int(parse_int(flag, value(), 0, 1024));
        else if (flag == "-n" || flag == "--n-predict") a.max_tokens = int(parse_int(flag, value(), 1, 1 << 20));
        else if (flag == "--max-body") a.max_body = size_t(parse_int(flag, value(), 1, 1ll << 32));
        else if (flag == "--max-queue") a.max_queue = int(parse_int(flag, value(), 0, 1024));
        else if (flag == "--temp") a.temperature = parse_float(flag, value());
        else if (flag == "--top-p") a.top_p = parse_float(flag, value());
        else if (flag == "--top-k") a.top_k = int(parse_int(flag, value(), 0, 1 << 30));
        else if (flag == "--min-p") a.min_p = parse_float(flag, value());
        else if (flag == "--repeat-penalty") a.repetition_penalty = parse_float(flag, value());
        else if (flag == "--presence-penalty") a.presence_penalty = parse_float(flag, value());
        else if (flag[0] == '-') throw UsageError("unknown option " + flag);
        else throw UsageError("unexpected argument '" + flag + "'");
    }
    if (a.model_path.empty()) throw UsageError("-m weights.bin is required");
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
// Each waiting job holds an HTTP thread, so the queue is bounded: the HTTP pool keeps threads for /health
// and for quick answers (a 503) when the engine is far behind.
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

    // Queues a job, unless the server is shutting down or max_waiting jobs are waiting already.
    Submit submit(std::shared_ptr<Job> job) {
        std::lock_guard<std::mutex> lock(mu_);
        if (closed_) return Submit::SHUTTING_DOWN;
        if (queue_.size() >= max_waiting_) return Submit::BUSY;
        queue_.push_back(std::move(job));
        cv_.notify_all();
        return Submit::QUEUED;
    }

    // Shutdown, in steps: refuse new jobs, give the current ones up to `grace` seconds, cancel the rest.
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

// Optional typed fields: absent or null -> nullopt; the wrong type -> 400 naming the field.
static std::optional<double> opt_number(const json& body, const char* key) {
    auto it = body.find(key);
    if (it == body.end() || it->is_null()) return std::nullopt;
    if (!it->is_number()) throw bad_request(std::string("'") + key + "' must be a number", "invalid_type");
    return it->get<double>();
}

static std::optional<long long> opt_integer(const json& body, const char* key) {
    std::optional<double> v = opt_number(body, key);
    if (!v) return std::nullopt;
    if (*v != std::floor(*v) || std::fabs(*v) > 9e15)
        throw bad_request(std::string("'") + key + "' must be an integer", "invalid_type");
    return (long long)*v;
}

// A sampling value, which the engine holds as a float: a number beyond float range is refused as given
// (1e308 would otherwise become inf and be reported as such).
static std::optional<float> opt_float(const json& body, const char* key) {
    std::optional<double> v = opt_number(body, key);
    if (v && std::fabs(*v) > std::numeric_limits<float>::max())
        throw bad_request(std::string(key) + " is out of range, got " + body[key].dump(), "invalid_value");
    return v ? std::optional<float>(float(*v)) : std::nullopt;
}

static std::optional<bool> opt_bool(const json& body, const char* key) {
    auto it = body.find(key);
    if (it == body.end() || it->is_null()) return std::nullopt;
    if (!it->is_boolean()) throw bad_request(std::string("'") + key + "' must be true or false", "invalid_type");
    return it->get<bool>();
}

static json parse_body(const httplib::Request& req) {
    if (!qwen::utf8_valid(req.body)) throw bad_request("the request body is not valid UTF-8", "invalid_utf8");
    json body = json::parse(req.body, nullptr, /*allow_exceptions=*/false);
    if (body.is_discarded()) throw bad_request("the request body is not valid JSON", "invalid_json");
    if (!body.is_object()) throw bad_request("the request body must be a JSON object", "invalid_json");
    return body;
}

// Message content is a string, or (newer OpenAI clients) a list of parts of which the text ones count.
static std::string content_text(const json& content, const std::string& where) {
    if (content.is_string()) return content.get<std::string>();
    if (content.is_null()) return "";
    if (content.is_array()) {
        std::string text;
        for (const json& part : content) {
            if (!part.is_object() || part.value("type", "") != "text" || !part.contains("text") ||
                !part["text"].is_string())
                throw bad_request(where + ": only text content parts are supported");
            text += part["text"].get<std::string>();
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
        msgs.push_back({role, content_text(m.value("content", json()), where)});
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
// The server: shared state and the handlers
// ============================================================================

// What the handlers share. The HTTP threads tokenize prompts themselves, concurrently: the tokenizer is
// read-only after construction. Only the engine thread touches the engine.
struct ServerContext {
    const qwen::Model& model;
    const qwen::Tokenizer& tok;
    EngineWorker& worker;
    std::string model_id;              // the weights file name without ".bin"
    int context_size = 0;              // tokens the KV cache holds
    qwen::SamplingParams sampling;     // defaults for requests that do not say
    int max_tokens = 512;
    int max_queue = 32;                // requests that may wait for the engine (--max-queue)
};

// The token limit is the field max_key if present (max_completion_tokens; POST / calls it max_length), else
// max_tokens. Error messages name the field the client sent.
static GenerationParams parse_generation(const json& body, const ServerContext& ctx, const char* max_key) {
    GenerationParams g;
    g.sampling = ctx.sampling;
    if (auto v = opt_float(body, "temperature")) g.sampling.temperature = *v;
    if (auto v = opt_float(body, "top_p")) g.sampling.top_p = *v;
    if (auto v = opt_integer(body, "top_k")) {
        if (*v < -1) throw bad_request("top_k must be >= 0 (0 or -1 = off), got " + std::to_string(*v),
                                       "invalid_sampling");
        g.sampling.top_k = int(std::min<long long>(std::max<long long>(*v, 0), 1 << 30));  // vLLM's off is -1
    }
    if (auto v = opt_float(body, "min_p")) g.sampling.min_p = *v;
    if (auto v = opt_float(body, "presence_penalty")) g.sampling.presence_penalty = *v;
    if (auto v = opt_float(body, "repetition_penalty")) g.sampling.repetition_penalty = *v;
    try {
        qwen::validate(g.sampling);
    } catch (const qwen::Error& e) {
        throw bad_request(e.what(), "invalid_sampling");
    }
    if (auto v = opt_integer(body, "seed")) g.sampling.seed = uint64_t(*v);
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
        json list = stop->is_string() ? json::array({*stop}) : *stop;
        if (!list.is_array() || list.size() > 16)
            throw bad_request("'stop' must be a string or a list of at most 16 strings", "invalid_type");
        for (const json& s : list) {
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
        case EngineWorker::Submit::SHUTTING_DOWN: throw ApiError{503, "the server is shutting down", "shutting_down"};
        case EngineWorker::Submit::BUSY: break;
    }
    throw ApiError{503, "the server is busy (the queue for the model is full: --max-queue " +
                            std::to_string(ctx.max_queue) + "); try again later",
                   "server_busy"};
}

// Waits for the whole answer; an engine failure becomes a 500.
static const qwen::GenerateResult& finish_job(Job& job) {
    job.wait();
    if (!job.error.empty()) throw ApiError{500, "generation failed: " + job.error, "engine_error"};
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

static std::string local_time_string() {
    time_t t = time(nullptr);
    struct tm tm;
    localtime_r(&t, &tm);
    char buf[32];
    strftime(buf, sizeof buf, "%Y-%m-%d %H:%M:%S", &tm);
    return buf;
}

// One line on stderr per HTTP request, printed when the last holder lets go of it: at the end of the
// handler, or for a stream when the stream has ended (the stream's content provider holds it).
struct RequestLog {
    std::string method, path, detail;
    int status = 0;
    double start = qwen::now_seconds();

    RequestLog(std::string m, std::string p) : method(std::move(m)), path(std::move(p)) {}
    ~RequestLog() {
        fprintf(stderr, "%s %s %s %d %.3fs%s%s\n", local_time_string().c_str(), method.c_str(), path.c_str(),
                status, qwen::now_seconds() - start, detail.empty() ? "" : " ", detail.c_str());
    }
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

// ---- streaming -------------------------------------------------------------------------------------
// A stream is one call of the chunked content provider that writes every event of the answer: the job's
// text as it arrives, then the end. Writing it all in one call keeps httplib from cutting the stream at
// shutdown (it checks between calls), and a failed write means the client has gone: the job is cancelled
// and the engine moves on to the next one.

// Builds the JSON of one event from (text piece, finish reason or "" while running).
using ChunkMaker = std::function<json(const std::string& text, const std::string& finish)>;

static void stream_job(httplib::Response& res, std::shared_ptr<Job> job, LogPtr log, json first_event,
                       ChunkMaker make_chunk, std::optional<json> usage_chunk) {
    auto provider = [job, log, first_event, make_chunk, usage_chunk](size_t, httplib::DataSink& sink) {
        auto send = [&](const json& event) {
            std::string s = "data: " + dump(event) + "\n\n";
            return sink.write(s.data(), s.size());
        };
        auto gone = [&] {
            job->cancel = true;
            log->detail = "client disconnected";
            return false;  // httplib closes the connection
        };
        if (!first_event.is_null() && !send(first_event)) return gone();
        std::string text;
        while (job->next(text))
            if (!send(make_chunk(qwen::utf8_sanitize(text), ""))) return gone();
        log->describe(job->result);
        if (!job->error.empty()) {
            // Headers are gone already: report the failure as an error event, as OpenAI does mid-stream.
            log->status = 500;
            send(error_body({500, "generation failed: " + job->error, "engine_error"}));
        } else {
            if (!send(make_chunk("", finish_reason(job->result)))) return gone();
            if (usage_chunk) {
                json u = *usage_chunk;
                u["usage"] = usage_json(job->result);
                if (!send(u)) return gone();
            }
        }
        static const char kDone[] = "data: [DONE]\n\n";
        if (!sink.write(kDone, sizeof kDone - 1)) return gone();
        sink.done();
        return true;
    };
    // If the response ends without the provider finishing (client gone before the first write), stop the job.
    auto releaser = [job](bool success) {
        if (!success) job->cancel = true;
    };
    res.set_header("Cache-Control", "no-cache");
    res.set_chunked_content_provider("text/event-stream", provider, releaser);
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

static void handle_chat_completions(const ServerContext& ctx, const httplib::Request& req, httplib::Response& res,
                                    LogPtr log) {
    json body = parse_body(req);
    if (!body.contains("messages")) throw bad_request("'messages' is required", "missing_field");
    std::vector<qwen::Message> msgs = parse_messages(body["messages"], "messages");
    if (msgs.empty()) throw bad_request("'messages' must not be empty", "invalid_value");
    GenerationParams g = parse_generation(body, ctx, "max_completion_tokens");

    qwen::ChatOptions opts;
    // Qwen3's thinking switch, as vLLM takes it (chat_template_kwargs) or as a plain field.
    std::optional<bool> thinking = opt_bool(body, "enable_thinking");
    if (body.contains("chat_template_kwargs") && body["chat_template_kwargs"].is_object())
        if (auto t = opt_bool(body["chat_template_kwargs"], "enable_thinking")) thinking = t;
    if (thinking) opts.enable_thinking = *thinking;
    std::vector<int> prompt = qwen::chat_tokens(ctx.tok, ctx.model.chat, msgs, opts);
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
    res.set_content(dump(out), "application/json");
}

static void handle_completions(const ServerContext& ctx, const httplib::Request& req, httplib::Response& res,
                               LogPtr log) {
    json body = parse_body(req);
    json p = body.value("prompt", json());
    if (p.is_array() && p.size() == 1) p = p[0];  // a list holding one prompt
    if (!p.is_string()) throw bad_request("'prompt' is required and must be a string", "missing_field");
    GenerationParams g = parse_generation(body, ctx, "max_completion_tokens");
    std::vector<int> prompt = ctx.tok.encode(p.get<std::string>(), /*parse_special=*/true);
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
    res.set_content(dump(out), "application/json");
}

// The original endpoint: {"prompt", "history", "max_length", "temperature", "top_p"} in, {"response",
// "history", "status", "time"} out. History is [[user, assistant], ...] pairs or a list of OpenAI-style
// messages; the answer's history comes back in the same form with the new turn added. max_length caps the
// generated tokens.
static void handle_seed(const ServerContext& ctx, const httplib::Request& req, httplib::Response& res, LogPtr log) {
    json body = parse_body(req);
    if (!body.contains("prompt") || !body["prompt"].is_string())
        throw bad_request("'prompt' is required and must be a string", "missing_field");
    std::string prompt_text = body["prompt"].get<std::string>();
    json history = body.value("history", json::array());
    if (history.is_null()) history = json::array();
    if (!history.is_array()) throw bad_request("'history' must be a list");

    std::vector<qwen::Message> msgs;
    bool pairs = history.empty() || history[0].is_array();
    if (pairs) {
        for (size_t i = 0; i < history.size(); i++) {
            const json& h = history[i];
            if (!h.is_array() || h.size() != 2 || !h[0].is_string() || !h[1].is_string())
                throw bad_request("history[" + std::to_string(i) + "] must be a [user, assistant] pair of strings");
            msgs.push_back({"user", h[0].get<std::string>()});
            msgs.push_back({"assistant", h[1].get<std::string>()});
        }
    } else {
        msgs = parse_messages(history, "history");
    }
    msgs.push_back({"user", prompt_text});

    GenerationParams g = parse_generation(body, ctx, "max_length");
    g.stream = false;
    auto job = start_job(ctx, qwen::chat_tokens(ctx.tok, ctx.model.chat, msgs), g);
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
    res.set_content(dump(out), "application/json");
}

// ============================================================================
// Routing, shutdown and main
// ============================================================================

using Handler = std::function<void(const httplib::Request&, httplib::Response&, LogPtr)>;

// Wraps a handler: one log line per request, and every failure answered as JSON in OpenAI's error shape.
static httplib::Server::Handler api(Handler h) {
    return [h](const httplib::Request& req, httplib::Response& res) {
        auto log = std::make_shared<RequestLog>(req.method, req.path);
        ApiError err{0, "", ""};
        try {
            h(req, res, log);
        } catch (const ApiError& e) {
            err = e;
        } catch (const qwen::Error& e) {  // e.g. the tokenizer refusing its input
            err = bad_request(e.what());
        } catch (const std::exception& e) {
            err = {500, std::string("internal error: ") + e.what(), "internal_error"};
        }
        if (err.status) {
            res.status = err.status;
            res.set_content(dump(error_body(err)), "application/json");
            log->detail = err.message;
        }
        log->status = res.status > 0 ? res.status : 200;  // httplib sets 200 after the handler
    };
}

// httplib refuses a body over --max-body, and also a form-encoded one (Content-Type
// application/x-www-form-urlencoded, what curl -d sends unless told otherwise) over 8 KB, a limit compiled
// into the library. The second is a surprise for a JSON client, so the message says what to do.
static std::string body_too_large_message(const httplib::Request& req, size_t max_body) {
    bool form = req.get_header_value("Content-Type").rfind("application/x-www-form-urlencoded", 0) == 0;
    if (form && req.get_header_value<uint64_t>("Content-Length") <= max_body)
        return "the request body was sent as a form (Content-Type: application/x-www-form-urlencoded), which is "
               "limited to " + std::to_string(CPPHTTPLIB_FORM_URL_ENCODED_PAYLOAD_MAX_LENGTH) +
               " bytes; send it with the header 'Content-Type: application/json'";
    return "the request body is too large: the limit is " + std::to_string(max_body) + " bytes (--max-body)";
}

static void install_routes(httplib::Server& svr, const ServerContext& ctx, size_t max_body) {
    auto page = [](const httplib::Request&, httplib::Response& res, LogPtr) {
        res.set_content(reinterpret_cast<const char*>(chat_html), chat_html_len, "text/html; charset=utf-8");
    };
    auto health = [](const httplib::Request&, httplib::Response& res, LogPtr) {
        res.set_content(R"({"status":"ok"})", "application/json");
    };
    auto models = [&ctx](const httplib::Request&, httplib::Response& res, LogPtr) {
        json m = {{"id", ctx.model_id}, {"object", "model"}, {"created", 0}, {"owned_by", "qwen"},
                  {"context_length", ctx.context_size}};
        res.set_content(dump({{"object", "list"}, {"data", json::array({m})}}), "application/json");
    };
    auto with_ctx = [&ctx](void (*f)(const ServerContext&, const httplib::Request&, httplib::Response&, LogPtr)) {
        return [&ctx, f](const httplib::Request& req, httplib::Response& res, LogPtr log) { f(ctx, req, res, log); };
    };
    auto wrong_method = [](const char* allowed) {
        return [allowed](const httplib::Request& req, httplib::Response& res, LogPtr) {
            res.set_header("Allow", allowed);
            throw ApiError{405, req.method + " is not allowed here; use " + allowed, "method_not_allowed"};
        };
    };

    svr.Get("/", api(page));
    svr.Post("/", api(with_ctx(handle_seed)));
    svr.Get("/health", api(health));
    svr.Get("/v1/models", api(models));
    svr.Post("/v1/chat/completions", api(with_ctx(handle_chat_completions)));
    svr.Post("/v1/completions", api(with_ctx(handle_completions)));
    for (const char* path : {"/v1/chat/completions", "/v1/completions"}) svr.Get(path, api(wrong_method("POST")));
    for (const char* path : {"/health", "/v1/models"}) svr.Post(path, api(wrong_method("GET")));

    // Errors httplib answers by itself (unknown path, body too large, bad request line) get a JSON body too.
    httplib::Server::HandlerWithResponse on_error = [max_body](const httplib::Request& req,
                                                               httplib::Response& res) {
        if (!res.body.empty()) return httplib::Server::HandlerResponse::Unhandled;  // ours, already JSON
        std::string msg = res.status == 404 ? "no such endpoint: " + req.method + " " + req.path
                        : res.status == 413 ? body_too_large_message(req, max_body)
                                            : "bad request";
        std::string code = res.status == 404 ? "not_found" : res.status == 413 ? "body_too_large" : "bad_request";
        res.set_content(dump(error_body({res.status, msg, code})), "application/json");
        RequestLog log(req.method, req.path);
        log.status = res.status;
        log.detail = msg;
        return httplib::Server::HandlerResponse::Handled;
    };
    svr.set_error_handler(on_error);
}

// SIGINT and SIGTERM are blocked in every thread (main blocks them before any thread starts, and threads
// inherit the mask) and taken by this watcher with sigwait, so shutdown runs as ordinary code: stop
// accepting connections, give the running requests up to 5 s, cancel the rest. Before the server is up, a
// signal ends the process as it would by default.
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

    // From now on a signal shuts this server down gracefully.
    void attach(httplib::Server* server, EngineWorker* worker) {
        std::lock_guard<std::mutex> lock(mu_);
        server_ = server;
        worker_ = worker;
    }

    // The server has stopped (or never started): wake the watcher if no signal came, and wait for it.
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
        int sig = 0;
        sigwait(&signals_, &sig);
        std::lock_guard<std::mutex> lock(mu_);
        if (finished_) return;
        if (!server_) {  // still starting up
            signal(sig, SIG_DFL);
            pthread_sigmask(SIG_UNBLOCK, &signals_, nullptr);
            raise(sig);
        }
        fprintf(stderr, "qwen-server: %s, shutting down\n", sig == SIGINT ? "SIGINT" : "SIGTERM");
        // listen() may be a moment from starting, and stop() does nothing until it has.
        for (int i = 0; i < 1000 && !server_->is_running(); i++)
            std::this_thread::sleep_for(std::chrono::milliseconds(1));
        server_->stop();
        worker_->drain(/*grace=*/5.0);
    }

    sigset_t signals_;
    std::mutex mu_;
    httplib::Server* server_ = nullptr;
    EngineWorker* worker_ = nullptr;
    bool finished_ = false;
    std::thread thread_;
};

static std::string model_id_from_path(const std::string& path) {
    std::string name = path.substr(path.find_last_of('/') + 1);
    if (name.size() > 4 && name.compare(name.size() - 4, 4, ".bin") == 0) name.resize(name.size() - 4);
    return name;
}

// The sampling defaults: the model's generation config, then the command line's overrides.
static qwen::SamplingParams sampling_defaults(const qwen::Model& model, const ServerArgs& args) {
    qwen::SamplingParams s = qwen::default_sampling(model.chat);
    if (args.temperature) s.temperature = *args.temperature;
    if (args.top_p) s.top_p = *args.top_p;
    if (args.top_k) s.top_k = *args.top_k;
    if (args.min_p) s.min_p = *args.min_p;
    if (args.repetition_penalty) s.repetition_penalty = *args.repetition_penalty;
    if (args.presence_penalty) s.presence_penalty = *args.presence_penalty;
    try {
        qwen::validate(s);
    } catch (const qwen::Error& e) {
        throw UsageError(e.what());
    }
    return s;
}

// Why binding failed: the host name does not resolve, or the errno of the failed bind ("Address already in use").
static std::string bind_error(const std::string& host, int bind_errno) {
    addrinfo hints{}, *found = nullptr;
    hints.ai_socktype = SOCK_STREAM;
    int rc = getaddrinfo(host.c_str(), nullptr, &hints, &found);
    if (rc != 0) return gai_strerror(rc);
    freeaddrinfo(found);
    return bind_errno ? strerror(bind_errno) : "unknown error";
}

static int serve(const ServerArgs& args, ShutdownWatcher& watcher) {
    qwen::Model model = qwen::load_model(args.model_path);
    qwen::Tokenizer tok(model.vocab);
    qwen::SamplingParams sampling = sampling_defaults(model, args);
    if (args.context > model.config.max_seq_len)
        throw UsageError("-c " + std::to_string(args.context) + " is larger than the model's max_seq_len of " +
                         std::to_string(model.config.max_seq_len));
    int context = args.context > 0 ? args.context : std::min(model.config.max_seq_len, 4096);
    std::unique_ptr<qwen::Engine> engine = cli::open_engine(model, context, args.cpu, args.threads, false, "qwen-server");
    fprintf(stderr, "qwen-server: %s engine, context %d tokens\n", engine->name(), context);
    EngineWorker worker(*engine, tok, size_t(args.max_queue));
    ServerContext ctx{model, tok, worker, model_id_from_path(args.model_path), context, sampling, args.max_tokens,
                      args.max_queue};

    httplib::Server svr;
    // Every request waiting for the engine holds a thread (at most max_queue of them, plus the running one);
    // the 32 others serve /health, the page and the quick answers, including the 503 for a full queue.
    const int max_queue = args.max_queue;
    svr.new_task_queue = [max_queue] { return new httplib::ThreadPool(size_t(max_queue) + 32); };
    svr.set_payload_max_length(args.max_body);
    // httplib's default sets SO_REUSEPORT, which lets a second server bind a port that is in use and share
    // its connections. SO_REUSEADDR alone allows a quick restart (old connections in TIME_WAIT) but makes a
    // busy port an error.
    svr.set_socket_options([](socket_t sock) {
        int yes = 1;
        setsockopt(sock, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof yes);
    });
    install_routes(svr, ctx, args.max_body);
    errno = 0;
    if (!svr.bind_to_port(args.host.c_str(), args.port)) {
        fprintf(stderr, "qwen-server: error: cannot listen on %s:%d: %s\n", args.host.c_str(), args.port,
                bind_error(args.host, errno).c_str());
        return 1;
    }
    fprintf(stderr, "qwen-server: %s (context %d tokens) on http://%s:%d/\n", ctx.model_id.c_str(), context,
            args.host.c_str(), args.port);
    watcher.attach(&svr, &worker);
    svr.listen_after_bind();  // returns after stop(), once every connection's thread has ended
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
