// The weights.bin loader: the exported fixtures load with the values of their checkpoints, and corrupt files
// fail with a qwen::Error that says what is wrong (never a crash; this file also runs under ASan + UBSan).
#include "../qwen.hpp"

#include <doctest/doctest.h>
#include <nlohmann/json.hpp>

#include <fstream>
#include <iterator>
#include <sys/stat.h>

using Bytes = std::vector<uint8_t>;
using json = nlohmann::json;
using qwen::bf16;

static Bytes read_file_bytes(const std::string& path) {
    std::ifstream f(path, std::ios::binary);
    REQUIRE_MESSAGE(f.good(), path << " is missing: run `make fixtures` first");
    return Bytes(std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>());
}

static std::string write_temp(const std::string& name, const Bytes& b) {
    mkdir("build", 0755);
    mkdir("build/tmp", 0755);
    std::string path = "build/tmp/" + name;
    std::ofstream f(path, std::ios::binary | std::ios::trunc);
    f.write(reinterpret_cast<const char*>(b.data()), std::streamsize(b.size()));
    REQUIRE(f.good());
    return path;
}

template <class T> static T get(const Bytes& b, size_t off) {
    T v;
    REQUIRE(off + sizeof v <= b.size());
    memcpy(&v, b.data() + off, sizeof v);
    return v;
}
template <class T> static void put(Bytes& b, size_t off, T v) {
    REQUIRE(off + sizeof v <= b.size());
    memcpy(b.data() + off, &v, sizeof v);
}

// ---------------------------------------------------------------------------------------------------------
// The exported fixtures against their checkpoint folders
// ---------------------------------------------------------------------------------------------------------

// The safetensors file: u64 header length, JSON header, data. Returns the raw bytes of a tensor.
struct SafeTensors {
    Bytes bytes;
    json header;
    size_t data_start = 0;

    explicit SafeTensors(const std::string& path) : bytes(read_file_bytes(path)) {
        uint64_t n = get<uint64_t>(bytes, 0);
        header = json::parse(bytes.begin() + 8, bytes.begin() + 8 + long(n));
        data_start = 8 + n;
    }
    std::vector<bf16> tensor(const std::string& name) const {
        REQUIRE_MESSAGE(header.contains(name), name);
        REQUIRE(header[name]["dtype"] == "BF16");
        size_t begin = header[name]["data_offsets"][0], end = header[name]["data_offsets"][1];
        std::vector<bf16> v((end - begin) / 2);
        memcpy(v.data(), bytes.data() + data_start + begin, end - begin);
        return v;
    }
};

// A matrix view holds the checkpoint's bf16 values byte for byte.
static void check_matrix(const SafeTensors& st, const qwen::Tensor& t, const std::string& name) {
    REQUIRE_MESSAGE(t.data != nullptr, name);
    CHECK(t.type == qwen::DT_BF16);
    std::vector<bf16> want = st.tensor(name);
    REQUIRE(uint64_t(want.size()) * 2 == t.bytes());
    CHECK_MESSAGE(memcmp(t.data, want.data(), want.size() * 2) == 0, name);
}

// A vector view (norm gain, bias) holds the checkpoint's bf16 values widened to fp32.
static void check_vector(const SafeTensors& st, const qwen::Tensor& t, const std::string& name) {
    REQUIRE_MESSAGE(t.data != nullptr, name);
    CHECK(t.type == qwen::DT_F32);
    std::vector<bf16> want = st.tensor(name);
    REQUIRE(int(want.size()) == t.cols);
    bool same = true;
    for (size_t i = 0; i < want.size(); i++) same = same && t.f32()[i] == qwen::bf16_to_f32(want[i]);
    CHECK_MESSAGE(same, name);
}

static void check_fixture(const std::string& name) {
    CAPTURE(name);
    std::string dir = "test/data/" + name + "/";
    json cfg = json::parse(std::ifstream(dir + "config.json"));
    qwen::Model m = qwen::load_model("build/" + name + ".bin");
    const qwen::Config& c = m.config;

    CHECK(m.has_weights);
    CHECK(c.arch == (cfg["architectures"][0] == "Qwen3ForCausalLM" ? qwen::ARCH_QWEN3 : qwen::ARCH_QWEN2));
    CHECK(c.dim == cfg["hidden_size"]);
    CHECK(c.ffn_dim == cfg["intermediate_size"]);
    CHECK(c.n_layers == cfg["num_hidden_layers"]);
    CHECK(c.n_heads == cfg["num_attention_heads"]);
    CHECK(c.n_kv_heads == cfg["num_key_value_heads"]);
    CHECK(c.head_dim == cfg.value("head_dim", c.dim / c.n_heads));
    CHECK(c.vocab_size == cfg["vocab_size"]);
    CHECK(c.max_seq_len == cfg["max_position_embeddings"]);
    CHECK(c.norm_eps == float(cfg["rms_norm_eps"]));
    CHECK(c.rope_theta == double(cfg["rope_parameters"]["rope_theta"]));
    CHECK(c.tied == cfg["tie_word_embeddings"]);
    CHECK(c.qkv_bias == (c.arch == qwen::ARCH_QWEN2));
    CHECK(c.qk_norm == (c.arch == qwen::ARCH_QWEN3));

    CHECK(m.chat.model_name == name);
    CHECK(m.chat.has_default_system);
    CHECK(m.chat.default_system == "You are a helpful assistant.");
    CHECK_FALSE(m.chat.thinking);
    CHECK(m.chat.stop_ids == std::vector<int>{511});
    CHECK(m.chat.temperature == 0.0f);  // no do_sample in generation_config.json: greedy, as HF does
    CHECK(std::isnan(m.chat.top_p));
    CHECK(m.chat.top_k == -1);

    CHECK(m.vocab.tokens.size() == 512);
    CHECK(m.vocab.merges.size() == 253);
    CHECK(m.vocab.tokens[511] == "<|im_end|>");
    CHECK(m.vocab.kind[511] == qwen::TOKEN_SPECIAL);
    CHECK(m.vocab.kind[0] == qwen::TOKEN_REGULAR);

    // Every weight, byte for byte, against the checkpoint.
    SafeTensors st(dir + "model.safetensors");
    const qwen::Weights& w = m.weights;
    REQUIRE(w.layers.size() == size_t(c.n_layers));
    check_matrix(st, w.token_embd, "model.embed_tokens.weight");
    check_vector(st, w.out_norm, "model.norm.weight");
    for (int l = 0; l < c.n_layers; l++) {
        CAPTURE(l);
        const qwen::Layer& y = w.layers[size_t(l)];
        std::string p = "model.layers." + std::to_string(l) + ".";
        check_vector(st, y.attn_norm, p + "input_layernorm.weight");
        check_matrix(st, y.wq, p + "self_attn.q_proj.weight");
        check_matrix(st, y.wk, p + "self_attn.k_proj.weight");
        check_matrix(st, y.wv, p + "self_attn.v_proj.weight");
        check_matrix(st, y.wo, p + "self_attn.o_proj.weight");
        check_vector(st, y.ffn_norm, p + "post_attention_layernorm.weight");
        check_matrix(st, y.w_gate, p + "mlp.gate_proj.weight");
        check_matrix(st, y.w_up, p + "mlp.up_proj.weight");
        check_matrix(st, y.w_down, p + "mlp.down_proj.weight");
        // weights.bin stacks q, k, v (and gate, up) of a layer: the views follow one another in the file.
        CHECK(y.wk.data == y.wq.data + y.wq.bytes());
        CHECK(y.wv.data == y.wk.data + y.wk.bytes());
        CHECK(y.w_up.data == y.w_gate.data + y.w_gate.bytes());
        if (c.qkv_bias) {
            check_vector(st, y.bq, p + "self_attn.q_proj.bias");
            check_vector(st, y.bk, p + "self_attn.k_proj.bias");
            check_vector(st, y.bv, p + "self_attn.v_proj.bias");
        } else {
            CHECK(y.bq.data == nullptr);
        }
        if (c.qk_norm) {
            check_vector(st, y.q_norm, p + "self_attn.q_norm.weight");
            check_vector(st, y.k_norm, p + "self_attn.k_norm.weight");
        } else {
            CHECK(y.q_norm.data == nullptr);
            CHECK(y.k_norm.data == nullptr);
        }
    }
    if (c.tied) {
        CHECK(w.lm_head.data == w.token_embd.data);
    } else {
        check_matrix(st, w.lm_head, "lm_head.weight");
    }
    // Matrices sit inside the mapping, each stacked tensor at 256-byte alignment (the mapping is page aligned).
    for (const qwen::Tensor* t : {&w.token_embd, &w.layers[0].wq, &w.layers[0].w_down, &w.lm_head}) {
        CHECK((reinterpret_cast<uintptr_t>(t->data) - reinterpret_cast<uintptr_t>(m.file.data)) % 256 == 0);
        CHECK(t->data + t->bytes() <= m.file.data + m.file.size);
    }
}

TEST_CASE("model: tiny-qwen2 (GQA, q/k/v bias, tied) loads with its checkpoint's values") {
    check_fixture("tiny-qwen2");
}
TEST_CASE("model: tiny-qwen15 (MHA, q/k/v bias, separate lm_head) loads") { check_fixture("tiny-qwen15"); }
TEST_CASE("model: tiny-qwen3 (q/k norm, head_dim*heads != dim) loads") { check_fixture("tiny-qwen3"); }

TEST_CASE("model: the Model can be moved and keeps its weights") {
    qwen::Model a = qwen::load_model("build/tiny-qwen2.bin");
    const uint8_t* embd = a.weights.token_embd.data;
    const float* norm = a.weights.out_norm.f32();  // widened from bf16: in the Model's own memory
    uint8_t first = embd[0];
    float gain = norm[0];
    qwen::Model b = std::move(a);
    CHECK(b.weights.token_embd.data == embd);
    CHECK(b.weights.token_embd.data[0] == first);
    CHECK(b.weights.out_norm.f32() == norm);
    CHECK(b.weights.out_norm.f32()[0] == gain);
    CHECK(b.file.data != nullptr);
}

TEST_CASE("model: tokenizer-only files") {
    qwen::Model small = qwen::load_tokenizer("build/tokenizer-small.bin");
    CHECK_FALSE(small.has_weights);
    CHECK(small.config.dim == 0);
    CHECK(small.weights.token_embd.data == nullptr);
    CHECK(small.vocab.tokens.size() == 512);
    CHECK(small.chat.default_system == "You are a helpful assistant.");
    CHECK(small.chat.stop_ids == std::vector<int>{511});
    CHECK(std::isnan(small.chat.temperature));  // no generation_config.json: no sampling defaults

    qwen::Model q = qwen::load_tokenizer("build/qwen-tokenizer.bin");
    CHECK(q.vocab.tokens.size() == 151669);
    CHECK(q.vocab.merges.size() == 151387);
    CHECK(q.chat.model_name == "qwen-tokenizer");
    CHECK_FALSE(q.chat.has_default_system);  // Qwen3's template has no default system prompt
    CHECK(q.chat.thinking);
    CHECK(q.chat.stop_ids == std::vector<int>{151645});
    CHECK(q.vocab.tokens[151645] == "<|im_end|>");
    CHECK(q.vocab.tokens[151667] == "<think>");
    CHECK(q.vocab.kind[151667] == qwen::TOKEN_ADDED);  // an added token that is not special
    CHECK(q.vocab.tokens[220] == " ");                 // 'Ġ' is the space byte
    CHECK(q.vocab.tokens[198] == "\n");                // 'Ċ' is the newline byte
    // The 256 single-byte tokens come first and cover every byte value once.
    std::vector<int> seen(256, 0);
    for (int i = 0; i < 256; i++) {
        REQUIRE(q.vocab.tokens[i].size() == 1);
        seen[uint8_t(q.vocab.tokens[i][0])]++;
    }
    CHECK(std::count(seen.begin(), seen.end(), 1) == 256);

    CHECK_THROWS_WITH_AS(qwen::load_model("build/qwen-tokenizer.bin"), doctest::Contains("only a tokenizer"),
                         qwen::Error);
}

TEST_CASE("model: a missing file or a folder fails with its name") {
    CHECK_THROWS_WITH_AS(qwen::load_model("build/tmp/no-such-file.bin"),
                         doctest::Contains("build/tmp/no-such-file.bin: cannot open"), qwen::Error);
    CHECK_THROWS_WITH_AS(qwen::load_model("build"), doctest::Contains("not a regular file"), qwen::Error);
}

// ---------------------------------------------------------------------------------------------------------
// Corrupt files: one change each, one clear message each
// ---------------------------------------------------------------------------------------------------------

// Field offsets of the version-1 format (see the model-file section of qwen.hpp).
enum : size_t {
    H_VERSION = 8, H_FLAGS = 12, H_ARCH = 16, H_DIM = 20, H_FFN = 24, H_LAYERS = 28, H_HEADS = 32,
    H_KV_HEADS = 36, H_HEAD_DIM = 40, H_VOCAB = 44, H_SEQ = 48, H_EPS = 52, H_THETA = 56, H_TEMP = 64,
    H_TOP_P = 68, H_TOP_K = 72, H_N_STOP = 80, H_STOP = 84, H_RESERVED = 116, H_STR_OFF = 120,
    H_STR_SIZE = 128, H_TOK_OFF = 136, H_TOK_SIZE = 144, H_TENS_OFF = 152, H_N_TENS = 160,
    // within a 64-byte tensor entry
    E_DTYPE = 32, E_NDIM = 36, E_SHAPE = 40, E_OFFSET = 52, E_RESERVED = 60,
};

static size_t tok_off(const Bytes& b) { return size_t(get<uint64_t>(b, H_TOK_OFF)); }
static size_t entry(const Bytes& b, int i) { return size_t(get<uint64_t>(b, H_TENS_OFF)) + 64 * size_t(i); }
static size_t first_merge(const Bytes& b) {
    return tok_off(b) + size_t(get<uint64_t>(b, H_TOK_SIZE)) - 8 * size_t(get<uint32_t>(b, tok_off(b) + 4));
}

struct Corruption {
    const char* what;
    std::function<void(Bytes&)> change;
    const char* message;  // a part of the expected error
};

static const uint64_t U64_MAX = ~uint64_t(0);
static const float F_NAN = std::numeric_limits<float>::quiet_NaN();

static const std::vector<Corruption> corruptions = {
    // truncation
    {"empty file", [](Bytes& b) { b.clear(); }, "too short"},
    {"cut inside the header", [](Bytes& b) { b.resize(100); }, "too short"},
    {"cut inside the tokenizer", [](Bytes& b) { b.resize(tok_off(b) + 100); }, "tokenizer section"},
    {"cut inside the tensor table", [](Bytes& b) { b.resize(entry(b, 3)); }, "tensor table"},
    {"cut inside the tensor data", [](Bytes& b) { b.resize(b.size() - 1000); }, "lies outside the file"},
    // header fields
    {"wrong magic", [](Bytes& b) { b[0] = 'X'; }, "bad magic"},
    {"future version", [](Bytes& b) { put<uint32_t>(b, H_VERSION, 3); },
     "written by a newer exporter (version 3), this build reads versions 1 and 2"},
    {"version 0", [](Bytes& b) { put<uint32_t>(b, H_VERSION, 0); }, "unknown format version 0"},
    {"unknown flag", [](Bytes& b) { b[H_FLAGS] |= 0x80; }, "unknown header flags 0x80"},
    {"qk_norm flag without its tensors", [](Bytes& b) { b[H_FLAGS] |= qwen::FLAG_QK_NORM; },
     "n_tensors = 9, the config and flags imply 11"},
    {"tied flag cleared", [](Bytes& b) { b[H_FLAGS] &= ~qwen::FLAG_TIED; }, "imply 10"},
    {"has_weights cleared", [](Bytes& b) { b[H_FLAGS] &= ~qwen::FLAG_HAS_WEIGHTS; }, "must have zero model dims"},
    {"default-system flag cleared", [](Bytes& b) { b[H_FLAGS] &= ~qwen::FLAG_DEFAULT_SYSTEM; },
     "has_default_system = 0"},
    {"unknown arch", [](Bytes& b) { put<uint32_t>(b, H_ARCH, 7); }, "arch = 7 is unknown"},
    {"dim 0", [](Bytes& b) { put<uint32_t>(b, H_DIM, 0); }, "dim = 0 is outside"},
    {"dim near 2^32", [](Bytes& b) { put<uint32_t>(b, H_DIM, 0xFFFFFFFF); }, "dim = 4294967295 is implausible"},
    {"dim too large", [](Bytes& b) { put<uint32_t>(b, H_DIM, 1 << 20); }, "dim = 1048576 is outside"},
    {"too many layers", [](Bytes& b) { put<uint32_t>(b, H_LAYERS, 513); }, "n_layers = 513"},
    {"heads not a multiple of kv heads", [](Bytes& b) { put<uint32_t>(b, H_KV_HEADS, 3); }, "not a multiple"},
    {"more kv heads than heads", [](Bytes& b) { put<uint32_t>(b, H_KV_HEADS, 8); }, "n_kv_heads = 8"},
    {"odd head_dim", [](Bytes& b) { put<uint32_t>(b, H_HEAD_DIM, 15); }, "must be even"},
    {"vocab too large", [](Bytes& b) { put<uint32_t>(b, H_VOCAB, 1u << 23); }, "vocab_size = 8388608"},
    {"vocab smaller than the tokenizer", [](Bytes& b) { put<uint32_t>(b, H_VOCAB, 300); },
     "tokenizer has 512 tokens but vocab_size"},
    {"max_seq_len 0", [](Bytes& b) { put<uint32_t>(b, H_SEQ, 0); }, "max_seq_len = 0"},
    {"norm_eps NaN", [](Bytes& b) { put<float>(b, H_EPS, F_NAN); }, "norm_eps"},
    {"norm_eps 1", [](Bytes& b) { put<float>(b, H_EPS, 1.0f); }, "norm_eps"},
    {"rope_theta infinite", [](Bytes& b) { put<double>(b, H_THETA, INFINITY); }, "rope_theta"},
    {"rope_theta negative", [](Bytes& b) { put<double>(b, H_THETA, -1.0); }, "rope_theta"},
    {"negative temperature", [](Bytes& b) { put<float>(b, H_TEMP, -1.0f); }, "temperature"},
    {"top_p 0", [](Bytes& b) { put<float>(b, H_TOP_P, 0.0f); }, "top_p"},
    {"top_k -5", [](Bytes& b) { put<int32_t>(b, H_TOP_K, -5); }, "top_k"},
    {"no stop ids", [](Bytes& b) { put<uint32_t>(b, H_N_STOP, 0); }, "n_stop_ids = 0"},
    {"9 stop ids", [](Bytes& b) { put<uint32_t>(b, H_N_STOP, 9); }, "n_stop_ids = 9"},
    {"stop id not a token", [](Bytes& b) { put<uint32_t>(b, H_STOP, 600); }, "stop id 600 is not a token"},
    {"stop id near 2^32", [](Bytes& b) { put<uint32_t>(b, H_STOP, 0xFFFFFFFF); }, "out of range"},
    {"unused stop slot set", [](Bytes& b) { put<uint32_t>(b, H_STOP + 4, 5); }, "unused stop id slot 1"},
    {"reserved field set", [](Bytes& b) { put<uint32_t>(b, H_RESERVED, 1); }, "reserved header field"},
    {"header padding set", [](Bytes& b) { b[200] = 1; }, "header padding at offset 200"},
    // section offsets and sizes
    {"strings size 2^64-1", [](Bytes& b) { put<uint64_t>(b, H_STR_SIZE, U64_MAX); }, "strings section"},
    {"strings offset + size wraps 2^64",
     [](Bytes& b) {
         put<uint64_t>(b, H_STR_OFF, U64_MAX - 7);
         put<uint64_t>(b, H_STR_SIZE, 16);
     },
     "lies outside the file"},
    {"strings inside the header", [](Bytes& b) { put<uint64_t>(b, H_STR_OFF, 8); }, "offset 8 is inside the header"},
    {"tokenizer offset past the end", [](Bytes& b) { put<uint64_t>(b, H_TOK_OFF, b.size() + 1); },
     "tokenizer section"},
    {"tokenizer offset 2^64-1", [](Bytes& b) { put<uint64_t>(b, H_TOK_OFF, U64_MAX); }, "tokenizer section"},
    {"tensor table past the end", [](Bytes& b) { put<uint64_t>(b, H_TENS_OFF, b.size() - 64); }, "tensor table"},
    {"n_tensors 2^64-1", [](Bytes& b) { put<uint64_t>(b, H_N_TENS, U64_MAX); }, "n_tensors = 18446744073709551615"},
    {"strings size too large", [](Bytes& b) { put<uint64_t>(b, H_STR_SIZE, get<uint64_t>(b, H_STR_SIZE) + 8); },
     "unexpected bytes"},
    // strings
    {"three strings", [](Bytes& b) { put<uint32_t>(b, get<uint64_t>(b, H_STR_OFF), 3); }, "has 3 strings"},
    {"string length near 2^32", [](Bytes& b) { put<uint32_t>(b, get<uint64_t>(b, H_STR_OFF) + 4, 0xFFFFFFF0); },
     "strings section is truncated"},
    // tokenizer
    {"n_tokens 2^32-1", [](Bytes& b) { put<uint32_t>(b, tok_off(b), 0xFFFFFFFF); }, "n_tokens = 4294967295"},
    {"n_tokens 2^22", [](Bytes& b) { put<uint32_t>(b, tok_off(b), 1u << 22); }, "cannot fit"},
    {"n_tokens 0", [](Bytes& b) { put<uint32_t>(b, tok_off(b), 0); }, "n_tokens = 0"},
    {"n_merges 2^32-1", [](Bytes& b) { put<uint32_t>(b, tok_off(b) + 4, 0xFFFFFFFF); }, "n_merges = 4294967295"},
    {"token length 2^32-1", [](Bytes& b) { put<uint32_t>(b, tok_off(b) + 8, 0xFFFFFFFF); },
     "tokenizer section is truncated"},
    {"empty token", [](Bytes& b) { put<uint32_t>(b, tok_off(b) + 8, 0); }, "token 0 is empty"},
    {"token kind 3", [](Bytes& b) { b[tok_off(b) + 12] = 3; }, "token 0 has unknown kind 3"},
    {"duplicate token bytes", [](Bytes& b) { b[tok_off(b) + 19] = b[tok_off(b) + 13]; }, "have the same bytes"},
    {"a byte with no regular token", [](Bytes& b) { b[tok_off(b) + 12] = 2; }, "no token for the byte 0x21"},
    {"merge ref out of range", [](Bytes& b) { put<uint32_t>(b, first_merge(b), 600); },
     "merge 0 refers to token 600, but there are 512 tokens"},
    {"merge ref near 2^32", [](Bytes& b) { put<uint32_t>(b, first_merge(b) + 4, 0xFFFFFFFF); },
     "refers to token 4294967295"},
    {"merge of a special token", [](Bytes& b) { put<uint32_t>(b, first_merge(b), 511); }, "added token"},
    {"merge result missing", [](Bytes& b) {
         put<uint32_t>(b, first_merge(b), 0);
         put<uint32_t>(b, first_merge(b) + 4, 0);
     },
     "makes bytes that are not a token"},
    {"tokenizer size too small for the merges",
     [](Bytes& b) { put<uint64_t>(b, H_TOK_SIZE, get<uint64_t>(b, H_TOK_SIZE) - 4); }, "n_merges = 253 but"},
    // tensor table
    {"unknown tensor name", [](Bytes& b) { memcpy(&b[entry(b, 0)], "foo\0\0\0\0\0\0\0", 10); },
     "unexpected tensor 'foo'"},
    {"tensor name without NUL", [](Bytes& b) { memset(&b[entry(b, 0)], 'a', 32); }, "no NUL-terminated name"},
    {"junk after the name", [](Bytes& b) { b[entry(b, 0) + 31] = 'x'; }, "bytes after its name"},
    {"duplicate tensor", [](Bytes& b) { memcpy(&b[entry(b, 1)], &b[entry(b, 0)], 32); }, "'token_embd' appears twice"},
    {"bqkv without its flag", [](Bytes& b) {
         b[H_FLAGS] &= ~qwen::FLAG_QKV_BIAS;
         put<uint64_t>(b, H_N_TENS, 8);
     },
     "unexpected tensor 'bqkv'"},
    {"dtype 1 (Q8_0) in a version-1 file", [](Bytes& b) { put<uint32_t>(b, entry(b, 0) + E_DTYPE, 1); },
     "'token_embd' has dtype 1, expected 0 (bf16) in a version-1 file"},
    {"dtype 2", [](Bytes& b) { put<uint32_t>(b, entry(b, 0) + E_DTYPE, 2); }, "dtype 2"},
    {"Q8_0 norm in a version-2 file",
     [](Bytes& b) {
         put<uint32_t>(b, H_VERSION, 2);
         put<uint32_t>(b, entry(b, 1) + E_DTYPE, 1);
     },
     "'attn_norm' has dtype 1 (Q8_0), which only matrices may have"},
    {"ndim 4", [](Bytes& b) { put<uint32_t>(b, entry(b, 0) + E_NDIM, 4); }, "ndim 4"},
    {"shape near 2^32", [](Bytes& b) { put<uint32_t>(b, entry(b, 0) + E_SHAPE, 0xFFFFFFFF); },
     "'token_embd' has shape (4294967295, 64), config implies (512, 64)"},
    {"config dim contradicts the tensors", [](Bytes& b) { put<uint32_t>(b, H_DIM, 128); },
     "'token_embd' has shape (512, 64), config implies (512, 128)"},
    {"config ffn_dim contradicts the tensors", [](Bytes& b) { put<uint32_t>(b, H_FFN, 128); },
     "'w_gate_up' has shape (2, 320, 64), config implies (2, 256, 64)"},
    {"config n_layers contradicts the tensors", [](Bytes& b) { put<uint32_t>(b, H_LAYERS, 3); }, "config implies (3,"},
    {"tensor offset 2^64-256", [](Bytes& b) { put<uint64_t>(b, entry(b, 0) + E_OFFSET, U64_MAX - 255); },
     "lies outside the file"},
    {"tensor offset past the end", [](Bytes& b) { put<uint64_t>(b, entry(b, 2) + E_OFFSET, b.size() / 256 * 256); },
     "'wqkv'"},
    {"tensor offset misaligned",
     [](Bytes& b) { put<uint64_t>(b, entry(b, 0) + E_OFFSET, get<uint64_t>(b, entry(b, 0) + E_OFFSET) + 2); },
     "not a multiple of 256"},
    {"tensor reserved set", [](Bytes& b) { put<uint32_t>(b, entry(b, 0) + E_RESERVED, 1); }, "reserved"},
    {"two tensors share bytes",
     [](Bytes& b) { put<uint64_t>(b, entry(b, 1) + E_OFFSET, get<uint64_t>(b, entry(b, 0) + E_OFFSET)); },
     "overlaps"},
    {"tensor over the tokenizer", [](Bytes& b) { put<uint64_t>(b, entry(b, 1) + E_OFFSET, 512); },
     "overlaps the tokenizer section"},
};

TEST_CASE("model: corrupt files fail with a message that says what is wrong") {
    const Bytes good = read_file_bytes("build/tiny-qwen2.bin");
    REQUIRE(get<uint64_t>(good, H_N_TENS) == 9);  // the offsets above assume tiny-qwen2's layout
    REQUIRE(get<uint32_t>(good, H_FLAGS) == 0x17);
    int i = 0;
    for (const Corruption& c : corruptions) {
        CAPTURE(c.what);
        Bytes b = good;
        c.change(b);
        std::string path = write_temp("corrupt-" + std::to_string(i++) + ".bin", b);
        CHECK_THROWS_WITH_AS(qwen::load_model(path), doctest::Contains(c.message), qwen::Error);
        // The message names the file.
        try {
            qwen::load_model(path);
        } catch (const qwen::Error& e) {
            CHECK(std::string(e.what()).rfind(path + ": ", 0) == 0);
        }
    }
}

TEST_CASE("model: tokenizer-only files are checked as strictly") {
    const Bytes good = read_file_bytes("build/tokenizer-small.bin");
    struct Case { const char* what; std::function<void(Bytes&)> change; const char* message; };
    const std::vector<Case> cases = {
        {"dims in a file without weights", [](Bytes& b) { put<uint32_t>(b, H_DIM, 64); }, "must have zero model dims"},
        {"tensors in a file without weights", [](Bytes& b) { put<uint64_t>(b, H_N_TENS, 1); }, "must have zero"},
        {"stop id past the tokens", [](Bytes& b) { put<uint32_t>(b, H_STOP, 512); }, "stop id 512 is not a token"},
        {"trailing bytes after the merges",
         [](Bytes& b) { put<uint64_t>(b, H_TOK_SIZE, get<uint64_t>(b, H_TOK_SIZE) + 8); }, "n_merges = 253 but"},
    };
    CHECK_NOTHROW(qwen::load_tokenizer(write_temp("tok-good.bin", good)));
    for (const Case& c : cases) {
        CAPTURE(c.what);
        Bytes b = good;
        c.change(b);
        CHECK_THROWS_WITH_AS(qwen::load_tokenizer(write_temp("tok-corrupt.bin", b)), doctest::Contains(c.message),
                             qwen::Error);
    }
}

// Every prefix of the file and random byte changes: each either loads or fails cleanly (the sanitizer build
// turns any out-of-bounds read into a test failure).
TEST_CASE("model: truncated at every length and randomly damaged files never crash") {
    const Bytes good = read_file_bytes("build/tiny-qwen2.bin");
    size_t tokenizer_end = tok_off(good) + size_t(get<uint64_t>(good, H_TOK_SIZE));
    for (size_t n = 0; n < good.size(); n += (n < tokenizer_end + 1024 ? 1 : 4093)) {
        qwen::Model m;
        CHECK_THROWS_AS(m = qwen::parse_model(good.data(), n, "prefix", false), qwen::Error);
    }
    uint64_t state = 12345;  // xorshift: a fixed sequence of changes
    auto next = [&state] { state ^= state << 13, state ^= state >> 7, state ^= state << 17; return state; };
    int loaded = 0, failed = 0;
    for (int trial = 0; trial < 3000; trial++) {
        Bytes b = good;
        for (int k = 0, n = 1 + int(next() % 4); k < n; k++) {
            size_t at = next() % (next() % 2 ? tokenizer_end + 1024 : b.size());
            b[at] = uint8_t(next());
        }
        qwen::Model m;
        try {
            m = qwen::parse_model(b.data(), b.size(), "damaged", false);
        } catch (const qwen::Error&) {
            failed++;
            continue;
        }
        // What loads is usable: the tokenizer builds from it, every weight lies wholly inside the file, every
        // stop id is a token (damage in the weights' values or the strings may load; nothing else may).
        loaded++;
        CHECK_NOTHROW(qwen::Tokenizer{m.vocab});
        // (the norm gains and biases are widened to fp32 into m.widened: there instead)
        auto within = [](const qwen::Tensor& t, const void* base, size_t n) {
            const uint8_t* lo = static_cast<const uint8_t*>(base);
            return t.data >= lo && t.data + t.bytes() <= lo + n;
        };
        qwen::for_each_weight(m.config, m.weights, [&](const qwen::TensorSpec& s, int, const qwen::Tensor& t) {
            if (s.kind == qwen::TensorSpec::MATRIX) REQUIRE(within(t, b.data(), b.size()));
            else REQUIRE(within(t, m.widened.data(), m.widened.size() * sizeof(float)));
        });
        for (int id : m.chat.stop_ids) CHECK(id < int(m.vocab.tokens.size()));
    }
    CHECK(failed > 0);
    CHECK(loaded > 0);  // both outcomes were exercised
}
