// libFuzzer target for the grammar front ends: the first byte picks GBNF ('g'), JSON Schema ('s') or regex
// (anything else); the rest is the text. Any input must compile or fail with qwen::Error, within the size
// limits, without reading out of bounds, leaking, recursing without bound or hanging. A grammar that compiles is
// then run: matched against the input's own bytes, bound to a small byte-level vocabulary, and walked for a few
// tokens, each step checking the mask against the automaton stepped directly.
// Built with clang's -fsanitize=fuzzer,address,undefined; `make fuzz` runs it, seeded with test/fuzz-grammar/.
#include "../qwen.hpp"

// The 256 single bytes, some multi-byte tokens that cross grammar elements, and one special token.
static std::shared_ptr<const qwen::TokenTrie> small_vocab() {
    qwen::Vocab v;
    for (int b = 0; b < 256; b++) v.tokens.push_back(std::string(1, char(b))), v.kind.push_back(qwen::TOKEN_REGULAR);
    for (const char* t : {"{\"", "\":", "\",", "\"}", ", ", "  ", "\n ", "ab", "true", "null", "12", "中", "\xe4\xb8",
                          "]}", "\\n", "-0", "e+", "<|end|>"}) {
        v.tokens.push_back(t);
        v.kind.push_back(std::string(t) == "<|end|>" ? qwen::TOKEN_SPECIAL : qwen::TOKEN_REGULAR);
    }
    return std::make_shared<const qwen::TokenTrie>(v);
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    static const std::shared_ptr<const qwen::TokenTrie> vocab = small_vocab();
    if (size == 0) return 0;
    std::string text(reinterpret_cast<const char*>(data) + 1, size - 1);
    try {
        qwen::Grammar g = data[0] == 'g'   ? qwen::grammar_from_gbnf(text)
                          : data[0] == 's' ? qwen::grammar_from_json_schema(text)
                                           : qwen::grammar_from_regex(text);
        volatile bool m = g.matches(text);
        (void)m;
        if (g.states.size() > 2000) return 0;  // binding big grammars is correct but slow for a fuzzer
        auto tg = qwen::bind_grammar(std::move(g), vocab, 1);
        qwen::GrammarMatcher matcher(tg);
        std::vector<uint32_t> mask(size_t(qwen::mask_words(vocab->n_vocab)));
        for (size_t step = 0; step < 16 && !matcher.finished(); step++) {
            matcher.allowed(mask.data());
            int pick = -1, n = 0;
            for (int id = 0; id < vocab->n_vocab; id++) {
                qwen::GrammarMatcher copy = matcher;
                bool ok = copy.would_accept(vocab->bytes[size_t(id)]) && qwen::mask_test(vocab->usable.data(), id);
                if (ok != qwen::mask_test(mask.data(), id)) __builtin_trap();  // the mask disagrees with the automaton
                if (ok && (n++ == 0 || data[step % size] % n == 0)) pick = id;
            }
            if (pick < 0 || !matcher.advance(pick)) __builtin_trap();  // only a finished grammar has no token
        }
    } catch (const qwen::Error&) {
    }
    return 0;
}
