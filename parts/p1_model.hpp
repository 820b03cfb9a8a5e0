// ============================================================================
// Model file: the weights.bin format and its validating, memory-mapped reader
// ============================================================================
// weights.bin (written by tools/export.py) holds everything the engine needs: the model dims, the chat facts,
// the tokenizer and the bf16 weights. Version 1, little-endian, offsets absolute from the start of the file:
//
//   header       256 bytes: magic "QWENBIN\0", version, flags, dims, sampling defaults, stop ids,
//                offset and size of each section below (field table in read_header)
//   strings      u32 count (= 2), count x (u32 len, len bytes): model name, default system prompt
//   tokenizer    u32 n_tokens, u32 n_merges, n_tokens x (u32 len, u8 kind, len bytes),
//                n_merges x (u32 left id, u32 right id), rank 0 first
//   tensors      n_tensors x 64-byte entries: char name[32], u32 dtype (0 = bf16), u32 ndim,
//                u32 shape[3], u64 data offset (multiple of 256), u32 reserved
//   data         each tensor's bf16 values, row-major, 256-byte aligned
//
// The file is mapped read-only and the weights are used in place (no copy). Because the file comes from
// outside, every field is checked before it is used: each count and length against the bytes that remain,
// each offset with overflow-safe arithmetic, each tensor's shape against the one the config implies. A bad
// file fails with one message naming the file and the field; it never reads out of bounds or allocates
// more than the file could describe. Assumes a little-endian host (x86-64, ARM64).
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

namespace qwen {

constexpr char FILE_MAGIC[8] = {'Q', 'W', 'E', 'N', 'B', 'I', 'N', '\0'};
constexpr uint32_t FILE_VERSION = 1;
constexpr size_t HEADER_SIZE = 256;
constexpr size_t TENSOR_ENTRY_SIZE = 64;
constexpr size_t TENSOR_NAME_SIZE = 32;
constexpr uint64_t TENSOR_ALIGN = 256;
constexpr int MAX_STOP_IDS = 8;
constexpr uint32_t DTYPE_BF16 = 0;

enum HeaderFlag : uint32_t {
    FLAG_HAS_WEIGHTS = 1u << 0,
    FLAG_TIED = 1u << 1,            // lm_head is token_embd
    FLAG_QKV_BIAS = 1u << 2,        // bqkv present (Qwen2)
    FLAG_QK_NORM = 1u << 3,         // q_norm, k_norm present (Qwen3)
    FLAG_DEFAULT_SYSTEM = 1u << 4,  // strings[1] is the template's default system prompt
    FLAG_THINKING = 1u << 5,        // the chat template has a <think> mode
    FLAG_ALL = (1u << 6) - 1,
};

enum Arch : int { ARCH_QWEN2 = 2, ARCH_QWEN3 = 3 };  // Qwen2ForCausalLM (Qwen1.5/2/2.5), Qwen3ForCausalLM

enum TokenKind : uint8_t { TOKEN_REGULAR = 0, TOKEN_SPECIAL = 1, TOKEN_ADDED = 2 };

struct Config {
    int arch = 0;
    int dim = 0, ffn_dim = 0, n_layers = 0, n_heads = 0, n_kv_heads = 0, head_dim = 0;
    int vocab_size = 0;   // rows of the embedding / lm_head (may exceed the tokenizer's token count)
    int max_seq_len = 0;  // max_position_embeddings
    double rope_theta = 0;
    float norm_eps = 0;
    bool tied = false, qkv_bias = false, qk_norm = false;
    int q_dim() const { return n_heads * head_dim; }
    int kv_dim() const { return n_kv_heads * head_dim; }
};

struct ChatInfo {                     // facts the front ends need, recorded by the exporter
    std::string model_name;           // e.g. "Qwen2.5-7B-Instruct" (checkpoint folder name)
    bool has_default_system = false;  // none for Qwen3
    std::string default_system;
    bool thinking = false;            // template has a <think> mode (Qwen3)
    std::vector<int> stop_ids;        // eos ids from generation_config + <|im_end|>
    float temperature = NAN, top_p = NAN, repetition_penalty = NAN;  // NAN = not given
    int top_k = -1;                                                  // -1 = not given
};

struct Vocab {                                // the tokenizer as stored in the file
    std::vector<std::string> tokens;          // (n_tokens) raw bytes of each id (byte-level mapping undone)
    std::vector<uint8_t> kind;                // (n_tokens) TokenKind
    std::vector<std::pair<int, int>> merges;  // (n_merges) (left id, right id) in rank order
};

struct Weights {                       // pointers into the mapped file, all bf16 row-major
    const bf16* token_embd = nullptr;  // (vocab_size, dim)
    const bf16* attn_norm = nullptr;   // (n_layers, dim)
    const bf16* wqkv = nullptr;        // (n_layers, q_dim + 2*kv_dim, dim)  rows: q, then k, then v
    const bf16* bqkv = nullptr;        // (n_layers, q_dim + 2*kv_dim) or nullptr
    const bf16* q_norm = nullptr;      // (n_layers, head_dim) or nullptr (Qwen3 only)
    const bf16* k_norm = nullptr;      // (n_layers, head_dim) or nullptr
    const bf16* wo = nullptr;          // (n_layers, dim, q_dim)
    const bf16* ffn_norm = nullptr;    // (n_layers, dim)
    const bf16* w_gate_up = nullptr;   // (n_layers, 2*ffn_dim, dim)  rows: gate, then up
    const bf16* w_down = nullptr;      // (n_layers, dim, ffn_dim)
    const bf16* out_norm = nullptr;    // (dim)
    const bf16* lm_head = nullptr;     // (vocab_size, dim); == token_embd when tied
};

struct Model {  // move-only; owns the mapping the weights point into
    MappedFile file;
    Config config;
    ChatInfo chat;
    Vocab vocab;
    Weights weights;
    bool has_weights = false;
};

// ---------------------------------------------------------------------------------------------------------
// Reader: a bounds-checked cursor over one section of the file
// ---------------------------------------------------------------------------------------------------------

// Every read checks the bytes left first, so a corrupt count or length fails with a message instead of
// reading past the section.
struct Reader {
    const uint8_t* data;  // the whole file
    size_t pos, end;      // cursor and end of the section, absolute offsets
    const char* file;     // for messages
    const char* section;

    size_t left() const { return end - pos; }
    const uint8_t* take(size_t n) {
        if (n > left())
            fail("%s: %s is truncated at offset %zu (needs %zu bytes, %zu left)", file, section, pos, n, left());
        const uint8_t* p = data + pos;
        pos += n;
        return p;
    }
    template <class T> T get() {
        T v;
        memcpy(&v, take(sizeof v), sizeof v);
        return v;
    }
    uint8_t u8() { return get<uint8_t>(); }
    uint32_t u32() { return get<uint32_t>(); }
    int32_t i32() { return get<int32_t>(); }
    uint64_t u64() { return get<uint64_t>(); }
    float f32() { return get<float>(); }
    double f64() { return get<double>(); }
    std::string bytes(size_t n) {
        const uint8_t* p = take(n);
        return std::string(reinterpret_cast<const char*>(p), n);
    }
    void expect_end() {
        if (left() != 0) fail("%s: %s has %zu unexpected bytes at its end", file, section, left());
    }
};

// A section [offset, offset + size) must lie after the header and inside the file (no overflow: the
// subtraction happens only once offset <= file_size is known).
inline Reader section_reader(const uint8_t* data, size_t file_size, const char* file, const char* section,
                             uint64_t offset, uint64_t size) {
    if (offset < HEADER_SIZE)
        fail("%s: %s offset %llu is inside the header", file, section, (unsigned long long)offset);
    if (offset > file_size || size > file_size - offset)
        fail("%s: %s (offset %llu, size %llu) lies outside the file (%zu bytes)", file, section,
             (unsigned long long)offset, (unsigned long long)size, file_size);
    return Reader{data, size_t(offset), size_t(offset + size), file, section};
}

// ---------------------------------------------------------------------------------------------------------
// Header: 256 bytes of fixed fields
// ---------------------------------------------------------------------------------------------------------

struct Header {
    uint32_t flags = 0;
    uint64_t strings_offset = 0, strings_size = 0;
    uint64_t tokenizer_offset = 0, tokenizer_size = 0;
    uint64_t tensors_offset = 0, n_tensors = 0;
};

inline void check_range(const char* file, const char* field, uint32_t v, uint32_t lo, uint32_t hi) {
    if (v < lo || v > hi) fail("%s: %s = %u is outside [%u, %u]", file, field, v, lo, hi);
}

// Model dims, each bounded so that every size computed from them fits comfortably in 64 bits.
inline void check_config(const char* file, const Config& c) {
    if (c.arch != ARCH_QWEN2 && c.arch != ARCH_QWEN3)
        fail("%s: arch = %d is unknown (2 = Qwen2ForCausalLM, 3 = Qwen3ForCausalLM)", file, c.arch);
    check_range(file, "dim", c.dim, 1, 65536);
    check_range(file, "ffn_dim", c.ffn_dim, 1, 1 << 20);
    check_range(file, "n_layers", c.n_layers, 1, 512);
    check_range(file, "n_heads", c.n_heads, 1, 1024);
    check_range(file, "n_kv_heads", c.n_kv_heads, 1, c.n_heads);
    check_range(file, "head_dim", c.head_dim, 2, 1024);
    check_range(file, "vocab_size", c.vocab_size, 1, 1 << 22);
    check_range(file, "max_seq_len", c.max_seq_len, 1, 1 << 24);
    if (c.n_heads % c.n_kv_heads != 0)
        fail("%s: n_heads = %d is not a multiple of n_kv_heads = %d", file, c.n_heads, c.n_kv_heads);
    if (c.head_dim % 2 != 0) fail("%s: head_dim = %d must be even (RoPE rotates pairs)", file, c.head_dim);
    if (!(c.norm_eps > 0 && c.norm_eps < 1)) fail("%s: norm_eps = %g is outside (0, 1)", file, c.norm_eps);
    if (!(c.rope_theta > 0 && std::isfinite(c.rope_theta)))
        fail("%s: rope_theta = %g must be positive and finite", file, c.rope_theta);
}

// NaN means "not given"; otherwise each value must be one a sampler accepts.
inline void check_sampling(const char* file, const ChatInfo& c) {
    if (!std::isnan(c.temperature) && !(c.temperature >= 0 && std::isfinite(c.temperature)))
        fail("%s: default temperature = %g must be >= 0", file, c.temperature);
    if (!std::isnan(c.top_p) && !(c.top_p > 0 && c.top_p <= 1))
        fail("%s: default top_p = %g is outside (0, 1]", file, c.top_p);
    if (c.top_k < -1) fail("%s: default top_k = %d must be >= 0 (or -1 = not given)", file, c.top_k);
    if (!std::isnan(c.repetition_penalty) && !(c.repetition_penalty > 0 && std::isfinite(c.repetition_penalty)))
        fail("%s: default repetition_penalty = %g must be > 0", file, c.repetition_penalty);
}

// Reads the fields in file order; the comments are their byte offsets.
inline Header read_header(const uint8_t* data, size_t size, const char* file, Config& c, ChatInfo& chat) {
    if (size < HEADER_SIZE) fail("%s: %zu bytes is too short for a weights.bin header (256 bytes)", file, size);
    Reader r{data, 0, HEADER_SIZE, file, "header"};
    if (memcmp(r.take(8), FILE_MAGIC, 8) != 0)                            // 0
        fail("%s: not a weights.bin file (bad magic; export one with tools/export.py)", file);
    uint32_t version = r.u32();                                          // 8
    if (version > FILE_VERSION)
        fail("%s: written by a newer exporter (version %u), this build reads version %u", file, version,
             FILE_VERSION);
    if (version != FILE_VERSION) fail("%s: unknown format version %u", file, version);
    Header h;
    h.flags = r.u32();                                                   // 12
    if (h.flags & ~uint32_t(FLAG_ALL)) fail("%s: unknown header flags 0x%x", file, h.flags & ~uint32_t(FLAG_ALL));
    // 16..48: arch and dims. Values past 2^30 would not fit an int; check_config bounds them properly.
    int* dims[] = {&c.arch, &c.dim, &c.ffn_dim, &c.n_layers, &c.n_heads, &c.n_kv_heads, &c.head_dim,
                   &c.vocab_size, &c.max_seq_len};
    const char* names[] = {"arch", "dim", "ffn_dim", "n_layers", "n_heads", "n_kv_heads", "head_dim",
                           "vocab_size", "max_seq_len"};
    for (int i = 0; i < 9; i++) {
        uint32_t v = r.u32();
        if (v > (1u << 30)) fail("%s: %s = %u is implausible", file, names[i], v);
        *dims[i] = int(v);
    }
    c.norm_eps = r.f32();                                                // 52
    c.rope_theta = r.f64();                                              // 56
    chat.temperature = r.f32();                                          // 64
    chat.top_p = r.f32();                                                // 68
    chat.top_k = r.i32();                                                // 72
    chat.repetition_penalty = r.f32();                                   // 76
    uint32_t n_stop = r.u32();                                           // 80
    check_range(file, "n_stop_ids", n_stop, 1, MAX_STOP_IDS);
    for (int i = 0; i < MAX_STOP_IDS; i++) {                             // 84
        uint32_t id = r.u32();
        if (i < int(n_stop)) {
            if (id > (1u << 22)) fail("%s: stop id %u is out of range", file, id);
            chat.stop_ids.push_back(int(id));
        } else if (id != 0) {
            fail("%s: unused stop id slot %d is %u, must be 0", file, i, id);
        }
    }
    if (r.u32() != 0) fail("%s: reserved header field at offset 116 is not 0", file);  // 116
    h.strings_offset = r.u64(), h.strings_size = r.u64();                // 120, 128
    h.tokenizer_offset = r.u64(), h.tokenizer_size = r.u64();            // 136, 144
    h.tensors_offset = r.u64(), h.n_tensors = r.u64();                   // 152, 160
    for (const uint8_t* p = r.take(r.left()); p < data + HEADER_SIZE; p++)  // 168..255
        if (*p != 0) fail("%s: header padding at offset %zu is not 0", file, size_t(p - data));

    c.tied = h.flags & FLAG_TIED;
    c.qkv_bias = h.flags & FLAG_QKV_BIAS;
    c.qk_norm = h.flags & FLAG_QK_NORM;
    chat.has_default_system = h.flags & FLAG_DEFAULT_SYSTEM;
    chat.thinking = h.flags & FLAG_THINKING;
    if (h.flags & FLAG_HAS_WEIGHTS) {
        check_config(file, c);
    } else if (c.arch || c.dim || c.ffn_dim || c.n_layers || c.n_heads || c.n_kv_heads || c.head_dim ||
               c.vocab_size || c.max_seq_len || c.norm_eps != 0 || c.rope_theta != 0 ||
               (h.flags & (FLAG_TIED | FLAG_QKV_BIAS | FLAG_QK_NORM)) || h.n_tensors != 0) {
        fail("%s: a file without weights (flag has_weights = 0) must have zero model dims, flags and tensors",
             file);
    }
    check_sampling(file, chat);
    return h;
}

// ---------------------------------------------------------------------------------------------------------
// Strings and tokenizer sections
// ---------------------------------------------------------------------------------------------------------

inline void read_strings(Reader r, ChatInfo& chat) {
    uint32_t count = r.u32();
    if (count != 2) fail("%s: strings section has %u strings, expected 2", r.file, count);
    chat.model_name = r.bytes(r.u32());
    chat.default_system = r.bytes(r.u32());
    r.expect_end();
    if (chat.has_default_system != !chat.default_system.empty())
        fail("%s: flag has_default_system = %d but the default system prompt is %zu bytes", r.file,
             int(chat.has_default_system), chat.default_system.size());
}

// Merges refer to regular tokens, and the merged bytes must themselves be a regular token: the BPE step
// "replace the pair by its merge" needs that token's id.
inline void check_merges(const char* file, const Vocab& v) {
    std::unordered_map<std::string_view, int> id_of;  // regular token bytes -> id
    id_of.reserve(v.tokens.size());
    for (size_t i = 0; i < v.tokens.size(); i++) {
        if (v.kind[i] != TOKEN_REGULAR) continue;
        if (!id_of.emplace(v.tokens[i], int(i)).second)
            fail("%s: tokens %d and %zu have the same bytes", file, id_of[v.tokens[i]], i);
    }
    std::string merged;
    for (size_t rank = 0; rank < v.merges.size(); rank++) {
        auto [left, right] = v.merges[rank];
        if (v.kind[left] != TOKEN_REGULAR || v.kind[right] != TOKEN_REGULAR)
            fail("%s: merge %zu (%d, %d) refers to an added token", file, rank, left, right);
        merged.assign(v.tokens[left]).append(v.tokens[right]);
        if (!id_of.count(merged))
            fail("%s: merge %zu (%d, %d) makes bytes that are not a token", file, rank, left, right);
    }
}

inline void read_vocab(Reader r, Vocab& v) {
    uint32_t n_tokens = r.u32(), n_merges = r.u32();
    check_range(r.file, "n_tokens", n_tokens, 1, 1u << 22);
    if (n_tokens > r.left() / 5)  // each token record is at least 5 bytes: check before allocating
        fail("%s: n_tokens = %u cannot fit in the tokenizer section (%zu bytes)", r.file, n_tokens, r.left());
    v.tokens.reserve(n_tokens);
    v.kind.reserve(n_tokens);
    for (uint32_t i = 0; i < n_tokens; i++) {
        uint32_t len = r.u32();
        uint8_t kind = r.u8();
        if (kind > TOKEN_ADDED) fail("%s: token %u has unknown kind %u", r.file, i, kind);
        if (len == 0) fail("%s: token %u is empty", r.file, i);
        v.tokens.push_back(r.bytes(len));
        v.kind.push_back(kind);
    }
    if (n_merges != r.left() / 8 || r.left() % 8 != 0)
        fail("%s: n_merges = %u but %zu bytes remain in the tokenizer section (8 per merge)", r.file, n_merges,
             r.left());
    v.merges.reserve(n_merges);
    for (uint32_t i = 0; i < n_merges; i++) {
        uint32_t left = r.u32(), right = r.u32();
        if (left >= n_tokens || right >= n_tokens)
            fail("%s: merge %u refers to token %u, but there are %u tokens", r.file, i,
                 left >= n_tokens ? left : right, n_tokens);
        v.merges.emplace_back(int(left), int(right));
    }
    check_merges(r.file, v);
}

// ---------------------------------------------------------------------------------------------------------
// Tensor table: each tensor's name, shape and place, checked against the config
// ---------------------------------------------------------------------------------------------------------

struct TensorSpec {  // a tensor the config calls for
    const char* name;
    const bf16** dst;
    int ndim;
    uint64_t shape[3];
    bool found;
};

inline std::vector<TensorSpec> expected_tensors(const Config& c, Weights& w) {
    uint64_t L = c.n_layers, dim = c.dim, ffn = c.ffn_dim, hd = c.head_dim, V = c.vocab_size;
    uint64_t qkv = uint64_t(c.q_dim()) + 2 * uint64_t(c.kv_dim());
    std::vector<TensorSpec> t = {
        {"token_embd", &w.token_embd, 2, {V, dim}, false},
        {"attn_norm", &w.attn_norm, 2, {L, dim}, false},
        {"wqkv", &w.wqkv, 3, {L, qkv, dim}, false},
        {"wo", &w.wo, 3, {L, dim, uint64_t(c.q_dim())}, false},
        {"ffn_norm", &w.ffn_norm, 2, {L, dim}, false},
        {"w_gate_up", &w.w_gate_up, 3, {L, 2 * ffn, dim}, false},
        {"w_down", &w.w_down, 3, {L, dim, ffn}, false},
        {"out_norm", &w.out_norm, 1, {dim}, false},
    };
    if (c.qkv_bias) t.push_back({"bqkv", &w.bqkv, 2, {L, qkv}, false});
    if (c.qk_norm) {
        t.push_back({"q_norm", &w.q_norm, 2, {L, hd}, false});
        t.push_back({"k_norm", &w.k_norm, 2, {L, hd}, false});
    }
    if (!c.tied) t.push_back({"lm_head", &w.lm_head, 2, {V, dim}, false});
    return t;
}

// The name of table entry i: NUL-padded, one of the expected tensors, not seen before.
inline TensorSpec* read_tensor_name(Reader& r, size_t i, std::vector<TensorSpec>& specs) {
    const char* raw = reinterpret_cast<const char*>(r.take(TENSOR_NAME_SIZE));
    size_t len = strnlen(raw, TENSOR_NAME_SIZE);
    if (len == TENSOR_NAME_SIZE) fail("%s: tensor entry %zu has no NUL-terminated name", r.file, i);
    for (size_t k = len; k < TENSOR_NAME_SIZE; k++)
        if (raw[k]) fail("%s: tensor entry %zu has bytes after its name's NUL", r.file, i);
    std::string name(raw, len);
    for (TensorSpec& s : specs) {
        if (name != s.name) continue;
        if (s.found) fail("%s: tensor '%s' appears twice", r.file, s.name);
        s.found = true;
        return &s;
    }
    fail("%s: unexpected tensor '%s' (not in the format, or not for these flags)", r.file, name.c_str());
}

inline std::string shape_str(int ndim, const uint64_t* shape) {
    std::string s = "(";
    for (int i = 0; i < ndim; i++) s += (i ? ", " : "") + std::to_string(shape[i]);
    return s + ")";
}

struct ByteRange {  // a part of the file something occupies, for the overlap check
    uint64_t begin, end;
    std::string what;
};

// Reads the table, points the weights into the mapping, and returns the byte ranges the tensors occupy.
inline std::vector<ByteRange> read_tensors(const uint8_t* data, size_t size, const char* file, const Header& h,
                                           const Config& c, Weights& w) {
    std::vector<TensorSpec> specs = expected_tensors(c, w);
    if (h.n_tensors != specs.size())
        fail("%s: n_tensors = %llu, the config and flags imply %zu", file, (unsigned long long)h.n_tensors,
             specs.size());
    uint64_t table_size = specs.size() * TENSOR_ENTRY_SIZE;
    Reader r = section_reader(data, size, file, "tensor table", h.tensors_offset, table_size);
    std::vector<ByteRange> ranges = {{h.tensors_offset, h.tensors_offset + table_size, "the tensor table"}};
    for (size_t i = 0; i < specs.size(); i++) {
        TensorSpec* spec = read_tensor_name(r, i, specs);
        const char* name = spec->name;
        uint32_t dtype = r.u32(), ndim = r.u32();
        uint64_t shape[3] = {r.u32(), r.u32(), r.u32()};
        uint64_t offset = r.u64();
        uint32_t reserved = r.u32();
        if (dtype != DTYPE_BF16)
            fail("%s: tensor '%s' has dtype %u, expected 0 (bf16)", file, name, dtype);
        if (ndim < 1 || ndim > 3) fail("%s: tensor '%s' has ndim %u, expected 1..3", file, name, ndim);
        bool same = int(ndim) == spec->ndim;
        for (int k = 0; k < 3; k++) same = same && shape[k] == spec->shape[k];  // unused dims are 0 in both
        if (!same)
            fail("%s: tensor '%s' has shape %s, config implies %s", file, name,
                 shape_str(ndim, shape).c_str(), shape_str(spec->ndim, spec->shape).c_str());
        if (reserved != 0) fail("%s: tensor '%s' has a nonzero reserved field", file, name);
        // The config bounds keep this product below 2^50, so it cannot overflow.
        uint64_t bytes = 2;
        for (int k = 0; k < spec->ndim; k++) bytes *= spec->shape[k];
        if (offset % TENSOR_ALIGN != 0)
            fail("%s: tensor '%s' offset %llu is not a multiple of %llu", file, name,
                 (unsigned long long)offset, (unsigned long long)TENSOR_ALIGN);
        if (offset > size || bytes > size - offset)
            fail("%s: tensor '%s' (%llu bytes at offset %llu) lies outside the file (%zu bytes)", file,
                 name, (unsigned long long)bytes, (unsigned long long)offset, size);
        *spec->dst = reinterpret_cast<const bf16*>(data + offset);
        ranges.push_back({offset, offset + bytes, "tensor '" + std::string(name) + "'"});
    }
    if (c.tied) w.lm_head = w.token_embd;
    return ranges;
}

// No two sections or tensors may share bytes (a tensor over the tokenizer would be garbage weights).
inline void check_no_overlap(const char* file, std::vector<ByteRange> ranges) {
    std::sort(ranges.begin(), ranges.end(), [](const ByteRange& a, const ByteRange& b) {
        return a.begin != b.begin ? a.begin < b.begin : a.end < b.end;
    });
    for (size_t i = 1; i < ranges.size(); i++)
        if (ranges[i].begin < ranges[i - 1].end && ranges[i].begin != ranges[i].end)
            fail("%s: %s overlaps %s", file, ranges[i].what.c_str(), ranges[i - 1].what.c_str());
}

// ---------------------------------------------------------------------------------------------------------
// Loading
// ---------------------------------------------------------------------------------------------------------

// Validates a whole file image and fills a Model whose weights point into `data` (the caller keeps it
// alive). `file` names the file in messages. Used by load_model/load_tokenizer and by the fuzzer.
inline Model parse_model(const uint8_t* data, size_t size, const std::string& file, bool need_weights) {
    const char* name = file.c_str();
    Model m;
    Header h = read_header(data, size, name, m.config, m.chat);
    m.has_weights = h.flags & FLAG_HAS_WEIGHTS;
    if (need_weights && !m.has_weights)
        fail("%s: this file has only a tokenizer (exported with --tokenizer-only); a model needs the weights",
             name);
    read_strings(section_reader(data, size, name, "strings section", h.strings_offset, h.strings_size), m.chat);
    read_vocab(section_reader(data, size, name, "tokenizer section", h.tokenizer_offset, h.tokenizer_size),
               m.vocab);
    int n_tokens = int(m.vocab.tokens.size());
    if (m.has_weights && n_tokens > m.config.vocab_size)
        fail("%s: tokenizer has %d tokens but vocab_size (embedding rows) is %d", name, n_tokens,
             m.config.vocab_size);
    for (int id : m.chat.stop_ids)
        if (id >= n_tokens) fail("%s: stop id %d is not a token (%d tokens)", name, id, n_tokens);

    std::vector<ByteRange> ranges = {{0, HEADER_SIZE, "the header"},
                                     {h.strings_offset, h.strings_offset + h.strings_size, "the strings section"},
                                     {h.tokenizer_offset, h.tokenizer_offset + h.tokenizer_size,
                                      "the tokenizer section"}};
    if (m.has_weights) {
        std::vector<ByteRange> t = read_tensors(data, size, name, h, m.config, m.weights);
        ranges.insert(ranges.end(), t.begin(), t.end());
    } else {
        section_reader(data, size, name, "tensor table", h.tensors_offset, 0);  // empty, but inside the file
    }
    check_no_overlap(name, ranges);
    return m;
}

inline Model load_file(const std::string& path, bool need_weights) {
    MappedFile f(path);
    Model m = parse_model(f.data, f.size, path, need_weights);
    m.file = std::move(f);  // the mapping's address does not change, so the weight pointers stay valid
    return m;
}

// A model: fails if the file has no weights.
inline Model load_model(const std::string& path) { return load_file(path, true); }

// The tokenizer and chat facts of any weights.bin (weights optional: tokenizer-only files are fine).
inline Model load_tokenizer(const std::string& path) { return load_file(path, false); }

}  // namespace qwen
