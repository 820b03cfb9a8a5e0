// libFuzzer target for the model loader (weights.bin and GGUF): any byte string must either load or fail with
// qwen::Error, without reading outside the input, leaking or allocating more than the input could describe; and
// what loads must be usable: its vocabulary makes a Tokenizer (a throw from there aborts: a finding).
// Built with clang's -fsanitize=fuzzer,address,undefined; `make fuzz` runs it, seeded with the exported
// fixtures and the inputs saved in test/fuzz-regressions/.
#include "../qwen.hpp"

// Reads every byte the loaded weights claim to cover, so a tensor the loader let point past the input
// shows up as an AddressSanitizer error; decodes every row too (the block decoders on whatever bytes they hold).
extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    qwen::Model m;
    try {
        m = qwen::parse_model(data, size, "fuzz-input", false);
    } catch (const qwen::Error&) {
        return 0;
    }
    if (m.has_weights) {
        uint32_t sum = 0;
        std::vector<float> row;
        qwen::for_each_weight(m.config, m.weights, [&](const qwen::TensorSpec&, int, qwen::Tensor& t) {
            for (uint64_t i = 0; i < t.bytes(); i++) sum += t.data[i];
            row.resize(size_t(t.cols));
            for (int r = 0; r < t.rows; r++) qwen::dequantize_row(t, r, row.data());
        });
        volatile uint32_t sink = sum;
        (void)sink;
    }
    qwen::Tokenizer tok(m.vocab);  // not in a try: a loaded file whose vocabulary is refused here is a bug
    (void)tok;
    return 0;
}
