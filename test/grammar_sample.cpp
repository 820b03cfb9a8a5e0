// build/grammar_sample MODEL.bin SCHEMA.json N [SEED] [MAX_TOKENS]
// Generates N answers constrained by a JSON Schema with the CPU engine, at temperature 1 with no filter (top-k,
// top-p off), seeds SEED, SEED+1, ...; prints one JSON line per answer:
//   {"seed": 3, "finish_reason": "stop", "tokens": 41, "text": "{\"a\": 1}"}
// With a random-weight model the grammar's mask does all the work. test_grammar_schemas.py validates the answers
// with the jsonschema package. Errors (a bad schema, a bad file) print "grammar_sample: error: ..." and exit 1.
#include <cstdio>
#include <fstream>
#include <sstream>
#include <string>

#include "../qwen.hpp"

int main(int argc, char** argv) {
    if (argc < 4) {
        fprintf(stderr, "usage: %s MODEL.bin SCHEMA.json N [SEED] [MAX_TOKENS]\n", argv[0]);
        return 2;
    }
    try {
        std::ifstream in(argv[2], std::ios::binary);
        if (!in) qwen::fail("cannot read %s", argv[2]);
        std::stringstream schema;
        schema << in.rdbuf();
        int n = atoi(argv[3]);
        uint64_t seed = argc > 4 ? strtoull(argv[4], nullptr, 10) : 0;
        int max_tokens = argc > 5 ? atoi(argv[5]) : 800;

        qwen::Grammar grammar = qwen::grammar_from_json_schema(schema.str());  // errors before the model loads
        qwen::Model model = qwen::load_model(argv[1]);
        qwen::Tokenizer tok(model.vocab);
        qwen::CpuEngine engine(model, std::min(model.config.max_seq_len, 1024), 1);
        qwen::Session session(engine, tok);
        auto trie = std::make_shared<const qwen::TokenTrie>(model.vocab, model.config.vocab_size);
        qwen::GenerateOptions opt;
        opt.grammar = qwen::bind_grammar(std::move(grammar), trie);
        opt.stop_ids = model.chat.stop_ids;
        opt.max_new_tokens = max_tokens;
        std::vector<int> prompt = tok.encode("Reply with JSON:", false);
        for (int i = 0; i < n; i++) {
            qwen::SamplingParams p;
            p.temperature = 1.0f;
            p.top_k = 0;
            p.top_p = 1.0f;
            p.seed = seed + uint64_t(i);
            qwen::Sampler sampler(p);
            qwen::GenerateResult r = session.generate(prompt, sampler, opt);
            std::string line = "{\"seed\": " + std::to_string(p.seed) + ", \"finish_reason\": \"" + r.finish_reason +
                               "\", \"tokens\": " + std::to_string(r.completion_tokens) + ", \"text\": ";
            qwen::json_quote(line, qwen::utf8_sanitize(r.text));
            printf("%s}\n", line.c_str());
        }
    } catch (const qwen::Error& e) {
        fprintf(stderr, "grammar_sample: error: %s\n", e.what());
        return 1;
    }
    return 0;
}
