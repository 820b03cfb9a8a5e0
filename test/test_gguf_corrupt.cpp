// Corrupt GGUF files: each change gives one qwen::Error that names the file and what is wrong, never a crash
// (this file also runs under ASan + UBSan). The changes follow GGUF's own security bugs: counts and string or
// array lengths that overflow or exceed the file, tensor offsets and sizes past the end, dimensions whose
// product overflows, misaligned data, duplicate keys and names; then everything the Qwen reader requires.
#include "../qwen.hpp"

#include <doctest/doctest.h>

#include <fstream>
#include <functional>
#include <iterator>
#include <sys/stat.h>

using Bytes = std::vector<uint8_t>;

namespace {

Bytes read_bytes(const std::string& path) {
    std::ifstream f(path, std::ios::binary);
    REQUIRE_MESSAGE(f.good(), path << " is missing: run `make fixtures` first");
    return Bytes(std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>());
}

// A GGUF file taken apart into its metadata entries (raw value bytes), tensor infos and data, to be changed
// and put back together (build). Parses only well-formed files: the test's own inputs.
struct Gguf {
    struct KV {
        std::string key;
        uint32_t type;
        Bytes value;  // the value's bytes as in the file (after the type)
    };
    struct Info {
        std::string name;
        std::vector<uint64_t> ne;
        uint32_t type;
        uint64_t offset;  // from the data start
    };
    uint32_t version = 3;
    std::vector<KV> kv;
    std::vector<Info> tensors;
    Bytes data;  // everything from the data start to the end of the file
    uint64_t alignment = 32;

    static Gguf parse(const Bytes& b) {
        Gguf g;
        size_t p = 4;
        auto u32 = [&] { uint32_t v; memcpy(&v, &b[p], 4); p += 4; return v; };
        auto u64 = [&] { uint64_t v; memcpy(&v, &b[p], 8); p += 8; return v; };
        auto str = [&] { uint64_t n = u64(); std::string s(b.begin() + long(p), b.begin() + long(p + n)); p += n; return s; };
        std::function<void(uint32_t)> skip = [&](uint32_t t) {
            static const int size[] = {1, 1, 2, 2, 4, 4, 4, 1, 0, 0, 8, 8, 8};
            if (t == qwen::GG_STRING) p += u64();
            else if (t == qwen::GG_ARRAY) {
                uint32_t e = u32();
                uint64_t n = u64();
                for (uint64_t i = 0; i < n; i++) skip(e);
            } else p += size[t];
        };
        g.version = u32();
        uint64_t n_tensors = u64(), n_kv = u64();
        for (uint64_t i = 0; i < n_kv; i++) {
            KV e;
            e.key = str();
            e.type = u32();
            size_t start = p;
            skip(e.type);
            e.value.assign(b.begin() + long(start), b.begin() + long(p));
            g.kv.push_back(e);
        }
        for (uint64_t i = 0; i < n_tensors; i++) {
            Info t;
            t.name = str();
            uint32_t n_dims = u32();
            for (uint32_t k = 0; k < n_dims; k++) t.ne.push_back(u64());
            t.type = u32();
            t.offset = u64();
            g.tensors.push_back(t);
        }
        p = (p + 31) / 32 * 32;
        g.data.assign(b.begin() + long(p), b.end());
        return g;
    }

    Bytes build() const {
        Bytes b = {'G', 'G', 'U', 'F'};
        auto put = [&b](const void* v, size_t n) { b.insert(b.end(), (const uint8_t*)v, (const uint8_t*)v + n); };
        auto u32 = [&](uint32_t v) { put(&v, 4); };
        auto u64 = [&](uint64_t v) { put(&v, 8); };
        auto str = [&](const std::string& s) { u64(s.size()); put(s.data(), s.size()); };
        u32(version);
        u64(tensors.size());
        u64(kv.size());
        for (const KV& e : kv) {
            str(e.key);
            u32(e.type);
            put(e.value.data(), e.value.size());
        }
        for (const Info& t : tensors) {
            str(t.name);
            u32(uint32_t(t.ne.size()));
            for (uint64_t d : t.ne) u64(d);
            u32(t.type);
            u64(t.offset);
        }
        b.resize((b.size() + alignment - 1) / alignment * alignment);
        put(data.data(), data.size());
        return b;
    }

    KV& key(const std::string& k) {
        for (KV& e : kv)
            if (e.key == k) return e;
        FAIL("no key " << k);
        throw 0;
    }
    Info& tensor(const std::string& n) {
        for (Info& t : tensors)
            if (t.name == n) return t;
        FAIL("no tensor " << n);
        throw 0;
    }
    void erase_key(const std::string& k) {
        kv.erase(std::remove_if(kv.begin(), kv.end(), [&](const KV& e) { return e.key == k; }), kv.end());
    }
    void set_string(const std::string& k, const std::string& v) {
        KV& e = key(k);
        e.type = qwen::GG_STRING;
        e.value.clear();
        uint64_t n = v.size();
        e.value.insert(e.value.end(), (const uint8_t*)&n, (const uint8_t*)&n + 8);
        e.value.insert(e.value.end(), v.begin(), v.end());
    }
    void set_u32(const std::string& k, uint32_t v) {
        if (std::none_of(kv.begin(), kv.end(), [&](const KV& e) { return e.key == k; })) kv.push_back({k, 0, {}});
        KV& e = key(k);
        e.type = qwen::GG_U32;
        e.value.assign((const uint8_t*)&v, (const uint8_t*)&v + 4);
    }
    // Element i of an array of u32/i32 (the token types).
    void set_array_i32(const std::string& k, size_t i, int32_t v) { memcpy(&key(k).value[12 + 4 * i], &v, 4); }
    // Offset, within the built file, of the start of metadata entry k's value.
    size_t value_offset(const std::string& k) const {
        size_t p = 24;
        for (const KV& e : kv) {
            p += 8 + e.key.size() + 4;
            if (e.key == k) return p;
            p += e.value.size();
        }
        FAIL("no key " << k);
        return 0;
    }
};

struct Change {
    const char* what;
    std::function<void(Gguf&)> edit;                 // on the parsed file, or
    std::function<void(Bytes&)> patch;               // on the built bytes
    const char* message;                             // a part of the expected error
};

template <class T> void put_at(Bytes& b, size_t off, T v) {
    REQUIRE(off + sizeof v <= b.size());
    memcpy(&b[off], &v, sizeof v);
}

const uint64_t U64_MAX = ~uint64_t(0);

// The base file of most changes: tiny-qwen3 with mixed block types (Q8_0, Q4_0, Q5_0, Q5_1, F16, BF16).
const char* const kBase = "build/gguf/tiny-qwen3-mix.gguf";

const std::vector<Change> changes = {
    // the header
    {"empty file", nullptr, [](Bytes& b) { b.clear(); }, "too short for a weights.bin header"},
    {"only the magic", nullptr, [](Bytes& b) { b.resize(10); }, "too short for a GGUF header"},
    {"version 1", [](Gguf& g) { g.version = 1; }, nullptr, "GGUF version 1 is not supported"},
    {"version 4", [](Gguf& g) { g.version = 4; }, nullptr, "GGUF version 4 is not supported"},
    {"n_kv 2^64-1", nullptr, [](Bytes& b) { put_at<uint64_t>(b, 16, U64_MAX); }, "metadata entries cannot fit"},
    {"n_tensors 2^64-1", nullptr, [](Bytes& b) { put_at<uint64_t>(b, 8, U64_MAX); }, "tensors cannot fit"},
    {"n_tensors 2^61 (x 8 overflows)", nullptr, [](Bytes& b) { put_at<uint64_t>(b, 8, uint64_t(1) << 61); },
     "tensors cannot fit"},
    // strings and arrays
    {"key length 2^64-1", nullptr, [](Bytes& b) { put_at<uint64_t>(b, 24, U64_MAX); }, "metadata key"},
    {"key length 2^63", nullptr, [](Bytes& b) { put_at<uint64_t>(b, 24, uint64_t(1) << 63); }, "metadata key"},
    {"empty key", [](Gguf& g) { g.kv[1].key = ""; }, nullptr, "has an empty key"},
    {"string value length 2^64-1",
     nullptr, [](Bytes& b) { put_at<uint64_t>(b, Gguf::parse(b).value_offset("general.architecture"), U64_MAX); },
     "runs past the end of the file"},
    {"string value length wraps the offset",
     nullptr, [](Bytes& b) {
         put_at<uint64_t>(b, Gguf::parse(b).value_offset("general.architecture"), U64_MAX - 20);
     },
     "runs past the end of the file"},
    {"array count 2^64-1",
     nullptr, [](Bytes& b) { put_at<uint64_t>(b, Gguf::parse(b).value_offset("tokenizer.ggml.tokens") + 4, U64_MAX); },
     "does not fit in the file"},
    {"array count 2^62 of u32 (x 4 overflows)",
     nullptr, [](Bytes& b) {
         put_at<uint64_t>(b, Gguf::parse(b).value_offset("tokenizer.ggml.token_type") + 4, uint64_t(1) << 62);
     },
     "does not fit in the file"},
    {"array of an unknown type",
     nullptr, [](Bytes& b) { put_at<uint32_t>(b, Gguf::parse(b).value_offset("tokenizer.ggml.tokens"), 13); },
     "array of unknown type 13"},
    {"value of an unknown type", [](Gguf& g) { g.key("general.name").type = 99; }, nullptr,
     "unknown metadata value type 99"},
    {"duplicate key", [](Gguf& g) { g.kv.push_back(g.key("general.architecture")); }, nullptr,
     "metadata key 'general.architecture' appears twice"},
    {"alignment 7", [](Gguf& g) { g.set_u32("general.alignment", 7); }, nullptr, "general.alignment must be"},
    {"alignment 0", [](Gguf& g) { g.set_u32("general.alignment", 0); }, nullptr, "general.alignment must be"},
    // tensor infos
    {"tensor name of 65 bytes", [](Gguf& g) { g.tensors[0].name = std::string(65, 'a'); }, nullptr,
     "a tensor name of 65 bytes"},
    {"5 dimensions", [](Gguf& g) { g.tensors[0].ne = {32, 1, 1, 1, 1}; }, nullptr, "has 5 dimensions"},
    {"a zero dimension", [](Gguf& g) { g.tensors[0].ne[1] = 0; }, nullptr, "implausible dimension 1 = 0"},
    {"dimensions whose product overflows", [](Gguf& g) { g.tensors[0].ne = {64, uint64_t(1) << 32, uint64_t(1) << 32}; },
     nullptr, "implausible dimension"},
    {"dimension 2^63", [](Gguf& g) { g.tensors[0].ne[1] = uint64_t(1) << 63; }, nullptr, "implausible dimension"},
    {"unknown type 99", [](Gguf& g) { g.tensors[0].type = 99; }, nullptr, "is type 99, a type this build does not read"},
    {"an unsupported type (IQ2_XS)", [](Gguf& g) { g.tensor("blk.0.attn_q.weight").type = 17; }, nullptr,
     "tensor 'blk.0.attn_q.weight' is IQ2_XS, a type this build does not read"},
    {"rows not whole blocks", [](Gguf& g) { g.tensor("blk.0.attn_q.weight").type = qwen::DT_Q4_K; }, nullptr,
     "is Q4_K but its rows of 64 values are not whole blocks of 256"},
    {"misaligned offset", [](Gguf& g) { g.tensors[1].offset += 4; }, nullptr, "is not a multiple of the alignment 32"},
    {"offset past the end", [](Gguf& g) { g.tensors[1].offset = uint64_t(g.data.size()) + 32; }, nullptr,
     "lies outside the file"},
    {"offset 2^64-32", [](Gguf& g) { g.tensors[1].offset = U64_MAX - 31; }, nullptr, "lies outside the file"},
    {"data cut short", [](Gguf& g) { g.data.resize(g.data.size() - 64); }, nullptr, "lies outside the file"},
    {"two tensors on the same bytes", [](Gguf& g) { g.tensors[1].offset = g.tensors[0].offset; }, nullptr, "overlaps"},
    {"duplicate tensor name", [](Gguf& g) { g.tensors[1].name = g.tensors[0].name; }, nullptr, "appears twice"},
    // the model
    {"architecture llama", [](Gguf& g) { g.set_string("general.architecture", "llama"); }, nullptr,
     "architecture 'llama' is not supported (supported: qwen2, qwen3)"},
    {"no architecture", [](Gguf& g) { g.erase_key("general.architecture"); }, nullptr,
     "metadata 'general.architecture' is missing"},
    {"architecture not a string", [](Gguf& g) { g.set_u32("general.architecture", 2); }, nullptr,
     "metadata 'general.architecture' must be a string"},
    {"block_count missing", [](Gguf& g) { g.erase_key("qwen3.block_count"); }, nullptr,
     "metadata 'qwen3.block_count' is missing"},
    {"block_count 2^32-1", [](Gguf& g) { g.set_u32("qwen3.block_count", 0xFFFFFFFF); }, nullptr,
     "metadata 'qwen3.block_count' = 4294967295 is outside"},
    {"block_count 3 (a layer more than the tensors)", [](Gguf& g) { g.set_u32("qwen3.block_count", 3); }, nullptr,
     "tensor 'blk.2.attn_norm.weight' is missing"},
    {"head_count_kv 3", [](Gguf& g) { g.set_u32("qwen3.attention.head_count_kv", 3); }, nullptr, "not a multiple"},
    {"embedding_length 65", [](Gguf& g) { g.set_u32("qwen3.embedding_length", 65); }, nullptr, "has shape"},
    {"rope scaling yarn", [](Gguf& g) {
         g.kv.push_back({"qwen3.rope.scaling.type", 0, {}});
         g.set_string("qwen3.rope.scaling.type", "yarn");
     },
     nullptr, "RoPE scaling 'yarn' is not supported"},
    {"value_length differs", [](Gguf& g) { g.set_u32("qwen3.attention.value_length", 64); }, nullptr,
     "value_length differs"},
    {"no token_embd", [](Gguf& g) { g.tensor("token_embd.weight").name = "token_embd.other"; }, nullptr,
     "tensor 'token_embd.weight' is missing"},
    {"a tensor the model does not use", [](Gguf& g) { g.tensor("blk.1.attn_q.weight").name = "blk.1.attn_output.bias"; },
     nullptr, "tensor 'blk.1.attn_q.weight' is missing"},
    {"a weight of the wrong shape", [](Gguf& g) { std::swap(g.tensor("blk.0.ffn_up.weight").ne[0], g.tensor("blk.0.ffn_up.weight").ne[1]); },
     nullptr, "'blk.0.ffn_up.weight' has shape (192, 64), the metadata implies (64, 192) (ggml order)"},
    {"a norm quantized", [](Gguf& g) { g.tensor("blk.0.attn_norm.weight").type = qwen::DT_Q8_0; }, nullptr,
     "a norm or bias must be F32, F16 or BF16"},
    // the tokenizer and chat facts
    {"tokenizer model llama", [](Gguf& g) { g.set_string("tokenizer.ggml.model", "llama"); }, nullptr,
     "tokenizer model 'llama' is not supported"},
    {"pre-tokenizer llama3", [](Gguf& g) { g.set_string("tokenizer.ggml.pre", "llama3"); }, nullptr,
     "pre-tokenizer 'llama3' is not supported"},
    {"no token types", [](Gguf& g) { g.erase_key("tokenizer.ggml.token_type"); }, nullptr,
     "'tokenizer.ggml.token_type' is missing"},
    {"tokens not strings",
     [](Gguf& g) {
         g.key("tokenizer.ggml.tokens").value = g.key("tokenizer.ggml.token_type").value;
     },
     nullptr, "must be an array of strings"},
    {"an unused token before used ones", [](Gguf& g) { g.set_array_i32("tokenizer.ggml.token_type", 100, 5); }, nullptr,
     "token 100 is unused but token 101 is not"},
    {"a byte token type", [](Gguf& g) { g.set_array_i32("tokenizer.ggml.token_type", 7, 6); }, nullptr,
     "token 7 has type 6"},
    {"eos id past the tokens", [](Gguf& g) { g.set_u32("tokenizer.ggml.eos_token_id", 512); }, nullptr,
     "'tokenizer.ggml.eos_token_id' = 512 is outside"},
    {"temperature -1", [](Gguf& g) {
         g.set_u32("general.sampling.temp", 0);
         float v = -1;
         g.key("general.sampling.temp").type = qwen::GG_F32;
         memcpy(g.key("general.sampling.temp").value.data(), &v, 4);
     },
     nullptr, "default temperature = -1"},
};

}  // namespace

TEST_CASE("gguf corrupt: each change fails with a message that names the file and says what is wrong") {
    const Bytes good = read_bytes(kBase);
    REQUIRE_NOTHROW(qwen::parse_model(good.data(), good.size(), "good", true));
    const Gguf base = Gguf::parse(good);
    REQUIRE(base.build() == good);  // the editor puts the file back together byte for byte
    mkdir("build/tmp", 0755);
    int i = 0;
    for (const Change& c : changes) {
        std::string what = c.what;
        CAPTURE(what);
        Bytes b;
        if (c.edit) {
            Gguf g = base;
            c.edit(g);
            b = g.build();
        } else {
            b = good;
            c.patch(b);
        }
        std::string path = "build/tmp/corrupt-" + std::to_string(i++) + ".gguf";
        std::ofstream(path, std::ios::binary).write(reinterpret_cast<const char*>(b.data()), std::streamsize(b.size()));
        try {
            qwen::load_model(path);
            FAIL("loaded");
        } catch (const qwen::Error& e) {
            std::string msg = e.what();
            CHECK_MESSAGE(msg.find(c.message) != std::string::npos, msg);
            CHECK_MESSAGE(msg.rfind(path + ": ", 0) == 0, msg);
            CHECK(msg.find('\n') == std::string::npos);
        }
    }
}

TEST_CASE("gguf corrupt: K-quant files are checked as strictly (a split part alone, an untied head)") {
    const Bytes good = read_bytes("test/data/gguf/sq2-Q4_K_M.gguf");
    Gguf g = Gguf::parse(good);
    REQUIRE(g.build() == good);
    Gguf h = g;
    h.tensor("output.weight").name = "output.weights";
    CHECK_THROWS_WITH_AS(qwen::parse_model(h.build().data(), h.build().size(), "x", true),
                         doctest::Contains("unexpected tensor 'output.weights'"), qwen::Error);
    h = g;
    h.tensor("blk.2.attn_v.weight").ne = {128, 128};  // Q6_K with the right byte count, the wrong shape
    CHECK_THROWS_WITH_AS(qwen::parse_model(h.build().data(), h.build().size(), "x", true),
                         doctest::Contains("rows of 128 values are not whole blocks of 256"), qwen::Error);
    h = g;
    h.set_u32("split.count", 2);
    CHECK_THROWS_WITH_AS(qwen::parse_model(h.build().data(), h.build().size(), "x", true),
                         doctest::Contains("part 1 of a 2-part GGUF"), qwen::Error);
    h = g;
    h.set_u32("split.count", 2);
    std::string path = "build/tmp/notsplit.gguf";
    Bytes b = h.build();
    std::ofstream(path, std::ios::binary).write(reinterpret_cast<const char*>(b.data()), std::streamsize(b.size()));
    CHECK_THROWS_WITH_AS(qwen::load_model(path), doctest::Contains("first part must be named NAME-00001-of-00002.gguf"),
                         qwen::Error);
}

// Every prefix of the file and random byte changes: each either loads or fails cleanly (the sanitizer build
// turns any out-of-bounds read into a test failure).
TEST_CASE("gguf corrupt: truncated at every length and randomly damaged files never crash") {
    const Bytes good = read_bytes(kBase);
    const Gguf g = Gguf::parse(good);
    const size_t data_start = good.size() - g.data.size();
    for (size_t n = 0; n < good.size(); n += (n < data_start + 64 ? 1 : 997)) {
        qwen::Model m;
        CHECK_THROWS_AS(m = qwen::parse_model(good.data(), n, "prefix", true), qwen::Error);
    }
    uint64_t state = 4242;
    auto next = [&state] { state ^= state << 13, state ^= state >> 7, state ^= state << 17; return state; };
    int loaded = 0, failed = 0;
    std::vector<float> row;
    for (int trial = 0; trial < 3000; trial++) {
        Bytes b = good;
        for (int k = 0, n = 1 + int(next() % 4); k < n; k++) {
            size_t at = next() % (next() % 2 ? data_start : b.size());
            b[at] = uint8_t(next());
        }
        try {
            qwen::Model m = qwen::parse_model(b.data(), b.size(), "damaged", false);
            if (m.has_weights)  // whatever bytes the blocks hold, decoding them stays inside the tensor
                qwen::for_each_weight(m.config, m.weights, [&](const qwen::TensorSpec&, int, const qwen::Tensor& t) {
                    row.resize(size_t(t.cols));
                    qwen::dequantize_row(t, t.rows - 1, row.data());
                });
            loaded++;
        } catch (const qwen::Error&) {
            failed++;
        }
    }
    MESSAGE("random damage: ", loaded, " files loaded, ", failed, " refused");
    CHECK(loaded + failed == 3000);
    CHECK(failed > 0);
    CHECK(loaded > 0);
}
