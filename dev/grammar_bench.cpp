// Grammar token-mask cost per token on one core, with the real Qwen vocabulary (151,669 tokens).
//   make bench-grammar    (or: build/grammar_bench build/qwen-tokenizer.bin [repeats])
// For each grammar it prints the one-off costs (compiling the grammar, binding it to the vocabulary), then the
// cost of GrammarMatcher::allowed (the bit mask of the next token) and of advance, per token, while a valid
// JSON document is generated token by token: a fixed pretty-printed order (about 1,100 tokens, tokenized by the
// Tokenizer as a model would write it), repeated; and random walks that draw each next token uniformly from the
// mask (far stranger text: long strings of rare tokens, every optional branch). Targets (the structured-output
// issue): <= 50 us median and <= 1 ms worst case per token for the mask.
#include <algorithm>
#include <cstdio>
#include <ctime>
#include <string>
#include <vector>

#include "../qwen.hpp"

// An order in an online shop: nested objects, an array of objects, enums, patterns, bounded integers, numbers,
// optional fields, a date-time, nullable values.
static const char* kSchema = R"({
  "type": "object",
  "properties": {
    "order_id": {"type": "string", "pattern": "^ORD-[0-9]{6}$"},
    "created": {"type": "string", "format": "date-time"},
    "status": {"enum": ["pending", "paid", "shipped", "delivered", "cancelled"]},
    "customer": {
      "type": "object",
      "properties": {
        "name": {"type": "string", "maxLength": 80},
        "email": {"type": "string", "pattern": "^[a-z0-9._-]+@[a-z0-9-]+(\\.[a-z]+)+$"},
        "phone": {"anyOf": [{"type": "string", "pattern": "^\\+?[0-9 ]{6,20}$"}, {"type": "null"}]},
        "vip": {"type": "boolean"}
      },
      "required": ["name", "email"],
      "additionalProperties": false
    },
    "items": {
      "type": "array",
      "minItems": 1,
      "maxItems": 100,
      "items": {
        "type": "object",
        "properties": {
          "sku": {"type": "string", "pattern": "^[A-Z]{3}-[0-9]{4}$"},
          "title": {"type": "string"},
          "quantity": {"type": "integer", "minimum": 1, "maximum": 999},
          "unit_price": {"type": "number", "minimum": 0},
          "tags": {"type": "array", "items": {"enum": ["new", "sale", "gift", "fragile"]}, "maxItems": 4}
        },
        "required": ["sku", "title", "quantity", "unit_price"],
        "additionalProperties": false
      }
    },
    "shipping": {
      "type": "object",
      "properties": {
        "street": {"type": "string"},
        "city": {"type": "string"},
        "postcode": {"type": "string"},
        "country": {"type": "string", "pattern": "^[A-Z]{2}$"}
      },
      "required": ["street", "city", "country"],
      "additionalProperties": false
    },
    "notes": {"anyOf": [{"type": "string"}, {"type": "null"}]}
  },
  "required": ["order_id", "created", "status", "customer", "items", "shipping"],
  "additionalProperties": false
})";

static const char* kTitles[] = {"Ceramic coffee mug, 350 ml",
                                "Wireless mouse (2.4 GHz)",
                                "Notebook A5 - dotted",
                                "Stainless steel water bottle",
                                "USB-C cable 2 m",
                                "Desk lamp with dimmer",
                                "Organic green tea, 100 bags",
                                "Running socks \\\"pro\\\" size M",
                                "Linen tote bag",
                                "Mechanical pencil 0.5 mm",
                                "咖啡杯 (陶瓷)",
                                "Café au lait bowl"};

// A valid document for kSchema, pretty-printed with two-space indents as models write JSON.
static std::string document() {
    std::string d =
        "{\n  \"order_id\": \"ORD-004217\",\n  \"created\": \"2024-11-27T14:05:09Z\",\n"
        "  \"status\": \"paid\",\n  \"customer\": {\n    \"name\": \"Ada Lovelace-Byron\",\n"
        "    \"email\": \"ada.lovelace@example.co.uk\",\n    \"phone\": \"+44 20 7946 0958\",\n"
        "    \"vip\": true\n  },\n  \"items\": [\n";
    for (int i = 0; i < 24; i++) {
        char buf[512];
        snprintf(buf, sizeof buf,
                 "    {\n      \"sku\": \"%c%c%c-%04d\",\n      \"title\": \"%s\",\n      \"quantity\": %d,\n"
                 "      \"unit_price\": %d.%02d%s\n    }%s\n",
                 'A' + i % 26, 'B' + i % 7, 'K' + i % 11, 1000 + i * 37, kTitles[i % 12], 1 + i % 5, 3 + i * 7 % 90,
                 i * 13 % 100, i % 3 == 0 ? ",\n      \"tags\": [\"new\", \"gift\"]" : "", i == 23 ? "" : ",");
        d += buf;
    }
    d += "  ],\n  \"shipping\": {\n    \"street\": \"12 St James's Square\",\n    \"city\": \"London\",\n"
         "    \"postcode\": \"SW1Y 4LB\",\n    \"country\": \"GB\"\n  },\n"
         "  \"notes\": \"Leave at the door; ring twice.\\nThank you!\"\n}";
    return d;
}

// CPU time of this thread: the mask is computed on one core, and preemption by other processes is not counted.
static double cpu_us() {
    timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return ts.tv_sec * 1e6 + ts.tv_nsec * 1e-3;
}

struct Stats {
    std::vector<double> mask_us, advance_us;
    void print(const char* name) {
        auto q = [](std::vector<double> v, double f) {
            std::sort(v.begin(), v.end());
            return v[std::min(v.size() - 1, size_t(f * double(v.size())))];
        };
        printf(
            "  %-34s %7zu tokens   mask: median %6.2f  p99 %7.2f  max %7.2f us   advance: median %5.2f  max %6.2f us\n",
            name, mask_us.size(), q(mask_us, 0.5), q(mask_us, 0.99), q(mask_us, 1.0), q(advance_us, 0.5),
            q(advance_us, 1.0));
    }
};

// The fixed document, `repeats` times over.
static Stats run_document(std::shared_ptr<const qwen::TokenGrammar> g, const std::vector<int>& ids, int repeats) {
    Stats s;
    std::vector<uint32_t> mask(size_t(qwen::mask_words(g->vocab->n_vocab)));
    for (int r = 0; r < repeats; r++) {
        qwen::GrammarMatcher m(g);
        for (int id : ids) {
            double t0 = cpu_us();
            m.allowed(mask.data());
            double t1 = cpu_us();
            if (!qwen::mask_test(mask.data(), id)) qwen::fail("the document's token %d is not in the mask", id);
            if (!m.advance(id)) qwen::fail("the document's token %d was refused", id);
            s.mask_us.push_back(t1 - t0);
            s.advance_us.push_back(cpu_us() - t1);
        }
        if (!m.accepts_end()) qwen::fail("the document is incomplete under the grammar");
    }
    return s;
}

// Random walks: each next token drawn uniformly from the mask, walks of at most max_len tokens.
static Stats run_random(std::shared_ptr<const qwen::TokenGrammar> g, int walks, int max_len) {
    Stats s;
    std::vector<uint32_t> mask(size_t(qwen::mask_words(g->vocab->n_vocab)));
    std::vector<int> allowed;
    qwen::Rng rng(42);
    for (int w = 0; w < walks; w++) {
        qwen::GrammarMatcher m(g);
        for (int step = 0; step < max_len && !m.finished(); step++) {
            double t0 = cpu_us();
            m.allowed(mask.data());
            double t1 = cpu_us();
            allowed.clear();
            for (int id = 0; id < g->vocab->n_vocab; id++)
                if (qwen::mask_test(mask.data(), id)) allowed.push_back(id);
            int id = allowed[rng.next_u32() % allowed.size()];
            double t2 = cpu_us();
            m.advance(id);
            s.mask_us.push_back(t1 - t0);
            s.advance_us.push_back(cpu_us() - t2);
        }
    }
    return s;
}

int main(int argc, char** argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: %s TOKENIZER.bin [repeats]\n", argv[0]);
        return 2;
    }
    int repeats = argc > 2 ? atoi(argv[2]) : 20;
    try {
        qwen::Model model = qwen::load_tokenizer(argv[1]);
        qwen::Tokenizer tok(model.vocab);
        double t0 = qwen::now_seconds();
        auto trie = std::make_shared<const qwen::TokenTrie>(model.vocab);
        printf("vocabulary: %d tokens, trie of %zu nodes built in %.0f ms\n", trie->n_vocab, trie->trie.size(),
               (qwen::now_seconds() - t0) * 1e3);
        std::string doc = document();
        std::vector<int> ids = tok.encode(doc, false);
        printf("document: %zu bytes, %zu tokens\n", doc.size(), ids.size());
        struct Case {
            const char* name;
            std::string gbnf;
        };
        for (const Case& c : {Case{"order schema", qwen::json_schema_to_gbnf(kSchema)},
                              Case{"json_object", qwen::json_object_gbnf()}}) {
            double a = qwen::now_seconds();
            qwen::Grammar grammar = qwen::grammar_from_gbnf(c.gbnf);
            double b = qwen::now_seconds();
            size_t n_states = grammar.states.size();
            auto one = qwen::bind_grammar(grammar, trie, 1);
            double d = qwen::now_seconds();
            auto g = qwen::bind_grammar(std::move(grammar), trie);  // every core (at most 8)
            double e = qwen::now_seconds();
            printf("%s: %zu DFA states; compile %.1f ms, bind to the vocabulary %.0f ms on one thread, %.0f ms on %u\n",
                   c.name, n_states, (b - a) * 1e3, (d - b) * 1e3, (e - d) * 1e3,
                   std::min(8u, std::max(1u, std::thread::hardware_concurrency())));
            run_document(g, ids, repeats).print("the document, token by token");
            run_random(g, 20, 300).print("random walks (20 x <= 300 tokens)");
        }
    } catch (const qwen::Error& e) {
        fprintf(stderr, "grammar_bench: error: %s\n", e.what());
        return 1;
    }
    return 0;
}
