// main.cu: the `qwen` command line. A thin client of qwen.cuh / qwen.hpp: it parses flags, picks the engine
// (GPU when present, else CPU), and runs one of the modes: one-shot prompt (chat or --raw), -i interactive
// chat, --batch over a file of prompts, --tokenize, --bench. stdout carries only generated text (or ids, or
// JSON lines), so it can be piped; everything else goes to stderr.
//
// Exit status: 0 ok, 1 runtime error (unreadable model, prompt too long, ...), 2 command-line error.

#include "qwen.cuh"

#include <cfloat>
#include <cinttypes>
#include <csignal>
#include <iostream>
#include <map>
#include <optional>
#include <sstream>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

// ============================================================================
// Command line: flags, usage text and strict number parsing
// ============================================================================

static const char* USAGE =
    "usage: qwen -m MODEL [options]\n"
    "\n"
    "Runs a Qwen model exported by tools/export.py. By default the prompt is sent as a chat message and the\n"
    "answer is streamed to stdout; statistics go to stderr.\n"
    "\n"
    "model and prompt:\n"
    "  -m, --model FILE         model file (weights.bin format)\n"
    "  -p, --prompt TEXT        prompt text\n"
    "  -f, --file FILE          read the prompt from FILE, byte for byte ('-' = stdin)\n"
    "  -sys, --system TEXT      system prompt (default: the model's own, if it has one)\n"
    "  --raw                    no chat template: complete the prompt text as is (special tokens written in\n"
    "                           it are recognised); stdout gets only the continuation\n"
    "  --no-think               Qwen3: answer without the <think> block\n"
    "\n"
    "generation:\n"
    "  -n, --n-predict N        max new tokens (default -1: until a stop token or the context is full)\n"
    "  -c, --ctx-size N         context length in tokens (default: min(model max, 4096))\n"
    "  --temp X                 temperature, 0 = greedy (default: the model's generation config, else 0.7)\n"
    "  --top-p X                nucleus sampling threshold in (0, 1] (default: model's, else 0.8)\n"
    "  --top-k N                keep the N most likely tokens, 0 = off (default: model's, else 20)\n"
    "  --min-p X                drop tokens below X times the top probability, in [0, 1] (default 0)\n"
    "  --repeat-penalty X       penalty for tokens already in the context, 1 = off (default: model's, else 1)\n"
    "  --presence-penalty X     penalty for tokens already generated, in [-2, 2] (default 0)\n"
    "  -s, --seed N             random seed (default: from the clock; -1 = from the clock)\n"
    "\n"
    "modes:\n"
    "  -i, --interactive        multi-turn chat reading lines from stdin; /reset clears the history,\n"
    "                           /exit or end of input (Ctrl-D) leaves\n"
    "  --batch FILE             one prompt per line, or JSON objects {\"prompt\": ..., \"temperature\": ...};\n"
    "                           writes one JSON result per line to stdout ('-' = stdin)\n"
    "  --tokenize               print the prompt's token ids (the whole chat prompt unless --raw) and exit;\n"
    "                           works on tokenizer-only files\n"
    "  --bench SHAPE            GPU benchmark of prefill and decode speed: SHAPE is qwen2.5-0.5b,\n"
    "                           qwen2.5-1.5b or qwen2-7b (synthetic weights) or a model file;\n"
    "                           with --cpu (and -t N) the CPU engine's speed instead\n"
    "  --json                   with --bench: one JSON object instead of a table\n"
    "\n"
    "engine:\n"
    "  --cpu                    use the CPU even when a CUDA device is present\n"
    "  -t, --threads N          CPU threads (default 0: all cores)\n"
    "  --verbose                print model, engine, sampling settings and per-turn details to stderr\n"
    "  -h, --help               show this help and exit\n";

// A mistake on the command line (exit status 2), as opposed to qwen::Error at run time (exit status 1).
struct UsageError : std::runtime_error {
    using std::runtime_error::runtime_error;
};

[[noreturn]] static void usage_error(const char* fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    std::string msg = qwen::vformat(fmt, ap);
    va_end(ap);
    throw UsageError(msg);
}

struct Options {
    std::string model_path;
    std::optional<std::string> prompt, prompt_file, system;
    std::string batch_file, bench;
    int n_predict = -1;  // -1 = until a stop token or the context is full
    int context = 0;     // 0 = min(model max_seq_len, 4096)
    int threads = 0;     // 0 = all cores
    // Sampling flags; unset ones keep qwen::default_sampling(model.chat).
    std::optional<float> temperature, top_p, min_p, repeat_penalty, presence_penalty;
    std::optional<int> top_k;
    std::optional<uint64_t> seed;
    bool raw = false, no_think = false, interactive = false, cpu = false, tokenize = false;
    bool verbose = false, json = false, help = false;
};

// Whole-string number parsing: "12x", "", "nan" and "inf" are errors, not 12 or 0. Sampling values are
// floats, so a number beyond float range (1e300, or 1e999 which strtod makes inf) is out of range here
// rather than becoming inf.
static float parse_float(const std::string& flag, const std::string& s) {
    char* end = nullptr;
    errno = 0;
    double v = strtod(s.c_str(), &end);
    bool overflow = errno == ERANGE && std::isinf(v);
    if (s.empty() || *end != '\0' || std::isnan(v) || (std::isinf(v) && !overflow))
        usage_error("%s expects a number, got '%s'", flag.c_str(), s.c_str());
    if (std::fabs(v) > FLT_MAX) usage_error("%s is out of range, got '%s'", flag.c_str(), s.c_str());
    return float(v);
}

static int parse_int(const std::string& flag, const std::string& s, long long lo, long long hi) {
    char* end = nullptr;
    errno = 0;
    long long v = strtoll(s.c_str(), &end, 10);
    if (s.empty() || *end != '\0') usage_error("%s expects an integer, got '%s'", flag.c_str(), s.c_str());
    if (errno == ERANGE) usage_error("%s is out of range, got '%s'", flag.c_str(), s.c_str());
    if (v < lo || v > hi) usage_error("%s must be in [%lld, %lld], got %lld", flag.c_str(), lo, hi, v);
    return int(v);
}

// A seed is any unsigned 64-bit integer; -1 (llama.cpp's convention) means "from the clock".
static std::optional<uint64_t> parse_seed(const std::string& flag, const std::string& s) {
    if (s == "-1") return std::nullopt;
    char* end = nullptr;
    errno = 0;
    unsigned long long v = strtoull(s.c_str(), &end, 10);
    if (s.empty() || s[0] == '-' || *end != '\0' || errno == ERANGE)
        usage_error("%s expects an integer in [0, 2^64) or -1, got '%s'", flag.c_str(), s.c_str());
    return uint64_t(v);
}

static Options parse_args(int argc, char** argv) {
    Options o;
    for (int i = 1; i < argc; i++) {
        const std::string flag = argv[i];
        auto value = [&]() -> std::string {
            if (i + 1 >= argc) usage_error("%s needs a value", flag.c_str());
            return argv[++i];
        };
        auto number = [&]() { return parse_float(flag, value()); };

        if (flag == "-m" || flag == "--model") o.model_path = value();
        else if (flag == "-p" || flag == "--prompt") o.prompt = value();
        else if (flag == "-f" || flag == "--file") o.prompt_file = value();
        else if (flag == "-sys" || flag == "--system") o.system = value();
        else if (flag == "-n" || flag == "--n-predict") o.n_predict = parse_int(flag, value(), -1, INT32_MAX);
        else if (flag == "-c" || flag == "--ctx-size") o.context = parse_int(flag, value(), 1, INT32_MAX);
        else if (flag == "--temp") o.temperature = number();
        else if (flag == "--top-p") o.top_p = number();
        else if (flag == "--top-k") o.top_k = parse_int(flag, value(), INT32_MIN, INT32_MAX);
        else if (flag == "--min-p") o.min_p = number();
        else if (flag == "--repeat-penalty") o.repeat_penalty = number();
        else if (flag == "--presence-penalty") o.presence_penalty = number();
        else if (flag == "-s" || flag == "--seed") o.seed = parse_seed(flag, value());
        else if (flag == "--raw") o.raw = true;
        else if (flag == "--no-think") o.no_think = true;
        else if (flag == "-i" || flag == "--interactive") o.interactive = true;
        else if (flag == "--batch") o.batch_file = value();
        else if (flag == "--cpu") o.cpu = true;
        else if (flag == "-t" || flag == "--threads") o.threads = parse_int(flag, value(), 0, 4096);
        else if (flag == "--tokenize") o.tokenize = true;
        else if (flag == "--verbose") o.verbose = true;
        else if (flag == "--bench") o.bench = value();
        else if (flag == "--json") o.json = true;
        else if (flag == "-h" || flag == "--help") o.help = true;
        else usage_error("unknown argument '%s'", flag.c_str());
    }
    if (o.help || !o.bench.empty()) return o;

    if (o.json) usage_error("--json only goes with --bench");
    if (o.model_path.empty()) usage_error("no model given (-m FILE)");
    if (o.prompt && o.prompt_file) usage_error("give the prompt with -p or with -f, not both");
    int modes = int(o.interactive) + int(!o.batch_file.empty()) + int(o.tokenize);
    if (modes > 1) usage_error("-i, --batch and --tokenize cannot be combined");
    if (!o.batch_file.empty() && (o.prompt || o.prompt_file))
        usage_error("--batch reads its prompts from the file; drop -p/-f");
    if (o.interactive && o.raw) usage_error("-i is a chat; it cannot be combined with --raw");
    if (o.raw && o.system) usage_error("-sys needs the chat template, which --raw turns off");
    if (o.raw && o.no_think) usage_error("--no-think needs the chat template, which --raw turns off");
    if (!o.interactive && o.batch_file.empty() && !o.prompt && !o.prompt_file)
        usage_error("no prompt given (-p TEXT, -f FILE, -i or --batch FILE)");
    return o;
}

// ============================================================================
// Input: files read byte for byte, prompt checks
// ============================================================================

// Prompt files and --batch files are read whole; a bigger one is refused rather than read until memory runs
// out (-f /dev/zero would never end).
static constexpr size_t MAX_INPUT_BYTES = size_t(64) << 20;

// Closes a file descriptor (if >= 0) when it goes out of scope.
struct FdCloser {
    int fd;
    ~FdCloser() {
        if (fd >= 0) close(fd);
    }
};

// The bytes of a file, a pipe or a character device, or of stdin for "-". Directories and other special
// files are refused, as are read errors and input over MAX_INPUT_BYTES.
static std::string read_file(const std::string& path) {
    const bool from_stdin = path == "-";
    const char* name = from_stdin ? "stdin" : path.c_str();
    int fd = from_stdin ? STDIN_FILENO : open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) qwen::fail("%s: cannot open: %s", name, strerror(errno));
    FdCloser closer{from_stdin ? -1 : fd};  // stdin stays open
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

// The checks Session::generate makes, done early: before loading a batch, and per turn in -i.
static void check_fits(size_t n_prompt, int context) {
    if (n_prompt == 0) qwen::fail("the prompt is empty");
    if (n_prompt > size_t(context))
        qwen::fail("prompt is %zu tokens, %zu more than the context of %d", n_prompt, n_prompt - size_t(context),
                   context);
}

// ============================================================================
// JSON for --batch: a reader for flat objects and a string writer
// ============================================================================

// A JSON string literal (with quotes) holding s: escapes ", \ and control characters; invalid UTF-8 in s
// becomes U+FFFD so the output is always valid UTF-8.
static std::string json_string(const std::string& s) {
    std::string out = "\"";
    for (char ch : qwen::utf8_sanitize(s)) {
        unsigned char c = (unsigned char)ch;
        switch (c) {
            case '"': out += "\\\""; break;
            case '\\': out += "\\\\"; break;
            case '\n': out += "\\n"; break;
            case '\r': out += "\\r"; break;
            case '\t': out += "\\t"; break;
            case '\b': out += "\\b"; break;
            case '\f': out += "\\f"; break;
            default:
                if (c < 0x20) {
                    char buf[8];
                    snprintf(buf, sizeof buf, "\\u%04x", c);
                    out += buf;
                } else {
                    out += ch;
                }
        }
    }
    return out + "\"";
}

// One value of a flat JSON object. Nested objects are not needed by --batch and are rejected; arrays may
// hold only strings (the "stop" list).
struct JsonValue {
    enum Kind { NUL, BOOL, NUMBER, STRING, STRING_ARRAY } kind = NUL;
    bool boolean = false;
    double number = 0;
    std::string text;                  // STRING: the decoded string; NUMBER: the literal (exact big integers)
    std::vector<std::string> strings;  // STRING_ARRAY
};
using JsonObject = std::map<std::string, JsonValue>;

// Recursive-descent reader over one line of text (RFC 8259 grammar, restricted as above).
struct JsonReader {
    const std::string& s;
    size_t pos = 0;

    explicit JsonReader(const std::string& text) : s(text) {}

    [[noreturn]] void error(const char* what) const { qwen::fail("%s at column %zu", what, pos + 1); }
    void skip_space() {
        while (pos < s.size() && (s[pos] == ' ' || s[pos] == '\t' || s[pos] == '\n' || s[pos] == '\r')) pos++;
    }
    bool at(char c) {
        skip_space();
        return pos < s.size() && s[pos] == c;
    }
    void expect(char c) {
        if (!at(c)) {
            char what[32];
            snprintf(what, sizeof what, "expected '%c'", c);
            error(what);
        }
        pos++;
    }

    uint32_t hex4() {
        if (pos + 4 > s.size()) error("truncated \\u escape");
        uint32_t v = 0;
        for (int k = 0; k < 4; k++) {
            char c = s[pos++];
            int d = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10
                  : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
            if (d < 0) error("bad hex digit in \\u escape");
            v = v * 16 + uint32_t(d);
        }
        return v;
    }

    std::string string() {
        expect('"');
        std::string out;
        while (true) {
            if (pos >= s.size()) error("unterminated string");
            unsigned char c = (unsigned char)s[pos++];
            if (c == '"') return out;
            if (c < 0x20) error("raw control character in string (write it as an escape)");
            if (c != '\\') {
                out += char(c);
                continue;
            }
            if (pos >= s.size()) error("unterminated string");
            switch (s[pos++]) {
                case '"': out += '"'; break;
                case '\\': out += '\\'; break;
                case '/': out += '/'; break;
                case 'b': out += '\b'; break;
                case 'f': out += '\f'; break;
                case 'n': out += '\n'; break;
                case 'r': out += '\r'; break;
                case 't': out += '\t'; break;
                case 'u': out += unicode_escape(); break;
                default: pos--; error("unknown escape");
            }
        }
    }

    // \uXXXX, where a UTF-16 surrogate pair \uD83D\uDE00 stands for one code point above U+FFFF.
    std::string unicode_escape() {
        uint32_t cp = hex4();
        if (cp >= 0xDC00 && cp <= 0xDFFF) error("lone low surrogate in \\u escape");
        if (cp >= 0xD800 && cp <= 0xDBFF) {
            if (s.compare(pos, 2, "\\u") != 0) error("high surrogate not followed by a low surrogate");
            pos += 2;
            uint32_t low = hex4();
            if (low < 0xDC00 || low > 0xDFFF) error("high surrogate not followed by a low surrogate");
            cp = 0x10000 + ((cp - 0xD800) << 10) + (low - 0xDC00);
        }
        std::string out;
        qwen::utf8_append(out, cp);
        return out;
    }

    JsonValue number() {
        size_t start = pos;
        auto digits = [&]() {
            size_t d = pos;
            while (pos < s.size() && s[pos] >= '0' && s[pos] <= '9') pos++;
            if (pos == d) error("bad number");
        };
        if (s[pos] == '-') pos++;
        if (pos < s.size() && s[pos] == '0') pos++;
        else digits();
        if (pos < s.size() && s[pos] == '.') { pos++; digits(); }
        if (pos < s.size() && (s[pos] == 'e' || s[pos] == 'E')) {
            pos++;
            if (pos < s.size() && (s[pos] == '+' || s[pos] == '-')) pos++;
            digits();
        }
        JsonValue v;
        v.kind = JsonValue::NUMBER;
        v.text = s.substr(start, pos - start);
        v.number = strtod(v.text.c_str(), nullptr);
        if (!std::isfinite(v.number)) error("number out of range");
        return v;
    }

    bool literal(const char* word) {
        size_t n = strlen(word);
        if (s.compare(pos, n, word) != 0) return false;
        pos += n;
        return true;
    }

    JsonValue value() {
        skip_space();
        if (pos >= s.size()) error("missing value");
        JsonValue v;
        char c = s[pos];
        if (c == '"') {
            v.kind = JsonValue::STRING;
            v.text = string();
        } else if (c == '[') {
            v.kind = JsonValue::STRING_ARRAY;
            pos++;
            if (at(']')) { pos++; return v; }
            while (true) {
                if (!at('"')) error("arrays may only hold strings");
                v.strings.push_back(string());
                if (!at(',')) break;
                pos++;
            }
            expect(']');
        } else if (c == '-' || (c >= '0' && c <= '9')) {
            v = number();
        } else if (literal("true")) {
            v.kind = JsonValue::BOOL, v.boolean = true;
        } else if (literal("false")) {
            v.kind = JsonValue::BOOL, v.boolean = false;
        } else if (!literal("null")) {
            error(c == '{' ? "nested objects are not supported" : "unexpected character");
        }
        return v;
    }

    JsonObject object() {
        JsonObject obj;
        expect('{');
        if (at('}')) {
            pos++;
        } else {
            while (true) {
                skip_space();
                size_t key_pos = pos;
                std::string key = string();
                if (obj.count(key)) {
                    pos = key_pos;
                    error("duplicate key");
                }
                expect(':');
                obj[key] = value();
                if (!at(',')) break;
                pos++;
            }
            expect('}');
        }
        skip_space();
        if (pos != s.size()) error("text after the object");
        return obj;
    }
};

// ============================================================================
// Engine, sampling settings and statistics
// ============================================================================

// The model's generation-config defaults, overridden by the flags given, then validated.
static qwen::SamplingParams sampling_from_flags(const qwen::ChatInfo& chat, const Options& o) {
    qwen::SamplingParams p = qwen::default_sampling(chat);
    if (o.temperature) p.temperature = *o.temperature;
    if (o.top_p) p.top_p = *o.top_p;
    if (o.top_k) p.top_k = *o.top_k;
    if (o.min_p) p.min_p = *o.min_p;
    if (o.repeat_penalty) p.repetition_penalty = *o.repeat_penalty;
    if (o.presence_penalty) p.presence_penalty = *o.presence_penalty;
    p.seed = o.seed ? *o.seed : uint64_t(std::chrono::system_clock::now().time_since_epoch().count());
    try {
        qwen::validate(p);
    } catch (const qwen::Error& e) {
        throw UsageError(e.what());  // a flag value is out of range: a command-line mistake
    }
    return p;
}

static int context_for(const qwen::Model& model, const Options& o) {
    int model_max = model.config.max_seq_len;
    if (o.context > model_max)
        usage_error("-c %d is larger than the model's max_seq_len of %d", o.context, model_max);
    return o.context > 0 ? o.context : std::min(model_max, 4096);
}

static void print_setup(const qwen::Model& m, const qwen::Engine& e, const qwen::SamplingParams& p) {
    const qwen::Config& c = m.config;
    fprintf(stderr, "qwen: model %s: arch qwen%d, %d layers, dim %d, ffn %d, heads %d/%d x %d, vocab %d\n",
            m.chat.model_name.c_str(), c.arch, c.n_layers, c.dim, c.ffn_dim, c.n_heads, c.n_kv_heads, c.head_dim,
            c.vocab_size);
    fprintf(stderr, "qwen: engine %s, context %d tokens\n", e.name(), e.context_size());
    fprintf(stderr,
            "qwen: sampling temp %g, top-p %g, top-k %d, min-p %g, repeat-penalty %g, presence-penalty %g, "
            "seed %" PRIu64 "\n",
            p.temperature, p.top_p, p.top_k, p.min_p, p.repetition_penalty, p.presence_penalty, p.seed);
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

// Fails when stdout cannot take the output (closed, a full disk, a reader that has gone): the run is an
// error then, not a success with the text lost.
static void check_stdout() {
    if (fflush(stdout) != 0 || ferror(stdout)) qwen::fail("cannot write to stdout: %s", strerror(errno));
}

// Writes generated pieces to stdout as they come (flushed, so a pipe sees them at once).
static void write_out(const std::string& s) {
    fwrite(s.data(), 1, s.size(), stdout);
    check_stdout();
}

// Session::generate's text callback for the streaming modes: every piece to stdout, never cancelling.
static bool stream_to_stdout(const std::string& piece) {
    write_out(piece);
    return true;
}

// ============================================================================
// Modes
// ============================================================================

// The messages of a one-turn chat: the -sys system prompt (if given) and the user's text.
static std::vector<qwen::Message> one_turn(const Options& o, const std::string& user) {
    std::vector<qwen::Message> msgs;
    if (o.system) msgs.push_back({"system", *o.system});
    msgs.push_back({"user", user});
    return msgs;
}

// The limits every mode generates under: -n, and the model's stop tokens.
static qwen::GenerateOptions generate_options(const Options& o, const qwen::Model& m) {
    qwen::GenerateOptions gen;
    gen.max_new_tokens = o.n_predict;
    gen.stop_ids = m.chat.stop_ids;
    return gen;
}

static qwen::ChatOptions chat_options(const Options& o) {
    qwen::ChatOptions c;
    c.enable_thinking = !o.no_think;
    return c;
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

// Ids of a prompt: raw text (special tokens written in it recognised) or a one-turn chat.
static std::vector<int> prompt_ids(const qwen::Tokenizer& tok, const qwen::Model& m, const Options& o,
                                   const std::string& text) {
    if (o.raw) return tok.encode(text, /*parse_special=*/true);
    return qwen::chat_tokens(tok, m.chat, one_turn(o, text), chat_options(o));
}

static std::string prompt_text(const Options& o) {
    std::string text = o.prompt ? *o.prompt : read_file(*o.prompt_file);
    check_utf8(text, o.prompt ? "the prompt" : o.prompt_file->c_str());
    return text;
}

// --tokenize: ids of the prompt on one line. Needs only the tokenizer, so tokenizer-only files work.
static int run_tokenize(const Options& o) {
    qwen::Model m = qwen::load_tokenizer(o.model_path);
    qwen::Tokenizer tok(m.vocab);
    if (o.system) check_utf8(*o.system, "the system prompt");
    std::vector<int> ids = prompt_ids(tok, m, o, prompt_text(o));
    std::string line;
    for (size_t i = 0; i < ids.size(); i++) line += (i ? " " : "") + std::to_string(ids[i]);
    write_out(line + "\n");
    return 0;
}

// One prompt, answer streamed to stdout. Chat mode ends the answer with a newline; --raw prints the
// continuation only.
static int run_once(const Options& o, const qwen::Model& m, qwen::Engine& engine, const qwen::Tokenizer& tok,
                    const qwen::SamplingParams& params, const std::vector<int>& prompt) {
    qwen::Session session(engine, tok);
    qwen::Sampler sampler(params);
    qwen::GenerateResult r = session.generate(prompt, sampler, generate_options(o, m), stream_to_stdout);
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

// The next chat message: `pending` (the -p/-f prompt) first if given, then lines of stdin, with a "> "
// prompt on a terminal. False at the end of input.
static bool next_message(std::optional<std::string>& pending, bool tty, std::string& line) {
    if (pending) {
        line = std::move(*pending);
        pending.reset();
        return true;
    }
    if (tty) fputs("> ", stderr);
    if (!std::getline(std::cin, line)) return false;
    if (!line.empty() && line.back() == '\r') line.pop_back();  // CRLF input: "/exit\r" is /exit
    return true;
}

// -i: a chat that keeps its history. Each turn's prompt extends the previous one, so the Session only
// prefills the new part; the KV cache of earlier turns is reused.
static int run_interactive(const Options& o, const qwen::Model& m, qwen::Engine& engine,
                           const qwen::Tokenizer& tok, const qwen::SamplingParams& params,
                           std::optional<std::string> pending) {
    const int context = engine.context_size();
    // Room kept free for each answer when old turns must go: -n when given, else a quarter of the context.
    const int room = o.n_predict >= 0 ? std::min(o.n_predict, context - 1) : context / 4;
    const bool tty = isatty(STDIN_FILENO);
    std::vector<qwen::Message> base;
    if (o.system) base.push_back({"system", *o.system});
    std::vector<qwen::Message> history = base;

    qwen::Session session(engine, tok);
    qwen::Sampler sampler(params);
    const qwen::GenerateOptions gen = generate_options(o, m);
    if (tty) fprintf(stderr, "qwen: chatting with %s; /reset clears the history, /exit or Ctrl-D leaves\n",
                     m.chat.model_name.c_str());

    std::string line;
    for (int turn = 1; next_message(pending, tty, line);) {
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
        std::vector<int> prompt;
        try {
            prompt = fit_history(next, o, m, tok, context, room);
        } catch (const qwen::Error& e) {
            fprintf(stderr, "qwen: error: %s; message ignored\n", e.what());
            continue;
        }
        if (size_t dropped = (history.size() + 1 - next.size()) / 2)
            fprintf(stderr, "qwen: the conversation outgrew the context of %d tokens; dropped the oldest %zu "
                    "exchange%s\n", context, dropped, dropped > 1 ? "s" : "");
        history = std::move(next);
        qwen::GenerateResult r = session.generate(prompt, sampler, gen, stream_to_stdout);
        write_out("\n");
        // The history is re-encoded from text each turn, so it must be valid UTF-8.
        history.push_back({"assistant", qwen::utf8_sanitize(r.text)});
        if (o.verbose) print_stats(r, "turn " + std::to_string(turn) + ": ");
        turn++;
    }
    return 0;
}

// One --batch line after parsing: its prompt ids and settings.
struct BatchItem {
    std::string prompt;
    std::vector<int> ids;
    qwen::SamplingParams params;
    qwen::GenerateOptions gen;
};

static float json_float(const JsonValue& v, const char* key) {
    if (v.kind != JsonValue::NUMBER) qwen::fail("\"%s\" must be a number", key);
    if (std::fabs(v.number) > FLT_MAX) qwen::fail("\"%s\" is out of range, got %s", key, v.text.c_str());
    return float(v.number);
}

static int json_int(const JsonValue& v, const char* key, double lo, double hi) {
    if (v.kind != JsonValue::NUMBER || v.number != std::floor(v.number) || v.number < lo || v.number > hi)
        qwen::fail("\"%s\" must be an integer in [%.0f, %.0f]", key, lo, hi);
    return int(v.number);
}

// Seeds are unsigned 64-bit: read from the number's literal, since a double holds only 53 bits exactly.
static uint64_t json_seed(const JsonValue& v) {
    char* end = nullptr;
    errno = 0;
    unsigned long long seed = v.kind == JsonValue::NUMBER ? strtoull(v.text.c_str(), &end, 10) : 0;
    if (v.kind != JsonValue::NUMBER || v.text[0] == '-' || *end != '\0' || errno == ERANGE)
        qwen::fail("\"seed\" must be an integer in [0, 2^64)");
    return seed;
}

// Applies the fields of one JSONL object on top of the command-line settings.
static void apply_fields(const JsonObject& obj, BatchItem& item) {
    qwen::SamplingParams& p = item.params;
    bool has_prompt = false;
    for (const auto& [key, v] : obj) {
        if (v.kind == JsonValue::NUL) continue;  // null = not given
        const char* k = key.c_str();
        if (key == "prompt") {
            if (v.kind != JsonValue::STRING) qwen::fail("\"prompt\" must be a string");
            item.prompt = v.text, has_prompt = true;
        } else if (key == "temperature") p.temperature = json_float(v, k);
        else if (key == "top_p") p.top_p = json_float(v, k);
        else if (key == "top_k") p.top_k = json_int(v, k, 0, INT32_MAX);
        else if (key == "min_p") p.min_p = json_float(v, k);
        else if (key == "repeat_penalty" || key == "repetition_penalty") p.repetition_penalty = json_float(v, k);
        else if (key == "presence_penalty") p.presence_penalty = json_float(v, k);
        else if (key == "max_tokens") item.gen.max_new_tokens = json_int(v, k, -1, INT32_MAX);
        else if (key == "seed") p.seed = json_seed(v);
        else if (key == "stop" && v.kind == JsonValue::STRING) item.gen.stop = {v.text};
        else if (key == "stop" && v.kind == JsonValue::STRING_ARRAY) item.gen.stop = v.strings;
        else if (key == "stop") qwen::fail("\"stop\" must be a string or an array of strings");
        else qwen::fail("unknown field \"%s\"", k);
    }
    if (!has_prompt) qwen::fail("missing \"prompt\"");
    qwen::validate(p);
}

// Reads and checks every line before generating anything, so a mistake on line 90 fails at once.
static std::vector<BatchItem> read_batch(const Options& o, const qwen::Model& m, const qwen::Tokenizer& tok,
                                         const qwen::SamplingParams& params, int context) {
    std::istringstream in(read_file(o.batch_file));
    std::vector<BatchItem> items;
    std::string line;
    for (int line_no = 1; std::getline(in, line); line_no++) {
        if (!line.empty() && line.back() == '\r') line.pop_back();  // CRLF files
        if (line.find_first_not_of(" \t") == std::string::npos) continue;
        BatchItem item;
        item.params = params;
        item.gen = generate_options(o, m);
        try {
            check_utf8(line, "the line");
            if (line[line.find_first_not_of(" \t")] == '{') apply_fields(JsonReader(line).object(), item);
            else item.prompt = line;
            item.ids = prompt_ids(tok, m, o, item.prompt);
            check_fits(item.ids.size(), context);
        } catch (const qwen::Error& e) {
            qwen::fail("%s line %d: %s", o.batch_file.c_str(), line_no, e.what());
        }
        items.push_back(std::move(item));
    }
    return items;
}

// --batch: one JSON result per prompt, in order. A shared Session reuses the common prefix (the system prompt).
static int run_batch(qwen::Engine& engine, const qwen::Tokenizer& tok, std::vector<BatchItem>& items) {
    qwen::Session session(engine, tok);
    double start = qwen::now_seconds();
    long total_tokens = 0;
    for (BatchItem& item : items) {
        qwen::Sampler sampler(item.params);
        qwen::GenerateResult r = session.generate(item.ids, sampler, item.gen);
        total_tokens += r.completion_tokens;
        write_out("{\"prompt\": " + json_string(item.prompt) + ", \"response\": " + json_string(r.text) +
                  ", \"prompt_tokens\": " + std::to_string(r.prompt_tokens) +
                  ", \"completion_tokens\": " + std::to_string(r.completion_tokens) +
                  ", \"finish_reason\": " + json_string(r.finish_reason) + "}\n");
    }
    double seconds = qwen::now_seconds() - start;
    fprintf(stderr, "qwen: %zu prompts, %ld tokens generated in %.2f s (%.1f tok/s)\n", items.size(),
            total_tokens, seconds, seconds > 0 ? total_tokens / seconds : 0.0);
    return 0;
}

static int run(const Options& o) {
    if (!o.bench.empty())
        return o.cpu ? qwen::run_cpu_bench(o.bench, o.json, o.threads, stdout) : qwen::run_bench(o.bench, o.json);
    if (o.tokenize) return run_tokenize(o);

    qwen::Model model = qwen::load_model(o.model_path);
    const int context = context_for(model, o);
    qwen::SamplingParams params = sampling_from_flags(model.chat, o);
    qwen::Tokenizer tok(model.vocab);

    // All input is read and checked before the engine is made (on a GPU that uploads the weights).
    std::vector<BatchItem> batch;
    std::optional<std::string> first_message;
    std::vector<int> prompt;
    if (o.system) check_utf8(*o.system, "the system prompt");
    if (!o.batch_file.empty()) {
        batch = read_batch(o, model, tok, params, context);
    } else if (o.interactive) {
        if (o.prompt || o.prompt_file) first_message = prompt_text(o);
    } else {
        std::string text = prompt_text(o);
        check_not_far_too_long(text, model, context);
        prompt = prompt_ids(tok, model, o, text);
        check_fits(prompt.size(), context);
    }

    std::unique_ptr<qwen::Engine> engine = qwen::make_engine(model, context, o.cpu, o.threads, o.verbose);
    if (o.verbose) print_setup(model, *engine, params);
    if (!o.batch_file.empty()) return run_batch(*engine, tok, batch);
    if (o.interactive) return run_interactive(o, model, *engine, tok, params, first_message);
    return run_once(o, model, *engine, tok, params, prompt);
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
        if (o.help) fputs(USAGE, stdout);
        int status = o.help ? 0 : run(o);
        check_stdout();
        return status;
    } catch (const UsageError& e) {
        fprintf(stderr, "qwen: error: %s (see qwen --help)\n", e.what());
        return 2;
    } catch (const std::exception& e) {  // qwen::Error, and std::bad_alloc for a context too big for memory
        fprintf(stderr, "qwen: error: %s\n", e.what());
        return 1;
    }
}
