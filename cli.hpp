// cli.hpp: what the two front ends (main.cu: ./qwen, server.cu: ./qwen-server) share, so they parse and
// report the same way. Not part of the library: a program that includes qwen.hpp / qwen.cuh does not need it.
//
// provides (namespace cli):
//   the engine headers         qwen.cuh when compiled by nvcc (or for the emulated device), else qwen.hpp alone
//                              (a build without CUDA: the CPU engine only); QWEN_HAS_CUDA says which
//   UsageError, usage_error    a command-line mistake (exit status 2), as opposed to qwen::Error (exit status 1)
//   parse_float, parse_int,    whole-string number parsing: "12x", "", "nan", "inf" and out-of-range values are
//   parse_seed                 usage errors, never 12, 0 or a clamped value
//   SamplingFlags              --temp --top-p --top-k --min-p --repeat-penalty --repeat-last-n --presence-penalty
//                              --frequency-penalty: parsing, help text, and the parameters they give over the
//                              model's own defaults
//   LlamaFlags                 llama.cpp's -ngl / --n-gpu-layers and -fa / --flash-attn, accepted for habit's sake
//                              (every layer runs on the GPU when there is one; flash attention is always on)
//   context_for                -c: the model's max_seq_len at most, min(max_seq_len, 4096) by default
//   open_engine                the GPU engine when there is a usable GPU, else the CPU engine (said on stderr)
#pragma once

#if defined(__CUDACC__) || defined(QWEN_CUDA_EMU)
#include "qwen.cuh"
#define QWEN_HAS_CUDA 1
#else
#include "qwen.hpp"
#define QWEN_HAS_CUDA 0
#endif

#include <cerrno>
#include <cfloat>
#include <climits>
#include <cmath>
#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>

namespace cli {

// A mistake on the command line (exit status 2), as opposed to qwen::Error at run time (exit status 1).
struct UsageError : std::runtime_error {
    using std::runtime_error::runtime_error;
};

[[noreturn]] inline void usage_error(const char* fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    std::string msg = qwen::vformat(fmt, ap);
    va_end(ap);
    throw UsageError(msg);
}

// A float flag. A number beyond float range (1e300, or 1e999 which strtod makes inf) is out of range here
// rather than becoming inf.
inline float parse_float(const std::string& flag, const std::string& s) {
    char* end = nullptr;
    errno = 0;
    double v = strtod(s.c_str(), &end);
    bool overflow = errno == ERANGE && std::isinf(v);
    if (s.empty() || *end != '\0' || std::isnan(v) || (std::isinf(v) && !overflow))
        usage_error("%s expects a number, got '%s'", flag.c_str(), s.c_str());
    if (std::fabs(v) > FLT_MAX) usage_error("%s is out of range, got '%s'", flag.c_str(), s.c_str());
    return float(v);
}

// An integer flag in [lo, hi].
inline long long parse_int(const std::string& flag, const std::string& s, long long lo, long long hi) {
    char* end = nullptr;
    errno = 0;
    long long v = strtoll(s.c_str(), &end, 10);
    if (s.empty() || *end != '\0') usage_error("%s expects an integer, got '%s'", flag.c_str(), s.c_str());
    if (errno == ERANGE) usage_error("%s is out of range, got '%s'", flag.c_str(), s.c_str());
    if (v < lo || v > hi) usage_error("%s must be in [%lld, %lld], got %lld", flag.c_str(), lo, hi, v);
    return v;
}

// A seed is any unsigned 64-bit integer; -1 (llama.cpp's convention) means "from the clock" (nullopt).
inline std::optional<uint64_t> parse_seed(const std::string& flag, const std::string& s) {
    if (s == "-1") return std::nullopt;
    char* end = nullptr;
    errno = 0;
    unsigned long long v = strtoull(s.c_str(), &end, 10);
    if (s.empty() || s[0] == '-' || *end != '\0' || errno == ERANGE)
        usage_error("%s expects an integer in [0, 2^64) or -1, got '%s'", flag.c_str(), s.c_str());
    return uint64_t(v);
}

// The sampling flags both programs take. Unset ones keep qwen::default_sampling(model.chat): the checkpoint's
// generation config, else the Sampler's defaults.
struct SamplingFlags {
    std::optional<float> temperature, top_p, min_p, repeat_penalty, presence_penalty, frequency_penalty;
    std::optional<int> top_k, repeat_last_n;

    static constexpr const char* HELP =
        "  --temp X                 temperature, 0 = greedy (default: the model's generation config, else 0.7)\n"
        "  --top-p X                nucleus sampling threshold in (0, 1] (default: the model's, else 0.8)\n"
        "  --top-k N                keep the N most likely tokens, 0 = off (default: the model's, else 20)\n"
        "  --min-p X                drop tokens below X times the top probability, in [0, 1] (default 0)\n"
        "  --repeat-penalty X       penalty for tokens already in the context, 1 = off (default: the model's, else 1)\n"
        "  --repeat-last-n N        the repeat penalty looks at the last N tokens only; -1 = all (default), 0 = off\n"
        "  --presence-penalty X     penalty for tokens already generated, in [-2, 2] (default 0)\n"
        "  --frequency-penalty X    penalty per occurrence of a generated token, in [-2, 2] (default 0)\n";

    // Takes `flag` if it is a sampling flag, reading its value with value(); false if it is not one.
    template <typename Value>
    bool take(const std::string& flag, Value&& value) {
        if (flag == "--temp") temperature = parse_float(flag, value());
        else if (flag == "--top-p") top_p = parse_float(flag, value());
        else if (flag == "--top-k") top_k = int(parse_int(flag, value(), INT32_MIN, INT32_MAX));
        else if (flag == "--min-p") min_p = parse_float(flag, value());
        else if (flag == "--repeat-penalty") repeat_penalty = parse_float(flag, value());
        else if (flag == "--presence-penalty") presence_penalty = parse_float(flag, value());
        else if (flag == "--frequency-penalty") frequency_penalty = parse_float(flag, value());
        else if (flag == "--repeat-last-n") repeat_last_n = int(parse_int(flag, value(), -1, INT32_MAX));
        else return false;
        return true;
    }

    // The model's defaults with these flags on top; a value out of range is a usage error.
    qwen::SamplingParams resolve(const qwen::ChatInfo& chat) const {
        qwen::SamplingParams p = qwen::default_sampling(chat);
        if (temperature) p.temperature = *temperature;
        if (top_p) p.top_p = *top_p;
        if (top_k) p.top_k = *top_k;
        if (min_p) p.min_p = *min_p;
        if (repeat_penalty) p.repetition_penalty = *repeat_penalty;
        if (presence_penalty) p.presence_penalty = *presence_penalty;
        if (frequency_penalty) p.frequency_penalty = *frequency_penalty;
        if (repeat_last_n) p.repeat_last_n = *repeat_last_n;
        try {
            qwen::validate(p);
        } catch (const qwen::Error& e) {
            throw UsageError(e.what());
        }
        return p;
    }
};

// llama.cpp's engine flags, which its users type out of habit. They change nothing here: every layer runs on the
// GPU when there is one, and attention is always the fused (flash) kind. take() consumes the flag and its value
// (-fa's is optional: on, off or auto) from argv; note() is the --verbose line that says so.
struct LlamaFlags {
    std::optional<int> n_gpu_layers;
    std::optional<std::string> flash_attn;

    static constexpr const char* HELP =
        "  -ngl, --n-gpu-layers N   accepted for llama.cpp habits: every layer runs on the GPU when there is one\n"
        "  -fa, --flash-attn [on|off|auto]  accepted for llama.cpp habits: flash attention is always on\n";

    bool take(int argc, char** argv, int& i) {
        const std::string flag = argv[i];
        if (flag == "-ngl" || flag == "--n-gpu-layers" || flag == "--gpu-layers") {
            if (i + 1 >= argc) usage_error("%s needs a value", flag.c_str());
            n_gpu_layers = int(parse_int(flag, argv[++i], -1, INT32_MAX));
            return true;
        }
        if (flag == "-fa" || flag == "--flash-attn") {
            flash_attn = "on";
            if (i + 1 < argc) {
                std::string v = argv[i + 1];
                if (v == "on" || v == "off" || v == "auto" || v == "1" || v == "0") flash_attn = argv[++i];
            }
            return true;
        }
        return false;
    }
    std::string note() const {
        std::string s;
        if (n_gpu_layers)
            s += "-ngl " + std::to_string(*n_gpu_layers) + " has no effect: every layer runs on the GPU when there is "
                 "one";
        if (flash_attn)
            s += std::string(s.empty() ? "" : "; ") + "-fa " + *flash_attn +
                 " has no effect: flash attention is always on";
        return s;
    }
};

// The KV-cache size for -c N (0 = not given): at most the model's max_seq_len, by default at most 4096.
inline int context_for(const qwen::Model& model, int requested) {
    int model_max = model.config.max_seq_len;
    if (requested > model_max) usage_error("-c %d is larger than the model's max_seq_len of %d", requested, model_max);
    return requested > 0 ? requested : std::min(model_max, 4096);
}

// The KV pool in blocks: room for `parallel` sequences of the whole context (the CPU's pool follows -c and
// --parallel), or kv_gib GiB of it when given (--kv-memory). A pool smaller than one context is a usage error.
inline int kv_pool_blocks(const qwen::Config& c, int context, int parallel, double kv_gib, int value_bytes) {
    int one = qwen::kv_blocks_for(context);
    if (kv_gib <= 0) return int(std::min<int64_t>(int64_t(one) * std::max(parallel, 1), INT32_MAX));
    double blocks = kv_gib * double(1ull << 30) / double(qwen::kv_block_bytes(c, value_bytes));
    if (blocks < one)
        usage_error("--kv-memory %g GiB holds %d tokens, less than one context of %d tokens (-c)", kv_gib,
                    int(blocks) * qwen::KV_BLOCK, context);
    return int(std::min(blocks, double(INT32_MAX)));
}

// The GPU engine when a usable CUDA device is present and force_cpu is false, else the CPU engine (n_threads:
// 0 = all cores), with a KV pool for `parallel` sequences (see kv_pool_blocks). A fallback the user did not ask
// for is said in one line on stderr (`prog: <why>, running on the CPU`); --cpu says nothing. verbose adds the
// memory the engine took.
inline std::unique_ptr<qwen::Engine> open_engine(const qwen::Model& m, int context, bool force_cpu, int n_threads,
                                                 bool verbose, const char* prog, int parallel = 1,
                                                 double kv_gib = 0) {
#if QWEN_HAS_CUDA
    std::string why = force_cpu ? "" : qwen::gpu_unavailable();
    if (!force_cpu && why.empty()) {
        int blocks = kv_pool_blocks(m.config, context, parallel, kv_gib, 2);
        auto e = std::make_unique<qwen::GpuEngine>(m, context, blocks);
        size_t free_b = 0, total_b = 0;
        if (verbose && cudaMemGetInfo(&free_b, &total_b) == cudaSuccess)
            fprintf(stderr, "%s: cuda: weights %.2f GB, KV cache %.2f GB (%d tokens), scratch %.2f GB; GPU %.1f of %.1f "
                    "GB free\n", prog, e->weight_bytes() / 1e9, e->kv_bytes() / 1e9, blocks * qwen::KV_BLOCK,
                    e->scratch_bytes() / 1e9, free_b / 1e9, total_b / 1e9);
        return e;
    }
#else
    std::string why = force_cpu ? "" : "this build has no CUDA (built without nvcc)";
#endif
    if (!why.empty()) fprintf(stderr, "%s: %s, running on the CPU\n", prog, why.c_str());
    int blocks = kv_pool_blocks(m.config, context, parallel, kv_gib, 4);
    if (verbose)
        fprintf(stderr, "%s: cpu: KV cache %.2f GB (%d tokens)\n", prog,
                double(blocks) * double(qwen::kv_block_bytes(m.config, 4)) / 1e9, blocks * qwen::KV_BLOCK);
    return std::make_unique<qwen::CpuEngine>(m, context, n_threads, blocks);
}

}  // namespace cli
