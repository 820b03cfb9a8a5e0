// ============================================================================
// Tokenizer: UTF-8, NFC, the Qwen2 pre-tokenizer, byte-level BPE, ChatML prompts
// ============================================================================
// Text -> ids, exactly as the Hugging Face tokenizer of Qwen1.5/2/2.5/3 does it:
//   1. split the text on added tokens (<|im_end|>, <think>, ...): leftmost, then longest match;
//   2. NFC-normalise each piece between them;
//   3. cut each piece into pre-tokens with the Qwen2 regex (hand-written matcher below);
//   4. byte-level BPE on each pre-token's UTF-8 bytes: repeatedly merge the adjacent pair of lowest rank.
// Input must be valid UTF-8: invalid input is refused (fail) rather than silently replaced, so that what
// the model sees is always what the caller wrote. Decoding is the concatenation of token bytes.
#include <algorithm>
#include <cstdint>
#include <cstring>
#include <queue>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

namespace qwen {

// ---- UTF-8 --------------------------------------------------------------------------------------

constexpr int UTF8_INVALID = 0;     // utf8_decode: not a valid sequence
constexpr int UTF8_TRUNCATED = -1;  // utf8_decode: a valid start, but the input ends before its last byte

// Decodes the code point at s[0..n) (n >= 1): returns its length 1..4 and sets *cp, or UTF8_INVALID, or
// UTF8_TRUNCATED. Strict: no overlong forms, no surrogates (U+D800..U+DFFF), nothing above U+10FFFF.
// The second byte's allowed range depends on the first (E0: A0..BF, ED: 80..9F, F0: 90..BF, F4: 80..8F);
// that one check rules out all three cases.
inline int utf8_decode(const uint8_t* s, size_t n, uint32_t* cp) {
    uint8_t b0 = s[0];
    if (b0 < 0x80) {
        *cp = b0;
        return 1;
    }
    int len;
    uint8_t lo = 0x80, hi = 0xBF;  // range of the second byte
    if (b0 >= 0xC2 && b0 <= 0xDF) {
        len = 2;
    } else if (b0 >= 0xE0 && b0 <= 0xEF) {
        len = 3;
        if (b0 == 0xE0) lo = 0xA0;
        if (b0 == 0xED) hi = 0x9F;
    } else if (b0 >= 0xF0 && b0 <= 0xF4) {
        len = 4;
        if (b0 == 0xF0) lo = 0x90;
        if (b0 == 0xF4) hi = 0x8F;
    } else {
        return UTF8_INVALID;  // continuation byte, C0/C1 (overlong) or F5..FF
    }
    uint32_t c = b0 & (0x7F >> len);
    for (int i = 1; i < len; i++) {
        if (size_t(i) >= n) return UTF8_TRUNCATED;
        uint8_t b = s[i];
        if (i == 1 ? (b < lo || b > hi) : (b & 0xC0) != 0x80) return UTF8_INVALID;
        c = (c << 6) | (b & 0x3F);
    }
    *cp = c;
    return len;
}

// Offset of the first byte that does not start a valid sequence, or s.size() when s is valid UTF-8.
inline size_t utf8_first_invalid(const std::string& s) {
    const uint8_t* p = reinterpret_cast<const uint8_t*>(s.data());
    size_t i = 0, n = s.size();
    while (i < n) {
        if (p[i] < 0x80) {
            i++;
            continue;
        }
        uint32_t cp = 0;
        int len = utf8_decode(p + i, n - i, &cp);
        if (len <= 0) return i;
        i += size_t(len);
    }
    return n;
}

inline bool utf8_valid(const std::string& s) { return utf8_first_invalid(s) == s.size(); }

// Appends the UTF-8 bytes of a Unicode scalar value.
inline void utf8_append(std::string& out, uint32_t cp) {
    if (cp < 0x80) {
        out += char(cp);
    } else if (cp < 0x800) {
        out += char(0xC0 | (cp >> 6));
        out += char(0x80 | (cp & 0x3F));
    } else if (cp < 0x10000) {
        out += char(0xE0 | (cp >> 12));
        out += char(0x80 | ((cp >> 6) & 0x3F));
        out += char(0x80 | (cp & 0x3F));
    } else {
        out += char(0xF0 | (cp >> 18));
        out += char(0x80 | ((cp >> 12) & 0x3F));
        out += char(0x80 | ((cp >> 6) & 0x3F));
        out += char(0x80 | (cp & 0x3F));
    }
}

// Code points of valid UTF-8 (the caller has checked it).
inline std::vector<uint32_t> utf8_to_code_points(const std::string& s) {
    std::vector<uint32_t> cps;
    cps.reserve(s.size());
    const uint8_t* p = reinterpret_cast<const uint8_t*>(s.data());
    for (size_t i = 0; i < s.size();) {
        uint32_t cp = 0;
        i += size_t(utf8_decode(p + i, s.size() - i, &cp));
        cps.push_back(cp);
    }
    return cps;
}

// ---- Unicode properties (binary search in the tables of the previous section) -------------------

template <size_t N>
inline bool in_ranges(const CodeRange (&r)[N], uint32_t cp) {
    const CodeRange* it = std::upper_bound(r, r + N, cp, [](uint32_t c, const CodeRange& x) { return c < x.lo; });
    return it != r && cp <= (it - 1)->hi;
}

inline int combining_class(uint32_t cp) {
    if (cp < 0x300) return 0;
    const CombiningRange* r = kCombiningRanges;
    const size_t n = sizeof kCombiningRanges / sizeof kCombiningRanges[0];
    const CombiningRange* it =
        std::upper_bound(r, r + n, cp, [](uint32_t c, const CombiningRange& x) { return c < x.lo; });
    return it != r && cp <= (it - 1)->hi ? (it - 1)->ccc : 0;
}

// Character classes of the pre-tokenizer regex, as bit flags.
enum CharClass : uint8_t {
    CC_LETTER = 1,   // \p{L}
    CC_NUMBER = 2,   // \p{N}
    CC_SPACE = 4,    // \s
    CC_NEWLINE = 8,  // \r or \n (also CC_SPACE)
};

inline uint8_t char_class(uint32_t cp) {
    if (cp < 0x80) {
        if ((cp | 0x20) - 'a' < 26) return CC_LETTER;
        if (cp - '0' < 10) return CC_NUMBER;
        if (cp == '\n' || cp == '\r') return CC_SPACE | CC_NEWLINE;
        if (cp == ' ' || (cp >= 0x09 && cp <= 0x0D)) return CC_SPACE;
        return 0;
    }
    if (in_ranges(kLetterRanges, cp)) return CC_LETTER;
    if (in_ranges(kNumberRanges, cp)) return CC_NUMBER;
    if (in_ranges(kSpaceRanges, cp)) return CC_SPACE;
    return 0;
}

// ---- NFC normalisation --------------------------------------------------------------------------
// NFC = canonical decomposition, then canonical ordering of combining marks, then canonical composition.
// Almost all real text is NFC already, which the quick check proves in one pass without allocating.

// Hangul syllables are algorithmic: S = 0xAC00 + (L * 21 + V) * 28 + T.
constexpr uint32_t HANGUL_S = 0xAC00, HANGUL_L = 0x1100, HANGUL_V = 0x1161, HANGUL_T = 0x11A7;
constexpr uint32_t HANGUL_L_COUNT = 19, HANGUL_V_COUNT = 21, HANGUL_T_COUNT = 28;
constexpr uint32_t HANGUL_S_COUNT = HANGUL_L_COUNT * HANGUL_V_COUNT * HANGUL_T_COUNT;

// True if s is certainly NFC: every character has NFC_Quick_Check = Yes and the marks are in canonical order.
inline bool nfc_quick_check(const std::string& s) {
    const uint8_t* p = reinterpret_cast<const uint8_t*>(s.data());
    int last_ccc = 0;
    for (size_t i = 0; i < s.size();) {
        if (p[i] < 0x80) {
            i++;
            last_ccc = 0;
            continue;
        }
        uint32_t cp = 0;
        i += size_t(utf8_decode(p + i, s.size() - i, &cp));
        if (cp < 0x300) {
            last_ccc = 0;
            continue;
        }
        if (in_ranges(kNfcQuickCheckRanges, cp)) return false;
        int ccc = combining_class(cp);
        if (ccc != 0 && ccc < last_ccc) return false;
        last_ccc = ccc;
    }
    return true;
}

inline void nfc_decompose(uint32_t cp, std::vector<uint32_t>& out) {
    if (cp - HANGUL_S < HANGUL_S_COUNT) {
        uint32_t s = cp - HANGUL_S, t = s % HANGUL_T_COUNT;
        out.push_back(HANGUL_L + s / (HANGUL_V_COUNT * HANGUL_T_COUNT));
        out.push_back(HANGUL_V + (s % (HANGUL_V_COUNT * HANGUL_T_COUNT)) / HANGUL_T_COUNT);
        if (t) out.push_back(HANGUL_T + t);
        return;
    }
    const Decomposition* d = kDecompositions;
    const size_t n = sizeof kDecompositions / sizeof kDecompositions[0];
    const Decomposition* it =
        std::lower_bound(d, d + n, cp, [](const Decomposition& x, uint32_t c) { return x.cp < c; });
    if (it == d + n || it->cp != cp) {
        out.push_back(cp);
        return;
    }
    out.insert(out.end(), kDecompositionData + it->offset, kDecompositionData + it->offset + it->len);
}

// The primary composite of (a, b), or 0 if there is none.
inline uint32_t nfc_compose(uint32_t a, uint32_t b) {
    if (a - HANGUL_L < HANGUL_L_COUNT && b - HANGUL_V < HANGUL_V_COUNT)
        return HANGUL_S + ((a - HANGUL_L) * HANGUL_V_COUNT + (b - HANGUL_V)) * HANGUL_T_COUNT;
    if (a - HANGUL_S < HANGUL_S_COUNT && (a - HANGUL_S) % HANGUL_T_COUNT == 0 && b - HANGUL_T - 1 < HANGUL_T_COUNT - 1)
        return a + (b - HANGUL_T);
    const Composition* c = kCompositions;
    const size_t n = sizeof kCompositions / sizeof kCompositions[0];
    const Composition* it = std::lower_bound(c, c + n, std::make_pair(a, b), [](const Composition& x, auto key) {
        return x.first != key.first ? x.first < key.first : x.second < key.second;
    });
    return it != c + n && it->first == a && it->second == b ? it->composite : 0;
}

// NFC of valid UTF-8.
inline std::string nfc(const std::string& s) {
    if (nfc_quick_check(s)) return s;
    std::vector<uint32_t> d;
    d.reserve(s.size() + 8);
    for (uint32_t cp : utf8_to_code_points(s)) nfc_decompose(cp, d);

    // Canonical ordering: a stable sort by combining class within each run of non-starters (class != 0).
    std::vector<int> ccc(d.size());
    for (size_t i = 0; i < d.size(); i++) ccc[i] = combining_class(d[i]);
    for (size_t i = 1; i < d.size(); i++) {  // insertion sort: runs are short
        for (size_t j = i; j > 0 && ccc[j] != 0 && ccc[j - 1] > ccc[j]; j--) {
            std::swap(d[j], d[j - 1]);
            std::swap(ccc[j], ccc[j - 1]);
        }
    }

    // Composition: a character combines with the last starter unless a character between them is a
    // starter or has a class >= its own ("blocked").
    std::vector<uint32_t> out;
    out.reserve(d.size());
    long starter = -1;  // index in out of the last starter
    int last_ccc = 0;   // class of the last character appended after that starter
    for (size_t i = 0; i < d.size(); i++) {
        uint32_t c = d[i];
        int cc = ccc[i];
        bool adjacent = starter >= 0 && size_t(starter) + 1 == out.size();
        if (starter >= 0 && (adjacent || (last_ccc != 0 && last_ccc < cc))) {
            if (uint32_t comp = nfc_compose(out[starter], c)) {
                out[starter] = comp;
                continue;
            }
        }
        if (cc == 0) starter = long(out.size());
        last_ccc = cc;
        out.push_back(c);
    }
    std::string r;
    r.reserve(s.size());
    for (uint32_t cp : out) utf8_append(r, cp);
    return r;
}

// ---- Pre-tokenizer ------------------------------------------------------------------------------
// The Qwen2 pre-tokenizer is this regex; each match is one pre-token (every character matches one of the
// alternatives, so the matches tile the text):
//   (?i:'s|'t|'re|'ve|'m|'ll|'d) | [^\r\n\p{L}\p{N}]?\p{L}+ | \p{N} | ?[^\s\p{L}\p{N}]+[\r\n]*
//   | \s*[\r\n]+ | \s+(?!\S) | \s+
// The first alternative that matches at a position wins; each is greedy. Below, one function per
// alternative returns the match length at i (0 = no match), working on code points and their classes.

struct PreTokenText {
    std::vector<uint32_t> cp;  // (n) code points
    std::vector<uint8_t> cls;  // (n) CharClass bits
    std::vector<size_t> byte;  // (n + 1) byte offset of each code point in the UTF-8 text
};

// (?i:'s|'t|'re|'ve|'m|'ll|'d): ASCII case folding, plus U+017F (long s), which folds to 's'.
inline size_t match_contraction(const PreTokenText& t, size_t i) {
    size_t n = t.cp.size();
    if (t.cp[i] != '\'' || i + 1 >= n) return 0;
    auto lower = [&](size_t k) { return k < n && t.cp[k] < 0x80 ? (t.cp[k] | 0x20) : t.cp[k]; };
    uint32_t a = lower(i + 1);
    if (a == 's' || a == 0x17F || a == 't' || a == 'm' || a == 'd') return 2;
    if (i + 2 >= n) return 0;
    uint32_t b = lower(i + 2);
    if ((a == 'r' && b == 'e') || (a == 'v' && b == 'e') || (a == 'l' && b == 'l')) return 3;
    return 0;
}

// [^\r\n\p{L}\p{N}]?\p{L}+
inline size_t match_word(const PreTokenText& t, size_t i) {
    size_t n = t.cp.size(), j = i;
    if (!(t.cls[j] & (CC_LETTER | CC_NUMBER | CC_NEWLINE)) && j + 1 < n) j++;  // the optional prefix
    if (!(t.cls[j] & CC_LETTER)) return 0;
    while (j < n && (t.cls[j] & CC_LETTER)) j++;
    return j - i;
}

// ` ?[^\s\p{L}\p{N}]+[\r\n]*`: a run of punctuation/symbols, with an optional leading space.
inline size_t match_symbols(const PreTokenText& t, size_t i) {
    const uint8_t other = CC_LETTER | CC_NUMBER | CC_SPACE;
    size_t n = t.cp.size(), j = i;
    if (t.cp[j] == ' ' && j + 1 < n && !(t.cls[j + 1] & other)) j++;
    if (t.cls[j] & other) return 0;
    while (j < n && !(t.cls[j] & other)) j++;
    while (j < n && (t.cls[j] & CC_NEWLINE)) j++;
    return j - i;
}

// The three white-space alternatives, on the run of white space starting at i:
//   \s*[\r\n]+  -> up to and including the run's last \r or \n;
//   \s+(?!\S)   -> the whole run at the end of the text, else all of it but its last character;
//   \s+         -> the whole run (a single space before a non-space character).
inline size_t match_space(const PreTokenText& t, size_t i) {
    size_t n = t.cp.size(), end = i;
    size_t last_newline = SIZE_MAX;
    while (end < n && (t.cls[end] & CC_SPACE)) {
        if (t.cls[end] & CC_NEWLINE) last_newline = end;
        end++;
    }
    if (end == i) return 0;
    if (last_newline != SIZE_MAX) return last_newline + 1 - i;
    if (end == n || end - i == 1) return end - i;
    return end - 1 - i;
}

// Calls emit(begin_byte, end_byte) for each pre-token of valid UTF-8 `s`, in order.
template <typename Emit>
inline void pre_tokenize(const std::string& s, PreTokenText& t, Emit emit) {
    t.cp.clear();
    t.cls.clear();
    t.byte.clear();
    const uint8_t* p = reinterpret_cast<const uint8_t*>(s.data());
    for (size_t i = 0; i < s.size();) {
        uint32_t cp = 0;
        int len = utf8_decode(p + i, s.size() - i, &cp);
        t.cp.push_back(cp);
        t.cls.push_back(char_class(cp));
        t.byte.push_back(i);
        i += size_t(len);
    }
    t.byte.push_back(s.size());
    for (size_t i = 0, n = t.cp.size(); i < n;) {
        size_t len = match_contraction(t, i);
        if (!len) len = match_word(t, i);
        if (!len && (t.cls[i] & CC_NUMBER)) len = 1;
        if (!len) len = match_symbols(t, i);
        if (!len) len = match_space(t, i);
        emit(t.byte[i], t.byte[i + len]);
        i += len;
    }
}

// ---- Merge table --------------------------------------------------------------------------------
// (left id, right id) -> rank, as an open-addressing hash table with linear probing: the BPE loop looks
// up every adjacent pair, so this lookup is the tokenizer's hot spot.
struct MergeTable {
    struct Slot {
        uint64_t key = UINT64_MAX;  // (left << 32) | right; UINT64_MAX = empty
        int rank = -1;
    };
    std::vector<Slot> slots;  // power-of-two size, at most half full
    uint64_t mask = 0;

    static uint64_t key_of(int left, int right) { return (uint64_t(uint32_t(left)) << 32) | uint32_t(right); }
    static uint64_t hash(uint64_t key) { return (key * 0x9E3779B97F4A7C15ull) >> 20; }

    void build(const std::vector<std::pair<int, int>>& pairs) {
        size_t cap = 16;
        while (cap < 2 * pairs.size()) cap *= 2;
        slots.assign(cap, Slot{});
        mask = cap - 1;
        for (size_t r = 0; r < pairs.size(); r++) {
            uint64_t key = key_of(pairs[r].first, pairs[r].second);
            uint64_t h = hash(key) & mask;
            while (slots[h].key != UINT64_MAX && slots[h].key != key) h = (h + 1) & mask;
            slots[h] = Slot{key, int(r)};  // a repeated pair keeps its last rank, as Hugging Face's map does
        }
    }
    // The rank of the pair, or -1 if it does not merge.
    int rank(int left, int right) const {
        uint64_t key = key_of(left, right);
        for (uint64_t h = hash(key) & mask;; h = (h + 1) & mask) {
            if (slots[h].key == key) return slots[h].rank;
            if (slots[h].key == UINT64_MAX) return -1;
        }
    }
};

// ---- Tokenizer ----------------------------------------------------------------------------------

// Immutable once built: encode and decode keep their scratch space per call, so one Tokenizer can serve
// several threads at once.
struct Tokenizer {
    explicit Tokenizer(const Vocab& v);
    int n_tokens() const { return int(tokens_.size()); }
    // parse_special: special added tokens (kind 1, e.g. <|im_end|>) written in the text become their ids,
    // as Hugging Face does by default. With false they are tokenized as plain text (so user text cannot
    // forge them), while non-special added tokens (kind 2, e.g. Qwen3's <think>) are still matched.
    // Invalid UTF-8 fails with "invalid UTF-8 at byte N".
    std::vector<int> encode(const std::string& text, bool parse_special) const;
    // As encode, but a special token is matched only where it lies wholly inside one of `trusted`, a
    // sorted list of [begin, end) byte ranges of the text (chat_tokens: the template's own markers).
    std::vector<int> encode_trusted(const std::string& text,
                                    const std::vector<std::pair<size_t, size_t>>& trusted) const;
    std::string decode(const std::vector<int>& ids) const;  // raw bytes; may be invalid UTF-8 mid-stream
    const std::string& token_bytes(int id) const;
    int find(const std::string& token_text) const;  // id of a token with exactly these bytes, or -1

  private:
    struct AddedToken {
        std::string text;
        int id;
        bool special;
    };
    // Scratch space of one encode call.
    struct Work {
        PreTokenText pre;
        std::vector<int> id, prev, next;  // (n) BPE symbols as a linked list
        std::priority_queue<uint64_t, std::vector<uint64_t>, std::greater<uint64_t>> queue;  // rank << 32 | pos
        // Short pre-tokens repeat (words), so their ids are remembered: pre-token -> (offset, count) in
        // cached_ids. Bounded: cleared when full, which keeps a long text's memory flat.
        std::unordered_map<std::string, std::pair<uint32_t, uint32_t>> cache;
        std::vector<int> cached_ids;
    };

    void encode_text(const std::string& text, Work& w, std::vector<int>& out) const;
    void bpe(const uint8_t* s, size_t n, Work& w, std::vector<int>& out) const;

    std::vector<std::string> tokens_;           // (n_tokens) bytes of each id
    std::unordered_map<std::string, int> ids_;  // bytes -> id (regular tokens win over added ones)
    int byte_id_[256];                          // the single-byte token of each byte value
    MergeTable merges_;
    std::vector<std::pair<int, int>> merge_pairs_;  // (n_merges) the pair of each rank
    std::vector<int> merge_result_;                 // (n_merges) the token each rank makes
    std::vector<AddedToken> added_;                 // sorted by first byte, then longest first
    uint8_t added_first_[256] = {};                 // 1 if some added token starts with this byte
};

inline Tokenizer::Tokenizer(const Vocab& v) {
    const size_t n = v.tokens.size();
    if (v.kind.size() != n) fail("tokenizer: %zu tokens but %zu kinds", n, v.kind.size());
    tokens_ = v.tokens;
    ids_.reserve(n);
    for (size_t i = 0; i < n; i++)
        if (v.kind[i] == TOKEN_REGULAR) ids_.emplace(tokens_[i], int(i));
    for (size_t i = 0; i < n; i++) {
        if (v.kind[i] == TOKEN_REGULAR) continue;
        if (tokens_[i].empty()) fail("tokenizer: added token %zu is empty", i);
        ids_.emplace(tokens_[i], int(i));
        added_.push_back({tokens_[i], int(i), v.kind[i] == TOKEN_SPECIAL});
        added_first_[uint8_t(tokens_[i][0])] = 1;
    }
    std::sort(added_.begin(), added_.end(), [](const AddedToken& a, const AddedToken& b) {
        if (a.text[0] != b.text[0]) return uint8_t(a.text[0]) < uint8_t(b.text[0]);
        return a.text.size() > b.text.size();
    });
    for (int b = 0; b < 256; b++) {
        auto it = ids_.find(std::string(1, char(b)));
        if (it == ids_.end() || v.kind[it->second] != TOKEN_REGULAR)
            fail("tokenizer: no token for the byte 0x%02X (a byte-level vocabulary has all 256)", b);
        byte_id_[b] = it->second;
    }
    std::vector<int> merged(v.merges.size());
    for (size_t r = 0; r < v.merges.size(); r++) {
        auto [a, b] = v.merges[r];
        if (a < 0 || b < 0 || size_t(a) >= n || size_t(b) >= n)
            fail("tokenizer: merge %zu (%d, %d) is out of range", r, a, b);
        auto it = ids_.find(tokens_[a] + tokens_[b]);
        if (it == ids_.end() || v.kind[it->second] != TOKEN_REGULAR)
            fail("tokenizer: merge %zu (%d, %d) makes no token", r, a, b);
        merged[r] = it->second;
    }
    merges_.build(v.merges);
    merge_pairs_ = v.merges;
    merge_result_ = std::move(merged);
}

inline const std::string& Tokenizer::token_bytes(int id) const {
    if (id < 0 || id >= n_tokens()) fail("token id %d is out of range [0, %d)", id, n_tokens());
    return tokens_[id];
}

inline int Tokenizer::find(const std::string& token_text) const {
    auto it = ids_.find(token_text);
    return it == ids_.end() ? -1 : it->second;
}

inline std::string Tokenizer::decode(const std::vector<int>& ids) const {
    std::string s;
    for (int id : ids) s += token_bytes(id);
    return s;
}

// Byte-level BPE of one pre-token. The symbols form a linked list (next[i], -1 at the end; id[i] = -1
// once merged into its left neighbour); a min-heap holds candidate pairs keyed by (rank, position), so
// the lowest-ranked pair, leftmost among equals, merges first: O(n log n). Heap entries are not removed
// when a neighbour changes; a popped entry is used only if its pair is still there with the same rank.
inline void Tokenizer::bpe(const uint8_t* s, size_t n, Work& w, std::vector<int>& out) const {
    if (n == 1) {
        out.push_back(byte_id_[s[0]]);
        return;
    }
    w.id.resize(n);
    w.next.resize(n);
    w.prev.resize(n);
    for (size_t i = 0; i < n; i++) {
        w.id[i] = byte_id_[s[i]];
        w.next[i] = i + 1 < n ? int(i + 1) : -1;
        w.prev[i] = int(i) - 1;
    }
    auto push_pair = [&](int pos) {
        if (pos < 0 || w.next[pos] < 0) return;
        int rank = merges_.rank(w.id[pos], w.id[w.next[pos]]);
        if (rank >= 0) w.queue.push((uint64_t(rank) << 32) | uint32_t(pos));
    };
    for (size_t i = 0; i + 1 < n; i++) push_pair(int(i));
    while (!w.queue.empty()) {
        uint64_t top = w.queue.top();
        w.queue.pop();
        int rank = int(top >> 32), pos = int(uint32_t(top));
        int right = w.next[pos];
        if (w.id[pos] < 0 || right < 0) continue;
        if (w.id[pos] != merge_pairs_[rank].first || w.id[right] != merge_pairs_[rank].second) continue;  // stale
        w.id[pos] = merge_result_[rank];
        w.id[right] = -1;
        w.next[pos] = w.next[right];
        if (w.next[pos] >= 0) w.prev[w.next[pos]] = pos;
        push_pair(w.prev[pos]);
        push_pair(pos);
    }
    for (int i = 0; i >= 0; i = w.next[i]) out.push_back(w.id[i]);
}

// NFC + pre-tokenizer + BPE of text that holds no added token.
inline void Tokenizer::encode_text(const std::string& text, Work& w, std::vector<int>& out) const {
    const std::string norm = nfc(text);
    const uint8_t* p = reinterpret_cast<const uint8_t*>(norm.data());
    pre_tokenize(norm, w.pre, [&](size_t begin, size_t end) {
        size_t len = end - begin;
        if (len > 24) {  // long pre-tokens are rare and rarely repeat: no caching
            bpe(p + begin, len, w, out);
            return;
        }
        std::string key(norm, begin, len);
        auto it = w.cache.find(key);
        if (it == w.cache.end()) {
            if (w.cache.size() >= 65536) {
                w.cache.clear();
                w.cached_ids.clear();
            }
            size_t offset = w.cached_ids.size();
            bpe(p + begin, len, w, w.cached_ids);
            auto entry = std::make_pair(uint32_t(offset), uint32_t(w.cached_ids.size() - offset));
            it = w.cache.emplace(std::move(key), entry).first;
        }
        const int* ids = w.cached_ids.data() + it->second.first;
        out.insert(out.end(), ids, ids + it->second.second);
    });
}

inline std::vector<int> Tokenizer::encode_trusted(const std::string& text,
                                                  const std::vector<std::pair<size_t, size_t>>& trusted) const {
    size_t bad = utf8_first_invalid(text);
    if (bad != text.size()) fail("invalid UTF-8 at byte %zu", bad);
    if (text.size() > size_t(INT32_MAX)) fail("text of %zu bytes is too long to tokenize", text.size());
    Work w;
    std::vector<int> out;
    size_t piece = 0, t = 0;  // start of the current plain-text piece; first trusted range not yet passed
    for (size_t i = 0; i < text.size(); i++) {
        if (!added_first_[uint8_t(text[i])]) continue;
        while (t < trusted.size() && trusted[t].second <= i) t++;
        const AddedToken* hit = nullptr;  // the longest added token that may match at i
        for (const AddedToken& a : added_) {
            if (a.text[0] != text[i] || text.compare(i, a.text.size(), a.text) != 0) continue;
            bool allowed =
                !a.special || (t < trusted.size() && trusted[t].first <= i && i + a.text.size() <= trusted[t].second);
            if (allowed) {
                hit = &a;
                break;
            }
        }
        if (!hit) continue;
        encode_text(text.substr(piece, i - piece), w, out);
        out.push_back(hit->id);
        i += hit->text.size() - 1;
        piece = i + 1;
    }
    encode_text(text.substr(piece), w, out);
    return out;
}

inline std::vector<int> Tokenizer::encode(const std::string& text, bool parse_special) const {
    std::vector<std::pair<size_t, size_t>> trusted;
    if (parse_special) trusted.push_back({0, text.size()});
    return encode_trusted(text, trusted);
}

// ---- Streaming decoder --------------------------------------------------------------------------
// Tokens end in the middle of characters (an emoji is often 2-4 byte tokens). The decoder holds back an
// incomplete UTF-8 tail until the bytes that complete it arrive; bytes that can never become valid are
// passed through unchanged, so the concatenation of everything returned equals decode(all ids).
struct StreamDecoder {
    explicit StreamDecoder(const Tokenizer& t) : tok(t) {}
    std::string push(int id);
    std::string flush() { return std::exchange(pending, std::string()); }

    const Tokenizer& tok;
    std::string pending;  // bytes not yet returned: at most one incomplete character
};

inline std::string StreamDecoder::push(int id) {
    pending += tok.token_bytes(id);
    // An incomplete character is a lead byte followed by at most 2 continuation bytes: look for one at
    // the end, and hold it back if it is the valid beginning of a character.
    const uint8_t* p = reinterpret_cast<const uint8_t*>(pending.data());
    size_t n = pending.size(), start = n;
    while (start > 0 && n - start < 3 && (p[start - 1] & 0xC0) == 0x80) start--;
    size_t keep = 0;
    uint32_t cp = 0;
    if (start > 0 && p[start - 1] >= 0xC0 && utf8_decode(p + start - 1, n - start + 1, &cp) == UTF8_TRUNCATED)
        keep = n - start + 1;
    std::string ready = pending.substr(0, n - keep);
    pending.erase(0, n - keep);
    return ready;
}

// ---- Chat prompts (ChatML) ----------------------------------------------------------------------
// Every Qwen chat template renders turns as "<|im_start|>{role}\n{content}<|im_end|>\n" and ends with
// the generation prompt "<|im_start|>assistant\n". Beyond that:
//   - Qwen1.5/2/2.5 insert a default system prompt when the first message is not a system message;
//   - Qwen2.5 and Qwen3 render role "tool" as a user turn wrapping "<tool_response>\n...\n</tool_response>"
//     (consecutive tool messages share one turn);
//   - Qwen3 (ChatInfo::thinking) drops the reasoning ("<think>...</think>") of assistant messages before
//     the last user query, writes it in a normalised form after it, and with enable_thinking = false
//     appends an empty "<think>\n\n</think>\n\n" to the generation prompt.
struct Message {
    std::string role, content;
};

struct ChatOptions {
    bool add_generation_prompt = true;
    bool enable_thinking = true;     // Qwen3: false appends "<think>\n\n</think>\n\n" after the assistant header
    bool use_default_system = true;  // insert ChatInfo::default_system when messages[0] is not a system message
};

// The rendered prompt as pieces: markup (the template's own text, where special tokens are real) and
// text that came from the caller (roles, contents: special tokens in it stay plain text).
struct ChatPieces {
    std::string text;
    std::vector<std::pair<size_t, size_t>> markup;  // [begin, end) byte ranges of template text
    void add_markup(const std::string& s) {
        markup.push_back({text.size(), text.size() + s.size()});
        text += s;
    }
    void add_text(const std::string& s) { text += s; }
};

// Python's s.lstrip('\n') / s.rstrip('\n') / s.strip('\n'), which the Qwen3 template uses.
inline std::string strip_newlines(const std::string& s, bool left, bool right) {
    size_t b = 0, e = s.size();
    while (left && b < e && s[b] == '\n') b++;
    while (right && e > b && s[e - 1] == '\n') e--;
    return s.substr(b, e - b);
}

inline bool str_starts_with(const std::string& s, const std::string& p) { return s.compare(0, p.size(), p) == 0; }
inline bool str_ends_with(const std::string& s, const std::string& p) {
    return s.size() >= p.size() && s.compare(s.size() - p.size(), p.size(), p) == 0;
}

// Qwen3's split of an assistant message into (reasoning, answer), as its template does it:
// answer = after the last "</think>", without leading newlines; reasoning = before the first "</think>",
// after the last "<think>" there, without surrounding newlines. No "</think>": all answer.
inline std::pair<std::string, std::string> split_reasoning(const std::string& content) {
    size_t close = content.find("</think>");
    if (close == std::string::npos) return {"", content};
    std::string answer = strip_newlines(content.substr(content.rfind("</think>") + 8), true, false);
    std::string before = strip_newlines(content.substr(0, close), false, true);
    size_t open = before.rfind("<think>");
    if (open != std::string::npos) before = before.substr(open + 7);
    return {strip_newlines(before, true, false), answer};
}

inline ChatPieces chat_pieces(const ChatInfo& chat, const std::vector<Message>& msgs, const ChatOptions& o) {
    ChatPieces p;
    auto turn = [&](const std::string& role, const std::string& content) {
        p.add_markup("<|im_start|>");
        p.add_text(role);
        p.add_markup("\n");
        p.add_text(content);
        p.add_markup("<|im_end|>\n");
    };
    if (chat.has_default_system && o.use_default_system && !msgs.empty() && msgs[0].role != "system")
        turn("system", chat.default_system);

    // Qwen3: the last user message that is not a wrapped tool response (its reasoning rule pivots on it).
    long last_query = long(msgs.size()) - 1;
    for (long i = long(msgs.size()) - 1; i >= 0; i--) {
        const Message& m = msgs[size_t(i)];
        if (m.role == "user" &&
            !(str_starts_with(m.content, "<tool_response>") && str_ends_with(m.content, "</tool_response>"))) {
            last_query = i;
            break;
        }
    }
    for (size_t i = 0; i < msgs.size(); i++) {
        const Message& m = msgs[i];
        if (m.role == "tool") {
            if (i == 0 || msgs[i - 1].role != "tool") p.add_markup("<|im_start|>user");
            p.add_markup("\n<tool_response>\n");
            p.add_text(m.content);
            p.add_markup("\n</tool_response>");
            if (i + 1 == msgs.size() || msgs[i + 1].role != "tool") p.add_markup("<|im_end|>\n");
        } else if (m.role == "assistant" && chat.thinking) {
            auto [reasoning, answer] = split_reasoning(m.content);
            bool last = i + 1 == msgs.size();
            p.add_markup("<|im_start|>");
            p.add_text(m.role);
            p.add_markup("\n");
            if (long(i) > last_query && (last || !reasoning.empty())) {
                p.add_markup("<think>\n");
                p.add_text(strip_newlines(reasoning, true, true));
                p.add_markup("\n</think>\n\n");
                p.add_text(strip_newlines(answer, true, false));
            } else {
                p.add_text(answer);
            }
            p.add_markup("<|im_end|>\n");
        } else {
            turn(m.role, m.content);
        }
    }
    if (o.add_generation_prompt) {
        p.add_markup("<|im_start|>assistant\n");
        if (chat.thinking && !o.enable_thinking) p.add_markup("<think>\n\n</think>\n\n");
    }
    return p;
}

inline std::string chat_text(const ChatInfo& chat, const std::vector<Message>& msgs, const ChatOptions& o = {}) {
    return chat_pieces(chat, msgs, o).text;
}

// The prompt's ids: the template's markers become special tokens, while a special token written inside a
// role or content stays plain text, so a user cannot forge "<|im_end|>" and start a turn of their own.
inline std::vector<int> chat_tokens(const Tokenizer& tok, const ChatInfo& chat, const std::vector<Message>& msgs,
                                    const ChatOptions& o = {}) {
    for (size_t i = 0; i < msgs.size(); i++) {
        size_t bad = utf8_first_invalid(msgs[i].role);
        if (bad != msgs[i].role.size()) fail("message %zu: role: invalid UTF-8 at byte %zu", i, bad);
        bad = utf8_first_invalid(msgs[i].content);
        if (bad != msgs[i].content.size())
            fail("message %zu (%s): invalid UTF-8 at byte %zu", i, msgs[i].role.c_str(), bad);
    }
    ChatPieces p = chat_pieces(chat, msgs, o);
    return tok.encode_trusted(p.text, p.markup);
}

}  // namespace qwen
