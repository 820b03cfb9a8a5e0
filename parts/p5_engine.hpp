// ============================================================================
// Engine: the interface the CPU reference and the GPU engine both implement
// ============================================================================
namespace qwen {

// One model instance with its KV cache. Positions are absolute: forward(tokens, n, pos) writes the cache
// rows pos..pos+n-1 and attends over rows 0..pos+n-1, so a caller can rewind to any pos and continue.
struct Engine {
    virtual ~Engine() = default;
    virtual const Config& config() const = 0;
    virtual int context_size() const = 0;  // KV-cache capacity in tokens
    // Run tokens[0..n) at positions pos..pos+n-1 (n > 1 is a batched prefill).
    // Afterwards logits() are the next-token logits after the last of them.
    virtual void forward(const int* tokens, int n, int pos) = 0;
    virtual const float* logits() = 0;     // (vocab_size) fp32, host memory
    // Choose the next token from the current logits; the GPU engine overrides this to sample on the device.
    virtual int sample(Sampler& s, int n_vocab, const std::vector<int>& tokens, size_t n_prompt) {
        std::vector<float>& buf = scratch_logits_;
        buf.assign(logits(), logits() + n_vocab);
        return s.sample(buf.data(), n_vocab, tokens, n_prompt);
    }
    virtual const char* name() const = 0;  // "cpu" or "cuda"

  private:
    std::vector<float> scratch_logits_;    // (n_vocab) fp32: the sampler edits logits in place
};

}  // namespace qwen
