// libFuzzer target for the weights.bin loader: any byte string must either load or fail with qwen::Error,
// without reading outside the input, leaking or allocating more than the input could describe.
// Built with clang's -fsanitize=fuzzer,address,undefined; `make fuzz` runs it, seeded with the exported
// fixtures and the inputs saved in test/fuzz-regressions/.
#include "../qwen.hpp"

// Reads every byte the loaded weights claim to cover, so a tensor the loader let point past the input
// shows up as an AddressSanitizer error.
static uint32_t touch(const qwen::bf16* p, uint64_t n) {
    uint32_t sum = 0;
    if (p)
        for (uint64_t i = 0; i < n; i++) sum += p[i];
    return sum;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    try {
        qwen::Model m = qwen::parse_model(data, size, "fuzz-input", false);
        const qwen::Config& c = m.config;
        const qwen::Weights& w = m.weights;
        uint64_t L = c.n_layers, dim = c.dim, qkv = c.q_dim() + 2 * c.kv_dim();
        volatile uint32_t sink = touch(w.token_embd, c.vocab_size * dim) + touch(w.attn_norm, L * dim) +
                                 touch(w.wqkv, L * qkv * dim) + touch(w.bqkv, L * qkv) +
                                 touch(w.q_norm, L * c.head_dim) + touch(w.k_norm, L * c.head_dim) +
                                 touch(w.wo, L * dim * c.q_dim()) + touch(w.ffn_norm, L * dim) +
                                 touch(w.w_gate_up, L * 2 * c.ffn_dim * dim) + touch(w.w_down, L * dim * c.ffn_dim) +
                                 touch(w.out_norm, dim) + touch(w.lm_head, c.vocab_size * dim);
        (void)sink;
    } catch (const qwen::Error&) {
    }
    return 0;
}
