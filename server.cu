// qwen-server: the engine behind an HTTP API and a browser chat page.
//
//   GET  /                      the chat page (web/chat.html, embedded at build time)
//   POST /                      {"prompt", "history"} -> {"response", "history", "status", "time"}
//   POST /v1/chat/completions   OpenAI chat completions, whole or streamed as server-sent events: tools and tool
//                               calls, Qwen3 reasoning apart from the answer, structured output, logprobs, n
//   POST /v1/completions        OpenAI text completions: the raw prompt, no chat template
//   GET  /v1/models             the one model served
//   GET  /health                {"status": "ok", "running", "waiting" (sequences), "kv_blocks": {"total", "free",
//                               "cached"}}
//   GET  /metrics               Prometheus text: requests, tokens, sequences, KV blocks, latency histograms
//   POST /tokenize, /detokenize, /apply-template   llama-server's: text <-> ids, messages -> prompt text
//
// The HTTP threads (libmicrohttpd, one per connection) parse and check a request, turn it into prompt tokens
// (and a grammar, bound to the vocabulary once and cached) and hand a Job to the one engine thread, which owns
// the engine and decodes up to --parallel sequences together (qwen::Scheduler: continuous batching, a paged KV
// pool with prefix caching); the generated text flows back to the HTTP thread through the job, where it is split
// into reasoning, answer and tool calls. All the JSON and HTTP code lives in this file: the
// headers know nothing of it.
//
// Every request is bounded, whatever the client sends: the request line and headers by --max-header-bytes,
// the body by --max-body (any transfer encoding; compressed bodies are refused), JSON nesting to 64 levels,
// the time a request may take to arrive and a connection may stay idle by --timeout, open connections by
// --max-connections, waiting sequences by --max-queue, and requests parsed and tokenized at once by
// kParseSlots. Shutdown takes at most 5 s for the running generations plus 2 s for their answers.
//
// Usage: ./qwen-server -m weights.bin [--port 6006] ... (./qwen-server -h lists the options). Exit status:
// 0 after SIGINT/SIGTERM, 1 when the model does not load or the port is taken, 2 for a command-line mistake.
#include "cli.hpp"

#include <microhttpd.h>
#include <nlohmann/json.hpp>

#include <arpa/inet.h>
#include <climits>
#include <list>
#include <csignal>
#include <ctime>
#include <deque>
#include <netdb.h>
#include <optional>
#include <poll.h>
#include <pthread.h>
#include <random>
#include <set>
#include <sys/socket.h>

#include "chat_html.h"  // build/chat_html.h: unsigned char chat_html[]; unsigned int chat_html_len;

using json = nlohmann::ordered_json;  // keys in the order sent: tools are rendered as given

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
    int parallel = 0;                // sequences decoded together; 0 = 16 with a GPU engine, 4 on the CPU
    double kv_gib = 0;               // the KV pool in GiB; 0 = room for `parallel` whole contexts
    int max_queue = 32;              // sequences that may wait beyond the running ones; more are answered 503
    size_t max_header_bytes = 32768; // request line + headers of one request
    int timeout = 30;                // seconds for a request to arrive whole; idle connections closed after it
    int max_connections = 128;       // open connections, each with its own thread
    std::vector<std::string> allow_hosts;  // Host header names accepted besides the loopback ones ("*": any)
    double shutdown_grace = 5;       // seconds generations get to finish after SIGTERM
    std::string api_key;             // required as "Authorization: Bearer KEY" when set (--api-key, QWEN_API_KEY)
    std::vector<std::string> cors_origins;  // origins answered with CORS headers ("*": any); none: no CORS
    std::string alias;               // the model id; "" = the file name without .bin / .gguf
    bool split_reasoning = true;     // Qwen3: <think>...</think> -> reasoning_content (--reasoning-format none: inline)
    cli::SamplingFlags sampling;     // defaults for requests that do not say; unset: the model's generation config
    cli::LlamaFlags llama;           // -ngl, -fa: accepted, no effect
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
    "  -np, --parallel N        sequences decoded together (continuous batching; a request with n choices\n"
    "                           is n sequences; default 16 with a GPU, 4 on the CPU)\n"
    "  --kv-memory GB           KV-cache pool in GiB, shared by all sequences, at least one context (default:\n"
    "                           room for --parallel whole contexts); full, it preempts the latest sequence\n"
    "  --alias NAME             the model's id in answers and /v1/models (default: the file name without .bin/.gguf)\n"
    "  --api-key KEY            require 'Authorization: Bearer KEY' on every endpoint but /health and the page\n"
    "                           (default: the QWEN_API_KEY environment variable; unset: no key)\n"
    "  --cors-origin ORIGIN     answer browsers from ORIGIN (e.g. http://localhost:3000; '*' = any) with CORS\n"
    "                           headers and preflight OPTIONS (repeatable; default: no CORS headers)\n"
    "  --reasoning-format FMT   Qwen3's <think> part: 'auto' puts it in reasoning_content (default), 'none'\n"
    "                           leaves it inline in content\n") +
    cli::LlamaFlags::HELP +
    "sampling defaults for requests that do not give them:\n" +
    cli::SamplingFlags::HELP +
    "limits (a request over one gets a 4xx, a connection over one is closed):\n"
    "  --max-body BYTES          largest request body, however it is sent (default 1048576; more: 413)\n"
    "  --max-queue N             requests that may wait beyond the --parallel running ones (n choices count\n"
    "                            n); more get 503 (default 32; 0 = only the running ones)\n"
    "  --max-header-bytes N      request line and headers of one request (default 32768; more: 414 or 431)\n"
    "  --timeout SECONDS         a request must arrive whole within this time, and a connection idle this\n"
    "                            long (between requests, or not reading its answer) is closed (default 30)\n"
    "  --max-connections N       open connections, each with its own thread; more are refused (default 128)\n"
    "  --allow-host NAME         also answer requests whose Host header names NAME (repeatable; '*' = any).\n"
    "                            On a loopback address only localhost, 127.x.x.x and [::1] are answered\n"
    "                            otherwise (DNS rebinding); on other addresses any Host unless this is given\n"
    "  --shutdown-grace SECONDS  after SIGINT/SIGTERM, how long generations may still run (default 5); then\n"
    "                            the running ones end and those that have not started get 503\n"
    "  -h, --help                show this help\n";

// A mistake on the command line (cli::UsageError): one line on stderr with a pointer to -h, and exit status 2.
using cli::parse_int;
using cli::usage_error;
using cli::UsageError;

// Returns nullopt for -h (usage printed); throws UsageError for anything it does not understand.
static std::optional<ServerArgs> parse_args(int argc, char** argv) {
    ServerArgs a;
    if (const char* key = getenv("QWEN_API_KEY")) a.api_key = key;
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
        if (a.llama.take(argc, argv, i)) continue;
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
        else if (flag == "-np" || flag == "--parallel") a.parallel = int(parse_int(flag, value(), 1, 1024));
        else if (flag == "--kv-memory") {
            a.kv_gib = cli::parse_float(flag, value());
            if (!(a.kv_gib > 0) || a.kv_gib > 65536)
                usage_error("--kv-memory must be in (0, 65536] GiB, got %s", argv[i]);
        }
        else if (flag == "--max-queue") a.max_queue = int(parse_int(flag, value(), 0, 1024));
        else if (flag == "--max-header-bytes") a.max_header_bytes = size_t(parse_int(flag, value(), 4096, 1 << 24));
        else if (flag == "--timeout") a.timeout = int(parse_int(flag, value(), 1, 86400));
        else if (flag == "--max-connections") a.max_connections = int(parse_int(flag, value(), 4, 65536));
        else if (flag == "--allow-host") a.allow_hosts.push_back(value());
        else if (flag == "--shutdown-grace") a.shutdown_grace = double(parse_int(flag, value(), 0, 3600));
        else if (flag == "--api-key") a.api_key = value();
        else if (flag == "--cors-origin") a.cors_origins.push_back(value());
        else if (flag == "--alias") a.alias = value();
        else if (flag == "--reasoning-format") {
            std::string f = value();
            if (f != "auto" && f != "deepseek" && f != "none")
                usage_error("--reasoning-format must be auto, deepseek (the same) or none, got '%s'", f.c_str());
            a.split_reasoning = f != "none";
        }
        else if (flag[0] == '-') usage_error("unknown option %s", flag.c_str());
        else usage_error("unexpected argument '%s'", flag.c_str());
    }
    if (a.model_path.empty()) usage_error("-m weights.bin is required");
    for (const std::string& o : a.cors_origins)
        if (o.empty() || o.find_first_of(" \t\r\n,") != std::string::npos)
            usage_error("--cors-origin takes one origin such as http://localhost:3000 (or '*'), got '%s'", o.c_str());
    if (!a.alias.empty() && !qwen::utf8_valid(a.alias)) usage_error("--alias is not valid UTF-8");
    return a;
}

// ============================================================================
// Metrics: what GET /metrics reports, in Prometheus's text format
// ============================================================================

// Observations counted in fixed buckets (upper bounds in seconds; +Inf implied), with their sum.
struct Histogram {
    std::vector<double> bounds;
    std::vector<uint64_t> counts;  // (bounds + 1) observations in each bucket (not cumulative)
    double sum = 0;
    uint64_t count = 0;

    explicit Histogram(std::vector<double> b) : bounds(std::move(b)), counts(bounds.size() + 1, 0) {}
    void observe(double v) {
        size_t i = size_t(std::lower_bound(bounds.begin(), bounds.end(), v) - bounds.begin());
        counts[i]++;
        sum += v;
        count++;
    }
    void write(std::string& out, const char* name, const char* help) const {
        out += qwen::sformat("# HELP %s %s\n# TYPE %s histogram\n", name, help, name);
        uint64_t cumulative = 0;
        for (size_t i = 0; i <= bounds.size(); i++) {
            cumulative += counts[i];
            std::string le = i < bounds.size() ? qwen::sformat("%g", bounds[i]) : "+Inf";
            out += qwen::sformat("%s_bucket{le=\"%s\"} %llu\n", name, le.c_str(), (unsigned long long)cumulative);
        }
        out += qwen::sformat("%s_sum %.6f\n%s_count %llu\n", name, sum, name, (unsigned long long)count);
    }
};

// What the engine is doing, as of its last step: for /health and /metrics.
struct EngineLoad {
    int requests_running = 0;  // requests with a token generated
    int requests_waiting = 0;  // requests without one yet (queued, or their prompt running)
    int seqs_running = 0;      // sequences the Scheduler runs
    int seqs_waiting = 0;      // sequences waiting for a slot or for KV blocks (preempted ones included)
    int kv_blocks = 0, kv_free = 0, kv_cached = 0;  // the KV pool: blocks in all, held by no sequence, keeping a prefix
    int preemptions = 0;       // sequences preempted so far (their blocks taken back, recomputed later)
};

// Counters and histograms, updated by the HTTP threads (requests) and the engine thread (generations).
class Metrics {
  public:
    // An HTTP request answered; endpoint is a route's path (or "other"), so the label set stays small.
    void request(const std::string& endpoint, int status) {
        std::lock_guard<std::mutex> lock(mu_);
        requests_[{endpoint, status}]++;
    }
    // A generation (one choice) finished: its new prompt tokens (once per request), its tokens, the time to its
    // first token and its whole time.
    void generation(int prompt_tokens, int completion_tokens, double ttft, double seconds) {
        std::lock_guard<std::mutex> lock(mu_);
        prompt_tokens_ += uint64_t(prompt_tokens);
        generation_tokens_ += uint64_t(completion_tokens);
        if (completion_tokens > 0) ttft_.observe(ttft);
        duration_.observe(seconds);
    }
    void token_gap(double seconds) {  // the time between two tokens of one answer
        std::lock_guard<std::mutex> lock(mu_);
        itl_.observe(seconds);
    }
    std::string text(const EngineLoad& l) const {
        std::lock_guard<std::mutex> lock(mu_);
        std::string out = "# HELP qwen_requests_total HTTP requests answered, by endpoint and status.\n"
                          "# TYPE qwen_requests_total counter\n";
        for (const auto& [key, n] : requests_)
            out += qwen::sformat("qwen_requests_total{endpoint=\"%s\",status=\"%d\"} %llu\n", key.first.c_str(),
                                 key.second, (unsigned long long)n);
        out += qwen::sformat("# HELP qwen_prompt_tokens_total Prompt tokens of the generation requests.\n"
                             "# TYPE qwen_prompt_tokens_total counter\nqwen_prompt_tokens_total %llu\n"
                             "# HELP qwen_generation_tokens_total Tokens generated.\n"
                             "# TYPE qwen_generation_tokens_total counter\nqwen_generation_tokens_total %llu\n",
                             (unsigned long long)prompt_tokens_, (unsigned long long)generation_tokens_);
        auto gauge = [&](const char* name, const char* help, int v) {
            out += qwen::sformat("# HELP %s %s\n# TYPE %s gauge\n%s %d\n", name, help, name, name, v);
        };
        gauge("qwen_requests_running", "Generation requests being answered (a token generated).", l.requests_running);
        gauge("qwen_requests_waiting", "Generation requests without a token yet (queued, or their prompt running).",
              l.requests_waiting);
        gauge("qwen_sequences_running", "Sequences decoded together (at most --parallel).", l.seqs_running);
        gauge("qwen_sequences_waiting", "Sequences waiting for a slot or KV blocks (preempted ones included).",
              l.seqs_waiting);
        gauge("qwen_kv_blocks", "KV-cache blocks in the pool.", l.kv_blocks);
        gauge("qwen_kv_blocks_free", "KV-cache blocks held by no sequence.", l.kv_free);
        gauge("qwen_kv_blocks_cached", "KV-cache blocks keeping a prompt prefix for later requests.", l.kv_cached);
        out += qwen::sformat("# HELP qwen_preemptions_total Sequences preempted (blocks taken back, recomputed "
                             "later).\n# TYPE qwen_preemptions_total counter\nqwen_preemptions_total %d\n",
                             l.preemptions);
        ttft_.write(out, "qwen_time_to_first_token_seconds", "Time from the start of a generation to its first token.");
        itl_.write(out, "qwen_inter_token_latency_seconds", "Time between two consecutive tokens of an answer.");
        duration_.write(out, "qwen_request_duration_seconds", "Time a generation took, first token to last.");
        return out;
    }

  private:
    mutable std::mutex mu_;
    std::map<std::pair<std::string, int>, uint64_t> requests_;
    uint64_t prompt_tokens_ = 0, generation_tokens_ = 0;
    Histogram ttft_{{0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30}};
    Histogram itl_{{0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1}};
    Histogram duration_{{0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300}};
};

// ============================================================================
// Jobs and the engine thread
// ============================================================================

// One generation request on its way through the engine thread: n choices from one prompt, each a sequence of
// the Scheduler (choice 0 first; the others once its prompt has run, so that they take its blocks from the
// prefix cache). The HTTP thread that made it fills the inputs and then reads the output; the engine thread
// writes the output. Output fields are guarded by `mu`; the engine-side fields belong to the engine thread.
struct Job {
    std::vector<int> prompt;              // (n_prompt) token ids
    qwen::SamplingParams sampling;        // choice i draws with the seed sampling.seed + i
    qwen::GenerateOptions options;
    int n = 1;                            // choices
    bool stream = false;                  // the reader takes pieces as they come (else only the results)
    std::atomic<bool> cancel{false};      // set when the client has gone, or at shutdown
    std::atomic<bool> started{false};     // some choice ran (false at the end: cancelled before any did)

    // A choice's text and logprobs as they come, or the end of a choice (then results[index] is complete).
    struct Piece {
        int index = 0;
        std::string text;
        std::vector<qwen::StepLogprobs> logprobs;
        bool end = false;
    };
    std::mutex mu;
    std::condition_variable cv;
    std::deque<Piece> pending;            // pieces not yet taken by the reader (stream only)
    bool done = false;
    std::vector<qwen::GenerateResult> results;  // (n) each complete once its end piece is out (all once done)
    std::string error;                    // non-empty if the engine failed

    // Engine side (the engine thread alone).
    std::vector<int> seq_ids;             // (submitted) the Scheduler's id of each submitted choice
    int n_ended = 0;                      // choices finished
    bool first_token = false;             // some choice has a token (or ended): the others may start
    bool cancel_sent = false;             // its sequences were cancelled
    std::string failure;                  // the first engine failure of one of its choices

    void push(int index, const std::string& text, const qwen::StepLogprobs* lp = nullptr) {
        if (!stream) return;
        std::lock_guard<std::mutex> lock(mu);
        if (pending.empty() || pending.back().index != index || pending.back().end)
            pending.push_back({index, {}, {}, false});
        pending.back().text += text;
        if (lp) pending.back().logprobs.push_back(*lp);
        cv.notify_all();
    }
    void end_choice(int index, qwen::GenerateResult r) {
        std::lock_guard<std::mutex> lock(mu);
        results[size_t(index)] = std::move(r);
        if (stream) pending.push_back({index, {}, {}, true});
        cv.notify_all();
    }
    void finish(std::string err) {
        std::lock_guard<std::mutex> lock(mu);
        error = std::move(err);
        done = true;
        cv.notify_all();
    }

    // Reader side: waits for pieces and moves them into `out`. Returns false, with `out` empty, once the job is
    // finished and everything has been read. Pieces of a choice that arrive together come out as one.
    bool next(std::vector<Piece>& out) {
        std::unique_lock<std::mutex> lock(mu);
        cv.wait(lock, [&] { return done || !pending.empty(); });
        out.assign(std::make_move_iterator(pending.begin()), std::make_move_iterator(pending.end()));
        pending.clear();
        return !out.empty();
    }
    // Waits until the job is done, asking `gone` every 20 ms meanwhile (a poll of the socket: ~1 us): once it
    // says the client has left, the job is cancelled (the engine frees its sequences at its next step). False if
    // it was cancelled so.
    bool wait(const std::function<bool()>& gone) {
        std::unique_lock<std::mutex> lock(mu);
        bool left = false;
        while (!cv.wait_for(lock, std::chrono::milliseconds(20), [&] { return done; }))
            if (!left && gone && gone()) left = true, cancel = true;
        return !left;
    }
};

// The one thread that touches the engine, through a Scheduler that decodes up to --parallel sequences together
// (continuous batching over a paged KV pool; a prefix cache keeps the prompts of earlier requests, so a chat
// follow-up runs only its new tokens). Each loop: take the jobs queued since the last one and submit their
// sequences, cancel the sequences of jobs whose client has gone, run one scheduler step, hand the finished
// sequences to their jobs. Each accepted sequence holds a connection and its thread, so admission is bounded:
// max_waiting sequences may wait beyond the `parallel` running ones, and more are answered 503 at once.
class EngineWorker {
  public:
    EngineWorker(qwen::Engine& engine, const qwen::Tokenizer& tok, const qwen::SchedulerOptions& opt,
                 size_t max_waiting, Metrics& metrics)
        : sched_(engine, tok, opt), max_waiting_(max_waiting), metrics_(metrics) {
        publish_load_();
        thread_ = std::thread([this] { run(); });
    }
    ~EngineWorker() { stop(); }

    enum class Submit { QUEUED, SHUTTING_DOWN, BUSY };

    // Queues a job, unless the server is shutting down or its choices would make more than max_waiting sequences
    // wait beyond the running ones (a job queued on an idle engine always runs: it does not count as waiting).
    Submit submit(std::shared_ptr<Job> job) {
        std::lock_guard<std::mutex> lock(mu_);
        if (closed_) return Submit::SHUTTING_DOWN;
        size_t limit = size_t(sched_.options().max_seqs) + max_waiting_;
        if (n_seqs_ > 0 && n_seqs_ + size_t(job->n) > limit) return Submit::BUSY;
        n_seqs_ += size_t(job->n);
        jobs_.push_back(job);
        inbox_.push_back(std::move(job));
        cv_.notify_all();
        return Submit::QUEUED;
    }

    EngineLoad load() {
        std::lock_guard<std::mutex> lock(mu_);
        return load_;
    }

    // Shutdown, in steps: refuse new jobs, give the current ones up to `grace` seconds, cancel the rest (those
    // that have not run then end answered 503, the others with what they have).
    void drain(double grace) {
        std::unique_lock<std::mutex> lock(mu_);
        closed_ = true;
        if (!cv_.wait_for(lock, std::chrono::duration<double>(grace), [&] { return jobs_.empty(); }))
            for (auto& job : jobs_) job->cancel = true;
    }

    void stop() {
        {
            std::lock_guard<std::mutex> lock(mu_);
            closed_ = quit_ = true;
            for (auto& job : jobs_) job->cancel = true;
            cv_.notify_all();
        }
        if (thread_.joinable()) thread_.join();
    }

  private:
    // A submitted sequence: its job, its choice, and when its previous token came (for the token gaps).
    struct SeqRef {
        std::shared_ptr<Job> job;
        int index = 0;
        double t0 = 0, last = 0;
    };

    void run() {
        for (;;) {
            std::vector<std::shared_ptr<Job>> fresh;
            {
                std::unique_lock<std::mutex> lock(mu_);
                cv_.wait(lock, [&] { return quit_ || !inbox_.empty() || !active_.empty(); });
                if (quit_ && inbox_.empty() && active_.empty()) return;
                fresh.swap(inbox_);
            }
            for (auto& job : fresh) {
                active_.push_back(job);
                if (!job->cancel) submit_choice_(job);  // a cancelled one ends below, without running
            }
            for (auto& job : active_) {
                if (job->cancel && !job->cancel_sent) cancel_(*job);
                else if (job->first_token && int(job->seq_ids.size()) < job->n && job->failure.empty())
                    while (int(job->seq_ids.size()) < job->n) submit_choice_(job);  // the prompt is cached now
            }
            std::vector<qwen::Scheduler::Finished> finished;
            if (!sched_.idle()) finished = sched_.step();
            for (qwen::Scheduler::Finished& f : finished) end_seq_(f);
            retire_();
            publish_load_();
        }
    }

    // Submits the job's next choice (seeded seed + index) to the Scheduler.
    void submit_choice_(const std::shared_ptr<Job>& job) {
        int i = int(job->seq_ids.size());
        qwen::SamplingParams sp = job->sampling;
        sp.seed = job->sampling.seed + uint64_t(i);
        auto ref = std::make_shared<SeqRef>(SeqRef{job, i, qwen::now_seconds(), 0});
        qwen::GenerateOptions opt = job->options;
        const bool logprobs = sp.logprobs >= 0;
        opt.on_token = [this, ref, logprobs](int, const qwen::Sampler& s) {
            double now = qwen::now_seconds();
            if (ref->last > 0) metrics_.token_gap(now - ref->last);
            ref->last = now;
            ref->job->first_token = true;
            if (logprobs) ref->job->push(ref->index, "", &s.logprobs);
        };
        Job* j = job.get();
        auto on_text = [j, i](const std::string& text) {
            j->push(i, text);
            return !j->cancel;
        };
        try {
            int id = sched_.submit(job->prompt, sp, std::move(opt), on_text);
            job->seq_ids.push_back(id);
            seqs_[id] = ref;
        } catch (const std::exception& e) {  // not expected: start_job checked the prompt
            job->seq_ids.push_back(-1);
            job->failure = e.what();
            end_choice_(*job, i, qwen::GenerateResult(), 0);
            if (!job->cancel_sent) cancel_(*job);
        }
    }

    // Cancels every choice of the job, submitted (waiting or running: their blocks are freed at the next step)
    // or not (they end at once).
    void cancel_(Job& job) {
        job.cancel_sent = true;
        for (int id : job.seq_ids)
            if (id >= 0 && seqs_.count(id)) sched_.cancel(id);
        while (int(job.seq_ids.size()) < job.n) {
            int i = int(job.seq_ids.size());
            job.seq_ids.push_back(-1);
            qwen::GenerateResult r;
            r.prompt_tokens = int(job.prompt.size());
            r.finish_reason = "cancelled";
            end_choice_(job, i, std::move(r), 0);
        }
    }

    // A sequence ended: its result goes to its job. An engine failure cancels the job's other choices.
    void end_seq_(qwen::Scheduler::Finished& f) {
        auto it = seqs_.find(f.id);
        if (it == seqs_.end()) return;
        std::shared_ptr<SeqRef> ref = it->second;
        seqs_.erase(it);
        Job& job = *ref->job;
        if (!f.error.empty() && job.failure.empty()) {
            job.failure = f.error;
            if (!job.cancel_sent) cancel_(job);
        }
        end_choice_(job, ref->index, std::move(f.result), ref->t0);
    }

    void end_choice_(Job& job, int index, qwen::GenerateResult r, double t0) {
        if (r.completion_tokens > 0 || (!r.finish_reason.empty() && r.finish_reason != "cancelled")) {
            job.started = true;
            job.first_token = true;
        }
        if (t0 > 0)
            metrics_.generation(index == 0 ? r.prompt_tokens : 0, r.completion_tokens, r.prefill_seconds,
                                qwen::now_seconds() - t0);
        job.end_choice(index, std::move(r));
        job.n_ended++;
        std::lock_guard<std::mutex> lock(mu_);
        n_seqs_--;
    }

    // Finishes the jobs whose choices have all ended. The engine's counts are updated before the job's reader
    // wakes: the client's next request finds the room.
    void retire_() {
        for (size_t k = 0; k < active_.size();) {
            std::shared_ptr<Job> job = active_[k];
            if (job->n_ended < job->n) {
                k++;
                continue;
            }
            active_.erase(active_.begin() + long(k));
            {
                std::lock_guard<std::mutex> lock(mu_);
                jobs_.erase(std::find(jobs_.begin(), jobs_.end(), job));
                cv_.notify_all();
            }
            job->finish(job->failure);
        }
    }

    void publish_load_() {
        EngineLoad l;
        for (auto& job : active_) (job->first_token ? l.requests_running : l.requests_waiting)++;
        l.seqs_running = sched_.n_running();
        l.seqs_waiting = sched_.n_waiting();
        for (auto& job : active_)
            if (!job->cancel_sent) l.seqs_waiting += job->n - int(job->seq_ids.size());  // choices not submitted yet
        l.kv_blocks = sched_.pool().n_blocks();
        l.kv_free = sched_.pool().n_free();
        l.kv_cached = sched_.pool().n_cached();
        l.preemptions = sched_.n_preempted();
        std::lock_guard<std::mutex> lock(mu_);
        for (auto& job : inbox_) {
            l.requests_waiting++;
            l.seqs_waiting += job->n;
        }
        load_ = l;
    }

    qwen::Scheduler sched_;                  // engine thread only, like everything below up to mu_
    std::vector<std::shared_ptr<Job>> active_;        // jobs taken from the inbox, not finished
    std::map<int, std::shared_ptr<SeqRef>> seqs_;     // the Scheduler's id -> its sequence
    const size_t max_waiting_;               // sequences that may wait beyond the running ones
    Metrics& metrics_;
    std::mutex mu_;                          // guards what follows
    std::condition_variable cv_;
    std::vector<std::shared_ptr<Job>> inbox_;         // queued since the engine thread last looked
    std::vector<std::shared_ptr<Job>> jobs_;          // every accepted job not finished (the inbox's too)
    size_t n_seqs_ = 0;                      // sequences of those jobs not ended
    EngineLoad load_;
    bool closed_ = false, quit_ = false;
    std::thread thread_;
};

// ============================================================================
// Request parsing: JSON fields -> prompt tokens, sampling parameters, options
// ============================================================================

// An error answered in OpenAI's shape: {"error": {"message", "type", "code", "param"}} with this HTTP status;
// param names the request field at fault (null when none is).
struct ApiError {
    int status;
    std::string message;
    std::string code;
    std::string param = {};
};

static ApiError bad_request(const std::string& message, const std::string& code = "invalid_request",
                            const std::string& param = "") {
    return {400, message, code, param};
}

static json error_body(const ApiError& e) {
    std::string type = e.status == 413 ? "request_too_large"
                     : e.status == 404 ? "not_found_error"
                     : e.status == 401 ? "authentication_error"
                     : e.status >= 500 ? "server_error"
                                       : "invalid_request_error";
    return {{"error", {{"message", e.message}, {"type", type}, {"code", e.code},
                       {"param", e.param.empty() ? json(nullptr) : json(e.param)}}}};
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
    if (!it->is_number()) throw bad_request(std::string("'") + key + "' must be a number", "invalid_type", key);
    return it->get<double>();
}

// An integer field, exact for JSON integers; values beyond 64 bits saturate (they are limits, capped anyway).
static std::optional<long long> opt_integer(const json& body, const char* key) {
    std::optional<double> v = opt_number(body, key);
    if (!v) return std::nullopt;
    const json& j = body[key];
    if (j.is_number_unsigned()) return (long long)std::min<uint64_t>(j.get<uint64_t>(), LLONG_MAX);
    if (j.is_number_integer()) return j.get<long long>();
    if (*v != std::floor(*v)) throw bad_request(std::string("'") + key + "' must be an integer", "invalid_type", key);
    return *v >= 9.2e18 ? LLONG_MAX : *v <= -9.2e18 ? LLONG_MIN : (long long)*v;
}

// An integer field that must lie in [lo, hi].
static std::optional<long long> opt_int_in(const json& body, const char* key, long long lo, long long hi) {
    std::optional<long long> v = opt_integer(body, key);
    if (v && (*v < lo || *v > hi))
        throw bad_request(qwen::sformat("'%s' must be in [%lld, %lld], got %s", key, lo, hi, body[key].dump().c_str()),
                          "invalid_value", key);
    return v;
}

// A seed is any 64-bit integer: 0 .. 2^64-1 as the CLI takes it, a negative one as its two's complement.
static std::optional<uint64_t> opt_seed(const json& body) {
    std::optional<double> v = opt_number(body, "seed");
    if (!v) return std::nullopt;
    const json& j = body["seed"];
    if (j.is_number_unsigned()) return j.get<uint64_t>();
    if (j.is_number_integer()) return uint64_t(j.get<long long>());
    if (*v == std::floor(*v) && std::fabs(*v) < 9.2e18) return uint64_t((long long)*v);
    throw bad_request("'seed' must be an integer in [-2^63, 2^64 - 1], got " + j.dump(), "invalid_value", "seed");
}

static std::optional<bool> opt_bool(const json& body, const char* key) {
    auto it = body.find(key);
    if (it == body.end() || it->is_null()) return std::nullopt;
    if (!it->is_boolean()) throw bad_request(std::string("'") + key + "' must be true or false", "invalid_type", key);
    return it->get<bool>();
}

static std::optional<std::string> opt_string(const json& body, const char* key) {
    auto it = body.find(key);
    if (it == body.end() || it->is_null()) return std::nullopt;
    if (!it->is_string()) throw bad_request(std::string("'") + key + "' must be a string", "invalid_type", key);
    return it->get<std::string>();
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
                                  "are supported", "invalid_value", "messages");
            text += piece->get<std::string>();
        }
        return text;
    }
    throw bad_request(where + ".content must be a string", "invalid_type", "messages");
}

// JSON text of a value that must be an object (a tool call's arguments), as the client sent it: an object, or
// a string holding one (OpenAI's form).
static std::string arguments_text(const json& v, const std::string& where) {
    if (v.is_object()) return dump(v);
    json parsed;  // parsed only when it nests no deeper than the body may (the parser recurses)
    if (v.is_string() && json_depth(v.get<std::string>(), kMaxJsonDepth) <= kMaxJsonDepth)
        parsed = json::parse(v.get<std::string>(), nullptr, false);
    if (!parsed.is_object())
        throw bad_request(where + " must be a JSON object, or a string holding one", "invalid_value", "messages");
    return dump(parsed);
}

// An assistant message's tool_calls: [{"id", "type": "function", "function": {"name", "arguments"}}, ...].
static std::vector<qwen::ToolCall> parse_tool_calls(const json& list, const std::string& where) {
    if (!list.is_array()) throw bad_request(where + " must be a list", "invalid_type", "messages");
    std::vector<qwen::ToolCall> calls;
    for (size_t k = 0; k < list.size(); k++) {
        const json& c = list[k];
        std::string at = where + "[" + std::to_string(k) + "]";
        auto f = c.is_object() ? c.find("function") : c.end();
        if (f == c.end() || !f->is_object() || !f->contains("name") || !(*f)["name"].is_string())
            throw bad_request(at + " must be {\"type\": \"function\", \"function\": {\"name\": ..., "
                                   "\"arguments\": ...}}", "invalid_value", "messages");
        qwen::ToolCall call;
        call.name = (*f)["name"].get<std::string>();
        call.arguments =
            f->contains("arguments") ? arguments_text((*f)["arguments"], at + ".function.arguments") : "{}";
        if (c.contains("id") && c["id"].is_string()) call.id = c["id"].get<std::string>();
        calls.push_back(std::move(call));
    }
    return calls;
}

// [{"role", "content"}, ...] as OpenAI sends it; assistant messages may carry tool_calls and (Qwen3, as vLLM
// returns it) reasoning_content, tool messages answer a call (tool_call_id is not rendered by the templates).
static std::vector<qwen::Message> parse_messages(const json& list, const std::string& field) {
    if (!list.is_array()) throw bad_request("'" + field + "' must be a list of messages", "invalid_type", field);
    std::vector<qwen::Message> msgs;
    for (size_t i = 0; i < list.size(); i++) {
        const json& m = list[i];
        std::string where = field + "[" + std::to_string(i) + "]";
        if (!m.is_object() || !m.contains("role") || !m["role"].is_string())
            throw bad_request(where + " must be an object with a string 'role'", "invalid_value", field);
        std::string role = m["role"].get<std::string>();
        if (role == "developer") role = "system";  // OpenAI's newer name for the system role
        if (role != "system" && role != "user" && role != "assistant" && role != "tool")
            throw bad_request(where + ".role must be system, user, assistant or tool, got '" + role + "'",
                              "invalid_value", field);
        auto content = m.find("content");
        qwen::Message msg{role, content == m.end() ? std::string() : content_text(*content, where)};
        if (role == "assistant") {
            auto calls = m.find("tool_calls");
            if (calls != m.end() && !calls->is_null()) msg.tool_calls = parse_tool_calls(*calls, where + ".tool_calls");
            auto reasoning = m.find("reasoning_content");
            if (reasoning != m.end() && !reasoning->is_null()) {
                if (!reasoning->is_string())
                    throw bad_request(where + ".reasoning_content must be a string", "invalid_type", field);
                msg.reasoning = reasoning->get<std::string>();
            }
        }
        msgs.push_back(std::move(msg));
    }
    return msgs;
}

// Everything a generation request says besides its prompt.
struct GenerationParams {
    qwen::SamplingParams sampling;
    int max_tokens = 0;
    int min_tokens = 0;
    int n = 1;                        // choices
    std::vector<std::string> stop;
    std::vector<int> stop_ids;        // the model's stop tokens (unless ignore_eos) and stop_token_ids
    bool stream = false;
    bool include_usage = false;       // stream_options.include_usage: a last chunk with the token counts
    std::shared_ptr<const qwen::TokenGrammar> grammar;  // structured output, or null
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
    // True once the client has closed its connection: a handler that waits long for an answer asks it now and
    // then, so that a client that gave up does not keep its sequences running (the HTTP layer sets it).
    std::function<bool()> client_gone;
};

// True when the peer has closed the socket: an end of stream waiting to be read, or a hang-up or error. Bytes
// waiting (a pipelined request) are not a close. Never blocks, never consumes anything.
static bool peer_closed(int fd) {
    pollfd p{fd, short(POLLIN | POLLRDHUP), 0};
    if (poll(&p, 1, 0) <= 0) return false;
    if (p.revents & (POLLHUP | POLLERR | POLLRDHUP)) return true;
    char byte;
    return (p.revents & POLLIN) && recv(fd, &byte, 1, MSG_PEEK | MSG_DONTWAIT) == 0;
}

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
    std::string endpoint = "other";  // the route's path, for the metrics (the path itself is the client's)
    Metrics* metrics = nullptr;

    RequestLog(std::string m, std::string p, Metrics* mx) : method(std::move(m)), path(std::move(p)), metrics(mx) {}
    ~RequestLog() {
        fprintf(stderr, "%s %s %s %d %.3fs%s%s\n", local_time_string().c_str(), method.c_str(),
                qwen::utf8_sanitize(path).c_str(), status, qwen::now_seconds() - start, detail.empty() ? "" : " ",
                detail.c_str());
        if (metrics) metrics->request(endpoint, status);
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
    bool open = false;         // answered without the API key (the page, /health)
};

struct HttpLimits {
    size_t max_body = 1 << 20;         // request body bytes, however sent (413)
    size_t max_header_bytes = 32768;   // the per-connection memory for the request line and headers (414, 431)
    int timeout = 30;                  // seconds for a request to arrive whole, and for a connection to idle
    int max_connections = 128;         // open connections (each has a thread)
    bool check_host = true;            // refuse a Host header that names no allowed host (403)
    std::vector<std::string> allow_hosts;  // besides localhost, 127.x.x.x, [::1]; "*" = any
    std::string api_key;               // "" = none; else "Authorization: Bearer KEY" on routes not open (401)
    std::vector<std::string> cors_origins;  // Origins given CORS headers ("*" = any); empty: no CORS at all
};

// a == b in time that depends on their lengths only, not on where they differ (an API key must not leak
// through how long a wrong guess takes to refuse).
static bool same_secret(const std::string& a, const std::string& b) {
    size_t n = std::max(a.size(), b.size());
    unsigned diff = unsigned(a.size() != b.size());
    for (size_t i = 0; i < n; i++)
        diff |= unsigned(uint8_t(i < a.size() ? a[i] : 0) ^ uint8_t(i < b.size() ? b[i] : 0));
    return diff == 0;
}

// The value for Access-Control-Allow-Origin when `origin` (the request's Origin header) is allowed, else "".
static std::string cors_allow(const std::vector<std::string>& allowed, const char* origin) {
    if (!origin) return "";
    for (const std::string& a : allowed) {
        if (a == "*") return "*";
        if (strcasecmp(a.c_str(), origin) == 0) return origin;
    }
    return "";
}

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
    HttpServer(HttpLimits limits, std::vector<Route> routes, Metrics* metrics)
        : limits_(std::move(limits)), routes_(std::move(routes)), metrics_(metrics) {}
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
        std::string cors;        // Access-Control-Allow-Origin for the answer ("" = no CORS headers)
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
                const int fd = self->connection_of(c)->fd;
                p->req.client_gone = [fd] { return peer_closed(fd); };
                p->log = std::make_shared<RequestLog>(method, url, self->metrics_);
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
            p.log->endpoint = r.path;
        }
        if (allowed.empty())
            return refused({404, "no such endpoint: " + p.req.method + " " + p.req.path, "not_found"});
        p.cors = cors_allow(limits_.cors_origins, header("Origin"));
        if (method == "OPTIONS" && !limits_.cors_origins.empty()) {  // a browser's preflight: no key needed
            res.status = 204;
            res.content_type = "text/plain";
            if (!p.cors.empty()) {
                const char* asked = header("Access-Control-Request-Headers");
                const char* kTokenChars = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_, ";
                bool plain = asked && strspn(asked, kTokenChars) == strlen(asked);
                res.headers.push_back({"Access-Control-Allow-Methods", allowed + ", OPTIONS"});
                res.headers.push_back({"Access-Control-Allow-Headers",
                                       plain && *asked ? std::string(asked) : "Authorization, Content-Type"});
                res.headers.push_back({"Access-Control-Max-Age", "600"});
            }
            return false;
        }
        if (!p.route) {
            res.headers.push_back({"Allow", allowed});
            return refused({405, p.req.method + " is not allowed here; use " + allowed, "method_not_allowed"});
        }
        if (!limits_.api_key.empty() && !p.route->open) {
            const char* auth = header("Authorization");
            bool bearer = auth && strncasecmp(auth, "Bearer ", 7) == 0;
            if (!bearer || !same_secret(auth + 7, limits_.api_key)) {
                res.headers.push_back({"WWW-Authenticate", "Bearer"});
                return refused({401, auth ? "invalid API key (send 'Authorization: Bearer KEY' with the key given "
                                            "to --api-key)"
                                          : "an API key is required: send 'Authorization: Bearer KEY'",
                                "invalid_api_key"});
            }
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
        if (!p.cors.empty()) {
            MHD_add_response_header(r, "Access-Control-Allow-Origin", p.cors.c_str());
            if (p.cors != "*") MHD_add_response_header(r, "Vary", "Origin");
        }
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
    Metrics* metrics_;
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
// The server: shared state, request fields, streaming
// ============================================================================

// Parsing and tokenizing a request is the costly part of it before the engine (up to --max-body of JSON,
// whose parsed tree takes up to ~30 times its size, and the tokenizer's work): only kParseSlots requests do
// it at once, so memory stays bounded however many arrive together.
constexpr int kParseSlots = 2;
constexpr int kMaxChoices = 16;            // n
constexpr int kMaxCompletionLogprobs = 5;  // /v1/completions' logprobs, as OpenAI's
constexpr size_t kGrammarCacheSize = 32;   // bound grammars kept

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

// Grammars compiled and bound to the vocabulary, by their GBNF text; the least recently used goes past
// kGrammarCacheSize. Binding walks the vocabulary trie (built once at start-up and shared) for every grammar
// state: milliseconds for a small schema, up to about a second for a large one, so a client that sends the
// same schema again (as agents do on every turn) pays it once. A miss binds outside the lock.
class GrammarCache {
  public:
    explicit GrammarCache(std::shared_ptr<const qwen::TokenTrie> trie) : trie_(std::move(trie)) {}

    // Throws qwen::Error (with the place) when the grammar does not compile.
    std::shared_ptr<const qwen::TokenGrammar> get(const std::string& gbnf) {
        {
            std::lock_guard<std::mutex> lock(mu_);
            auto it = index_.find(gbnf);
            if (it != index_.end()) {
                lru_.splice(lru_.begin(), lru_, it->second);
                return it->second->second;
            }
        }
        auto bound = qwen::bind_grammar(qwen::grammar_from_gbnf(gbnf), trie_);
        std::lock_guard<std::mutex> lock(mu_);
        if (index_.count(gbnf)) return bound;  // bound twice at once: keep the first
        lru_.emplace_front(gbnf, bound);
        index_[gbnf] = lru_.begin();
        if (lru_.size() > kGrammarCacheSize) {
            index_.erase(lru_.back().first);
            lru_.pop_back();
        }
        return bound;
    }

  private:
    std::shared_ptr<const qwen::TokenTrie> trie_;
    std::mutex mu_;
    using Entry = std::pair<std::string, std::shared_ptr<const qwen::TokenGrammar>>;
    std::list<Entry> lru_;  // most recently used first
    std::unordered_map<std::string, std::list<Entry>::iterator> index_;
};

// What the handlers share. The HTTP threads tokenize prompts themselves, concurrently: the tokenizer is
// read-only after construction. Only the engine thread touches the engine.
struct ServerContext {
    const qwen::Model& model;
    const qwen::Tokenizer& tok;
    EngineWorker& worker;
    Gate& parse_gate;                  // held while a request is parsed and tokenized
    GrammarCache& grammars;
    Metrics& metrics;
    std::string model_id;              // --alias, else the weights file name without ".bin" / ".gguf"
    int context_size = 0;              // tokens the KV cache holds
    qwen::SamplingParams sampling;     // defaults for requests that do not say (valid: checked at start)
    int max_tokens = 512;
    int max_queue = 32;                // requests that may wait for the engine (--max-queue)
    bool split_reasoning = true;       // Qwen3's <think> part apart from the answer (--reasoning-format)
    int n_vocab() const { return std::min(tok.n_tokens(), model.config.vocab_size); }  // the ids it samples from
};

// ---- request fields ---------------------------------------------------------------------------------------

// The sampling fields and limits of a generation request. The token limit is the field max_key if present
// (max_completion_tokens; POST / calls it max_length), else max_tokens, else llama.cpp's n_predict. Error messages
// name the field the client sent. logprobs_key: "top_logprobs" (chat: with logprobs true), "logprobs" (completions:
// a count), or null (none).
static GenerationParams parse_generation(const json& body, const ServerContext& ctx, const char* max_key,
                                         const char* logprobs_key) {
    GenerationParams g;
    g.sampling = ctx.sampling;
    // Each value is checked as the engine holds it, a float, and a refusal quotes what the client sent:
    // top_p 1.0000001 is a float above 1, and "got 1" (that float printed) would contradict the rule.
    using P = qwen::SamplingParams;
    const std::pair<const char*, float P::*> fields[] = {
        {"temperature", &P::temperature}, {"top_p", &P::top_p}, {"min_p", &P::min_p},
        {"presence_penalty", &P::presence_penalty}, {"frequency_penalty", &P::frequency_penalty},
        {"repetition_penalty", &P::repetition_penalty}, {"repeat_penalty", &P::repetition_penalty}};
    for (const auto& [key, member] : fields) {
        std::optional<double> v = opt_number(body, key);
        if (!v) continue;
        if (std::fabs(*v) > std::numeric_limits<float>::max())  // would become inf, and be reported as such
            throw bad_request(std::string(key) + " is out of range, got " + body[key].dump(), "invalid_value", key);
        float f = float(*v);
        P one = ctx.sampling;  // the defaults are valid, so only this value can fail
        one.*member = f;
        try {
            qwen::validate(one);
        } catch (const qwen::Error& e) {
            std::string rule = e.what();
            rule = rule.substr(0, rule.rfind(", got "));
            if (strcmp(key, "repeat_penalty") == 0) rule.replace(0, strlen("repetition_penalty"), key);
            throw bad_request(rule + ", got " + body[key].dump(), "invalid_sampling", key);
        }
        g.sampling.*member = f;
    }
    if (auto v = opt_integer(body, "top_k")) {
        if (*v < -1) throw bad_request("top_k must be >= 0 (0 or -1 = off), got " + std::to_string(*v),
                                       "invalid_sampling", "top_k");
        g.sampling.top_k = int(std::min<long long>(std::max<long long>(*v, 0), 1 << 30));  // vLLM's off is -1
    }
    if (auto v = opt_int_in(body, "repeat_last_n", -1, INT32_MAX)) g.sampling.repeat_last_n = int(*v);
    if (auto v = opt_seed(body)) g.sampling.seed = *v;
    else g.sampling.seed = (uint64_t(std::random_device{}()) << 32) | std::random_device{}();

    g.max_tokens = ctx.max_tokens;
    bool limited = false;
    for (const char* key : {max_key, "max_tokens", "n_predict"}) {  // each one given is checked; the first counts
        std::optional<long long> max = opt_integer(body, key);
        if (!max) continue;
        if (strcmp(key, "n_predict") == 0 && *max == -1) *max = LLONG_MAX;  // llama.cpp: until a stop
        if (*max < 1) throw bad_request(std::string("'") + key + "' must be at least 1", "invalid_value", key);
        if (!limited) g.max_tokens = int(std::min<long long>(*max, 1 << 30));
        limited = true;
    }
    if (auto v = opt_int_in(body, "min_tokens", 0, g.max_tokens)) g.min_tokens = int(*v);
    if (auto v = opt_int_in(body, "n", 1, kMaxChoices)) g.n = int(*v);

    // logit_bias: {"token id": bias, ...}, ids of the vocabulary, biases in [-100, 100].
    auto bias = body.find("logit_bias");
    if (bias != body.end() && !bias->is_null()) {
        if (!bias->is_object())
            throw bad_request("'logit_bias' must be an object of token ids and biases", "invalid_type", "logit_bias");
        for (const auto& [key, v] : bias->items()) {
            char* end = nullptr;
            long long id = strtoll(key.c_str(), &end, 10);
            if (key.empty() || *end || id < 0 || id >= ctx.n_vocab())
                throw bad_request("logit_bias: '" + key + "' is not a token id in [0, " +
                                      std::to_string(ctx.n_vocab()) + ")", "invalid_value", "logit_bias");
            if (!v.is_number() || !(v.get<double>() >= -100 && v.get<double>() <= 100))
                throw bad_request("logit_bias: the bias of token " + key + " must be a number in [-100, 100], got " +
                                      v.dump(), "invalid_value", "logit_bias");
            g.sampling.logit_bias.push_back({int(id), v.get<float>()});
        }
        try {
            qwen::validate(g.sampling);  // the same id written twice ("7" and "07")
        } catch (const qwen::Error& e) {
            throw bad_request(e.what(), "invalid_value", "logit_bias");
        }
    }

    // logprobs: chat {"logprobs": true, "top_logprobs": 0..20}; completions {"logprobs": 0..5}.
    if (logprobs_key && strcmp(logprobs_key, "top_logprobs") == 0) {
        bool on = opt_bool(body, "logprobs").value_or(false);
        std::optional<long long> top = opt_int_in(body, "top_logprobs", 0, qwen::MAX_TOP_LOGPROBS);
        if (top && !on) throw bad_request("'top_logprobs' needs 'logprobs': true", "invalid_value", "top_logprobs");
        if (on) g.sampling.logprobs = int(top.value_or(0));
    } else if (logprobs_key) {
        if (auto v = opt_int_in(body, "logprobs", 0, kMaxCompletionLogprobs)) g.sampling.logprobs = int(*v);
    }

    // Stop tokens: the model's (unless ignore_eos) and stop_token_ids.
    if (!opt_bool(body, "ignore_eos").value_or(false)) g.stop_ids = ctx.model.chat.stop_ids;
    auto ids = body.find("stop_token_ids");
    if (ids != body.end() && !ids->is_null()) {
        if (!ids->is_array() || ids->size() > 64)
            throw bad_request("'stop_token_ids' must be a list of at most 64 token ids", "invalid_type",
                              "stop_token_ids");
        for (const json& id : *ids) {
            if (!id.is_number_integer() || id.get<long long>() < 0 || id.get<long long>() >= ctx.n_vocab())
                throw bad_request("stop_token_ids: " + id.dump() + " is not a token id in [0, " +
                                      std::to_string(ctx.n_vocab()) + ")", "invalid_value", "stop_token_ids");
            g.stop_ids.push_back(id.get<int>());
        }
    }

    auto stop = body.find("stop");
    if (stop != body.end() && !stop->is_null()) {
        if (!stop->is_string() && !(stop->is_array() && stop->size() <= 16))
            throw bad_request("'stop' must be a string or a list of at most 16 strings", "invalid_type", "stop");
        for (const json& s : stop->is_string() ? json::array({*stop}) : *stop) {
            if (!s.is_string()) throw bad_request("'stop' must contain only strings", "invalid_type", "stop");
            if (!s.get<std::string>().empty()) g.stop.push_back(s.get<std::string>());
        }
    }
    g.stream = opt_bool(body, "stream").value_or(false);
    auto so = body.find("stream_options");
    if (so != body.end() && so->is_object()) g.include_usage = opt_bool(*so, "include_usage").value_or(false);
    return g;
}

// A grammar from its GBNF, through the cache; a grammar that does not compile is the client's mistake.
static std::shared_ptr<const qwen::TokenGrammar> bound_grammar(const ServerContext& ctx, const std::string& gbnf,
                                                              const std::string& field) {
    try {
        return ctx.grammars.get(gbnf);
    } catch (const qwen::Error& e) {
        throw bad_request(field + ": " + e.what(), "invalid_grammar", field);
    }
}

// The GBNF of a converter, or a 400 naming the field with the converter's message (which names the place).
template <typename F>
static std::string convert(const std::string& field, F&& f) {
    try {
        return f();
    } catch (const qwen::Error& e) {
        throw bad_request(field + ": " + e.what(), "invalid_grammar", field);
    }
}

// Structured output, as OpenAI (response_format json_object / json_schema), vLLM (guided_json, guided_regex,
// guided_choice) and llama-server (grammar: GBNF, json_schema) ask for it; at most one. "" = none given.
static std::string structured_output_gbnf(const json& body, std::string& field) {
    std::string gbnf;
    auto take = [&](const char* key, std::string text) {
        if (!field.empty())
            throw bad_request("'" + field + "' and '" + key + "' both ask for structured output: give one",
                              "invalid_value", key);
        field = key;
        gbnf = std::move(text);
    };
    auto given = [&](const char* key) { return body.contains(key) && !body[key].is_null(); };
    auto schema_text = [](const json& v, const char* key) {
        if (v.is_object() || v.is_boolean()) return dump(v);
        if (v.is_string()) return v.get<std::string>();  // vLLM takes the schema as JSON text too
        throw bad_request(std::string("'") + key + "' must be a JSON Schema (an object)", "invalid_type", key);
    };
    if (given("response_format")) {
        const json& rf = body["response_format"];
        std::string type =
            rf.is_object() && rf.contains("type") && rf["type"].is_string() ? rf["type"].get<std::string>() : "";
        if (type == "json_object") {
            take("response_format", qwen::json_object_gbnf());
        } else if (type == "json_schema") {
            auto js = rf.find("json_schema");
            if (js == rf.end() || !js->is_object() || !js->contains("schema"))
                throw bad_request("response_format json_schema needs {\"json_schema\": {\"name\": ..., "
                                  "\"schema\": {...}}}", "invalid_value", "response_format");
            std::string text = schema_text((*js)["schema"], "response_format");
            take("response_format", convert("response_format", [&] { return qwen::json_schema_to_gbnf(text); }));
        } else if (type != "text") {
            throw bad_request("response_format.type must be text, json_object or json_schema", "invalid_value",
                              "response_format");
        }
    }
    for (const char* key : {"guided_json", "json_schema"})
        if (given(key)) {
            std::string text = schema_text(body[key], key);
            take(key, convert(key, [&] { return qwen::json_schema_to_gbnf(text); }));
        }
    if (given("guided_regex")) {
        if (!body["guided_regex"].is_string())
            throw bad_request("'guided_regex' must be a string", "invalid_type", "guided_regex");
        std::string re = body["guided_regex"].get<std::string>();
        take("guided_regex", convert("guided_regex", [&] { return "root ::= " + qwen::regex_to_gbnf(re) + "\n"; }));
    }
    if (given("guided_choice")) {
        const json& c = body["guided_choice"];
        if (!c.is_array() || c.empty() || !std::all_of(c.begin(), c.end(), [](const json& x) { return x.is_string(); }))
            throw bad_request("'guided_choice' must be a non-empty list of strings", "invalid_type", "guided_choice");
        std::vector<std::string> choices;
        for (const json& x : c) choices.push_back(x.get<std::string>());
        take("guided_choice", convert("guided_choice", [&] { return qwen::choices_to_gbnf(choices); }));
    }
    for (const char* key : {"grammar", "guided_grammar"})
        if (given(key)) {
            if (!body[key].is_string())
                throw bad_request(std::string("'") + key + "' must be GBNF text", "invalid_type", key);
            take(key, body[key].get<std::string>());
        }
    return gbnf;
}

// tools and tool_choice (OpenAI's shapes). The tool definitions go into the prompt as sent; `required` or a named
// function forces a call with the grammar engine (tool_calls_gbnf); `none` renders them but reads no calls.
struct ToolRequest {
    std::vector<std::string> definitions;  // JSON text of each tool, for the template
    std::vector<qwen::ToolSpec> specs;     // names and parameter schemas
    std::string choice = "auto";           // none, auto, required, or "function" (then `name`)
    std::string name;
    bool parallel = true;                  // parallel_tool_calls
    bool parse() const { return !definitions.empty() && choice != "none"; }
};

static ToolRequest parse_tools(const json& body) {
    ToolRequest t;
    auto tools = body.find("tools");
    if (tools != body.end() && !tools->is_null()) {
        if (!tools->is_array()) throw bad_request("'tools' must be a list", "invalid_type", "tools");
        for (size_t i = 0; i < tools->size(); i++) {
            const json& tool = (*tools)[i];
            std::string where = "tools[" + std::to_string(i) + "]";
            auto f = tool.is_object() ? tool.find("function") : tool.end();
            if (!tool.is_object() || !tool.contains("type") || tool["type"] != "function" || f == tool.end() ||
                !f->is_object())
                throw bad_request(where + " must be {\"type\": \"function\", \"function\": {\"name\", ...}}",
                                  "invalid_value", "tools");
            auto name = f->find("name");
            std::string n = name != f->end() && name->is_string() ? name->get<std::string>() : "";
            const char* kNameChars = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-.:";
            if (n.empty() || n.size() > 64 || n.find_first_not_of(kNameChars) != std::string::npos)
                throw bad_request(where + ".function.name must be 1 to 64 of a-z, A-Z, 0-9, _ - . :", "invalid_value",
                                  "tools");
            for (const qwen::ToolSpec& s : t.specs)
                if (s.name == n)
                    throw bad_request(where + ": the tool '" + n + "' is defined twice", "invalid_value", "tools");
            auto params = f->find("parameters");
            if (params != f->end() && !params->is_null() && !params->is_object())
                throw bad_request(where + ".function.parameters must be a JSON Schema object", "invalid_type", "tools");
            t.definitions.push_back(dump(tool));
            t.specs.push_back({n, params != f->end() && !params->is_null() ? dump(*params) : ""});
        }
    }
    auto choice = body.find("tool_choice");
    if (choice != body.end() && !choice->is_null()) {
        if (choice->is_string()) {
            t.choice = choice->get<std::string>();
            if (t.choice != "none" && t.choice != "auto" && t.choice != "required")
                throw bad_request("'tool_choice' must be none, auto, required or {\"type\": \"function\", "
                                  "\"function\": {\"name\": ...}}, got '" + t.choice + "'",
                                  "invalid_value", "tool_choice");
        } else {
            auto f = choice->is_object() ? choice->find("function") : choice->end();
            if (f == choice->end() || !f->is_object() || !f->contains("name") || !(*f)["name"].is_string())
                throw bad_request("'tool_choice' must be none, auto, required or {\"type\": \"function\", "
                                  "\"function\": {\"name\": ...}}", "invalid_type", "tool_choice");
            t.choice = "function";
            t.name = (*f)["name"].get<std::string>();
            if (std::none_of(t.specs.begin(), t.specs.end(), [&](const qwen::ToolSpec& s) { return s.name == t.name; }))
                throw bad_request("tool_choice names the function '" + t.name + "', which is not in 'tools'",
                                  "invalid_value", "tool_choice");
        }
        if ((t.choice == "required" || t.choice == "function") && t.definitions.empty())
            throw bad_request("tool_choice '" + t.choice + "' needs 'tools'", "invalid_value", "tool_choice");
    }
    t.parallel = opt_bool(body, "parallel_tool_calls").value_or(true);
    return t;
}

// Checks the prompt fits, caps max_tokens at the room left, and queues the job. Nothing reaches the engine (and
// its KV cache) before every check of the request has passed.
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
    job->options.min_new_tokens = g.min_tokens;
    job->options.stop_ids = g.stop_ids;
    job->options.stop = g.stop;
    job->options.grammar = g.grammar;
    job->n = g.n;
    job->stream = g.stream;
    job->results.resize(size_t(g.n));
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

// Waits for the whole answer; an engine failure becomes a 500, a job dropped from the queue at shutdown a 503,
// and a client that closed the connection meanwhile a 499 in the log (nobody is left to read it).
static const std::vector<qwen::GenerateResult>& finish_job(Job& job, const HttpRequest& req, const LogPtr& log) {
    if (!job.wait(req.client_gone))
        throw ApiError{499, "the client closed the connection before the answer", "client_closed"};
    if (!job.error.empty()) throw ApiError{500, "generation failed: " + job.error, "engine_error"};
    if (!job.started) throw ApiError{503, "the server is shutting down", "shutting_down"};
    log->describe(job.results[0]);
    if (job.n > 1) log->add_detail(std::to_string(job.n) + " choices");
    return job.results;
}

// A job cancelled by shutdown was cut short, which clients know as "length".
static std::string finish_reason(const qwen::GenerateResult& r) {
    return r.finish_reason == "cancelled" ? "length" : r.finish_reason;
}

// The prompt counts once, the answers of every choice add up. cached_tokens: the prompt tokens that came from
// the prefix cache (of the first choice; the others reuse its prompt).
static json usage_json(const std::vector<qwen::GenerateResult>& results) {
    int prompt = results.empty() ? 0 : results[0].prompt_tokens, completion = 0;
    int cached = results.empty() ? 0 : std::max(0, prompt - results[0].prefill_tokens);
    for (const qwen::GenerateResult& r : results) completion += r.completion_tokens;
    return {{"prompt_tokens", prompt}, {"completion_tokens", completion}, {"total_tokens", prompt + completion},
            {"prompt_tokens_details", {{"cached_tokens", cached}}}};
}

static std::string random_id(const std::string& prefix) {
    static const char kChars[] = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
    std::random_device rd;
    std::string id = prefix;
    for (int i = 0; i < 24; i++) id += kChars[rd() % (sizeof kChars - 1)];
    return id;
}

// ---- logprobs as OpenAI returns them ------------------------------------------------------------------------

// {"token": its text (U+FFFD for bytes that are not whole characters), "logprob", "bytes": [its bytes]}
static json token_logprob_json(const ServerContext& ctx, const qwen::TokenLogprob& t) {
    const std::string& b = ctx.tok.token_bytes(t.id);
    json bytes = json::array();
    for (unsigned char c : b) bytes.push_back(int(c));
    return {{"token", qwen::utf8_sanitize(b)}, {"logprob", t.logprob}, {"bytes", bytes}};
}

// Chat: {"content": [{"token", "logprob", "bytes", "top_logprobs": [...]}, ...]}.
static json chat_logprobs_json(const ServerContext& ctx, const std::vector<qwen::StepLogprobs>& steps) {
    json content = json::array();
    for (const qwen::StepLogprobs& s : steps) {
        json e = token_logprob_json(ctx, s.chosen), top = json::array();
        for (const qwen::TokenLogprob& t : s.top) top.push_back(token_logprob_json(ctx, t));
        e["top_logprobs"] = top;
        content.push_back(e);
    }
    return {{"content", content}};
}

// Completions (the legacy shape): {"tokens", "token_logprobs", "top_logprobs": [{text: logprob}], "text_offset"}
// with offsets in bytes of the answer from `offset` on.
static json completion_logprobs_json(const ServerContext& ctx, const std::vector<qwen::StepLogprobs>& steps,
                                     size_t& offset) {
    json tokens = json::array(), lps = json::array(), tops = json::array(), offsets = json::array();
    for (const qwen::StepLogprobs& s : steps) {
        const std::string& b = ctx.tok.token_bytes(s.chosen.id);
        tokens.push_back(qwen::utf8_sanitize(b));
        lps.push_back(s.chosen.logprob);
        json top = json::object();
        for (const qwen::TokenLogprob& t : s.top) {
            std::string text = qwen::utf8_sanitize(ctx.tok.token_bytes(t.id));
            if (!top.contains(text)) top[text] = t.logprob;
        }
        tops.push_back(top);
        offsets.push_back(offset);
        offset += b.size();
    }
    return {{"tokens", tokens}, {"token_logprobs", lps}, {"top_logprobs", tops}, {"text_offset", offsets}};
}

// The logprobs of a choice's answer tokens: a final stop id's are left out, as its text is.
static std::vector<qwen::StepLogprobs> answer_logprobs(const qwen::GenerateResult& r,
                                                       const std::vector<int>& stop_ids) {
    std::vector<qwen::StepLogprobs> lp = r.logprobs;
    if (!lp.empty() && !r.ids.empty() && std::count(stop_ids.begin(), stop_ids.end(), r.ids.back()))
        lp.pop_back();
    return lp;
}

// ---- streaming -------------------------------------------------------------------------------------
// A stream is a sequence of server-sent events, each sent as its own chunk as soon as it is made: the first
// events at once, then the job's pieces as they arrive, then each choice's end, then the usage and [DONE]. A
// client that goes away cancels the job, and the engine moves on to the next one.

// How a handler turns a job into events.
struct StreamFormat {
    std::vector<json> first;                                                   // sent at once
    std::function<std::vector<json>(const Job::Piece&)> piece;                 // a choice's text and logprobs
    std::function<std::vector<json>(int index, const qwen::GenerateResult&)> end;  // a choice's last events
    std::optional<json> usage;  // with stream_options.include_usage: the last chunk, before its usage
};

class EventStream {
  public:
    EventStream(std::shared_ptr<Job> job, LogPtr log, StreamFormat format)
        : job_(std::move(job)), log_(std::move(log)), format_(std::move(format)) {
        for (const json& e : format_.first) ready_.push_back(event(e));
    }

    // The next event, waiting for the engine if need be; false after [DONE].
    bool next(std::string& out) {
        while (ready_.empty() && !ended_) produce();
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
        std::vector<Job::Piece> pieces;
        if (job_->next(pieces)) {
            for (const Job::Piece& p : pieces)
                for (const json& e : p.end ? format_.end(p.index, job_->results[size_t(p.index)]) : format_.piece(p))
                    ready_.push_back(event(e));
            return;
        }
        ended_ = true;
        log_->describe(job_->results[0]);
        if (!job_->error.empty()) {
            // Headers are gone already: report the failure as an error event, as OpenAI does mid-stream.
            log_->status = 500;
            ready_.push_back(event(error_body({500, "generation failed: " + job_->error, "engine_error"})));
        } else if (!job_->started) {  // dropped from the queue at shutdown
            log_->status = 503;
            ready_.push_back(event(error_body({503, "the server is shutting down", "shutting_down"})));
        } else if (format_.usage) {
            json u = *format_.usage;
            u["usage"] = usage_json(job_->results);
            ready_.push_back(event(u));
        }
        ready_.push_back("data: [DONE]\n\n");
    }

    std::shared_ptr<Job> job_;
    LogPtr log_;
    StreamFormat format_;
    std::deque<std::string> ready_;  // events made and not yet sent
    bool ended_ = false;             // the job is done and its last events are in ready_
};

static void stream_job(HttpResponse& res, std::shared_ptr<Job> job, LogPtr log, StreamFormat format) {
    auto stream = std::make_shared<EventStream>(std::move(job), std::move(log), std::move(format));
    res.content_type = "text/event-stream";
    res.headers.push_back({"Cache-Control", "no-cache"});
    res.next = [stream](std::string& chunk) { return stream->next(chunk); };
    res.closed = [stream](bool whole) { stream->closed(whole); };
}

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

// ============================================================================
// The handlers
// ============================================================================

// A chat request's prompt: messages (and tools) through the model's template, with Qwen3's thinking switch as
// vLLM takes it (chat_template_kwargs) or as a plain field.
static std::vector<qwen::Message> chat_request(const json& body, const ToolRequest& tools, qwen::ChatOptions& opts) {
    if (!body.contains("messages")) throw bad_request("'messages' is required", "missing_field", "messages");
    std::vector<qwen::Message> msgs = parse_messages(body["messages"], "messages");
    if (msgs.empty()) throw bad_request("'messages' must not be empty", "invalid_value", "messages");
    std::optional<bool> thinking = opt_bool(body, "enable_thinking");
    if (body.contains("chat_template_kwargs") && body["chat_template_kwargs"].is_object())
        if (auto t = opt_bool(body["chat_template_kwargs"], "enable_thinking")) thinking = t;
    if (thinking) opts.enable_thinking = *thinking;
    opts.tools = tools.definitions;
    return msgs;
}

// The ids of a chat prompt; a template that cannot render the request (tools on a model without them) is a 400.
static std::vector<int> chat_prompt(const ServerContext& ctx, const std::vector<qwen::Message>& msgs,
                                    const qwen::ChatOptions& opts) {
    try {
        return qwen::chat_tokens(ctx.tok, ctx.model.chat, msgs, opts);
    } catch (const qwen::Error& e) {
        std::string why = e.what();
        throw bad_request(why, "invalid_value", why.find("tool") != std::string::npos ? "tools" : "messages");
    }
}

// A choice's answer as the API returns it: the parts of ChatOutputParser gathered.
struct ChatAnswer {
    std::string content, reasoning;
    std::vector<qwen::ToolCall> calls;
    void add(std::vector<qwen::ChatPart> parts) {
        for (qwen::ChatPart& p : parts) {
            if (p.kind == qwen::ChatPart::CONTENT) content += p.text;
            else if (p.kind == qwen::ChatPart::REASONING) reasoning += p.text;
            else calls.push_back(std::move(p.call));
        }
    }
};

// "tool_calls" when a finished answer made calls; else what generation said.
static std::string chat_finish_reason(const qwen::GenerateResult& r, size_t n_calls) {
    std::string f = finish_reason(r);
    return f == "stop" && n_calls > 0 ? "tool_calls" : f;
}

// A chat stream's events: per choice, its parser splits the text into reasoning, answer and tool calls; the logprobs
// of text not yet sent ride on the next chunk (or the last one).
static StreamFormat chat_stream(const ServerContext& ctx, const json& head, const GenerationParams& g, bool reasoning,
                                bool parse_calls) {
    struct State {
        std::vector<qwen::ChatOutputParser> parsers;
        std::vector<int> calls;                                  // calls sent so far (their delta index)
        std::vector<std::vector<qwen::StepLogprobs>> logprobs;   // not yet sent
    };
    auto st = std::make_shared<State>();
    for (int i = 0; i < g.n; i++) st->parsers.emplace_back(reasoning, parse_calls);
    st->calls.assign(size_t(g.n), 0);
    st->logprobs.resize(size_t(g.n));
    const bool want_logprobs = g.sampling.logprobs >= 0;
    auto chunk = [head](int index, const json& delta, const json& finish, const json& logprobs) {
        json c = head;
        c["choices"] = json::array({{{"index", index}, {"delta", delta}, {"logprobs", logprobs},
                                     {"finish_reason", finish}}});
        return c;
    };
    auto chunks = [&ctx, st, chunk, want_logprobs](int i, std::vector<qwen::ChatPart> parts, const json& finish) {
        auto take_logprobs = [&]() -> json {
            if (!want_logprobs) return nullptr;
            json lp = chat_logprobs_json(ctx, st->logprobs[size_t(i)]);
            st->logprobs[size_t(i)].clear();
            return lp;
        };
        std::vector<json> out;
        for (qwen::ChatPart& p : parts) {
            json delta;
            if (p.kind == qwen::ChatPart::CONTENT) delta = {{"content", p.text}};
            else if (p.kind == qwen::ChatPart::REASONING) delta = {{"reasoning_content", p.text}};
            else
                delta = {{"tool_calls", json::array({{{"index", st->calls[size_t(i)]++}, {"id", random_id("call_")},
                                                      {"type", "function"},
                                                      {"function", {{"name", p.call.name},
                                                                    {"arguments", p.call.arguments}}}}})}};
            out.push_back(chunk(i, delta, nullptr, out.empty() ? take_logprobs() : json(nullptr)));
        }
        if (!finish.is_null()) out.push_back(chunk(i, json::object(), finish, take_logprobs()));
        return out;
    };
    StreamFormat f;
    for (int i = 0; i < g.n; i++)
        f.first.push_back(chunk(i, {{"role", "assistant"}, {"content", ""}}, nullptr, nullptr));
    f.piece = [st, chunks](const Job::Piece& p) {
        auto& held = st->logprobs[size_t(p.index)];
        held.insert(held.end(), p.logprobs.begin(), p.logprobs.end());
        return chunks(p.index, st->parsers[size_t(p.index)].push(qwen::utf8_sanitize(p.text)), nullptr);
    };
    f.end = [st, chunks](int i, const qwen::GenerateResult& r) {
        std::vector<qwen::ChatPart> parts = st->parsers[size_t(i)].finish();
        size_t calls = size_t(st->calls[size_t(i)]);
        for (const qwen::ChatPart& p : parts) calls += p.kind == qwen::ChatPart::TOOL_CALL;
        return chunks(i, std::move(parts), chat_finish_reason(r, calls));
    };
    f.usage = usage_chunk(head, g);
    return f;
}

// A whole answer's choice: {"index", "message": {"role", "content", "reasoning_content"?, "tool_calls"?},
// "logprobs", "finish_reason"}.
static json chat_choice(const ServerContext& ctx, int index, const qwen::GenerateResult& r, const Job& job,
                        bool reasoning, bool parse_calls) {
    qwen::ChatOutputParser parser(reasoning, parse_calls);
    ChatAnswer a;
    a.add(parser.push(qwen::utf8_sanitize(r.text)));
    a.add(parser.finish());
    json message = {{"role", "assistant"},
                    {"content", a.content.empty() && !a.calls.empty() ? json(nullptr) : json(a.content)}};
    if (!a.reasoning.empty()) message["reasoning_content"] = a.reasoning;
    if (!a.calls.empty()) {
        json calls = json::array();
        for (const qwen::ToolCall& c : a.calls)
            calls.push_back({{"id", random_id("call_")}, {"type", "function"},
                             {"function", {{"name", c.name}, {"arguments", c.arguments}}}});
        message["tool_calls"] = calls;
    }
    json lp = job.sampling.logprobs >= 0 ? chat_logprobs_json(ctx, answer_logprobs(r, job.options.stop_ids))
                                         : json(nullptr);
    return {{"index", index}, {"message", message}, {"logprobs", lp},
            {"finish_reason", chat_finish_reason(r, a.calls.size())}};
}

// The grammar of a request: its structured-output field, or the forced calls of tool_choice "required" / a named
// function (with Qwen3 thinking on, a reasoning block may come first). "" = none.
static std::string chat_grammar(const ServerContext& ctx, const json& body, const ToolRequest& tools, bool thinking,
                                std::string& field) {
    std::string gbnf = structured_output_gbnf(body, field);
    if (tools.choice != "required" && tools.choice != "function") return gbnf;
    if (!field.empty())
        throw bad_request("tool_choice '" + tools.choice + "' and '" + field + "' cannot be combined", "invalid_value",
                          "tool_choice");
    std::vector<qwen::ToolSpec> specs;
    for (const qwen::ToolSpec& s : tools.specs)
        if (tools.choice == "required" || s.name == tools.name) specs.push_back(s);
    field = "tools";
    return convert("tools", [&] {
        return qwen::tool_calls_gbnf(specs, tools.parallel && tools.choice == "required",
                                     ctx.model.chat.thinking && thinking);
    });
}

static void handle_chat_completions(const ServerContext& ctx, const HttpRequest& req, HttpResponse& res,
                                    LogPtr log) {
    GenerationParams g;
    std::vector<int> prompt;
    ToolRequest tools;
    {
        Gate::Pass pass = ctx.parse_gate.enter();
        json body = parse_body(req.body);
        tools = parse_tools(body);
        qwen::ChatOptions opts;
        std::vector<qwen::Message> msgs = chat_request(body, tools, opts);
        g = parse_generation(body, ctx, "max_completion_tokens", "top_logprobs");
        std::string field, gbnf = chat_grammar(ctx, body, tools, opts.enable_thinking, field);
        if (!gbnf.empty()) g.grammar = bound_grammar(ctx, gbnf, field);
        prompt = chat_prompt(ctx, msgs, opts);
    }
    auto job = start_job(ctx, std::move(prompt), g);
    const bool reasoning = ctx.split_reasoning && ctx.model.chat.thinking, parse_calls = tools.parse();
    json head = response_head(ctx, "chatcmpl-", "chat.completion.chunk");
    if (g.stream) return stream_job(res, job, log, chat_stream(ctx, head, g, reasoning, parse_calls));
    const std::vector<qwen::GenerateResult>& results = finish_job(*job, req, log);
    json out = head, choices = json::array();
    for (int i = 0; i < g.n; i++)
        choices.push_back(chat_choice(ctx, i, results[size_t(i)], *job, reasoning, parse_calls));
    out["object"] = "chat.completion";
    out["choices"] = choices;
    out["usage"] = usage_json(results);
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
            throw bad_request("'prompt' is required and must be a string", "missing_field", "prompt");
        g = parse_generation(body, ctx, "max_completion_tokens", "logprobs");
        std::string field, gbnf = structured_output_gbnf(body, field);
        if (!gbnf.empty()) g.grammar = bound_grammar(ctx, gbnf, field);
        prompt = ctx.tok.encode(p->get<std::string>(), /*parse_special=*/true);
    }
    auto job = start_job(ctx, std::move(prompt), g);
    const bool want_logprobs = g.sampling.logprobs >= 0;

    json head = response_head(ctx, "cmpl-", "text_completion");
    auto choice = [head](int index, const std::string& text, const json& logprobs, const json& finish) {
        json c = head;
        c["choices"] =
            json::array({{{"index", index}, {"text", text}, {"logprobs", logprobs}, {"finish_reason", finish}}});
        return c;
    };
    if (g.stream) {
        auto offsets = std::make_shared<std::vector<size_t>>(size_t(g.n), 0);
        StreamFormat f;
        f.piece = [&ctx, choice, offsets, want_logprobs](const Job::Piece& p) {
            json lp = want_logprobs ? completion_logprobs_json(ctx, p.logprobs, (*offsets)[size_t(p.index)])
                                    : json(nullptr);
            return std::vector<json>{choice(p.index, qwen::utf8_sanitize(p.text), lp, nullptr)};
        };
        f.end = [choice](int i, const qwen::GenerateResult& r) {
            return std::vector<json>{choice(i, "", nullptr, finish_reason(r))};
        };
        f.usage = usage_chunk(head, g);
        stream_job(res, job, log, std::move(f));
        return;
    }
    const std::vector<qwen::GenerateResult>& results = finish_job(*job, req, log);
    json out = head, choices = json::array();
    for (int i = 0; i < g.n; i++) {
        const qwen::GenerateResult& r = results[size_t(i)];
        size_t offset = 0;
        json lp = want_logprobs ? completion_logprobs_json(ctx, answer_logprobs(r, job->options.stop_ids), offset)
                                : json(nullptr);
        choices.push_back(choice(i, qwen::utf8_sanitize(r.text), lp, finish_reason(r))["choices"][0]);
    }
    out["choices"] = choices;
    out["usage"] = usage_json(results);
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
            throw bad_request("'prompt' is required and must be a string", "missing_field", "prompt");
        prompt_text = body["prompt"].get<std::string>();
        const json none = json::array();
        auto given = body.find("history");
        const json& list = given == body.end() || given->is_null() ? none : *given;
        if (!list.is_array()) throw bad_request("'history' must be a list", "invalid_type", "history");

        std::vector<qwen::Message> msgs;
        pairs = list.empty() || list[0].is_array();
        if (pairs) {
            for (size_t i = 0; i < list.size(); i++) {
                const json& h = list[i];
                if (!h.is_array() || h.size() != 2 || !h[0].is_string() || !h[1].is_string())
                    throw bad_request("history[" + std::to_string(i) + "] must be a [user, assistant] pair of strings",
                                      "invalid_value", "history");
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
        g = parse_generation(body, ctx, "max_length", nullptr);
        g.n = 1;
        prompt = chat_prompt(ctx, msgs, {});
    }
    g.stream = false;
    auto job = start_job(ctx, std::move(prompt), g);
    const qwen::GenerateResult& r = finish_job(*job, req, log)[0];

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

// llama-server's POST /tokenize: {"content", "add_special" (no effect: Qwen has no BOS), "parse_special" (default
// true), "with_pieces"} -> {"tokens": [id, ...]} or, with pieces, [{"id", "piece": text, or its bytes when they are
// not whole characters}].
static void handle_tokenize(const ServerContext& ctx, const HttpRequest& req, HttpResponse& res, LogPtr) {
    Gate::Pass pass = ctx.parse_gate.enter();
    json body = parse_body(req.body);
    std::optional<std::string> content = opt_string(body, "content");
    if (!content) throw bad_request("'content' is required and must be a string", "missing_field", "content");
    opt_bool(body, "add_special");
    bool special = opt_bool(body, "parse_special").value_or(true);
    bool pieces = opt_bool(body, "with_pieces").value_or(false);
    json tokens = json::array();
    for (int id : ctx.tok.encode(*content, special)) {
        if (!pieces) {
            tokens.push_back(id);
            continue;
        }
        const std::string& b = ctx.tok.token_bytes(id);
        json piece = b;
        if (!qwen::utf8_valid(b)) {
            piece = json::array();
            for (unsigned char c : b) piece.push_back(int(c));
        }
        tokens.push_back({{"id", id}, {"piece", piece}});
    }
    res.set_json({{"tokens", tokens}});
}

// POST /detokenize: {"tokens": [id, ...]} -> {"content": text} (U+FFFD where the bytes are not whole characters).
static void handle_detokenize(const ServerContext& ctx, const HttpRequest& req, HttpResponse& res, LogPtr) {
    Gate::Pass pass = ctx.parse_gate.enter();
    json body = parse_body(req.body);
    auto tokens = body.find("tokens");
    if (tokens == body.end() || !tokens->is_array())
        throw bad_request("'tokens' is required and must be a list of token ids", "missing_field", "tokens");
    std::string text;
    for (const json& id : *tokens) {
        if (!id.is_number_integer() || id.get<long long>() < 0 || id.get<long long>() >= ctx.tok.n_tokens())
            throw bad_request("tokens: " + id.dump() + " is not a token id in [0, " +
                                  std::to_string(ctx.tok.n_tokens()) + ")", "invalid_value", "tokens");
        text += ctx.tok.token_bytes(id.get<int>());
    }
    res.set_json({{"content", qwen::utf8_sanitize(text)}});
}

// POST /apply-template (llama-server's): a chat request's messages (and tools) -> {"prompt": the rendered text}.
static void handle_apply_template(const ServerContext& ctx, const HttpRequest& req, HttpResponse& res, LogPtr) {
    Gate::Pass pass = ctx.parse_gate.enter();
    json body = parse_body(req.body);
    ToolRequest tools = parse_tools(body);
    qwen::ChatOptions opts;
    std::vector<qwen::Message> msgs = chat_request(body, tools, opts);
    std::vector<int> ids = chat_prompt(ctx, msgs, opts);  // the same checks as a chat request
    res.set_json({{"prompt", qwen::chat_text(ctx.model.chat, msgs, opts)}, {"n_tokens", ids.size()}});
}

// ============================================================================
// Routing, shutdown and main
// ============================================================================

static std::vector<Route> routes(const ServerContext& ctx) {
    auto page = [](const HttpRequest&, HttpResponse& res, LogPtr) {
        res.body.assign(reinterpret_cast<const char*>(chat_html), chat_html_len);
        res.content_type = "text/html; charset=utf-8";
    };
    auto health = [&ctx](const HttpRequest&, HttpResponse& res, LogPtr) {
        EngineLoad l = ctx.worker.load();
        res.set_json({{"status", "ok"}, {"running", l.seqs_running}, {"waiting", l.seqs_waiting},
                      {"kv_blocks", {{"total", l.kv_blocks}, {"free", l.kv_free}, {"cached", l.kv_cached}}}});
    };
    auto models = [&ctx](const HttpRequest&, HttpResponse& res, LogPtr) {
        json m = {{"id", ctx.model_id}, {"object", "model"}, {"created", 0}, {"owned_by", "qwen"},
                  {"context_length", ctx.context_size}};
        res.set_json({{"object", "list"}, {"data", json::array({m})}});
    };
    auto metrics = [&ctx](const HttpRequest&, HttpResponse& res, LogPtr) {
        res.body = ctx.metrics.text(ctx.worker.load());
        res.content_type = "text/plain; version=0.0.4; charset=utf-8";
    };
    auto with_ctx = [&ctx](void (*f)(const ServerContext&, const HttpRequest&, HttpResponse&, LogPtr)) {
        return [&ctx, f](const HttpRequest& req, HttpResponse& res, LogPtr log) { f(ctx, req, res, log); };
    };
    return {{"GET", "/", page, /*open=*/true},
            {"POST", "/", with_ctx(handle_seed)},
            {"GET", "/health", health, /*open=*/true},
            {"GET", "/v1/models", models},
            {"GET", "/metrics", metrics},
            {"POST", "/v1/chat/completions", with_ctx(handle_chat_completions)},
            {"POST", "/v1/completions", with_ctx(handle_completions)},
            {"POST", "/tokenize", with_ctx(handle_tokenize)},
            {"POST", "/detokenize", with_ctx(handle_detokenize)},
            {"POST", "/apply-template", with_ctx(handle_apply_template)}};
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
    bool gpu = false;  // the engine open_engine will choose, for the default of --parallel
#if QWEN_HAS_CUDA
    gpu = !args.cpu && qwen::gpu_unavailable().empty();
#endif
    int parallel = args.parallel > 0 ? args.parallel : gpu ? 16 : 4;
    std::unique_ptr<qwen::Engine> engine;
    try {
        engine = cli::open_engine(model, context, args.cpu, args.threads, false, "qwen-server", parallel, args.kv_gib);
    } catch (const std::bad_alloc&) {  // the KV pool, sized by --parallel and -c or by --kv-memory
        qwen::fail("out of memory for the engine and its KV pool (%s)", args.kv_gib > 0
                   ? qwen::sformat("--kv-memory %g GiB", args.kv_gib).c_str()
                   : qwen::sformat("--parallel %d sequences of %d tokens", parallel, context).c_str());
    }
    fprintf(stderr, "qwen-server: %s engine, context %d tokens, %d sequence%s at once (--parallel), KV pool %d "
            "blocks (%d tokens)\n", engine->name(), context, parallel, parallel == 1 ? "" : "s", engine->kv_blocks(),
            engine->kv_blocks() * qwen::KV_BLOCK);
    if (std::string(engine->name()) == "cpu") {
        signal(SIGBUS, on_sigbus);
    } else {  // the weights are on the GPU: let the file go, so that replacing it cannot harm this server
        model.file = qwen::MappedFile();
        model.weights = qwen::Weights();
    }
    // The vocabulary trie the grammars are bound to: built once, shared by every request.
    double t0 = qwen::now_seconds();
    auto trie = std::make_shared<const qwen::TokenTrie>(model.vocab, std::min(tok.n_tokens(), model.config.vocab_size));
    if (!args.llama.note().empty()) fprintf(stderr, "qwen-server: %s\n", args.llama.note().c_str());
    Metrics metrics;
    qwen::SchedulerOptions sched;
    sched.max_seqs = parallel;
    EngineWorker worker(*engine, tok, sched, size_t(args.max_queue), metrics);
    Gate parse_gate(kParseSlots);
    GrammarCache grammars(trie);
    ServerContext ctx{model, tok, worker, parse_gate, grammars, metrics,
                      args.alias.empty() ? model_id_from_path(args.model_path) : args.alias, context, sampling,
                      args.max_tokens, args.max_queue, args.split_reasoning};
    fprintf(stderr, "qwen-server: vocabulary trie for structured output built in %.2f s\n", qwen::now_seconds() - t0);

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
    limits.api_key = args.api_key;
    limits.cors_origins = args.cors_origins;
    HttpServer http(limits, routes(ctx), &metrics);
    http.start(fd);
    fprintf(stderr, "qwen-server: %s (context %d tokens) on http://%s:%d/\n", ctx.model_id.c_str(), context,
            args.host.c_str(), args.port);

    const char* sig = watcher.serve_until_signal();
    // Stop accepting connections, give the running and queued generations up to 5 s (then cancel them: one
    // with tokens ends "length", one without gets 503), give their answers 2 s to be sent, then close every
    // connection. Only an engine step in progress can hold this up, and not past the last 2 s.
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
