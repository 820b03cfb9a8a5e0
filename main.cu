// main.cu: the `qwen` command line. A thin client of the headers: it parses flags, picks the engine (GPU when
// present, else CPU), and runs one of the modes: one-shot prompt (chat or --raw), -i interactive chat (or a raw
// session with llama-cli's --in-prefix / --in-suffix), --batch over a file of prompts, --tokenize, --bench
// (bench.hpp). --grammar, --json-schema and --json-object constrain every answer (structured output). Every
// generating mode goes through one function, generate(). stdout carries only generated text (or ids, or JSON
// lines), so it can be piped; everything else goes to stderr. Compiled by nvcc (GPU and CPU engines) or by a
// plain C++ compiler (CPU engine only).
//
// Exit status: 0 ok, 1 runtime error (unreadable model, prompt too long, ...), 2 command-line error.

#include "bench.hpp"
#include "cli.hpp"

#include <cinttypes>
#include <csignal>
#include <iostream>
#include <optional>
#include <set>
#include <sstream>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#if __has_include(<nlohmann/json.hpp>)
#include <nlohmann/json.hpp>
#define QWEN_HAS_JSON 1
#else
#define QWEN_HAS_JSON 0  // --batch takes plain-text lines only
#endif

using cli::usage_error;

// ============================================================================
// Command line
// ============================================================================

static const std::string USAGE = std::string(
    "usage: qwen -m MODEL [options]\n"
    "\n"
    "Runs a Qwen model exported by tools/export.py. By default the prompt is sent as a chat message and the\n"
    "answer is streamed to stdout; statistics go to stderr.\n"
    "\n"
    "model and prompt:\n"
    "  -m, --model FILE         model file: weights.bin (tools/export.py) or GGUF (llama.cpp's)\n"
    "  -p, --prompt TEXT        prompt text\n"
    "  -f, --file FILE          read the prompt from FILE, byte for byte ('-' = stdin)\n"
    "  -sys, --system TEXT      system prompt (default: the model's own, if it has one)\n"
    "  --raw                    no chat template: complete the prompt text as is (special tokens written in\n"
    "                           it are recognised); stdout gets only the continuation\n"
    "  --no-think               Qwen3: answer without the <think> block\n"
    "  -no-cnv, --no-conversation  the same as --raw (llama-cli's name)\n"
    "\n"
    "structured output (every answer stays inside the language; an invalid grammar or schema: exit status 2):\n"
    "  --grammar FILE           a GBNF grammar file (llama.cpp's syntax); also --grammar-file FILE\n"
    "  --json-schema FILE       a JSON Schema file: the answer is JSON valid under it; also --json-schema-file FILE\n"
    "  --json-object            the answer is one JSON object (JSON mode; --json is the benchmark's output flag)\n"
    "\n"
    "generation:\n"
    "  -n, --n-predict N        max new tokens (default -1: until a stop token or the context is full)\n"
    "  -c, --ctx-size N         context length in tokens (default: min(model max, 4096))\n") +
    cli::SamplingFlags::HELP +
    "  -s, --seed N             random seed (default: from the clock; -1 = from the clock)\n"
    "\n"
    "modes:\n"
    "  -i, --interactive        multi-turn chat reading lines from stdin; /reset clears the history,\n"
    "                           /exit or end of input (Ctrl-D) leaves. With --raw, --in-prefix or --in-suffix:\n"
    "                           a raw session as llama-cli's: the -p/-f text, then each line as\n"
    "                           PREFIX + line + SUFFIX, the answers continuing the same text\n"
    "  -if, --interactive-first -i, waiting for a line before generating anything\n"
    "  --in-prefix TEXT         -i: text before each line (\\n, \\t, \\\\, \\\" and \\xHH escapes are read)\n"
    "  --in-suffix TEXT         -i: text after each line (escapes as --in-prefix)\n"
    "  -co, --color             -i: colour the '> ' prompt on a terminal\n"
    "  --batch FILE             one prompt per line, or JSON objects {\"prompt\": ..., \"temperature\": ...};\n"
    "                           writes one JSON result per line to stdout, in input order ('-' = stdin)\n"
    "  --parallel N             --batch: prompts generated together, continuous batching (default 8);\n"
    "                           --bench: a list of batch sizes (1,8,32,64) to measure batched decode\n"
    "  --kv-memory GB           --batch: the KV cache's size in GiB (default: N sequences of the context)\n"
    "  --tokenize               print the prompt's token ids (the whole chat prompt unless --raw) and exit;\n"
    "                           works on tokenizer-only files\n"
    "  --bench SHAPE            GPU benchmark of prefill and decode speed: SHAPE is qwen2.5-0.5b,\n"
    "                           qwen2.5-1.5b or qwen2-7b (synthetic weights) or a model file;\n"
    "                           with --cpu (and -t N) the CPU engine's speed instead\n"
    "  --type T                 with --bench SHAPE: the synthetic weights' type: bf16 (default), q8_0,\n"
    "                           q4_k_m or q5_k_m (as llama-quantize mixes them)\n"
    "  --json                   with --bench: one JSON object instead of a table\n"
    "\n"
    "engine:\n"
    "  --cpu                    use the CPU even when a CUDA device is present\n"
    "  -t, --threads N          CPU threads (default 0: all cores)\n"
    "  --verbose                print model, engine, sampling settings and per-turn details to stderr\n" +
    std::string(cli::LlamaFlags::HELP) +
    "  -h, --help               show this help and exit\n";

struct Options {
    std::string model_path;
    std::optional<std::string> prompt, prompt_file, system;
    std::optional<std::string> grammar_file, schema_file, in_prefix, in_suffix;
    bool json_object = false, interactive_first = false, color = false;
    cli::LlamaFlags llama;
    std::string batch_file, bench, bench_type;
    int n_predict = -1;  // -1 = until a stop token or the context is full
    int context = 0;     // 0 = min(model max_seq_len, 4096)
    int threads = 0;     // 0 = all cores
    std::vector<int> parallel;  // --parallel: --batch takes one value (default 8), --bench a list
    double kv_gib = 0;          // --kv-memory; 0 = room for `parallel` whole contexts
    cli::SamplingFlags sampling;
    std::optional<uint64_t> seed;  // nullopt = from the clock
    bool raw = false, no_think = false, interactive = false, cpu = false, tokenize = false;
    bool verbose = false, json = false, help = false;
};

// llama.cpp's escapes in --in-prefix / --in-suffix: \n \r \t \\ \' \" and \xHH; any other backslash stays.
static std::string process_escapes(const std::string& s) {
    std::string out;
    for (size_t i = 0; i < s.size(); i++) {
        char c = s[i], n = i + 1 < s.size() ? s[i + 1] : '\0';
        if (c != '\\' || !n) {
            out += c;
            continue;
        }
        const char* from = "nrt\\'\"";
        const char* to = "\n\r\t\\'\"";
        if (const char* k = strchr(from, n)) {
            out += to[k - from];
            i++;
        } else if (n == 'x' && i + 3 < s.size() && isxdigit(uint8_t(s[i + 2])) && isxdigit(uint8_t(s[i + 3]))) {
            out += char(strtol(s.substr(i + 2, 2).c_str(), nullptr, 16));
            i += 3;
        } else {
            out += c;
        }
    }
    return out;
}

// A comma-separated list of counts 1..1024 (--parallel 1,8,32).
static std::vector<int> parse_list(const std::string& flag, const std::string& s) {
    std::vector<int> out;
    size_t at = 0;
    for (;;) {
        size_t comma = s.find(',', at);
        out.push_back(int(cli::parse_int(flag, s.substr(at, comma - at), 1, 1024)));
        if (comma == std::string::npos) return out;
        at = comma + 1;
    }
}

static Options parse_args(int argc, char** argv) {
    Options o;
    for (int i = 1; i < argc; i++) {
        const std::string flag = argv[i];
        auto value = [&]() -> std::string {
            if (i + 1 >= argc) usage_error("%s needs a value", flag.c_str());
            return argv[++i];
        };
        if (o.sampling.take(flag, value) || o.llama.take(argc, argv, i)) continue;
        if (flag == "-m" || flag == "--model") o.model_path = value();
        else if (flag == "-p" || flag == "--prompt") o.prompt = value();
        else if (flag == "-f" || flag == "--file") o.prompt_file = value();
        else if (flag == "-sys" || flag == "--system") o.system = value();
        else if (flag == "-n" || flag == "--n-predict") o.n_predict = int(cli::parse_int(flag, value(), -1, INT32_MAX));
        else if (flag == "-c" || flag == "--ctx-size") o.context = int(cli::parse_int(flag, value(), 1, INT32_MAX));
        else if (flag == "-s" || flag == "--seed") o.seed = cli::parse_seed(flag, value());
        else if (flag == "--raw" || flag == "-no-cnv" || flag == "--no-conversation") o.raw = true;
        else if (flag == "--grammar" || flag == "--grammar-file") o.grammar_file = value();
        else if (flag == "--json-schema" || flag == "--json-schema-file") o.schema_file = value();
        else if (flag == "--json-object") o.json_object = true;
        else if (flag == "-if" || flag == "--interactive-first") o.interactive = o.interactive_first = true;
        else if (flag == "--in-prefix") o.in_prefix = process_escapes(value());
        else if (flag == "--in-suffix") o.in_suffix = process_escapes(value());
        else if (flag == "-co" || flag == "--color") o.color = true;
        else if (flag == "--no-think") o.no_think = true;
        else if (flag == "-i" || flag == "--interactive") o.interactive = true;
        else if (flag == "--batch") o.batch_file = value();
        else if (flag == "--cpu") o.cpu = true;
        else if (flag == "-t" || flag == "--threads") o.threads = int(cli::parse_int(flag, value(), 0, 4096));
        else if (flag == "--tokenize") o.tokenize = true;
        else if (flag == "--verbose") o.verbose = true;
        else if (flag == "--bench") o.bench = value();
        else if (flag == "--json") o.json = true;
        else if (flag == "--parallel") o.parallel = parse_list(flag, value());
        else if (flag == "--kv-memory") o.kv_gib = cli::parse_float(flag, value());
        else if (flag == "--type") {
            o.bench_type = value();
            if (!bench::is_type_name(o.bench_type))
                usage_error("--type must be one of %s, got '%s'", bench::TYPE_NAMES, o.bench_type.c_str());
        }
        else if (flag == "-h" || flag == "--help") o.help = true;
        else usage_error("unknown argument '%s'", flag.c_str());
    }
    if (o.kv_gib < 0 || !std::isfinite(o.kv_gib)) usage_error("--kv-memory must be a positive number of GiB");
    if (o.help || !o.bench.empty()) return o;
    if (!o.parallel.empty() && o.batch_file.empty()) usage_error("--parallel goes with --batch or --bench");
    if (o.kv_gib > 0 && o.batch_file.empty()) usage_error("--kv-memory goes with --batch");
    if (o.parallel.size() > 1) usage_error("--batch takes one --parallel value, got %zu", o.parallel.size());

    if (o.json) usage_error("--json only goes with --bench (JSON mode for answers is --json-object)");
    if (!o.bench_type.empty()) usage_error("--type only goes with --bench");
    int structured = int(bool(o.grammar_file)) + int(bool(o.schema_file)) + int(o.json_object);
    if (structured > 1) usage_error("give one of --grammar, --json-schema and --json-object");
    if (structured && o.tokenize) usage_error("--tokenize generates nothing to constrain; drop the grammar");
    if ((o.in_prefix || o.in_suffix) && !o.interactive) usage_error("--in-prefix and --in-suffix go with -i");
    if (o.in_prefix || o.in_suffix) o.raw = true;  // the prefix and suffix are the template (llama-cli's way)
    if (o.model_path.empty()) usage_error("no model given (-m FILE)");
    if (o.prompt && o.prompt_file) usage_error("give the prompt with -p or with -f, not both");
    int modes = int(o.interactive) + int(!o.batch_file.empty()) + int(o.tokenize);
    if (modes > 1) usage_error("-i, --batch and --tokenize cannot be combined");
    if (!o.batch_file.empty() && (o.prompt || o.prompt_file))
        usage_error("--batch reads its prompts from the file; drop -p/-f");
    if (o.raw && o.system)
        usage_error("-sys needs the chat template, which --raw (or --in-prefix/--in-suffix) turns off");
    if (o.raw && o.no_think) usage_error("--no-think needs the chat template, which --raw turns off");
    if (!o.interactive && o.batch_file.empty() && !o.prompt && !o.prompt_file)
        usage_error("no prompt given (-p TEXT, -f FILE, -i or --batch FILE)");
    return o;
}

// ============================================================================
// Input and output: files read byte for byte, prompts, stdout that must not lose text
// ============================================================================

// Prompt files and --batch files are read whole; a bigger one is refused rather than read until memory runs
// out (-f /dev/zero would never end).
static constexpr size_t MAX_INPUT_BYTES = size_t(64) << 20;

// The bytes of a file, a pipe or a character device, or of stdin for "-". Directories and other special
// files are refused, as are read errors and input over MAX_INPUT_BYTES.
static std::string read_file(const std::string& path) {
    const bool from_stdin = path == "-";
    const char* name = from_stdin ? "stdin" : path.c_str();
    int fd = from_stdin ? STDIN_FILENO : open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) qwen::fail("%s: cannot open: %s", name, strerror(errno));
    struct Closer {
        int fd;
        ~Closer() {
            if (fd >= 0) close(fd);
        }
    } closer{from_stdin ? -1 : fd};  // stdin stays open
    struct stat st;
    if (fstat(fd, &st) != 0) qwen::fail("%s: cannot read: %s", name, strerror(errno));
    if (S_ISDIR(st.st_mode)) qwen::fail("%s: is a directory", name);
    if (!S_ISREG(st.st_mode) && !S_ISFIFO(st.st_mode) && !S_ISCHR(st.st_mode) && !S_ISSOCK(st.st_mode))
        qwen::fail("%s: not a regular file, pipe or character device", name);
    std::string data;
    char buf[1 << 16];
    for (;;) {
        ssize_t n = read(fd, buf, sizeof buf);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) qwen::fail("%s: cannot read: %s", name, strerror(errno));
        if (n == 0) return data;
        if (data.size() + size_t(n) > MAX_INPUT_BYTES)
            qwen::fail("%s: larger than %zu MiB, the limit for a prompt or batch file", name, MAX_INPUT_BYTES >> 20);
        data.append(buf, size_t(n));
    }
}

static void check_utf8(const std::string& text, const char* what) {
    size_t bad = qwen::utf8_first_invalid(text);
    if (bad != text.size()) qwen::fail("%s is not valid UTF-8 (byte %zu)", what, bad);
}

// Refuses, before tokenizing it, a text that cannot fit: every token covers at most `longest` bytes of the
// NFC-normalised text, and NFC shrinks text less than 4-fold (at most 3.5: U+1FBE U+0308 U+0301, 7 bytes,
// becomes U+0390, 2 bytes), so the text has more than size / (4 * longest) tokens. Tokenizing tens of MB to
// find out would cost seconds and GBs.
static void check_not_far_too_long(const std::string& text, const qwen::Model& m, int context) {
    size_t longest = 1;
    for (const std::string& t : m.vocab.tokens) longest = std::max(longest, t.size());
    size_t at_least = text.size() / (4 * longest);
    if (at_least > size_t(context))
        qwen::fail("prompt is at least %zu tokens (%zu bytes), more than the context of %d", at_least, text.size(),
                   context);
}

// The checks Session::generate makes, done early: before loading a batch, and per turn in -i.
static void check_fits(size_t n_prompt, int context) {
    if (n_prompt == 0) qwen::fail("the prompt is empty");
    if (n_prompt > size_t(context))
        qwen::fail("prompt is %zu tokens, %zu more than the context of %d", n_prompt, n_prompt - size_t(context),
                   context);
}

// Fails when stdout cannot take the output (closed, a full disk, a reader that has gone): the run is an
// error then, not a success with the text lost.
static void check_stdout() {
    if (fflush(stdout) != 0 || ferror(stdout)) qwen::fail("cannot write to stdout: %s", strerror(errno));
}

// Writes to stdout at once (flushed, so a pipe sees generated pieces as they come).
static void write_out(const std::string& s) {
    fwrite(s.data(), 1, s.size(), stdout);
    check_stdout();
}

static qwen::ChatOptions chat_options(const Options& o) {
    qwen::ChatOptions c;
    c.enable_thinking = !o.no_think;
    return c;
}

// Ids of a prompt: raw text (special tokens written in it recognised) or a one-turn chat after the -sys prompt.
static std::vector<int> prompt_ids(const qwen::Tokenizer& tok, const qwen::Model& m, const Options& o,
                                   const std::string& text) {
    if (o.raw) return tok.encode(text, /*parse_special=*/true);
    std::vector<qwen::Message> msgs;
    if (o.system) msgs.push_back({"system", *o.system});
    msgs.push_back({"user", text});
    return qwen::chat_tokens(tok, m.chat, msgs, chat_options(o));
}

// ============================================================================
// Generation: the one path every mode takes
// ============================================================================

// One prompt to answer, with its settings.
struct Request {
    std::string text;               // the prompt as given (echoed by --batch)
    std::vector<int> ids;           // its token ids
    qwen::SamplingParams sampling;
    qwen::GenerateOptions options;  // -n and the model's stop tokens (plus a --batch line's own settings)
};

static Request make_request(const Options& o, const qwen::Model& m, const qwen::SamplingParams& sampling) {
    Request r;
    r.sampling = sampling;
    r.options.max_new_tokens = o.n_predict;
    r.options.stop_ids = m.chat.stop_ids;
    return r;
}

// Prefill covers the prompt tokens not found in the cache plus the first sample (so its time is the time to
// first token); decode covers the tokens after the first, so with one token or none its rate shows as "-".
static void print_stats(const qwen::GenerateResult& r, const std::string& label = "") {
    auto rate = [](double n, double s) { return s > 0 ? n / s : 0.0; };
    int reused = r.prompt_tokens - r.prefill_tokens;
    char decode[32] = "-";
    if (r.completion_tokens > 1 && r.decode_seconds > 0)
        snprintf(decode, sizeof decode, "%.1f", (r.completion_tokens - 1) / r.decode_seconds);
    fprintf(stderr, "qwen: %sprompt %d tokens", label.c_str(), r.prompt_tokens);
    if (reused > 0) fprintf(stderr, " (%d from the cache)", reused);
    fprintf(stderr,
            ", prefill %.1f tok/s | %d tokens generated (%s), decode %s tok/s | first token %.1f ms | "
            "total %.3f s\n",
            rate(r.prefill_tokens, r.prefill_seconds), r.completion_tokens, r.finish_reason.c_str(), decode,
            r.prefill_seconds * 1e3, r.prefill_seconds + r.decode_seconds);
}

// Answers one request in the session (whose KV cache a follow-up prompt reuses), streaming the text to stdout
// as it comes when `stream`, else returning it in the result only.
static qwen::GenerateResult generate(qwen::Session& session, const Request& req, bool stream) {
    qwen::Sampler sampler(req.sampling);
    auto to_stdout = [](const std::string& piece) {
        write_out(piece);
        return true;
    };
    return session.generate(req.ids, sampler, req.options, stream ? to_stdout : std::function<bool(const std::string&)>());
}

// ============================================================================
// Modes
// ============================================================================

// --tokenize: ids of the prompt on one line. Needs only the tokenizer, so tokenizer-only files work.
static int run_tokenize(const Options& o, const std::string& prompt) {
    qwen::Model m = qwen::load_tokenizer(o.model_path);
    qwen::Tokenizer tok(m.vocab);
    std::vector<int> ids = prompt_ids(tok, m, o, prompt);
    std::string line;
    for (size_t i = 0; i < ids.size(); i++) line += (i ? " " : "") + std::to_string(ids[i]);
    write_out(line + "\n");
    return 0;
}

// One prompt, answer streamed to stdout. Chat mode ends the answer with a newline; --raw prints the
// continuation only.
static int run_once(const Options& o, qwen::Session& session, const Request& req) {
    qwen::GenerateResult r = generate(session, req, /*stream=*/true);
    if (!o.raw) write_out("\n");
    else if (isatty(STDOUT_FILENO)) fputc('\n', stderr);  // keep the stats off the continuation's line
    print_stats(r);
    return 0;
}

// Drops the oldest (user, assistant) exchanges until the prompt leaves `room` tokens for the answer in the
// context. The system prompt (first message, or the model's default inserted by the template) is kept.
// Returns the prompt ids; fails when even the newest message alone does not fit.
static std::vector<int> fit_history(std::vector<qwen::Message>& history, const Options& o, const qwen::Model& m,
                                    const qwen::Tokenizer& tok, int context, int room) {
    const size_t first = o.system ? 1 : 0;  // history[first..] alternate user, assistant, ..., user
    std::vector<int> ids = qwen::chat_tokens(tok, m.chat, history, chat_options(o));
    while (ids.size() + size_t(room) > size_t(context) && history.size() - first > 1) {
        history.erase(history.begin() + first, history.begin() + first + 2);
        ids = qwen::chat_tokens(tok, m.chat, history, chat_options(o));
    }
    check_fits(ids.size(), context);
    return ids;
}

// The next chat message: `pending` (the -p/-f prompt) first if given, then lines of stdin (a CRLF line end
// counts as one), with a "> " prompt on a terminal. False at the end of input.
static bool next_message(std::optional<std::string>& pending, bool tty, std::string& line, bool color = false) {
    if (pending) {
        line = std::move(*pending);
        pending.reset();
        return true;
    }
    if (tty) fputs(color && isatty(STDERR_FILENO) ? "\033[32m> \033[0m" : "> ", stderr);
    if (!std::getline(std::cin, line)) return false;
    if (!line.empty() && line.back() == '\r') line.pop_back();
    return true;
}

// -i: a chat that keeps its history. Each turn's prompt extends the previous one, so the Session only
// prefills the new part; the KV cache of earlier turns is reused.
static int run_interactive(const Options& o, const qwen::Model& m, qwen::Session& session, const qwen::Tokenizer& tok,
                           Request turn, std::optional<std::string> pending) {
    const int context = session.engine.context_size();
    // Room kept free for each answer when old turns must go: -n when given, else a quarter of the context.
    const int room = o.n_predict >= 0 ? std::min(o.n_predict, context - 1) : context / 4;
    const bool tty = isatty(STDIN_FILENO);
    std::vector<qwen::Message> base;
    if (o.system) base.push_back({"system", *o.system});
    std::vector<qwen::Message> history = base;
    if (tty) fprintf(stderr, "qwen: chatting with %s; /reset clears the history, /exit or Ctrl-D leaves\n",
                     m.chat.model_name.c_str());

    std::string line;
    for (int n = 1; next_message(pending, tty, line, o.color);) {
        if (line == "/exit") break;
        if (line == "/reset") {
            history = base;
            fprintf(stderr, "qwen: history cleared\n");
            continue;
        }
        if (line.empty()) continue;
        if (!qwen::utf8_valid(line)) {
            fprintf(stderr, "qwen: error: that line is not valid UTF-8; ignored\n");
            continue;
        }
        std::vector<qwen::Message> next = history;  // becomes the history once the message fits
        next.push_back({"user", line});
        try {
            turn.ids = fit_history(next, o, m, tok, context, room);
        } catch (const qwen::Error& e) {
            fprintf(stderr, "qwen: error: %s; message ignored\n", e.what());
            continue;
        }
        if (size_t dropped = (history.size() + 1 - next.size()) / 2)
            fprintf(stderr, "qwen: the conversation outgrew the context of %d tokens; dropped the oldest %zu "
                    "exchange%s\n", context, dropped, dropped > 1 ? "s" : "");
        history = std::move(next);
        qwen::GenerateResult r = generate(session, turn, /*stream=*/true);
        write_out("\n");
        // The history is re-encoded from text each turn, so it must be valid UTF-8.
        history.push_back({"assistant", qwen::utf8_sanitize(r.text)});
        if (o.verbose) print_stats(r, "turn " + std::to_string(n) + ": ");
        n++;
    }
    return 0;
}

// -i with --raw, --in-prefix or --in-suffix: llama-cli's session without a chat template. The context starts as
// the -p/-f text (special tokens in it count), which is answered first unless -if; then each line adds
// PREFIX + line + SUFFIX (the line's special tokens stay text) and the answer continues the whole text, stop
// token included, so only the new part runs through the model each turn.
static int run_raw_interactive(const Options& o, const qwen::Model& m, qwen::Session& session,
                               const qwen::Tokenizer& tok, Request turn, const std::optional<std::string>& prompt) {
    const int context = session.engine.context_size();
    const int room = o.n_predict >= 0 ? std::min(o.n_predict, context - 1) : context / 4;
    const bool tty = isatty(STDIN_FILENO);
    const std::vector<int> start = prompt ? tok.encode(*prompt, /*parse_special=*/true) : std::vector<int>();
    const std::vector<int> prefix = tok.encode(o.in_prefix.value_or(""), /*parse_special=*/true);
    const std::vector<int> suffix = tok.encode(o.in_suffix.value_or(""), /*parse_special=*/true);
    std::vector<int> ids = start;
    if (tty) fprintf(stderr, "qwen: raw session with %s; /reset starts over, /exit or Ctrl-D leaves\n",
                     m.chat.model_name.c_str());
    auto answer = [&](std::vector<int>& text) {
        turn.ids = text;
        qwen::GenerateResult r = generate(session, turn, /*stream=*/true);
        write_out("\n");
        text.insert(text.end(), r.ids.begin(), r.ids.end());
        if (o.verbose) print_stats(r);
    };
    if (!o.interactive_first && !ids.empty()) {
        check_fits(ids.size(), context);
        answer(ids);
    }
    std::optional<std::string> none;
    std::string line;
    while (next_message(none, tty, line, o.color)) {
        if (line == "/exit") break;
        if (line == "/reset") {
            ids = start;
            fprintf(stderr, "qwen: context cleared\n");
            continue;
        }
        if (!qwen::utf8_valid(line)) {
            fprintf(stderr, "qwen: error: that line is not valid UTF-8; ignored\n");
            continue;
        }
        std::vector<int> next = ids, body = tok.encode(line, /*parse_special=*/false);
        next.insert(next.end(), prefix.begin(), prefix.end());
        next.insert(next.end(), body.begin(), body.end());
        next.insert(next.end(), suffix.begin(), suffix.end());
        if (next.empty()) continue;
        if (next.size() + size_t(room) > size_t(context)) {
            fprintf(stderr, "qwen: error: the session has filled the context of %d tokens (%zu used, %d kept for the "
                    "answer); /reset starts over\n", context, next.size(), room);
            continue;
        }
        ids = std::move(next);
        answer(ids);
    }
    return 0;
}

// ---- --batch: a prompt per line, plain text or a JSON object of settings --------------------------------

// A JSON string literal (with quotes) holding s: escapes ", \ and control characters; invalid UTF-8 in s
// becomes U+FFFD so the output is always valid UTF-8.
static std::string json_string(const std::string& s) {
    std::string out = "\"";
    for (char ch : qwen::utf8_sanitize(s)) {
        unsigned char c = (unsigned char)ch;
        if (c == '"' || c == '\\') out += '\\', out += ch;
        else if (c == '\n') out += "\\n";
        else if (c == '\t') out += "\\t";
        else if (c == '\r') out += "\\r";
        else if (c < 0x20) out += "\\u00" + std::string(1, "0123456789abcdef"[c >> 4]) + "0123456789abcdef"[c & 15];
        else out += ch;
    }
    return out + "\"";
}

#if QWEN_HAS_JSON
using json = nlohmann::json;

// A flat JSON object: strings, numbers, booleans, null, and lists of those (the "stop" list). Duplicate keys
// are refused (no setting is silently overridden), and so is deeper nesting, as soon as the parser meets it.
static json parse_flat_object(const std::string& line) {
    std::set<std::string> keys;
    json::parser_callback_t check = [&](int depth, json::parse_event_t event, json& parsed) {
        if (depth > 2) qwen::fail("values nested deeper than a list are not supported");
        if (event == json::parse_event_t::key && depth == 1 && !keys.insert(parsed.get<std::string>()).second)
            qwen::fail("duplicate key \"%s\"", parsed.get<std::string>().c_str());
        return true;
    };
    try {
        return json::parse(line, check);
    } catch (const json::exception& e) {
        qwen::fail("%s", e.what());
    }
}

static float json_float(const json& v, const char* key) {
    if (!v.is_number()) qwen::fail("\"%s\" must be a number", key);
    if (std::fabs(v.get<double>()) > FLT_MAX) qwen::fail("\"%s\" is out of range, got %s", key, v.dump().c_str());
    return v.get<float>();
}

static int json_int(const json& v, const char* key, double lo, double hi) {
    double d = v.is_number() ? v.get<double>() : NAN;
    if (!(d == std::floor(d) && d >= lo && d <= hi)) qwen::fail("\"%s\" must be an integer in [%.0f, %.0f]", key, lo, hi);
    return int(d);
}

// The fields of one JSON line on top of the command-line settings (null = not given).
static void apply_fields(const json& obj, Request& req) {
    if (!obj.is_object()) qwen::fail("a line starting with '{' must be a JSON object");
    qwen::SamplingParams& p = req.sampling;
    bool has_prompt = false;
    for (const auto& [key, v] : obj.items()) {
        if (v.is_null()) continue;
        const char* k = key.c_str();
        if (key == "prompt") {
            if (!v.is_string()) qwen::fail("\"prompt\" must be a string");
            req.text = v.get<std::string>(), has_prompt = true;
        } else if (key == "temperature") p.temperature = json_float(v, k);
        else if (key == "top_p") p.top_p = json_float(v, k);
        else if (key == "top_k") p.top_k = json_int(v, k, 0, INT32_MAX);
        else if (key == "min_p") p.min_p = json_float(v, k);
        else if (key == "repeat_penalty" || key == "repetition_penalty") p.repetition_penalty = json_float(v, k);
        else if (key == "presence_penalty") p.presence_penalty = json_float(v, k);
        else if (key == "frequency_penalty") p.frequency_penalty = json_float(v, k);
        else if (key == "repeat_last_n") p.repeat_last_n = json_int(v, k, -1, INT32_MAX);
        else if (key == "max_tokens") req.options.max_new_tokens = json_int(v, k, -1, INT32_MAX);
        else if (key == "seed") {
            if (!v.is_number_unsigned()) qwen::fail("\"seed\" must be an integer in [0, 2^64)");
            p.seed = v.get<uint64_t>();
        } else if (key == "stop") {
            json list = v.is_array() ? v : json::array({v});
            req.options.stop.clear();
            for (const json& s : list) {
                if (!s.is_string()) qwen::fail("\"stop\" must be a string or an array of strings");
                req.options.stop.push_back(s.get<std::string>());
            }
        } else qwen::fail("unknown field \"%s\"", k);
    }
    if (!has_prompt) qwen::fail("missing \"prompt\"");
    qwen::validate(p);
}
#endif

// Reads and checks every line before generating anything, so a mistake on line 90 fails at once.
static std::vector<Request> read_batch(const Options& o, const qwen::Model& m, const qwen::Tokenizer& tok,
                                       const Request& defaults, int context) {
    std::istringstream in(read_file(o.batch_file));
    std::vector<Request> batch;
    std::string line;
    for (int line_no = 1; std::getline(in, line); line_no++) {
        if (!line.empty() && line.back() == '\r') line.pop_back();  // CRLF files
        size_t first = line.find_first_not_of(" \t");
        if (first == std::string::npos) continue;
        Request req = defaults;
        try {
            check_utf8(line, "the line");
            check_not_far_too_long(line, m, context);
            if (line[first] != '{') req.text = line;
#if QWEN_HAS_JSON
            else apply_fields(parse_flat_object(line), req);
#else
            else qwen::fail("JSON lines need a build with nlohmann-json (nlohmann-json3-dev); this one reads plain lines");
#endif
            req.ids = prompt_ids(tok, m, o, req.text);
            check_fits(req.ids.size(), context);
        } catch (const qwen::Error& e) {
            qwen::fail("%s line %d: %s", o.batch_file.c_str(), line_no, e.what());
        }
        batch.push_back(std::move(req));
    }
    return batch;
}

// --batch: the prompts go through the scheduler together (--parallel at once); one JSON result per prompt, written
// in input order as soon as it and those before it are done. Prompts that share a beginning (the system prompt)
// share its KV-cache blocks.
static int run_batch(qwen::Engine& engine, const qwen::Tokenizer& tok, const std::vector<Request>& batch,
                     int parallel, const std::string& file) {
    double start = qwen::now_seconds();
    long total_tokens = 0;
    qwen::SchedulerOptions so;
    so.max_seqs = parallel;
    qwen::Scheduler sched(engine, tok, so);
    for (const Request& req : batch) sched.submit(req.ids, req.sampling, req.options);  // ids 0, 1, 2, ...
    std::vector<std::optional<qwen::GenerateResult>> results(batch.size());
    size_t written = 0;
    while (!sched.idle()) {
        for (qwen::Scheduler::Finished& f : sched.step()) {
            if (!f.error.empty()) qwen::fail("%s: prompt %d: %s", file.c_str(), f.id + 1, f.error.c_str());
            results[size_t(f.id)] = std::move(f.result);
        }
        for (; written < batch.size() && results[written]; written++) {
            const qwen::GenerateResult& r = *results[written];
            total_tokens += r.completion_tokens;
            write_out("{\"prompt\": " + json_string(batch[written].text) + ", \"response\": " + json_string(r.text) +
                      ", \"prompt_tokens\": " + std::to_string(r.prompt_tokens) +
                      ", \"completion_tokens\": " + std::to_string(r.completion_tokens) +
                      ", \"finish_reason\": " + json_string(r.finish_reason) + "}\n");
            results[written].reset();
        }
    }
    double seconds = qwen::now_seconds() - start;
    fprintf(stderr, "qwen: %zu prompts, %ld tokens generated in %.2f s (%.1f tok/s), %d at once, %d preemptions\n",
            batch.size(), total_tokens, seconds, seconds > 0 ? total_tokens / seconds : 0.0, parallel,
            sched.n_preempted());
    return 0;
}

// --grammar, --json-schema or --json-object, compiled and bound to the vocabulary once for every answer (null:
// none). A grammar or schema that does not compile is a command-line mistake (exit status 2), with its place.
static std::shared_ptr<const qwen::TokenGrammar> structured_output(const Options& o, const qwen::Model& m,
                                                                   const qwen::Tokenizer& tok) {
    if (!o.grammar_file && !o.schema_file && !o.json_object) return nullptr;
    const std::string* file = o.grammar_file ? &*o.grammar_file : o.schema_file ? &*o.schema_file : nullptr;
    std::string text = file ? read_file(*file) : "";
    qwen::Grammar g;
    try {
        g = o.grammar_file ? qwen::grammar_from_gbnf(text)
            : o.schema_file ? qwen::grammar_from_json_schema(text)
                            : qwen::grammar_json_object();
    } catch (const qwen::Error& e) {
        cli::usage_error("%s %s: %s", o.grammar_file ? "--grammar" : "--json-schema", file ? file->c_str() : "",
                         e.what());
    }
    double t0 = qwen::now_seconds();
    auto trie = std::make_shared<const qwen::TokenTrie>(m.vocab, std::min(tok.n_tokens(), m.config.vocab_size));
    auto bound = qwen::bind_grammar(std::move(g), trie);
    if (o.verbose) fprintf(stderr, "qwen: grammar bound to the vocabulary in %.3f s\n", qwen::now_seconds() - t0);
    return bound;
}

static void print_setup(const qwen::Model& m, const qwen::Engine& e, const qwen::SamplingParams& p) {
    const qwen::Config& c = m.config;
    fprintf(stderr, "qwen: model %s: arch qwen%d, %d layers, dim %d, ffn %d, heads %d/%d x %d, vocab %d\n",
            m.chat.model_name.c_str(), c.arch, c.n_layers, c.dim, c.ffn_dim, c.n_heads, c.n_kv_heads, c.head_dim,
            c.vocab_size);
    fprintf(stderr, "qwen: engine %s, context %d tokens\n", e.name(), e.context_size());
    fprintf(stderr,
            "qwen: sampling temp %g, top-p %g, top-k %d, min-p %g, repeat-penalty %g (last %d), presence-penalty %g, "
            "frequency-penalty %g, seed %" PRIu64 "\n",
            p.temperature, p.top_p, p.top_k, p.min_p, p.repetition_penalty, p.repeat_last_n, p.presence_penalty,
            p.frequency_penalty, p.seed);
}

static int run(const Options& o) {
    if (!o.bench.empty())
        return bench::run_bench(o.bench, o.bench_type, o.json, o.cpu, o.threads, o.parallel, stdout);
    if (o.system) check_utf8(*o.system, "the system prompt");
    std::optional<std::string> prompt;  // -p or -f
    if (o.prompt || o.prompt_file) {
        prompt = o.prompt ? *o.prompt : read_file(*o.prompt_file);
        check_utf8(*prompt, o.prompt ? "the prompt" : o.prompt_file->c_str());
    }
    if (o.tokenize) return run_tokenize(o, *prompt);

    qwen::Model model = qwen::load_model(o.model_path);
    const int context = cli::context_for(model, o.context);
    qwen::SamplingParams sampling = o.sampling.resolve(model.chat);
    sampling.seed = o.seed ? *o.seed : uint64_t(std::chrono::system_clock::now().time_since_epoch().count());
    qwen::Tokenizer tok(model.vocab);
    Request req = make_request(o, model, sampling);
    req.options.grammar = structured_output(o, model, tok);

    // All input is read and checked before the engine is made (on a GPU that uploads the weights).
    std::vector<Request> batch;
    if (!o.batch_file.empty()) {
        batch = read_batch(o, model, tok, req, context);
    } else if (!o.interactive) {
        req.text = *prompt;
        check_not_far_too_long(req.text, model, context);
        req.ids = prompt_ids(tok, model, o, req.text);
        check_fits(req.ids.size(), context);
    }
    const int parallel = o.batch_file.empty() ? 1 : o.parallel.empty() ? 8 : o.parallel[0];
    std::unique_ptr<qwen::Engine> engine =
        cli::open_engine(model, context, o.cpu, o.threads, o.verbose, "qwen", parallel, o.kv_gib);
    if (o.verbose) print_setup(model, *engine, sampling);
    if (o.verbose && !o.llama.note().empty()) fprintf(stderr, "qwen: %s\n", o.llama.note().c_str());
    if (!o.batch_file.empty()) return run_batch(*engine, tok, batch, parallel, o.batch_file);
    qwen::Session session(*engine, tok);
    if (o.interactive && o.raw) return run_raw_interactive(o, model, session, tok, req, prompt);
    if (o.interactive) return run_interactive(o, model, session, tok, req, prompt);
    return run_once(o, session, req);
}

int main(int argc, char** argv) {
    // A reader that goes away (| head) makes writes fail with EPIPE, reported as an error, instead of
    // killing the process with SIGPIPE.
    signal(SIGPIPE, SIG_IGN);
    // A closed stdout fails at once: a file or device opened later would otherwise take descriptor 1.
    if (fcntl(STDOUT_FILENO, F_GETFD) == -1) {
        fprintf(stderr, "qwen: error: cannot write to stdout: %s\n", strerror(errno));
        return 1;
    }
    try {
        Options o = parse_args(argc, argv);
        if (o.help) fputs(USAGE.c_str(), stdout);
        int status = o.help ? 0 : run(o);
        check_stdout();
        return status;
    } catch (const cli::UsageError& e) {
        fprintf(stderr, "qwen: error: %s (see qwen --help)\n", e.what());
        return 2;
    } catch (const std::exception& e) {  // qwen::Error, and std::bad_alloc for a context too big for memory
        fprintf(stderr, "qwen: error: %s\n", e.what());
        return 1;
    }
}
