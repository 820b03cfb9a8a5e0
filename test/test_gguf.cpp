// GGUF files (llama.cpp's format): the test files of test/data/gguf load with the metadata of their references,
// every block type decodes exactly as the `gguf` Python package does, the CPU engine matches float64 references
// computed over the exactly decoded weights, a GGUF and a weights.bin of one checkpoint agree bit for bit, split
// files load, and the GGUF files derived at build time (`make fixtures`, test/gguf_fixtures.py) are in build/gguf/.
// The corrupt-file suite is in test_gguf_corrupt.cpp.
#include "fixtures.hpp"

#include <fstream>
#include <map>

using namespace qwen;
using json = nlohmann::json;

namespace {

// A GGUF test file by its name: test/data/gguf/ holds llama.cpp's own files, build/gguf/ what is derived.
std::string gguf_path(const std::string& name) {
    std::string data = "test/data/gguf/" + name + ".gguf";
    if (std::ifstream(data).good()) return data;
    std::string built = "build/gguf/" + name + ".gguf";
    REQUIRE_MESSAGE(std::ifstream(built).good(), "missing ", built, " (run `make fixtures`)");
    return built;
}

const json& refs() {
    static const json r = [] {
        std::ifstream f("test/data/gguf/refs.json");
        REQUIRE_MESSAGE(f.good(), "missing test/data/gguf/refs.json (run the tests from the repository root)");
        return json::parse(f);
    }();
    return r;
}

// The float64 reference logits of case 0 (35 rows of 512: after each of input_ids + greedy_ids).
std::vector<float> case0_logits(const std::string& name) {
    std::ifstream f("test/data/gguf/" + name + ".case0.logits.bin", std::ios::binary);
    REQUIRE(f.good());
    std::vector<float> v(35 * 512);
    f.read(reinterpret_cast<char*>(v.data()), std::streamsize(v.size() * sizeof(float)));
    REQUIRE(f.gcount() == std::streamsize(v.size() * sizeof(float)));
    return v;
}

// The files with references: seven of llama.cpp's, and the F16 copies of the BF16 ones (build/gguf).
const char* const kRefFiles[] = {"sq2-BF16", "sq2-F16",   "sq2-Q4_K_M", "sq2-Q5_K_M", "sq3-BF16",
                                 "sq3-F16",  "sq3-Q8_0",  "sq3-Q4_K_M", "sq3-Q4_0"};

// max_i |got_i - ref_i| / max_i |ref_i|
double row_error(const float* got, const float* ref, int n) {
    double diff = 0, scale = 0;
    for (int i = 0; i < n; i++) {
        diff = std::max(diff, double(std::abs(got[i] - ref[i])));
        scale = std::max(scale, double(std::abs(ref[i])));
    }
    return diff / scale;
}

// The digest test/gguf_fixtures.py computes: sum_i bits_i * (i * 0x9E3779B97F4A7C15 + 1) mod 2^64.
struct Digest {
    uint64_t h = 0, i = 0;
    void add(const float* v, int n) {
        for (int k = 0; k < n; k++, i++) {
            uint32_t bits;
            memcpy(&bits, &v[k], 4);
            h += uint64_t(bits) * (i * 0x9E3779B97F4A7C15ull + 1);
        }
    }
};

// The GGUF name of each weight view (as tensor_table lists them) -> the view.
std::map<std::string, const Tensor*> views_by_gguf_name(const Model& m) {
    std::map<std::string, const Tensor*> out;
    for_each_weight(m.config, m.weights, [&](const TensorSpec& s, int l, const Tensor& t) {
        out[(l >= 0 ? "blk." + std::to_string(l) + "." : std::string()) + s.gguf] = &t;
    });
    return out;
}

}  // namespace

TEST_CASE("gguf: the test files load with their references' config, tensor types and chat facts") {
    for (const std::string name : kRefFiles) {
        CAPTURE(name);
        Model m = load_model(gguf_path(name));
        const json& f = refs()["files"][name + ".gguf"];
        const json& want = f["config"];
        const Config& c = m.config;
        CHECK(c.arch == (want["arch"] == "qwen3" ? ARCH_QWEN3 : ARCH_QWEN2));
        CHECK(c.dim == want["hidden"]);
        CHECK(c.n_layers == want["layers"]);
        CHECK(c.n_heads == want["heads"]);
        CHECK(c.n_kv_heads == want["kv_heads"]);
        CHECK(c.head_dim == want["head_dim"]);
        CHECK(c.ffn_dim == want["ff"]);
        CHECK(c.rope_theta == double(want["theta"]));
        CHECK(c.norm_eps == float(want["eps"]));
        CHECK(c.vocab_size == want["vocab"]);
        CHECK(c.qk_norm == bool(want["qk_norm"]));
        CHECK(c.tied == bool(want["tied"]));
        CHECK(c.qkv_bias == (c.arch == ARCH_QWEN2));
        CHECK(c.max_seq_len == 4096);
        // Every tensor has the file's type (the _M mixes included) and the shape of its weight.
        std::map<std::string, const Tensor*> views = views_by_gguf_name(m);
        CHECK(views.size() == f["tensor_types"].size());
        for (auto& [tensor, info] : f["tensor_types"].items()) {
            CAPTURE(tensor);
            REQUIRE(views.count(tensor));
            const Tensor& t = *views[tensor];
            CHECK(dtype_name(t.type) == info["type"].get<std::string>());
            std::vector<int> ne = info["ggml_ne"];
            CHECK(t.cols == ne[0]);
            CHECK(t.rows == (ne.size() > 1 ? ne[1] : 1));
        }
        if (c.tied) CHECK(m.weights.lm_head.data == m.weights.token_embd.data);
        // The tokenizer and the chat facts tools/export.py would record for the same checkpoint.
        CHECK(m.vocab.tokens.size() == 512);
        CHECK(m.vocab.merges.size() == 253);
        CHECK(m.vocab.tokens[511] == "<|im_end|>");
        CHECK(m.vocab.kind[511] == TOKEN_SPECIAL);
        CHECK(m.vocab.tokens[220] == " ");  // 'Ġ' is the space byte
        CHECK(m.chat.default_system == "You are a helpful assistant.");
        CHECK(m.chat.has_default_system);
        CHECK_FALSE(m.chat.thinking);
        CHECK(m.chat.stop_ids == std::vector<int>{511, 509});  // eos, then <|endoftext|>
        CHECK(m.chat.temperature == 0.7f);
        CHECK(m.chat.top_p == 0.8f);
        CHECK(m.chat.top_k == 20);
        CHECK(m.chat.model_name == (name[2] == '2' ? "Sq2" : "Sq3"));  // general.name
    }
}

TEST_CASE("gguf: every block type decodes to gguf.quants.dequantize's values, bit for bit") {
    // Random blocks of every type, scales of every magnitude (build/gguf/dequant.bin).
    std::ifstream f("build/gguf/dequant.bin", std::ios::binary);
    REQUIRE_MESSAGE(f.good(), "missing build/gguf/dequant.bin (run `make fixtures`)");
    std::vector<std::string> seen;
    for (uint32_t head[2]; f.read(reinterpret_cast<char*>(head), 8);) {
        const DTypeInfo ti = dtype_info(head[0]);
        REQUIRE(ti.name);
        CAPTURE(ti.name);
        const int n_blocks = int(head[1]), cols = n_blocks * ti.block;
        std::vector<uint8_t> raw(size_t(n_blocks) * ti.bytes);
        std::vector<float> want(static_cast<size_t>(cols)), got(static_cast<size_t>(cols));
        f.read(reinterpret_cast<char*>(raw.data()), std::streamsize(raw.size()));
        f.read(reinterpret_cast<char*>(want.data()), std::streamsize(want.size() * 4));
        REQUIRE(f.good());
        dequantize_row(Tensor{raw.data(), DType(head[0]), 1, cols}, 0, got.data());
        size_t first_bad = 0;
        while (first_bad < got.size() && memcmp(&got[first_bad], &want[first_bad], 4) == 0) first_bad++;
        CHECK_MESSAGE(first_bad == got.size(), "value ", first_bad, ": ", got[std::min(first_bad, got.size() - 1)],
                      " != ", want[std::min(first_bad, got.size() - 1)]);
        seen.push_back(ti.name);
    }
    CHECK(seen == std::vector<std::string>{"F32", "F16", "BF16", "Q8_0", "Q4_0", "Q5_0", "Q5_1", "Q4_K", "Q5_K",
                                           "Q6_K"});

    // Every tensor of every test file, as the engine reads it (build/gguf/digests.json).
    std::ifstream d("build/gguf/digests.json");
    REQUIRE_MESSAGE(d.good(), "missing build/gguf/digests.json (run `make fixtures`)");
    json digests = json::parse(d);
    std::map<std::string, int> tensors_per_type;
    for (auto& [file, tensors] : digests.items()) {
        CAPTURE(file);
        Model m = load_model(gguf_path(file.substr(0, file.size() - 5)));
        std::map<std::string, const Tensor*> views = views_by_gguf_name(m);
        CHECK(views.size() == tensors.size());
        std::vector<float> row;
        for (auto& [tensor, want] : tensors.items()) {
            CAPTURE(tensor);
            REQUIRE(views.count(tensor));
            const Tensor& t = *views[tensor];
            Digest h;
            row.resize(size_t(t.cols));
            for (int r = 0; r < t.rows; r++) {
                dequantize_row(t, r, row.data());
                h.add(row.data(), t.cols);
            }
            CHECK(std::to_string(h.h) == want.get<std::string>());
            tensors_per_type[dtype_name(t.type)]++;
        }
    }
    for (auto& [type, n] : tensors_per_type) MESSAGE(type, ": ", n, " tensors decoded exactly");
    CHECK(tensors_per_type.size() == 10);  // all ten readable types occur in the test files
}

TEST_CASE("gguf: CPU logits match the float64 references; greedy ids agree where margins are clear") {
    const json& cases = refs()["cases"];
    for (const std::string name : kRefFiles) {
        CAPTURE(name);
        Model m = load_model(gguf_path(name));
        const json& results = refs()["files"][name + ".gguf"]["results"];
        const int V = m.config.vocab_size;
        CpuEngine e(m, 256, 2);
        // Case 0 teacher-forced, every row, against the float64 logits; then as one prefill and in chunks.
        std::vector<int> ids = cases[0]["input_ids"], greedy = results[0]["greedy_ids"];
        ids.insert(ids.end(), greedy.begin(), greedy.end());
        REQUIRE(ids.size() == 35);
        std::vector<float> want = case0_logits(name), decoded(35 * size_t(V));
        double worst = 0;
        for (int t = 0; t < 35; t++) {
            e.forward(&ids[size_t(t)], 1, t);
            std::copy(e.logits(), e.logits() + V, &decoded[size_t(t) * V]);
            worst = std::max(worst, row_error(e.logits(), &want[size_t(t) * V], V));
        }
        e.forward(ids.data(), 35, 0);
        CHECK(std::equal(e.logits(), e.logits() + V, &decoded[34 * size_t(V)]));
        for (int begin = 0, size = 5; begin < 35; begin += size, size += 6) {
            int n = std::min(size, 35 - begin);
            e.forward(&ids[size_t(begin)], n, begin);
            CHECK(std::equal(e.logits(), e.logits() + V, &decoded[size_t(begin + n - 1) * V]));
        }
        // Every case decoded greedily: a different id is an error only where the reference margin is >= 0.05.
        int steps = 0, agreed = 0;
        for (size_t ci = 0; ci < cases.size(); ci++) {
            std::vector<int> ctx = cases[ci]["input_ids"], g = results[ci]["greedy_ids"];
            std::vector<float> margins = results[ci]["margins"];
            e.forward(ctx.data(), int(ctx.size()), 0);
            for (size_t s = 0; s < g.size(); s++) {
                int next = argmax(e.logits(), V);
                steps++;
                if (next != g[s]) {
                    CHECK_MESSAGE(margins[s] < 0.05f, "case ", ci, " step ", s, ": ", next, " != ", g[s]);
                    break;  // later ids depend on this choice
                }
                agreed++;
                ctx.push_back(next);
                e.forward(&next, 1, int(ctx.size()) - 1);
            }
        }
        MESSAGE(name, ": max |logit error| / row max ", worst, "; greedy ", agreed, " of ", steps, " steps equal");
        CHECK(worst <= 1e-5);
    }
}

TEST_CASE("gguf: a quantized model gives the same bits for any thread count and prefill split") {
    Model m = load_model(gguf_path("sq2-Q5_K_M"));
    std::vector<int> ids;
    for (int i = 0; i < 45; i++) ids.push_back((i * 97 + 5) % 512);
    CpuEngine one(m, 64, 1), three(m, 64, 3);
    one.forward(ids.data(), 45, 0);
    for (int t = 0; t < 45; t++) three.forward(&ids[size_t(t)], 1, t);
    CHECK(std::equal(one.logits(), one.logits() + 512, three.logits()));
}

TEST_CASE("gguf: the F32 copy and the BF16 file give the same logits bit for bit") {
    for (const std::string m : {"sq2", "sq3"}) {
        CAPTURE(m);
        Model bf = load_model(gguf_path(m + "-BF16")), f32 = load_model(gguf_path(m + "-F32"));
        CHECK(f32.weights.layers[0].wq.type == DT_F32);
        std::vector<int> ids = {51, 383, 289, 68, 266, 71, 261, 311, 67, 352, 374};
        CpuEngine a(bf, 32, 2), b(f32, 32, 2);
        a.forward(ids.data(), int(ids.size()), 0);
        b.forward(ids.data(), int(ids.size()), 0);
        CHECK(std::equal(a.logits(), a.logits() + 512, b.logits()));
    }
}

TEST_CASE("gguf: a GGUF and a weights.bin of one checkpoint tokenize alike and give the same logits") {
    for (const std::string m : {"sq2", "sq3"}) {
        CAPTURE(m);
        Model g = load_model(gguf_path(m + "-BF16"));
        std::string bin = "build/" + m + ".bin";
        REQUIRE_MESSAGE(std::ifstream(bin).good(), "missing ", bin, " (run `make fixtures`)");
        Model w = load_model(bin);
        // The same tokenizer, token for token, and the same chat facts.
        CHECK(g.vocab.tokens == w.vocab.tokens);
        CHECK(g.vocab.kind == w.vocab.kind);
        CHECK(g.vocab.merges == w.vocab.merges);
        CHECK(g.chat.default_system == w.chat.default_system);
        CHECK(g.chat.has_default_system == w.chat.has_default_system);
        CHECK(g.chat.thinking == w.chat.thinking);
        CHECK(g.chat.stop_ids == w.chat.stop_ids);
        CHECK(g.chat.temperature == w.chat.temperature);
        CHECK(g.chat.top_p == w.chat.top_p);
        CHECK(g.chat.top_k == w.chat.top_k);
        CHECK(g.chat.repetition_penalty == w.chat.repetition_penalty);
        const Config &a = g.config, &b = w.config;
        CHECK((a.arch == b.arch && a.dim == b.dim && a.ffn_dim == b.ffn_dim && a.n_layers == b.n_layers &&
               a.n_heads == b.n_heads && a.n_kv_heads == b.n_kv_heads && a.head_dim == b.head_dim &&
               a.vocab_size == b.vocab_size && a.max_seq_len == b.max_seq_len && a.rope_theta == b.rope_theta &&
               a.norm_eps == b.norm_eps && a.tied == b.tied && a.qkv_bias == b.qkv_bias && a.qk_norm == b.qk_norm));
        Tokenizer tg(g.vocab), tw(w.vocab);
        // GGUF has no normalizer: NFC is the tokenizer's own (HF's ids for the decomposed "café ok").
        for (const std::string text : {"cafe\xcc\x81 ok", "Gr\xc3\xbc\xc3\x9f" "e aus M\xc3\xbcnchen!", "x = [1, 2]\n\tprint(x)",
                                 "<|im_start|>user\nhi<|im_end|>"}) {
            CAPTURE(text);
            CHECK(tg.encode(text, true) == tw.encode(text, true));
            CHECK(tg.encode(text, false) == tw.encode(text, false));
        }
        CHECK(tg.encode("cafe\xcc\x81 ok", false) == std::vector<int>{66, 64, 69, 127, 102, 297, 74});
        CHECK(chat_tokens(tg, g.chat, {{"user", "Hello"}}) == chat_tokens(tw, w.chat, {{"user", "Hello"}}));
        // The same weights: the same logits, bit for bit, at every position.
        std::vector<int> ids = tg.encode("The weather today is not what it was yesterday, said the old man.", false);
        CpuEngine eg(g, 64, 2), ew(w, 64, 2);
        for (int t = 0; t < int(ids.size()); t++) {
            eg.forward(&ids[size_t(t)], 1, t);
            ew.forward(&ids[size_t(t)], 1, t);
            CHECK(std::equal(eg.logits(), eg.logits() + 512, ew.logits()));
        }
    }
}

TEST_CASE("gguf: weights.bin with Q8_0 matrices (export --quant q8_0) equals llama.cpp's Q8_0 file, bit for bit") {
    // The exporter quantizes as llama-quantize does: the same blocks, so the same logits.
    REQUIRE_MESSAGE(std::ifstream("build/sq3-q8_0.bin").good(), "missing build/sq3-q8_0.bin (run `make fixtures`)");
    Model w = load_model("build/sq3-q8_0.bin"), g = load_model(gguf_path("sq3-Q8_0"));
    CHECK(w.weights.layers[0].wq.type == DT_Q8_0);
    CHECK(w.weights.layers[0].attn_norm.type == DT_F32);  // norms stay bf16 in the file, widened
    std::map<std::string, const Tensor*> a = views_by_gguf_name(w), b = views_by_gguf_name(g);
    REQUIRE(a.size() == b.size());
    for (auto& [name, t] : a) {
        CAPTURE(name);
        CHECK(t->type == b[name]->type);
        REQUIRE(t->bytes() == b[name]->bytes());
        CHECK(memcmp(t->data, b[name]->data, t->bytes()) == 0);
    }
    std::vector<int> ids = {51, 383, 289, 68, 266, 71, 261, 311, 67, 352, 374};
    CpuEngine ew(w, 32, 2), eg(g, 32, 2);
    ew.forward(ids.data(), int(ids.size()), 0);
    eg.forward(ids.data(), int(ids.size()), 0);
    CHECK(std::equal(ew.logits(), ew.logits() + 512, eg.logits()));
}

TEST_CASE("gguf: a split file loads from its first part, as the whole file") {
    Model whole = load_model(gguf_path("sq3-Q4_K_M"));
    Model split = load_model("build/gguf/sq3-Q4_K_M-split-00001-of-00003.gguf");
    CHECK(split.parts.size() == 2);
    std::map<std::string, const Tensor*> a = views_by_gguf_name(whole), b = views_by_gguf_name(split);
    REQUIRE(a.size() == b.size());
    for (auto& [name, t] : a) {
        CAPTURE(name);
        REQUIRE(b.count(name));
        CHECK(b[name]->type == t->type);
        REQUIRE(b[name]->bytes() == t->bytes());
        CHECK(memcmp(b[name]->data, t->data, t->bytes()) == 0);
    }
    CHECK(split.vocab.tokens == whole.vocab.tokens);
    CHECK_THROWS_WITH_AS(load_model("build/gguf/sq3-Q4_K_M-split-00002-of-00003.gguf"),
                         doctest::Contains("part 2 of a 3-part GGUF: name its first part"), Error);
    std::vector<int> ids = {1, 2, 3, 4, 5, 6};
    CpuEngine e1(whole, 16, 1), e2(split, 16, 1);
    e1.forward(ids.data(), 6, 0);
    e2.forward(ids.data(), 6, 0);
    CHECK(std::equal(e1.logits(), e1.logits() + 512, e2.logits()));
}

TEST_CASE("gguf: the default system prompt is found in a template as tools/export.py finds it") {
    struct Case {
        const char* tmpl;
        const char* want;
    };
    const Case cases[] = {
        {"{{ '<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n' }}", "You are a helpful assistant."},
        {"{{- '<|im_start|>system\\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\\n' }}",
         "You are Qwen, created by Alibaba Cloud. You are a helpful assistant."},
        {"{{ \"<|im_start|>system\nline one\\tand \\\"two\\\"<|im_end|>\" }}", "line one\tand \"two\""},
        {"{{ '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>' }}", ""},  // a variable: none
        {"{% if x %}<|im_start|>system\\nnot a literal<|im_end|>{% endif %}", ""},
        {"{{ 'a' }}{{ '<|im_start|>system\\n' }}{{ 'b<|im_end|>' }}", ""},  // never across two literals
        {"", ""},
    };
    for (const Case& c : cases) {
        CAPTURE(c.tmpl);
        CHECK(template_default_system(c.tmpl) == c.want);
    }
}
