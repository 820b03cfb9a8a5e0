// libFuzzer target for the weights.bin loader: any byte string must either load or fail with qwen::Error,
// without reading outside the input, leaking or allocating more than the input could describe; and what loads
// must be usable: its vocabulary makes a Tokenizer (a throw from there aborts: a finding).
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
    qwen::Model m;
    try {
        m = qwen::parse_model(data, size, "fuzz-input", false);
    } catch (const qwen::Error&) {
        return 0;
    }
    uint32_t sum = 0;
    for (const qwen::TensorSpec& t : qwen::tensor_table(m.config)) sum += touch(m.weights.*t.field, t.count());
    volatile uint32_t sink = sum;
    (void)sink;
    qwen::Tokenizer tok(m.vocab);  // not in a try: a loaded file whose vocabulary is refused here is a bug
    (void)tok;
    return 0;
}
