// ============================================================================
// Generation: the prefill + decode loop shared by the CLI, batch mode and the server
// ============================================================================
namespace qwen {

// Finds stop strings in streamed text. Text that could still be the beginning of a stop string is held
// back until the next piece settles it, so a client never sees half of "</answer>" and then a retraction.
struct StopMatcher {
    std::vector<std::string> stops;  // non-empty strings
    std::string pending;             // text received but not yet released
    bool stopped = false;

    explicit StopMatcher(std::vector<std::string> s) : stops(std::move(s)) {
        stops.erase(std::remove(stops.begin(), stops.end(), std::string()), stops.end());
    }

    // Adds a piece of text and returns what can be released now. After a stop string is seen, `stopped`
    // is set and everything from the stop string on is dropped.
    std::string push(const std::string& piece) {
        if (stopped) return {};
        pending += piece;
        size_t first = std::string::npos;
        for (const std::string& s : stops) first = std::min(first, pending.find(s));
        if (first != std::string::npos) {
            stopped = true;
            std::string out = pending.substr(0, first);
            pending.clear();
            return out;
        }
        size_t keep = held_suffix();
        std::string out = pending.substr(0, pending.size() - keep);
        pending.erase(0, pending.size() - keep);
        return out;
    }

    // End of generation: whatever was held back was not a stop string after all.
    std::string flush() {
        std::string out = stopped ? std::string() : pending;
        pending.clear();
        return out;
    }

  private:
    // Length of the longest suffix of `pending` that is a proper prefix of some stop string.
    size_t held_suffix() const {
        size_t best = 0;
        for (const std::string& s : stops) {
            size_t max_len = std::min(pending.size(), s.size() - 1);
            for (size_t len = max_len; len > best; len--)
                if (pending.compare(pending.size() - len, len, s, 0, len) == 0) {
                    best = len;
                    break;
                }
        }
        return best;
    }
};

struct GenerateOptions {
    int max_new_tokens = -1;            // -1: until a stop or the context is full
    std::vector<int> stop_ids;          // token ids that end generation (not printed)
    std::vector<std::string> stop;      // stop strings (not printed)
};

struct GenerateResult {
    std::string text;                   // the generated text, stop string excluded
    int prompt_tokens = 0;              // tokens in the prompt
    int prefill_tokens = 0;             // of those, tokens actually run (the rest came from the cache)
    int completion_tokens = 0;          // tokens sampled (a stop id counts)
    std::string finish_reason;          // "stop", "length" or "cancelled"
    double prefill_seconds = 0;         // prompt forward + first sample: the time to first token
    double decode_seconds = 0;          // everything after the first token
};

// A conversation with one engine. `cached` mirrors the engine's KV cache: a new prompt that starts with
// the same tokens (the previous turns of a chat) only runs its new suffix through the model.
struct Session {
    Engine& engine;
    const Tokenizer& tok;
    std::vector<int> cached;            // tokens whose keys/values are in the cache, positions 0..size-1

    Session(Engine& e, const Tokenizer& t) : engine(e), tok(t) {}

    void reset() { cached.clear(); }

    // on_text receives UTF-8-complete pieces as they are generated; returning false cancels.
    GenerateResult generate(const std::vector<int>& prompt, Sampler& sampler, const GenerateOptions& opt,
                            const std::function<bool(const std::string&)>& on_text = {}) {
        const int ctx = engine.context_size();
        const int n_prompt = int(prompt.size());
        if (n_prompt == 0) fail("the prompt is empty");
        if (n_prompt > ctx)
            fail("prompt is %d tokens, %d more than the context of %d", n_prompt, n_prompt - ctx, ctx);

        GenerateResult r;
        r.prompt_tokens = n_prompt;
        double t0 = now_seconds();
        int reuse = prefill(prompt);
        r.prefill_tokens = n_prompt - reuse;

        if (opt.max_new_tokens == 0) {
            r.finish_reason = "length";
            r.prefill_seconds = now_seconds() - t0;
            return r;
        }
        std::vector<int> tokens = prompt;  // the context: prompt, then generated ids
        StreamDecoder decoder(tok);
        StopMatcher stops(opt.stop);
        const int n_vocab = std::min(tok.n_tokens(), engine.config().vocab_size);
        auto emit = [&](const std::string& piece) {
            std::string out = stops.push(piece);
            r.text += out;
            return out.empty() || !on_text || on_text(out);
        };

        for (;;) {
            int next = engine.sample(sampler, n_vocab, tokens, size_t(n_prompt));
            if (r.completion_tokens == 0) r.prefill_seconds = now_seconds() - t0;
            r.completion_tokens++;
            if (std::find(opt.stop_ids.begin(), opt.stop_ids.end(), next) != opt.stop_ids.end()) {
                r.finish_reason = "stop";
                break;
            }
            tokens.push_back(next);
            if (!emit(decoder.push(next))) {
                r.finish_reason = "cancelled";
                break;
            }
            if (stops.stopped) {
                r.finish_reason = "stop";
                break;
            }
            if (r.completion_tokens == opt.max_new_tokens || int(tokens.size()) > ctx) {
                r.finish_reason = "length";
                break;
            }
            engine.forward(&next, 1, int(tokens.size()) - 1);
            cached.push_back(next);
        }
        if (r.finish_reason != "cancelled" && !stops.stopped) emit(decoder.flush());
        if (r.finish_reason != "cancelled") {
            std::string rest = stops.flush();
            r.text += rest;
            if (!rest.empty() && on_text) on_text(rest);
        }
        r.decode_seconds = now_seconds() - t0 - r.prefill_seconds;
        return r;
    }

  private:
    // Runs the part of `prompt` that is not in the cache yet; returns how many tokens were reused.
    // The last prompt token always runs, since its logits are what the first sample needs.
    int prefill(const std::vector<int>& prompt) {
        size_t reuse = 0;
        while (reuse < cached.size() && reuse + 1 < prompt.size() && cached[reuse] == prompt[reuse]) reuse++;
        cached.clear();  // until the forward pass succeeds, the cache content is unknown
        engine.forward(prompt.data() + reuse, int(prompt.size() - reuse), int(reuse));
        cached = prompt;
        return int(reuse);
    }
};

}  // namespace qwen
