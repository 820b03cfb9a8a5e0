// ============================================================================
// Sampler: penalties, temperature, top-k / top-p / min-p, and a seeded draw
// ============================================================================
//
// The next token is chosen from the (vocab) fp32 logits in this order (that of Hugging Face generate()):
//   1. repetition penalty  (HF RepetitionPenaltyLogitsProcessor) over every distinct token of the context,
//                          prompt included: l = l < 0 ? l * penalty : l / penalty
//   2. presence penalty    (OpenAI / vLLM) over every distinct *generated* token: l -= presence_penalty
//   3. temperature         0 => argmax (lowest id on ties), done. Otherwise p = softmax(l / temperature)
//   4. top-k               keep the k most probable tokens (and any tied with the k-th)
//   5. top-p               of those, keep the smallest most-probable set whose mass >= top_p of theirs
//   6. min-p               of those, keep the tokens with p >= min_p * p_max
//   7. draw                renormalise the kept probabilities and draw one with Rng::uniform()
// Every filter keeps at least the most probable token. Nothing sorts the whole vocabulary: top-k selects
// with nth_element, and top-p / min-p sort only the tokens above a probability cutoff (see Sampler::keep).
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <functional>
#include <vector>

namespace qwen {

struct SamplingParams {
    float temperature = 0.7f;         // 0 = greedy (argmax)
    float top_p = 0.8f;               // (0, 1]; 1 = off
    int top_k = 20;                   // 0 = off
    float min_p = 0.0f;               // [0, 1]; 0 = off
    float repetition_penalty = 1.0f;  // > 0; 1 = off. HF semantics, over prompt + generated tokens
    float presence_penalty = 0.0f;    // [-2, 2]; 0 = off. OpenAI/vLLM semantics, over generated tokens only
    uint64_t seed = 0;
};

// The checkpoint's generation-config values where it gives them (NaN / -1 = not given), else the defaults above.
inline SamplingParams default_sampling(const ChatInfo& chat) {
    SamplingParams p;
    if (!std::isnan(chat.temperature)) p.temperature = chat.temperature;
    if (!std::isnan(chat.top_p)) p.top_p = chat.top_p;
    if (chat.top_k >= 0) p.top_k = chat.top_k;
    if (!std::isnan(chat.repetition_penalty)) p.repetition_penalty = chat.repetition_penalty;
    return p;
}

// Rejects out-of-range values. Comparisons are written so that NaN fails them too.
inline void validate(const SamplingParams& p) {
    if (!(p.temperature >= 0) || std::isinf(p.temperature))
        fail("temperature must be a finite number >= 0, got %g", double(p.temperature));
    if (!(p.top_p > 0 && p.top_p <= 1)) fail("top_p must be in (0, 1], got %g", double(p.top_p));
    if (p.top_k < 0) fail("top_k must be >= 0 (0 = off), got %d", p.top_k);
    if (!(p.min_p >= 0 && p.min_p <= 1)) fail("min_p must be in [0, 1], got %g", double(p.min_p));
    if (!(p.repetition_penalty > 0) || std::isinf(p.repetition_penalty))
        fail("repetition_penalty must be a finite number > 0, got %g", double(p.repetition_penalty));
    if (!(p.presence_penalty >= -2 && p.presence_penalty <= 2))
        fail("presence_penalty must be in [-2, 2], got %g", double(p.presence_penalty));
}

// xorshift64* (Vigna, 2014): 64 bits of state, the high 32 bits of each output are of good quality.
// The seed goes through one splitmix64 step so that small or zero seeds still give a well-mixed, non-zero state.
struct Rng {
    uint64_t state;

    explicit Rng(uint64_t seed) {
        uint64_t z = seed + 0x9E3779B97F4A7C15ull;
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
        z ^= z >> 31;
        state = z ? z : 0x9E3779B97F4A7C15ull;  // xorshift must not start at 0
    }
    uint32_t next_u32() {
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        return uint32_t((state * 0x2545F4914F6CDD1Dull) >> 32);
    }
    // Uniform in [0, 1): the top 24 bits, exactly representable as a float.
    float uniform() { return float(next_u32() >> 8) * (1.0f / 16777216.0f); }
};

// The distinct ids of tokens[begin..end) that lie in [0, n_vocab), sorted.
inline std::vector<int> distinct_tokens(const std::vector<int>& tokens, size_t begin, int n_vocab) {
    std::vector<int> ids;
    for (size_t i = begin; i < tokens.size(); i++)
        if (tokens[i] >= 0 && tokens[i] < n_vocab) ids.push_back(tokens[i]);
    std::sort(ids.begin(), ids.end());
    ids.erase(std::unique(ids.begin(), ids.end()), ids.end());
    return ids;
}

// HF RepetitionPenaltyLogitsProcessor: each distinct context token once; dividing a positive logit and
// multiplying a negative one both make the token less likely when penalty > 1.
inline void apply_repetition_penalty(float* logits, int n_vocab, const std::vector<int>& tokens, float penalty) {
    if (penalty == 1.0f) return;
    for (int id : distinct_tokens(tokens, 0, n_vocab))
        logits[id] = logits[id] < 0 ? logits[id] * penalty : logits[id] / penalty;
}

// OpenAI / vLLM presence penalty: subtracted once from each distinct token generated so far.
inline void apply_presence_penalty(float* logits, int n_vocab, const std::vector<int>& tokens, size_t n_prompt,
                                   float penalty) {
    if (penalty == 0.0f) return;
    for (int id : distinct_tokens(tokens, n_prompt, n_vocab)) logits[id] -= penalty;
}

// Index of the largest logit; the lowest such index on ties.
inline int argmax(const float* logits, int n) {
    int best = 0;
    for (int i = 1; i < n; i++)
        if (logits[i] > logits[best]) best = i;
    return best;
}

struct Sampler {
    struct Candidate {
        int id;
        float p;  // probability after temperature, before renormalisation over the kept set
    };

    SamplingParams params;
    Rng rng;

    explicit Sampler(const SamplingParams& p) : params(p), rng(p.seed) { validate(p); }

    // logits: (n_vocab) fp32, modified in place (penalties). tokens: the whole context so far (prompt, then
    // generated); tokens[n_prompt..] are the generated ones. Returns the chosen id.
    int sample(float* logits, int n_vocab, const std::vector<int>& tokens, size_t n_prompt) {
        if (n_vocab <= 0) fail("sampler: vocabulary size must be positive, got %d", n_vocab);
        apply_repetition_penalty(logits, n_vocab, tokens, params.repetition_penalty);
        apply_presence_penalty(logits, n_vocab, tokens, n_prompt, params.presence_penalty);
        if (params.temperature == 0.0f) return argmax(logits, n_vocab);
        const std::vector<Candidate>& kept = keep(logits, n_vocab);
        return draw(kept);
    }

    // Steps 3-6 above for temperature > 0: the tokens that may be drawn, each with its softmax(logits / temperature)
    // probability; most probable first, or in id order when no filter is on. Valid until the next call.
    const std::vector<Candidate>& keep(const float* logits, int n_vocab) {
        softmax_(logits, n_vocab);
        cand_.clear();
        bool top_k_on = params.top_k > 0 && params.top_k < n_vocab;
        if (top_k_on) {
            keep_top_k_();
            keep_top_p_(mass_(cand_));
        } else if (params.top_p < 1.0f || params.min_p > 0.0f) {
            keep_above_cutoff_();
            keep_top_p_(1.0);
        } else {  // nothing to filter: every token, in id order
            for (int i = 0; i < n_vocab; i++) cand_.push_back({i, prob_[i]});
            return cand_;
        }
        keep_min_p_();
        return cand_;
    }

    // Draws one of the kept tokens with probability proportional to its p.
    int draw(const std::vector<Candidate>& kept) {
        double u = double(rng.uniform()) * mass_(kept), acc = 0;
        for (const Candidate& c : kept) {
            acc += c.p;
            if (u < acc) return c.id;
        }
        return kept.back().id;  // u landed in the rounding slack at the end
    }

  private:
    std::vector<float> prob_;      // (n_vocab) fp32: softmax(logits / temperature)
    std::vector<Candidate> cand_;  // (<= n_vocab) the kept tokens, most probable first once filtered

    static double mass_(const std::vector<Candidate>& c) {
        double m = 0;
        for (const Candidate& x : c) m += x.p;
        return m;
    }
    static bool more_probable(const Candidate& a, const Candidate& b) {
        return a.p > b.p || (a.p == b.p && a.id < b.id);
    }

    // p_i = exp((l_i - l_max) / T) / sum_j exp((l_j - l_max) / T)
    void softmax_(const float* logits, int n) {
        prob_.resize(size_t(n));
        float max = logits[argmax(logits, n)];
        double sum = 0;
        for (int i = 0; i < n; i++) {
            prob_[size_t(i)] = std::exp((logits[i] - max) / params.temperature);
            sum += prob_[size_t(i)];
        }
        float inv_sum = float(1.0 / sum);
        for (float& p : prob_) p *= inv_sum;
    }

    // Top-k: the k-th largest probability is found with nth_element (linear time); every token at least that
    // probable is kept, so tokens tied with the k-th all stay (as HF's TopKLogitsWarper does).
    void keep_top_k_() {
        int k = params.top_k;
        std::vector<float> tmp(prob_);
        std::nth_element(tmp.begin(), tmp.begin() + (k - 1), tmp.end(), std::greater<float>());
        float kth = tmp[size_t(k - 1)];
        for (size_t i = 0; i < prob_.size(); i++)
            if (prob_[i] >= kth) cand_.push_back({int(i), prob_[i]});
        std::sort(cand_.begin(), cand_.end(), more_probable);
    }

    // Without top-k, collects (most probable first) only the tokens with p >= cutoff, lowering the cutoff until
    // they hold the top-p mass. Any token below the cutoff is less probable than all those above it, so the
    // top-p prefix found among them is the true one. With min-p, tokens below min_p * p_max are dropped at the
    // end anyway, so that cutoff suffices at once. The loop ends by cutoff 0, which takes every token.
    void keep_above_cutoff_() {
        float p_max = *std::max_element(prob_.begin(), prob_.end());
        float cutoff = params.min_p > 0.0f ? params.min_p * p_max : p_max / 1024.0f;
        for (;;) {
            cand_.clear();
            double mass = 0;
            for (size_t i = 0; i < prob_.size(); i++)
                if (prob_[i] >= cutoff) {
                    cand_.push_back({int(i), prob_[i]});
                    mass += prob_[i];
                }
            if (params.min_p > 0.0f || mass >= params.top_p || cutoff == 0.0f) break;
            cutoff = cutoff > 1e-30f ? cutoff / 1024.0f : 0.0f;
        }
        std::sort(cand_.begin(), cand_.end(), more_probable);
    }

    // Top-p (HF TopPLogitsWarper): keep a token while the mass of the more probable tokens before it is below
    // top_p times the total mass still in play: that of the top-k set (HF renormalises after top-k), else 1.
    void keep_top_p_(double total) {
        if (params.top_p >= 1.0f) return;
        double limit = double(params.top_p) * total, before = 0;
        size_t n = 0;
        while (n < cand_.size() && (n == 0 || before < limit)) before += cand_[n++].p;
        cand_.resize(n);
    }

    // Min-p: keep tokens with p >= min_p * p_max (the ratio is the same before and after renormalising).
    void keep_min_p_() {
        if (params.min_p <= 0.0f) return;
        float threshold = params.min_p * cand_[0].p;
        size_t n = 1;
        while (n < cand_.size() && cand_[n].p >= threshold) n++;
        cand_.resize(n);
    }
};

}  // namespace qwen
