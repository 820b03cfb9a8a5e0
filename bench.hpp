// bench.hpp: `qwen --bench SHAPE [--json] [--cpu] [--type T]`, the speed measurement, outside the library. Included by
// main.cu (and by the tests, for the synthetic weights).
//
// provides (namespace bench):
//   PRESET_NAMES, preset_config   the shapes of published checkpoints (qwen2.5-0.5b, qwen2.5-1.5b, qwen2-7b)
//   synthetic_model               a Model of any config with random weights in memory (no file, no download): bf16,
//                                 or quantized as llama-quantize mixes q8_0 / q4_k_m / q5_k_m (mix_type,
//                                 random_blocks)
//   decode_weight_bytes           bytes of weights one decode step reads, each weight in its own type
//   run_bench                     prefill and decode tok/s of an engine on a shape or a weights file, with the
//                                 bytes each decoded token reads and, on a GPU, the share of the copy bandwidth;
//                                 printed as a table or one JSON object
#pragma once
#include "cli.hpp"

#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <string>
#include <thread>
#include <vector>

namespace bench {

using namespace qwen;

constexpr const char* PRESET_NAMES = "qwen2.5-0.5b, qwen2.5-1.5b, qwen2-7b";

// The config of a published checkpoint by name (one of PRESET_NAMES); false for any other name.
inline bool preset_config(const std::string& name, Config& c) {
    c = Config();
    c.arch = ARCH_QWEN2;
    c.rope_theta = 1000000.0;
    c.norm_eps = 1e-6f;
    c.max_seq_len = 32768;
    c.qkv_bias = true;
    c.vocab_size = 151936;
    if (name == "qwen2.5-0.5b") {
        c.dim = 896, c.ffn_dim = 4864, c.n_layers = 24, c.n_heads = 14, c.n_kv_heads = 2, c.head_dim = 64;
        c.tied = true;
    } else if (name == "qwen2.5-1.5b") {
        c.dim = 1536, c.ffn_dim = 8960, c.n_layers = 28, c.n_heads = 12, c.n_kv_heads = 2, c.head_dim = 128;
        c.tied = true;
    } else if (name == "qwen2-7b") {
        c.dim = 3584, c.ffn_dim = 18944, c.n_layers = 28, c.n_heads = 28, c.n_kv_heads = 4, c.head_dim = 128;
        c.vocab_size = 152064;
        c.tied = false;
    } else {
        return false;
    }
    return true;
}

// Bytes of weights one decode step reads: every weight once, each in its own storage type; the embedding only
// as a tied lm_head (an untied embedding contributes one row, ignored).
inline double decode_weight_bytes(const Model& m) {
    double bytes = 0;
    for_each_weight(m.config, m.weights, [&](const TensorSpec& s, int, const Tensor& t) {
        if (s.global != &Weights::token_embd || m.config.tied) bytes += double(t.bytes());
    });
    return bytes;
}

// Memory the system could give this process now: MemAvailable (free + reclaimable cache), else free pages.
inline double available_memory_bytes() {
    if (FILE* f = fopen("/proc/meminfo", "r")) {
        char line[256];
        unsigned long long kb = 0;
        bool found = false;
        while (!found && fgets(line, sizeof line, f)) found = sscanf(line, "MemAvailable: %llu kB", &kb) == 1;
        fclose(f);
        if (found) return double(kb) * 1024.0;
    }
    return double(sysconf(_SC_AVPHYS_PAGES)) * double(sysconf(_SC_PAGESIZE));
}

constexpr const char* TYPE_NAMES = "bf16, q8_0, q4_k_m, q5_k_m";
inline bool is_type_name(const std::string& t) { return t == "bf16" || t == "q8_0" || t == "q4_k_m" || t == "q5_k_m"; }

// The storage type of matrix s (layer l) in a synthetic model of weight type `mix` (one of TYPE_NAMES), as
// llama-quantize chooses it: q8_0 everywhere; the _M mixes use Q4_K / Q5_K, but Q6_K for the output matrix (the
// embedding when tied) and for attn_v and ffn_down of the layers i < n/8, i >= 7n/8 and (i - n/8) % 3 == 2; a
// K-quant whose rows are not whole 256-value blocks falls back to Q5_0 / Q5_1 / Q8_0 (Qwen2.5-0.5B's 896).
inline DType mix_type(const std::string& mix, const Config& c, const TensorSpec& s, int l) {
    if (mix == "bf16") return DT_BF16;
    if (mix == "q8_0") return DT_Q8_0;
    DType base = mix == "q4_k_m" ? DT_Q4_K : DT_Q5_K, t = base;
    int n = c.n_layers;
    bool more_bits = l >= 0 && (l < n / 8 || l >= 7 * n / 8 || (l - n / 8) % 3 == 2);
    if (s.global == &Weights::lm_head || (s.global == &Weights::token_embd && c.tied)) t = DT_Q6_K;
    if ((s.layer == &Layer::wv || s.layer == &Layer::w_down) && more_bits) t = DT_Q6_K;
    if (s.cols % 256 != 0) t = t == DT_Q6_K ? DT_Q8_0 : t == DT_Q4_K ? DT_Q5_0 : DT_Q5_1;
    return t;
}

// The K-quants' 12 scale bytes from 8 six-bit scales and mins (the inverse of k_scale_min).
inline void k_pack_scales(uint8_t* s, const int* sc, const int* m) {
    for (int j = 0; j < 4; j++) {
        s[j] = uint8_t((sc[j] & 63) | (sc[j + 4] >> 4) << 6);
        s[j + 4] = uint8_t((m[j] & 63) | (m[j + 4] >> 4) << 6);
        s[j + 8] = uint8_t((sc[j + 4] & 15) | (m[j + 4] & 15) << 4);
    }
}

// Random bytes for n blocks of a quantized type whose values spread over about [-width, width]: random integers,
// scales fixed so that the largest integers map to +-width (the K-quants' mins centre the range on 0).
inline void random_blocks(uint8_t* p, DType t, size_t n, float width, uint64_t seed) {
    const DTypeInfo ti = dtype_info(t);
    uint64_t z = seed;
    auto bits = [&z] { return z = mix64(z + 0x9e3779b97f4a7c15ull); };
    auto put16 = [](uint8_t* q, uint16_t v) { q[0] = uint8_t(v), q[1] = uint8_t(v >> 8); };
    for (size_t b = 0; b < n; b++, p += ti.bytes) {
        for (int i = 0; i < ti.bytes; i += 8) {
            uint64_t r = bits();
            memcpy(p + i, &r, size_t(std::min(8, ti.bytes - i)));
        }
        int sc[8], m[8];
        for (int j = 0; j < 8; j++) sc[j] = m[j] = 32 + int(bits() % 32);
        switch (t) {
            case DT_Q8_0: for (int i = 2; i < 34; i++) p[i] = p[i] == 0x80 ? 0x81 : p[i];  // no -128
                          put16(p, f32_to_f16(width / 127)); break;
            case DT_Q4_0: put16(p, f32_to_f16(width / 8)); break;
            case DT_Q5_0: put16(p, f32_to_f16(width / 16)); break;
            case DT_Q5_1: put16(p, f32_to_f16(width / 16)), put16(p + 2, f32_to_f16(-width)); break;
            case DT_Q4_K: put16(p, f32_to_f16(width / (7.5f * 63))), put16(p + 2, f32_to_f16(width / 63));
                          k_pack_scales(p + 4, sc, m); break;
            case DT_Q5_K: put16(p, f32_to_f16(width / (15.5f * 63))), put16(p + 2, f32_to_f16(width / 63));
                          k_pack_scales(p + 4, sc, m); break;
            case DT_Q6_K: for (int i = 192; i < 208; i++) p[i] = uint8_t(32 + bits() % 96);
                          put16(p + 208, f32_to_f16(width / (32 * 127))); break;
            default: break;
        }
    }
}

// A Model of config c whose weights live in Model::owned (each view 256-byte aligned), matrices in the types of
// `mix` (TYPE_NAMES), norm gains and biases fp32, with the spread of a unit-variance init (matrices: values
// within +-sqrt(3 / cols); biases +-0.1; norms 1 +- 0.1), so activations stay finite. Each value is a hash of
// (seed, weight, layer, index): the same seed gives the same weights. No vocab; of the chat facts only
// model_name ("synthetic"). Fails if c or mix is invalid or the weights would not fit in the available memory.
inline Model synthetic_model(const Config& c, uint64_t seed = 1, const std::string& mix = "bf16") {
    check_config("synthetic model", c);
    if (!is_type_name(mix))
        fail("synthetic model: weight type '%s' is not one of %s", mix.c_str(), TYPE_NAMES);
    Model m;
    m.config = c;
    m.chat.model_name = "synthetic";
    m.has_weights = true;
    struct Job {  // rows [r0, r1) of one view, filled by one thread
        Tensor* view;
        TensorSpec::Kind kind;
        uint64_t key;  // which view, for the hash
        size_t offset;
        int r0, r1;
    };
    std::vector<Job> jobs;
    size_t total = 0;
    for_each_weight(c, m.weights, [&](const TensorSpec& s, int l, Tensor& t) {
        t.rows = s.rows, t.cols = s.cols;
        t.type = s.kind == TensorSpec::MATRIX ? mix_type(mix, c, s, l) : DT_F32;
        uint64_t key = uint64_t(jobs.size()) << 40;
        for (int r = 0; r < s.rows; r += 4096) jobs.push_back({&t, s.kind, key, total, r, std::min(s.rows, r + 4096)});
        total += (t.bytes() + 255) / 256 * 256;
    });
    double avail = available_memory_bytes();
    if (double(total) > avail)
        fail("synthetic model: the weights need %.1f GB of memory, only %.1f GB is available", total / 1e9, avail / 1e9);
    m.owned.resize(total);
    for (Job& j : jobs) j.view->data = m.owned.data() + j.offset;
    std::atomic<size_t> next{0};
    auto fill = [&] {
        for (size_t k; (k = next++) < jobs.size();) {
            const Job& j = jobs[k];
            Tensor& t = *j.view;
            uint8_t* base = const_cast<uint8_t*>(t.data);
            bool matrix = j.kind == TensorSpec::MATRIX;
            float center = j.kind == TensorSpec::NORM ? 1.0f : 0.0f;
            float width = matrix ? std::sqrt(3.0f / float(t.cols)) : 0.1f;
            uint64_t h = mix64(seed * 0x9e3779b97f4a7c15ull + j.key);
            for (int r = j.r0; r < j.r1; r++) {
                uint8_t* row = base + uint64_t(r) * t.row_bytes();
                if (t.type != DT_BF16 && t.type != DT_F32) {
                    random_blocks(row, t.type, size_t(t.row_bytes()) / size_t(dtype_info(t.type).bytes), width,
                                  mix64(h + uint64_t(r)));
                    continue;
                }
                for (int i = 0; i < t.cols; i++) {
                    uint64_t z = mix64(h + uint64_t(r) * uint64_t(t.cols) + uint64_t(i));
                    float v = center + width * (float(z >> 40) * (2.0f / float(1 << 24)) - 1.0f);  // u in [-1, 1)
                    if (t.type == DT_F32) memcpy(row + 4 * size_t(i), &v, 4);
                    else {
                        bf16 b = f32_to_bf16(v);
                        memcpy(row + 2 * size_t(i), &b, 2);
                    }
                }
            }
        }
    };
    std::vector<std::thread> workers;
    for (unsigned t = 0; t < std::max(1u, std::thread::hardware_concurrency()); t++) workers.emplace_back(fill);
    for (std::thread& w : workers) w.join();
    if (c.tied) m.weights.lm_head = m.weights.token_embd;
    return m;
}

// ----------------------------------------------------------------------------
// The measurement: the same steps on either engine, through the Engine interface
// ----------------------------------------------------------------------------

struct Row {
    std::string test;  // "prefill 512", "decode @4096", "prefill 8x128", "decode x8 @128"
    double tok_s;      // aggregate over the batch for the batched rows
    double bytes = 0;  // bytes read per token (decode rows only)
    int batch = 0;     // batched decode rows: sequences per step
};

// What the report says about the run besides its rows.
struct Setup {
    std::string name;        // the shape or the file, as given
    bool synthetic;          // random weights of a preset shape
    std::string engine;      // "cpu, 2 threads (16 cores)" or "cuda, NVIDIA H100 80GB HBM3"
    std::string device;      // GPU: its name
    std::string type;        // synthetic: the weight type (TYPE_NAMES)
    double weight_bytes = 0; // bytes of weights one decode step reads
    double kv_bytes = 0;     // KV-cache bytes per cached token
    double copy_bw = 0;      // GPU: measured device copy bandwidth, bytes/s (read + write); 0 on the CPU
    double gpu_memory = 0;   // GPU: device memory the engine took, bytes
    int threads = 0;         // CPU threads (0 on the GPU)
};

// Deterministic token ids of the benchmark prompts.
inline std::vector<int> bench_tokens(int n, int vocab) {
    std::vector<int> t(static_cast<size_t>(n));
    for (int i = 0; i < n; i++) t[size_t(i)] = int((uint64_t(i) * 40503u + 7) % uint64_t(vocab));
    return t;
}

// Prefill tok/s of an n-token prompt at position 0: the median of `reps` runs (after one warm-up when reps > 1).
// Fetching the logits waits for the engine (a GPU runs asynchronously).
inline Row time_prefill(Engine& e, const std::vector<int>& toks, int n, int reps) {
    std::vector<double> t;
    for (int r = reps > 1 ? -1 : 0; r < reps; r++) {
        double t0 = now_seconds();
        e.forward(toks.data(), n, 0);
        e.logits();
        if (r >= 0) t.push_back(now_seconds() - t0);
    }
    std::sort(t.begin(), t.end());
    return {"prefill " + std::to_string(n), n / t[t.size() / 2]};
}

// Greedy decode tok/s after n cached tokens (stop tokens ignored): forward + sample per step, as generation
// does. Two warm-up steps first (a GPU captures its decode graph there); the timed steps then rewrite their rows.
inline Row time_decode(Engine& e, const std::vector<int>& toks, int n, int steps, bool cached, const Setup& s) {
    if (!cached) e.forward(toks.data(), n, 0);
    SamplingParams sp;
    sp.temperature = 0;
    Sampler greedy(sp);
    auto run = [&](int k) {
        int tok = toks[size_t(n) - 1];
        for (int i = 0; i < k; i++) {
            tok = e.sample(greedy, e.config().vocab_size, toks, size_t(n));
            e.forward(&tok, 1, n + i);
        }
    };
    run(2);
    e.forward(toks.data() + n - 1, 1, n - 1);  // the logits after the prompt again
    double t0 = now_seconds();
    run(steps);
    double dt = (now_seconds() - t0) / steps;
    return {"decode @" + std::to_string(n), 1.0 / dt, s.weight_bytes + (n + steps / 2.0) * s.kv_bytes};
}

// Sequences of one batched benchmark: sequence i owns blocks i * per_seq .. (i + 1) * per_seq - 1 of the pool.
inline std::vector<std::vector<int>> bench_tables(int n_seqs, int per_seq) {
    std::vector<std::vector<int>> t(static_cast<size_t>(n_seqs));
    for (int i = 0; i < n_seqs; i++)
        for (int b = 0; b < per_seq; b++) t[size_t(i)].push_back(i * per_seq + b);
    return t;
}

// Aggregate prefill tok/s of B prompts of n tokens through batched steps of at most `chunk` tokens (chunked
// prefill, as the scheduler cuts prompts), then aggregate greedy decode tok/s of the B sequences together after
// those n tokens: each step one token per sequence, sampled per sequence. Rows "prefill Bxn" and "decode xB @n".
inline std::vector<Row> time_parallel(Engine& e, const std::vector<int>& toks, int B, int n, int steps, int chunk,
                                      const Setup& s) {
    std::vector<std::vector<int>> tables = bench_tables(B, kv_blocks_for(n + steps + 2));
    double t0 = now_seconds();
    int last = 0;
    for (int seq = 0, done = 0; seq < B;) {  // the prompts one after another, cut into steps of `chunk` tokens
        std::vector<SeqStep> batch;
        for (int room = chunk; room > 0 && seq < B;) {
            SeqStep q;
            q.n = std::min(room, n - done), q.pos = done, q.tokens = toks.data() + done;
            q.blocks = tables[size_t(seq)].data();
            q.want_logits = done + q.n == n;  // a prompt's last chunk, as the scheduler runs it
            batch.push_back(q);
            room -= q.n, done += q.n;
            if (done == n) seq++, done = 0;
        }
        e.step(batch);
        last = int(batch.size()) - 1;  // ends a prompt: it has logits
    }
    e.logits(last);  // waits for the engine
    Row prefill{"prefill " + std::to_string(B) + "x" + std::to_string(n), double(B) * n / (now_seconds() - t0)};
    SamplingParams sp;
    sp.temperature = 0;
    std::vector<Sampler> greedy(static_cast<size_t>(B), Sampler(sp));
    std::vector<int> cur(static_cast<size_t>(B), toks[size_t(n)]);  // each sequence's next input token
    auto run = [&](int k, int from) {  // k steps at positions from, from + 1, ...: step, then a draw per sequence
        for (int i = 0; i < k; i++) {
            std::vector<SeqStep> batch(static_cast<size_t>(B));
            for (int b = 0; b < B; b++) {
                SeqStep& q = batch[size_t(b)];
                q.tokens = &cur[size_t(b)], q.n = 1, q.pos = from + i, q.blocks = tables[size_t(b)].data();
            }
            e.step(batch);
            for (int b = 0; b < B; b++)
                cur[size_t(b)] = e.sample(greedy[size_t(b)], e.config().vocab_size, toks, size_t(n), nullptr, b);
        }
    };
    run(2, n);  // warm-up (a GPU may capture graphs here)
    double t1 = now_seconds();
    run(steps, n + 2);
    double dt = (now_seconds() - t1) / steps;  // seconds per step: B tokens
    Row decode{"decode x" + std::to_string(B) + " @" + std::to_string(n), B / dt,
               s.weight_bytes / B + (n + steps / 2.0) * s.kv_bytes, B};
    return {prefill, decode};
}

inline void print_json(FILE* out, const Config& c, const Setup& s, const std::vector<Row>& rows) {
    std::string name;
    for (char ch : s.name) {
        if (ch == '"' || ch == '\\') name += '\\';
        name += (unsigned char)ch < 0x20 ? '?' : ch;
    }
    fprintf(out, "{\"model\": \"%s\", \"synthetic\": %s, \"engine\": \"%s\", ", name.c_str(),
            s.synthetic ? "true" : "false", s.threads ? "cpu" : "cuda");
    if (s.synthetic) fprintf(out, "\"type\": \"%s\", ", s.type.c_str());
    if (s.threads) fprintf(out, "\"threads\": %d, \"cores\": %ld, ", s.threads, sysconf(_SC_NPROCESSORS_ONLN));
    else fprintf(out, "\"device\": \"%s\", \"copy_gb_s\": %.1f, \"gpu_memory_gb\": %.3f, ", s.device.c_str(),
                 s.copy_bw / 1e9, s.gpu_memory / 1e9);
    fprintf(out, "\"weights_gb_per_token\": %.4f, \"kv_kb_per_context_token\": %.2f, \"results\": [",
            s.weight_bytes / 1e9, s.kv_bytes / 1e3);
    for (size_t i = 0; i < rows.size(); i++) {
        const Row& r = rows[i];
        fprintf(out, "%s{\"test\": \"%s\", \"tok_s\": %.2f, \"ms_per_token\": %.4f", i ? ", " : "", r.test.c_str(),
                r.tok_s, 1e3 / r.tok_s);
        if (r.bytes > 0) fprintf(out, ", \"bytes_per_token\": %.0f, \"gb_s\": %.2f", r.bytes, r.bytes * r.tok_s / 1e9);
        if (r.bytes > 0 && s.copy_bw > 0) fprintf(out, ", \"pct_of_copy\": %.1f", 100.0 * r.bytes * r.tok_s / s.copy_bw);
        fprintf(out, "}");
    }
    fprintf(out, "]");
    std::string par;  // the batched decode rows again, by batch size, for tools/bench_hf.py
    for (const Row& r : rows)
        if (r.batch > 0) {
            char item[128];
            snprintf(item, sizeof item, "%s{\"batch\": %d, \"decode_tok_s\": %.2f, \"ms_per_step\": %.4f}",
                     par.empty() ? "" : ", ", r.batch, r.tok_s, 1e3 * r.batch / r.tok_s);
            par += item;
        }
    if (!par.empty()) fprintf(out, ", \"parallel\": [%s]", par.c_str());
    fprintf(out, "}\n");
}

inline void print_table(FILE* out, const Config& c, const Setup& s, const std::vector<Row>& rows) {
    fprintf(out, "bench %s (%s): dim %d, %d layers, %d/%d heads x %d, ffn %d, vocab %d\n", s.name.c_str(),
            s.synthetic ? ("synthetic " + s.type + " weights").c_str() : "weights file", c.dim, c.n_layers, c.n_heads, c.n_kv_heads,
            c.head_dim, c.ffn_dim, c.vocab_size);
    fprintf(out, "engine: %s", s.engine.c_str());
    if (s.copy_bw > 0)
        fprintf(out, "; copy bandwidth %.0f GB/s (read + write); GPU memory %.2f GB", s.copy_bw / 1e9, s.gpu_memory / 1e9);
    fprintf(out, "\ndecode reads %.3f GB of weights per token + %.1f KB per cached token\n\n", s.weight_bytes / 1e9,
            s.kv_bytes / 1e3);
    fprintf(out, "%-14s %10s %10s %14s %8s %10s\n", "test", "tok/s", "ms/token", "MB read/token", "GB/s", "% of copy");
    for (const Row& r : rows) {
        fprintf(out, "%-14s %10.1f %10.3f", r.test.c_str(), r.tok_s, 1e3 / r.tok_s);
        if (r.bytes > 0) fprintf(out, " %14.1f %8.1f", r.bytes / 1e6, r.bytes * r.tok_s / 1e9);
        else fprintf(out, " %14s %8s", "-", "-");
        if (r.bytes > 0 && s.copy_bw > 0) fprintf(out, " %9.1f%%\n", 100.0 * r.bytes * r.tok_s / s.copy_bw);
        else fprintf(out, " %10s\n", "-");
    }
}

#if QWEN_HAS_CUDA
// Device-to-device copy bandwidth, counting bytes read + written: the ceiling of a memory-bound step.
inline double copy_bandwidth() {
    size_t free_b = 0, total_b = 0;
    CUDA_CHECK(cudaMemGetInfo(&free_b, &total_b));
    size_t bytes = std::min(size_t(1) << 30, free_b / 8);
    void *a = nullptr, *b = nullptr;
    CUDA_CHECK(cudaMalloc(&a, bytes));
    CUDA_CHECK(cudaMalloc(&b, bytes));
    CUDA_CHECK(cudaMemsetAsync(a, 1, bytes, nullptr));
    std::vector<double> t;
    for (int i = 0; i < 12; i++) {
        CUDA_CHECK(cudaDeviceSynchronize());
        double t0 = now_seconds();
        CUDA_CHECK(cudaMemcpy(i % 2 ? a : b, i % 2 ? b : a, bytes, cudaMemcpyDeviceToDevice));
        CUDA_CHECK(cudaDeviceSynchronize());
        if (i >= 2) t.push_back(now_seconds() - t0);  // the first two warm up
    }
    cudaFree(a);
    cudaFree(b);
    std::sort(t.begin(), t.end());
    return 2.0 * bytes / t[t.size() / 2];
}
#endif

// The engine, and what the report says about it: the GPU engine unless `cpu`.
inline std::unique_ptr<Engine> bench_engine(const Model& m, int ctx, int kv_blocks, bool cpu, int threads, Setup& s) {
    if (cpu) {
        auto e = std::make_unique<CpuEngine>(m, ctx, threads, kv_blocks);
        s.threads = e->n_threads();
        s.engine = "cpu, " + std::to_string(s.threads) + (s.threads == 1 ? " thread (" : " threads (") +
                   std::to_string(sysconf(_SC_NPROCESSORS_ONLN)) + " cores)";
        s.kv_bytes = m.config.n_layers * 2.0 * m.config.kv_dim() * sizeof(float);
        return e;
    }
#if QWEN_HAS_CUDA
    std::string why = gpu_unavailable();
    if (!why.empty()) fail("--bench needs a usable CUDA device (%s); add --cpu to benchmark the CPU engine", why.c_str());
    int dev = 0;
    cudaDeviceProp prop;
    CUDA_CHECK(cudaGetDevice(&dev));
    CUDA_CHECK(cudaGetDeviceProperties(&prop, dev));
    s.device = prop.name;
    s.engine = "cuda, " + s.device;
    s.copy_bw = copy_bandwidth();
    size_t free0 = 0, free1 = 0, total = 0;
    CUDA_CHECK(cudaMemGetInfo(&free0, &total));
    auto e = std::make_unique<GpuEngine>(m, ctx, kv_blocks);
    CUDA_CHECK(cudaMemGetInfo(&free1, &total));
    s.gpu_memory = double(free0 - std::min(free0, free1));
    s.kv_bytes = m.config.n_layers * 2.0 * m.config.kv_dim() * sizeof(bf16);
    return e;
#else
    fail("--bench needs a CUDA device, and this build has no CUDA (built without nvcc); add --cpu to benchmark the "
         "CPU engine");
#endif
}

// Runs the benchmark on a preset shape (synthetic weights) or a weights file and prints a table, or one JSON
// object with json. The CPU: prefill 128 and 512 tokens, 16 decode steps after each. The GPU: prefill 512 and
// 2048 (median of 3), 64 decode steps after 128 and 4096 cached tokens. With `parallel` (batch sizes) instead:
// for each B, B prompts of 128 tokens prefilled in steps of at most 512 tokens (128 on the CPU), then B
// sequences decoding together (time_parallel).
inline int run_bench(const std::string& shape_or_file, const std::string& type, bool json, bool cpu, int threads,
                     const std::vector<int>& parallel, FILE* out) {
    struct Step {
        bool prefill;
        int n;
    };
    const std::vector<Step> plan = cpu ? std::vector<Step>{{true, 128}, {false, 128}, {true, 512}, {false, 512}}
                                       : std::vector<Step>{{true, 512}, {true, 2048}, {false, 128}, {false, 4096}};
    const int steps = cpu ? 16 : 64, reps = cpu ? 1 : 3, need = cpu ? 512 + steps + 2 : 4096 + steps + 2;
    const int par_n = 128, par_chunk = cpu ? 128 : 512, par_blocks = kv_blocks_for(par_n + steps + 2);
    int max_batch = 0;
    for (int b : parallel) max_batch = std::max(max_batch, b);
    Config shape;
    bool synthetic = preset_config(shape_or_file, shape);
    struct stat st;
    if (!synthetic && stat(shape_or_file.c_str(), &st) != 0)
        fail("--bench: '%s' is neither a shape (%s) nor a weights file", shape_or_file.c_str(), PRESET_NAMES);
    if (!synthetic && !type.empty()) fail("--bench: --type is for a preset shape; a file has its own types");
    Model model = synthetic ? synthetic_model(shape, 1, type.empty() ? "bf16" : type) : load_model(shape_or_file);
    Setup s;
    s.name = shape_or_file;
    s.synthetic = synthetic;
    s.type = type.empty() ? "bf16" : type;
    s.weight_bytes = decode_weight_bytes(model);
    const int ctx = std::min(parallel.empty() ? need : par_n + steps + 2, model.config.max_seq_len);
    std::unique_ptr<Engine> e = bench_engine(model, ctx, max_batch * par_blocks, cpu, threads, s);
    std::vector<int> toks = bench_tokens(e->context_size(), model.config.vocab_size);
    e->forward(toks.data(), 1, 0);  // warm-up: touches every weight once
    std::vector<Row> rows;
    if (!parallel.empty() && par_n + steps + 2 > e->context_size())
        fail("--bench: the model's max_seq_len %d is too short for the benchmark", model.config.max_seq_len);
    for (int b : parallel)
        for (Row& r : time_parallel(*e, toks, b, par_n, steps, par_chunk, s)) rows.push_back(r);
    int cached = 0;  // the prompt length whose cache a decode step may continue from
    for (const Step& p : parallel.empty() ? plan : std::vector<Step>{}) {
        if (p.n + steps + 2 > e->context_size()) continue;
        if (p.prefill) rows.push_back(time_prefill(*e, toks, p.n, reps));
        else rows.push_back(time_decode(*e, toks, p.n, steps, cached == p.n, s));
        cached = p.prefill ? p.n : 0;
    }
    if (rows.empty()) fail("--bench: the model's max_seq_len %d is too short for the benchmark", model.config.max_seq_len);
    if (json) print_json(out, model.config, s, rows);
    else print_table(out, model.config, s, rows);
    return 0;
}

}  // namespace bench
