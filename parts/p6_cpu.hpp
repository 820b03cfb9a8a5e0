// ============================================================================
// CPU reference: a thread pool and the fp32 forward pass over the bf16 weights
// ============================================================================
//
// This is the specification the GPU engine is tested against. Weights stay bf16 in the mapped file and are
// widened to fp32 as they are read; every activation, the KV cache and every sum are fp32, as in Hugging Face
// transformers running a bf16 checkpoint loaded in float32 (activations are never rounded to bf16).
//
// One decoder layer (Qwen2 family: Qwen1.5, Qwen2, Qwen2.5; and Qwen3), for each token at position p:
//   h       = rmsnorm(x) * attn_norm
//   q, k, v = h @ Wq^T (+bq), h @ Wk^T (+bk), h @ Wv^T (+bv)    one matmul over the stacked wqkv rows
//   q, k    = rmsnorm(q_head) * q_norm, rmsnorm(k_head) * k_norm  per head, Qwen3 only
//   q, k    = rope(q, p), rope(k, p);  cache[p] = (k, v)
//   a       = softmax(q . K[0..p] / sqrt(head_dim)) @ V[0..p]     per head; GQA: groups of n_heads / n_kv_heads
//                                                                 query heads share one kv head
//   x       = x + a @ Wo^T
//   h       = rmsnorm(x) * ffn_norm
//   x       = x + (silu(h @ Wgate^T) * (h @ Wup^T)) @ Wdown^T
// and after the last layer: logits = (rmsnorm(x) * out_norm) @ lm_head^T.
#include <algorithm>
#include <cmath>
#include <condition_variable>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace qwen {

// ----------------------------------------------------------------------------
// ThreadPool: persistent workers that split a range of rows between them
// ----------------------------------------------------------------------------

// parallel_for(n, fn) runs fn(begin, end) on size() contiguous chunks covering [0, n): chunk 0 on the calling
// thread, the others on the workers, and returns when all are done. One caller at a time; fn must not throw.
struct ThreadPool {
    explicit ThreadPool(int n_threads = 0) {
        n_threads_ = n_threads > 0 ? n_threads : int(std::thread::hardware_concurrency());
        n_threads_ = std::max(n_threads_, 1);
        for (int i = 1; i < n_threads_; i++) workers_.emplace_back([this, i] { worker_(i); });
    }
    ~ThreadPool() {
        {
            std::lock_guard<std::mutex> lock(mu_);
            stop_ = true;
        }
        wake_.notify_all();
        for (std::thread& t : workers_) t.join();
    }
    ThreadPool(const ThreadPool&) = delete;
    ThreadPool& operator=(const ThreadPool&) = delete;

    int size() const { return n_threads_; }

    void parallel_for(int n, const std::function<void(int, int)>& fn) {
        if (n <= 0) return;
        if (n_threads_ == 1 || n == 1) return fn(0, n);
        {
            std::lock_guard<std::mutex> lock(mu_);
            job_ = &fn;
            job_n_ = n;
            pending_ = n_threads_ - 1;
            generation_++;
        }
        wake_.notify_all();
        run_chunk_(fn, n, 0);
        std::unique_lock<std::mutex> lock(mu_);
        done_.wait(lock, [&] { return pending_ == 0; });
    }

  private:
    int n_threads_ = 1;
    std::vector<std::thread> workers_;           // (n_threads - 1); the caller is thread 0
    std::mutex mu_;
    std::condition_variable wake_, done_;
    const std::function<void(int, int)>* job_ = nullptr;  // the current job, valid while pending_ > 0
    int job_n_ = 0;
    int pending_ = 0;                            // workers still running the current job
    uint64_t generation_ = 0;                    // counts jobs, so a worker runs each one once
    bool stop_ = false;

    void run_chunk_(const std::function<void(int, int)>& fn, int n, int index) {
        int begin = int(int64_t(n) * index / n_threads_), end = int(int64_t(n) * (index + 1) / n_threads_);
        if (begin < end) fn(begin, end);
    }

    void worker_(int index) {
        uint64_t seen = 0;
        std::unique_lock<std::mutex> lock(mu_);
        for (;;) {
            wake_.wait(lock, [&] { return stop_ || generation_ != seen; });
            if (stop_) return;
            seen = generation_;
            const std::function<void(int, int)>& fn = *job_;
            int n = job_n_;
            lock.unlock();
            run_chunk_(fn, n, index);
            lock.lock();
            if (--pending_ == 0) done_.notify_one();
        }
    }
};

// ----------------------------------------------------------------------------
// Kernels: the fp32 building blocks (also usable as oracles by other tests)
// ----------------------------------------------------------------------------
namespace cpu {

inline float to_f32(float v) { return v; }
inline float to_f32(bf16 v) { return bf16_to_f32(v); }

// sum_i a[i] * b[i], a fp32 or bf16 (widened exactly). Eight independent partial sums let the compiler fill SIMD
// lanes without -ffast-math; the order of the additions is fixed, so the result does not depend on the batch
// size, the thread count or the type of a.
template <class T>
inline float dot(const T* a, const float* b, int n) {
    float acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    int i = 0;
    for (; i + 8 <= n; i += 8)
        for (int j = 0; j < 8; j++) acc[j] += to_f32(a[i + j]) * b[i + j];
    float s = ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
    for (; i < n; i++) s += to_f32(a[i]) * b[i];
    return s;
}

// Widens n bf16 to fp32 (exact). Written in blocks of 8 so that the compiler vectorises it.
inline void bf16_to_f32_row(float* out, const bf16* in, int n) {
    int i = 0;
    for (; i + 8 <= n; i += 8)
        for (int j = 0; j < 8; j++) out[i + j] = bf16_to_f32(in[i + j]);
    for (; i < n; i++) out[i] = bf16_to_f32(in[i]);
}

// out (n, rows) = x (n, cols) @ W^T (+ bias), W (rows, cols) bf16, bias (rows) bf16 or null.
// Threads split the rows. One token (decode) takes each bf16 row straight into the dot product. A block of
// tokens (prefill) widens each row to fp32 once and uses it for every token, so the weights, the bulk of the
// memory traffic, are read once per block rather than once per token. Both give the same bits.
inline void matmul(ThreadPool& pool, float* out, const float* x, const bf16* w, const bf16* bias, int n, int rows,
                   int cols) {
    pool.parallel_for(rows, [&](int r0, int r1) {
        std::vector<float> row(n > 1 ? size_t(cols) : 0);  // (cols) fp32: the widened weight row
        for (int r = r0; r < r1; r++) {
            const bf16* wr = w + size_t(r) * cols;
            float b = bias ? bf16_to_f32(bias[r]) : 0.0f;
            if (n == 1) {
                out[r] = dot(wr, x, cols) + b;
                continue;
            }
            bf16_to_f32_row(row.data(), wr, cols);
            for (int t = 0; t < n; t++) out[size_t(t) * rows + r] = dot(row.data(), x + size_t(t) * cols, cols) + b;
        }
    });
}

// HF Qwen2RMSNorm / Qwen3RMSNorm in fp32: out = (x * rsqrt(mean(x^2) + eps)) * w. out may alias x.
inline void rmsnorm(float* out, const float* x, const bf16* w, int n, float eps) {
    float r = 1.0f / std::sqrt(dot(x, x, n) / float(n) + eps);
    for (int i = 0; i < n; i++) out[i] = bf16_to_f32(w[i]) * (x[i] * r);
}

// HF's rotate_half RoPE on each of n_heads vectors of head_dim, pairing element i with i + half:
//   x'[i]        = x[i] cos(a_i) - x[i + half] sin(a_i)
//   x'[i + half] = x[i + half] cos(a_i) + x[i] sin(a_i),     a_i = p * theta^(-2i / head_dim)
// cos, sin: (half) fp32, the angles of this token's position p.
inline void rope(float* x, int n_heads, int head_dim, const float* cos, const float* sin) {
    int half = head_dim / 2;
    for (int h = 0; h < n_heads; h++) {
        float* v = x + size_t(h) * head_dim;
        for (int i = 0; i < half; i++) {
            float a = v[i], b = v[i + half];
            v[i] = a * cos[i] - b * sin[i];
            v[i + half] = b * cos[i] + a * sin[i];
        }
    }
}

// In-place softmax over n fp32 values (max subtracted first, so exp never overflows).
inline void softmax(float* x, int n) {
    float max = *std::max_element(x, x + n), sum = 0;
    for (int i = 0; i < n; i++) {
        x[i] = std::exp(x[i] - max);
        sum += x[i];
    }
    for (int i = 0; i < n; i++) x[i] /= sum;
}

inline float silu(float x) { return x / (1.0f + std::exp(-x)); }

}  // namespace cpu

// ----------------------------------------------------------------------------
// CpuEngine: the forward pass
// ----------------------------------------------------------------------------

// Keeps pointers into the model's mapped weights: the Model must outlive the engine.
struct CpuEngine : Engine {
    static constexpr int kBatch = 32;  // tokens per prefill block: each weight row is read once per block

    CpuEngine(const Model& m, int context_size, int n_threads = 0)
        : cfg_(m.config), w_(m.weights), ctx_(context_size), pool_(n_threads) {
        const Config& c = cfg_;
        if (!m.has_weights) fail("%s: the file has no weights (tokenizer only)", m.file.path.c_str());
        if (c.arch != ARCH_QWEN2 && c.arch != ARCH_QWEN3) fail("cpu engine: unsupported arch %d", c.arch);
        if (context_size < 1 || context_size > c.max_seq_len)
            fail("context size must be in [1, %d] (the model's max_seq_len), got %d", c.max_seq_len, context_size);
        int qkv = c.q_dim() + 2 * c.kv_dim();
        x_.resize(size_t(kBatch) * c.dim);
        xb_.resize(size_t(kBatch) * c.dim);
        xb2_.resize(size_t(kBatch) * c.dim);
        qkv_.resize(size_t(kBatch) * qkv);
        att_.resize(size_t(kBatch) * c.q_dim());
        ffn_.resize(size_t(kBatch) * 2 * c.ffn_dim);
        act_.resize(size_t(kBatch) * c.ffn_dim);
        rope_cos_.resize(size_t(kBatch) * (c.head_dim / 2));
        rope_sin_.resize(size_t(kBatch) * (c.head_dim / 2));
        logits_.assign(size_t(c.vocab_size), 0.0f);
        key_cache_.assign(size_t(c.n_layers) * ctx_ * c.kv_dim(), 0.0f);
        value_cache_.assign(size_t(c.n_layers) * ctx_ * c.kv_dim(), 0.0f);
        // inv_freq_i = theta^(-2i / head_dim), in double then rounded once: never through bf16
        for (int i = 0; i < c.head_dim / 2; i++)
            inv_freq_.push_back(float(1.0 / std::pow(c.rope_theta, 2.0 * i / c.head_dim)));
    }

    const Config& config() const override { return cfg_; }
    int context_size() const override { return ctx_; }
    const char* name() const override { return "cpu"; }
    const float* logits() override { return logits_.data(); }

    void forward(const int* tokens, int n, int pos) override {
        if (n < 1 || !tokens) fail("forward: need at least one token, got n = %d", n);
        if (pos < 0) fail("forward: position must be >= 0, got %d", pos);
        if (n > ctx_ || pos > ctx_ - n)
            fail("forward: positions %d..%d exceed the context size %d", pos, pos + n - 1, ctx_);
        for (int i = 0; i < n; i++)
            if (tokens[i] < 0 || tokens[i] >= cfg_.vocab_size)
                fail("forward: token id %d at index %d is outside the vocabulary [0, %d)", tokens[i], i,
                     cfg_.vocab_size);
        for (int done = 0; done < n; done += kBatch)
            forward_block_(tokens + done, std::min(kBatch, n - done), pos + done);
        output_((n - 1) % kBatch);  // the last token's row in the last block
    }

  private:
    Config cfg_;
    Weights w_;  // bf16 pointers into the mapped file (see Weights for the shapes)
    int ctx_;
    ThreadPool pool_;

    // Activations of one block of up to kBatch tokens, row t = token t of the block.
    std::vector<float> x_;         // (kBatch, dim) fp32: the residual stream
    std::vector<float> xb_;        // (kBatch, dim) fp32: normed input of attention / MLP
    std::vector<float> xb2_;       // (kBatch, dim) fp32: output of attention / MLP before the residual add
    std::vector<float> qkv_;       // (kBatch, q_dim + 2*kv_dim) fp32: q, then k, then v of each token
    std::vector<float> att_;       // (kBatch, q_dim) fp32: attention output, heads concatenated
    std::vector<float> ffn_;       // (kBatch, 2*ffn_dim) fp32: gate, then up
    std::vector<float> act_;       // (kBatch, ffn_dim) fp32: silu(gate) * up
    std::vector<float> rope_cos_;  // (kBatch, head_dim/2) fp32: cos of each token's rotation angles
    std::vector<float> rope_sin_;  // (kBatch, head_dim/2) fp32
    std::vector<float> inv_freq_;  // (head_dim/2) fp32: theta^(-2i / head_dim)
    std::vector<float> logits_;    // (vocab_size) fp32: after the last token of the last forward()
    // The KV cache, by absolute position.
    std::vector<float> key_cache_;    // (n_layers, context, kv_dim) fp32, after RoPE
    std::vector<float> value_cache_;  // (n_layers, context, kv_dim) fp32

    // Runs tokens[0..n) (n <= kBatch) at positions pos.. through every layer, leaving the residual in x_.
    void forward_block_(const int* tokens, int n, int pos) {
        const Config& c = cfg_;
        for (int t = 0; t < n; t++)  // x = token_embd[token]
            cpu::bf16_to_f32_row(&x_[size_t(t) * c.dim], w_.token_embd + size_t(tokens[t]) * c.dim, c.dim);
        rope_angles_(n, pos);
        for (int l = 0; l < c.n_layers; l++) {
            attention_block_(l, n, pos);
            mlp_block_(l, n);
        }
    }

    // Angle a_i = p * inv_freq_i in fp32 (as HF computes it), cos and sin taken of that fp32 angle.
    void rope_angles_(int n, int pos) {
        int half = cfg_.head_dim / 2;
        for (int t = 0; t < n; t++)
            for (int i = 0; i < half; i++) {
                float a = float(pos + t) * inv_freq_[size_t(i)];
                rope_cos_[size_t(t) * half + i] = std::cos(a);
                rope_sin_[size_t(t) * half + i] = std::sin(a);
            }
    }

    // x += attention(rmsnorm(x)) for layer l; also writes the block's k, v into the cache.
    void attention_block_(int l, int n, int pos) {
        const Config& c = cfg_;
        int dim = c.dim, hd = c.head_dim, q_dim = c.q_dim(), kv_dim = c.kv_dim(), qkv_dim = q_dim + 2 * kv_dim;
        for (int t = 0; t < n; t++)
            cpu::rmsnorm(&xb_[size_t(t) * dim], &x_[size_t(t) * dim], w_.attn_norm + size_t(l) * dim, dim, c.norm_eps);
        const bf16* bias = w_.bqkv ? w_.bqkv + size_t(l) * qkv_dim : nullptr;
        cpu::matmul(pool_, qkv_.data(), xb_.data(), w_.wqkv + size_t(l) * qkv_dim * dim, bias, n, qkv_dim, dim);
        float* kc = &key_cache_[size_t(l) * ctx_ * kv_dim];
        float* vc = &value_cache_[size_t(l) * ctx_ * kv_dim];
        for (int t = 0; t < n; t++) {
            float* q = &qkv_[size_t(t) * qkv_dim];
            float* k = q + q_dim;
            float* v = k + kv_dim;
            if (c.qk_norm) {  // Qwen3: RMSNorm over each head's vector, before RoPE
                const bf16* qn = w_.q_norm + size_t(l) * hd;
                const bf16* kn = w_.k_norm + size_t(l) * hd;
                for (int h = 0; h < c.n_heads; h++) cpu::rmsnorm(q + h * hd, q + h * hd, qn, hd, c.norm_eps);
                for (int h = 0; h < c.n_kv_heads; h++) cpu::rmsnorm(k + h * hd, k + h * hd, kn, hd, c.norm_eps);
            }
            const float* cs = &rope_cos_[size_t(t) * (hd / 2)];
            const float* sn = &rope_sin_[size_t(t) * (hd / 2)];
            cpu::rope(q, c.n_heads, hd, cs, sn);
            cpu::rope(k, c.n_kv_heads, hd, cs, sn);
            std::copy(k, k + kv_dim, kc + size_t(pos + t) * kv_dim);
            std::copy(v, v + kv_dim, vc + size_t(pos + t) * kv_dim);
        }
        attend_(kc, vc, n, pos);
        cpu::matmul(pool_, xb2_.data(), att_.data(), w_.wo + size_t(l) * dim * q_dim, nullptr, n, dim, q_dim);
        for (size_t i = 0; i < size_t(n) * dim; i++) x_[i] += xb2_[i];
    }

    // att_[t, head h] = softmax(q_th . K[0..p] / sqrt(head_dim)) @ V[0..p] with p = pos + t (causal), where K, V
    // are the rows of kv head h / (n_heads / n_kv_heads). Threads split the (token, head) pairs.
    void attend_(const float* kc, const float* vc, int n, int pos) {
        const Config& c = cfg_;
        int hd = c.head_dim, kv_dim = c.kv_dim(), qkv_dim = c.q_dim() + 2 * kv_dim;
        int group = c.n_heads / c.n_kv_heads;
        float scale = 1.0f / std::sqrt(float(hd));
        pool_.parallel_for(n * c.n_heads, [&](int i0, int i1) {
            std::vector<float> score(size_t(pos + n));  // (pos + n) fp32: attention weights of one query
            for (int i = i0; i < i1; i++) {
                int t = i / c.n_heads, h = i % c.n_heads, p = pos + t;
                const float* q = &qkv_[size_t(t) * qkv_dim + size_t(h) * hd];
                size_t off = size_t(h / group) * hd;  // this head's kv head within a cache row
                for (int j = 0; j <= p; j++) score[size_t(j)] = cpu::dot(q, kc + size_t(j) * kv_dim + off, hd) * scale;
                cpu::softmax(score.data(), p + 1);
                float* out = &att_[size_t(t) * c.q_dim() + size_t(h) * hd];
                std::fill(out, out + hd, 0.0f);
                for (int j = 0; j <= p; j++) {
                    const float* v = vc + size_t(j) * kv_dim + off;
                    for (int d = 0; d < hd; d++) out[d] += score[size_t(j)] * v[d];
                }
            }
        });
    }

    // x += down(silu(gate(h)) * up(h)), h = rmsnorm(x), for layer l.
    void mlp_block_(int l, int n) {
        const Config& c = cfg_;
        int dim = c.dim, ffn = c.ffn_dim;
        for (int t = 0; t < n; t++)
            cpu::rmsnorm(&xb_[size_t(t) * dim], &x_[size_t(t) * dim], w_.ffn_norm + size_t(l) * dim, dim, c.norm_eps);
        cpu::matmul(pool_, ffn_.data(), xb_.data(), w_.w_gate_up + size_t(l) * 2 * ffn * dim, nullptr, n, 2 * ffn, dim);
        for (int t = 0; t < n; t++) {
            const float* gate = &ffn_[size_t(t) * 2 * ffn];
            const float* up = gate + ffn;
            for (int i = 0; i < ffn; i++) act_[size_t(t) * ffn + i] = cpu::silu(gate[i]) * up[i];
        }
        cpu::matmul(pool_, xb2_.data(), act_.data(), w_.w_down + size_t(l) * dim * ffn, nullptr, n, dim, ffn);
        for (size_t i = 0; i < size_t(n) * dim; i++) x_[i] += xb2_[i];
    }

    // logits = rmsnorm(x[t]) * out_norm @ lm_head^T, for row t of the last block.
    void output_(int t) {
        const Config& c = cfg_;
        cpu::rmsnorm(xb_.data(), &x_[size_t(t) * c.dim], w_.out_norm, c.dim, c.norm_eps);
        const bf16* head = w_.lm_head ? w_.lm_head : w_.token_embd;  // tied: the embedding matrix
        cpu::matmul(pool_, logits_.data(), xb_.data(), head, nullptr, 1, c.vocab_size, c.dim);
    }
};

}  // namespace qwen
