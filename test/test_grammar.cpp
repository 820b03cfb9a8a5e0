// Structured output: the GBNF parser and automaton (acceptance and refusal per construct, errors with their place,
// hostile input), the JSON reader, the regex / JSON Schema / choice converters, token masks against a brute-force
// oracle on the real Qwen vocabulary, the Sampler's mask, and grammar-constrained generation on a tiny model.
#include <doctest/doctest.h>

#include <fstream>
#include <set>

#include "../qwen.hpp"

using namespace qwen;

namespace {

#if defined(__SANITIZE_ADDRESS__)
constexpr int kScale = 1;  // under AddressSanitizer: fewer oracle states (each costs a pass over 151k tokens)
#else
constexpr int kScale = 4;
#endif

// Every string in `yes` is a sentence of the grammar, none in `no` is.
void check_language(const Grammar& g, std::initializer_list<std::string> yes, std::initializer_list<std::string> no) {
    for (const std::string& s : yes) {
        CAPTURE(s);
        CHECK(g.matches(s));
    }
    for (const std::string& s : no) {
        CAPTURE(s);
        CHECK_FALSE(g.matches(s));
    }
}

// The error message of compiling `gbnf`, or "" when it compiles.
std::string gbnf_error(const std::string& gbnf) {
    try {
        grammar_from_gbnf(gbnf);
    } catch (const Error& e) {
        return e.what();
    }
    return "";
}

std::string schema_error(const std::string& schema) {
    try {
        grammar_from_json_schema(schema);
    } catch (const Error& e) {
        return e.what();
    }
    return "";
}

bool contains(const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; }

const Model& real_vocab() {
    static Model m = [] {
        REQUIRE_MESSAGE(std::ifstream("build/qwen-tokenizer.bin").good(),
                        "missing build/qwen-tokenizer.bin (make fixtures)");
        return load_tokenizer("build/qwen-tokenizer.bin");
    }();
    return m;
}

std::shared_ptr<const TokenTrie> real_trie() {
    static std::shared_ptr<const TokenTrie> t = std::make_shared<const TokenTrie>(real_vocab().vocab);
    return t;
}

// The oracle: token id is allowed iff a copy of the matcher can consume its bytes one by one (the automaton
// stepped directly, without the per-state tables and suffix tries that allowed() uses).
std::vector<uint32_t> brute_force_mask(const GrammarMatcher& m, const TokenTrie& v) {
    std::vector<uint32_t> mask(size_t(mask_words(v.n_vocab)), 0u);
    GrammarMatcher c = m;
    for (int id = 0; id < v.n_vocab; id++)
        if (mask_test(v.usable.data(), id) && c.would_accept(v.bytes[size_t(id)])) mask_set(mask.data(), id);
    return mask;
}

int count_bits(const std::vector<uint32_t>& mask) {
    int n = 0;
    for (uint32_t w : mask) n += __builtin_popcount(w);
    return n;
}

// Walks `steps` random allowed tokens (or until the grammar is finished), comparing the mask with the oracle at
// `checks` of the steps spread over the walk. Returns how many states were compared.
int compare_masks_on_walk(std::shared_ptr<const TokenGrammar> tg, uint64_t seed, int steps, int checks) {
    GrammarMatcher m(tg);
    const TokenTrie& v = *tg->vocab;
    Rng rng(seed);
    std::vector<uint32_t> mask(size_t(mask_words(v.n_vocab)));
    int compared = 0;
    for (int step = 0; step < steps && !m.finished(); step++) {
        m.allowed(mask.data());
        if (step < 3 || step % std::max(1, steps / checks) == 0) {
            std::vector<uint32_t> want = brute_force_mask(m, v);
            CAPTURE(step);
            CAPTURE(seed);
            for (int id = 0; id < v.n_vocab; id++)
                if (mask_test(mask.data(), id) != mask_test(want.data(), id)) {
                    CAPTURE(id);
                    CAPTURE(v.bytes[size_t(id)]);
                    FAIL_CHECK("mask and oracle disagree");
                    break;
                }
            compared++;
        }
        std::vector<int> ids;
        for (int id = 0; id < v.n_vocab; id++)
            if (mask_test(mask.data(), id)) ids.push_back(id);
        REQUIRE_MESSAGE(!ids.empty(), "no token allowed before the grammar is finished");
        int id = ids[rng.next_u32() % ids.size()];
        REQUIRE(m.advance(id));
    }
    return compared;
}

}  // namespace

// ---- GBNF: one construct at a time ----

TEST_CASE("grammar: literals, escapes and UTF-8") {
    check_language(grammar_from_gbnf(R"(root ::= "ab" "\n\t\\\"" "\x41\u00e9\U0001F600" "中")"), {"ab\n\t\\\"Aé😀中"},
                   {"ab", "ab\n\t\\\"Aé😀", "ab\n\t\\\"Aé😀中x", "AB\n\t\\\"Aé😀中"});
    check_language(grammar_from_gbnf("root ::= \"\""), {""}, {"a"});
    check_language(grammar_from_gbnf("root ::= \"x\" \"\" \"y\""), {"xy"}, {"x", "x y"});
}

TEST_CASE("grammar: character classes, ranges, negation, any character") {
    check_language(grammar_from_gbnf("root ::= [a-cx] [0-9]"), {"a0", "c9", "x5"}, {"d0", "a", "aa", "xa", ""});
    check_language(grammar_from_gbnf(R"(root ::= [^a-z"\\] [\]\-\^])"), {"A]", "é-", "中^"},
                   {"a]", "\\]", "\"]", "A", "Aa"});
    check_language(grammar_from_gbnf("root ::= . ."), {"ab", "中😀", "\n\t"}, {"a", "abc", "\xff\xfe", "\xe4\xb8"});
    check_language(grammar_from_gbnf("root ::= [α-ω]+"), {"αβγ", "ω"}, {"a", "αa", ""});
    // a class of code points matches each as its whole UTF-8 sequence, never part of one
    check_language(grammar_from_gbnf(R"(root ::= [\u0080-\U0010FFFF])"), {"é", "中", "😀", "\xf4\x8f\xbf\xbf"},
                   {"a", "\xc3", "\xed\xa0\x80", "\xf4\x90\x80\x80", "\xc0\xaf"});
}

TEST_CASE("grammar: groups, alternatives, repetition") {
    check_language(grammar_from_gbnf(R"(root ::= ("ab" | "c")* "d")"), {"d", "abd", "cabcd", "ccd"},
                   {"", "ad", "abc", "abdd"});
    check_language(grammar_from_gbnf(R"(root ::= "a"+ "b"?)"), {"a", "aaa", "ab", "aaab"}, {"", "b", "abb"});
    check_language(grammar_from_gbnf(R"(root ::= "a"{3})"), {"aaa"}, {"aa", "aaaa"});
    check_language(grammar_from_gbnf(R"(root ::= "a"{2,})"), {"aa", "aaaaaa"}, {"a", ""});
    check_language(grammar_from_gbnf(R"(root ::= "a"{1,3} "b"{,2})"), {"a", "aaa", "ab", "aaabb"},
                   {"", "aaaa", "abbb"});
    check_language(grammar_from_gbnf(R"(root ::= ("x" "y"?){2,3})"), {"xx", "xyx", "xyxyxy", "xxx"},
                   {"x", "xxxx", "yy"});
    check_language(grammar_from_gbnf(R"(root ::= "a"{0} "b")"), {"b"}, {"ab"});
}

TEST_CASE("grammar: rules, recursion, comments, rules over several lines") {
    Grammar g = grammar_from_gbnf(R"G(# balanced parentheses and brackets
root ::= item*   # any number
item ::= "(" item* ")"
       | "[" item* "]"
)G");
    check_language(g, {"", "()", "([])", "()[()[]]", "[[[[]]]]"}, {"(", "(]", "([)]", ")("});
    Grammar h = grammar_from_gbnf("root ::= a b\na ::= \"x\" | \"\"\nb ::= a \"y\"");
    check_language(h, {"y", "xy", "xxy"}, {"", "x", "xxxy", "yx"});
    // a rule that matches "" inside a loop (the closure must end) and a right-recursive list
    check_language(grammar_from_gbnf("root ::= (e \"a\")* \ne ::= \"\" | \"b\""), {"", "a", "ba", "aba"}, {"b", "bb"});
    check_language(grammar_from_gbnf("root ::= \"x\" root | \"y\""), {"y", "xy", "xxxxy"}, {"x", "yx"});
}

TEST_CASE("grammar: errors name the line and column") {
    CHECK(contains(gbnf_error("root ::= foo"), "line 1 col 10: undefined rule 'foo'"));
    CHECK(contains(gbnf_error("root ::= \"a\"\nroot ::= \"b\""), "line 2 col 1: rule 'root' is defined twice"));
    CHECK(contains(gbnf_error("start ::= \"a\""), "no rule named 'root'"));
    CHECK(contains(gbnf_error(""), "empty"));
    CHECK(contains(gbnf_error("  # only a comment\n"), "empty"));
    CHECK(contains(gbnf_error("root ::= \"abc"), "line 1 col 10: unterminated string literal"));
    CHECK(contains(gbnf_error("root ::= [abc"), "unterminated character class"));
    CHECK(contains(gbnf_error("root ::= [z-a]"), "reversed"));
    CHECK(contains(gbnf_error(R"(root ::= [^\x00-\U0010FFFF])"), "empty character class"));
    CHECK(contains(gbnf_error(R"(root ::= "\q")"), "unknown escape"));
    CHECK(contains(gbnf_error(R"(root ::= "\uD800")"), "not a Unicode scalar value"));
    CHECK(contains(gbnf_error("root ::= \"a\"{3,2}"), "n < m"));
    CHECK(contains(gbnf_error("root ::= \"a\"{1000000}"), "repetition count above"));
    CHECK(contains(gbnf_error("root ::= \"a\"**"), "repetition of a repetition"));
    CHECK(contains(gbnf_error("root ::= (\"a\""), "'(' is not closed"));
    CHECK(contains(gbnf_error("root ::= \"a\")"), "unmatched ')'"));
    CHECK(contains(gbnf_error("root ::= \"a\" @"), "line 1 col 14: unexpected '@'"));
    CHECK(contains(gbnf_error("root := \"a\""), "expected '::='"));
    CHECK(contains(gbnf_error("root ::= \"\xff\""), "invalid UTF-8"));
    // rules that can never end, and left recursion (they would expand forever)
    CHECK(contains(gbnf_error("root ::= \"a\" x\nx ::= \"b\" x"), "line 2 col 1: rule 'x' can never end"));
    CHECK(contains(gbnf_error("root ::= root"), "can never end"));
    CHECK(contains(gbnf_error("root ::= root \"a\" | \"b\""), "line 1 col 1: rule 'root' is left-recursive"));
    CHECK(contains(gbnf_error("root ::= a \"x\" | \"y\"\na ::= b\nb ::= \"\" root"), "left-recursive"));
    CHECK(contains(gbnf_error("root ::= a* root \"x\" | \"y\"\na ::= \"z\"?"), "left-recursive"));
    // an unreachable rule is still checked for syntax and references, not for termination
    CHECK(gbnf_error("root ::= \"a\"\nunused ::= unused \"b\"") == "");
    CHECK(contains(gbnf_error("root ::= \"a\"\nunused ::= missing"), "undefined rule 'missing'"));
}

TEST_CASE("grammar: hostile input is refused or handled, never a hang or a crash") {
    std::string deep = "root ::= " + std::string(64, '(') + "\"a\"" + std::string(64, ')');
    check_language(grammar_from_gbnf(deep), {"a"}, {""});
    std::string deeper = "root ::= " + std::string(65, '(') + "\"a\"" + std::string(65, ')');
    CHECK(contains(gbnf_error(deeper), "nested deeper than 64"));
    std::string very_deep = "root ::= " + std::string(200000, '(');
    CHECK(contains(gbnf_error(very_deep), "nested deeper than 64"));
    // huge repetitions: the automaton budget, not memory or time, is the limit
    CHECK(contains(gbnf_error("root ::= (\"ab\"{0,100000}){0,100000}"), "too large"));
    CHECK(contains(gbnf_error("root ::= [a-z]{100000} [0-9]{100000}"), "too large"));
    CHECK(contains(gbnf_error(std::string(GRAMMAR_MAX_TEXT + 1, ' ')), "longer than"));
    // a long chain of rules (inlined until the size limit), and a grammar with many alternatives
    std::string chain = "root ::= r0\n";
    for (int i = 0; i < 3000; i++) chain += "r" + std::to_string(i) + " ::= \"x\" r" + std::to_string(i + 1) + "?\n";
    chain += "r3000 ::= \"y\"\n";
    Grammar g = grammar_from_gbnf(chain);
    CHECK(g.matches("x"));
    CHECK(g.matches(std::string(3000, 'x') + "y"));
    CHECK_FALSE(g.matches(std::string(3001, 'x')));
    // nullable loops inside loops
    check_language(grammar_from_gbnf("root ::= ((\"\")* (\"a\"?)*)* \"b\""), {"b", "aab"}, {"", "ba"});
    // an exponential subset construction is cut by the state budget
    CHECK(contains(gbnf_error("root ::= [ab]* \"a\" [ab]{20}"), "too large"));
    // too many rules
    std::string many = "root ::= \"a\"\n";
    for (int i = 0; i < 10001; i++) many += "q" + std::to_string(i) + " ::= \"a\"\n";
    CHECK(contains(gbnf_error(many), "more than 10000 rules"));
}

// ---- JSON reader ----

TEST_CASE("json: the strict reader") {
    JsonValue v =
        parse_json(R"( {"a": [1, -2.5e3, true, false, null], "b": "x\"\\\/\b\f\n\r\t\u00e9\ud83d\ude00", "c": {}} )");
    REQUIRE(v.type == JsonValue::OBJECT);
    CHECK(v.get("a")->items.size() == 5);
    CHECK(v.get("a")->items[1].text == "-2.5e3");
    CHECK(v.get("b")->text == "x\"\\/\b\f\n\r\té😀");
    CHECK(json_dump(v) == R"({"a":[1,-2.5e3,true,false,null],"b":"x\"\\/\b\f\n\r\té😀","c":{}})");
    auto error = [](const std::string& text) {
        try {
            parse_json(text, "test");
        } catch (const Error& e) {
            return std::string(e.what());
        }
        return std::string();
    };
    CHECK(contains(error("{\"a\": 1,}"), "test: line 1 col 9: expected a string key"));
    CHECK(contains(error("{\"a\": 1, \"a\": 2}"), "duplicate key \"a\""));
    CHECK(contains(error("[1, 2"), "expected ',' or ']'"));
    CHECK(contains(error("01"), "unexpected data"));
    CHECK(contains(error("1."), "no digits after '.'"));
    CHECK(contains(error("\"\\ud800\""), "unpaired surrogate"));
    CHECK(contains(error("\"a\nb\""), "control character"));
    CHECK(contains(error("\"\xff\""), "invalid UTF-8"));
    CHECK(contains(error("\n\n  nul"), "test: line 3 col 3: unexpected 'n'"));
    CHECK(contains(error(""), "unexpected end of input"));
    CHECK(contains(error("{} {}"), "unexpected data after the JSON value"));
    CHECK(error(std::string(64, '[') + std::string(64, ']')) == "");
    CHECK(contains(error(std::string(65, '[') + std::string(65, ']')), "nested deeper than 64"));
    CHECK(contains(error(std::string(100000, '[')), "nested deeper than 64"));
}

// ---- regex, choices ----

TEST_CASE("regex: the supported subset as full matches") {
    check_language(grammar_from_regex(R"(^\d{3}-[A-Z]{2}$)"), {"123-AB"}, {"123-ab", "12-AB", "123-ABC"});
    check_language(grammar_from_regex(R"((cat|dog)s?)"), {"cat", "dogs"}, {"cow", "cats!"});
    check_language(grammar_from_regex(R"([^\s]+\.(?:com|org))"), {"a.com", "x-y.org"}, {"a b.com", ".net"});
    check_language(grammar_from_regex(R"(\w+@\w+\.\w{2,3})"), {"ab_1@x.io"}, {"@x.io", "a@x.i"});
    check_language(grammar_from_regex(R"(a.c)"), {"abc", "a中c"}, {"a\nc", "ac"});
    check_language(grammar_from_regex(R"(\u00e9\x41\u{1F600}[\-\]])"), {"éA😀-", "éA😀]"}, {"éA😀"});
    check_language(grammar_from_regex(R"(a+?b*?)"), {"a", "aab"}, {"b"});
    check_language(grammar_from_regex(""), {""}, {"a"});
    for (const char* bad : {"(?=a)", "a\\1", "\\bword", "a**", "(a", "a)", "[a", "a{2,1}", "*a", "a^b", "[]"}) {
        CAPTURE(bad);
        CHECK_THROWS_AS(grammar_from_regex(bad), Error);
    }
}

TEST_CASE("choices: exactly one of the strings") {
    check_language(grammar_from_choices({"yes", "no", "maybe \"so\"", "中文"}), {"yes", "no", "maybe \"so\"", "中文"},
                   {"", "ye", "yes no", "maybe"});
    CHECK_THROWS_AS(grammar_from_choices({}), Error);
    CHECK_THROWS_AS(grammar_from_choices({"ok", "\xff"}), Error);
}

// ---- JSON Schema ----

TEST_CASE("json schema: objects, required and optional properties in order, no others") {
    Grammar g = grammar_from_json_schema(R"({"type": "object", "properties": {
        "a": {"type": "integer"}, "b": {"type": "string"}, "c": {"type": "boolean"}},
        "required": ["b"], "additionalProperties": false})");
    check_language(g,
                   {R"({"b": "x"})", R"({"a": 1, "b": "x"})", R"({"b": "x", "c": true})",
                    R"({"a": -7, "b": "", "c": false})", "{\n  \"a\": 1,\n  \"b\": \"y\"\n}", R"({"b":"x"})"},
                   {R"({})", R"({"a": 1})", R"({"b": "x", "a": 1})", R"({"b": "x", "d": 1})", R"({"b": "x",})",
                    R"({"b": 1})", R"({"b": "x"} )"});
    Grammar all_optional =
        grammar_from_json_schema(R"({"properties": {"x": {"type": "null"}, "y": {"type": "null"}}})");
    check_language(all_optional, {"{}", "{ }", R"({"x": null})", R"({"y": null})", R"({"x": null, "y": null})"},
                   {R"({, "y": null})", R"({"x": null,})", R"({"y": null, "x": null})"});
}

TEST_CASE("json schema: strings, numbers, integers with bounds, enums, const") {
    check_language(grammar_from_json_schema(R"({"type": "string", "minLength": 2, "maxLength": 3})"),
                   {R"("ab")", R"("中文字")", R"("a\n")", R"("\u00e9\"")"}, {R"("a")", R"("abcd")", R"("\ud800x")"});
    check_language(grammar_from_json_schema(R"({"type": "string", "pattern": "^[a-z]+\\d$"})"), {R"("abc1")"},
                   {R"("abc")", R"("Abc1")", R"("abc12")"});
    check_language(grammar_from_json_schema(R"({"type": "string", "pattern": "b\"c"})"),  // unanchored: contains
                   {R"("b\"c")", R"("xxb\"cyy")"}, {R"("bc")", R"("b"c")"});
    check_language(grammar_from_json_schema(R"({"type": "string", "format": "date"})"),
                   {R"("2024-02-29")", R"("2000-02-29")", R"("1999-12-31")", R"("2023-04-30")", R"("0001-01-01")"},
                   {R"("2024-13-01")", R"("24-01-01")", R"("2023-02-29")", R"("1900-02-29")", R"("2023-04-31")",
                    R"("2023-02-30")", R"("2023-00-10")", R"("2023-01-00")"});
    check_language(grammar_from_json_schema(R"({"type": "string", "format": "date-time"})"),
                   {R"("2024-01-02T03:04:05Z")", R"("2024-01-02T23:59:59.123+05:30")"}, {R"("2024-01-02T24:00:00Z")"});
    check_language(grammar_from_json_schema(R"({"type": "string", "format": "uuid"})"),
                   {R"("123e4567-e89b-12d3-a456-426614174000")"}, {R"("123e4567e89b12d3a456426614174000")"});
    check_language(grammar_from_json_schema(R"({"type": "number"})"),
                   {"0", "-1.5", "3e10", "2.50E-3", "1234567890123456"},
                   {"01", "1.", ".5", "+1", "-", "1e", "12345678901234567", "1e1234"});
    check_language(grammar_from_json_schema(R"({"type": "number", "minimum": 0})"), {"0", "0.5", "7e-3"},
                   {"-1", "-0.5"});
    check_language(grammar_from_json_schema(R"({"type": "number", "exclusiveMinimum": 0})"), {"1", "0.001", "12.5"},
                   {"0", "0.000", "-1"});
    check_language(grammar_from_json_schema(R"({"enum": ["red", 1, null, {"a": [true]}]})"),
                   {R"("red")", "1", "null", R"({"a":[true]})"}, {"\"blue\"", "2", R"({"a": [true]})"});
    check_language(grammar_from_json_schema(R"({"const": "x"})"), {R"("x")"}, {R"("y")"});
    check_language(grammar_from_json_schema(R"({"type": ["integer", "null"]})"), {"5", "null"}, {"5.5", "\"5\""});
    // integer ranges: every value in and around the bounds
    struct Range {
        const char* schema;
        long lo, hi;  // the values allowed
    };
    for (Range r : {Range{R"({"type": "integer", "minimum": 0, "maximum": 255})", 0, 255},
                    Range{R"({"type": "integer", "minimum": -120, "maximum": 7})", -120, 7},
                    Range{R"({"type": "integer", "exclusiveMinimum": -1000, "exclusiveMaximum": -3})", -999, -4},
                    Range{R"({"type": "integer", "minimum": 17, "maximum": 1234})", 17, 1234},
                    Range{R"({"type": "integer", "minimum": 1.5, "maximum": 99.9})", 2, 99},
                    Range{R"({"type": "integer", "minimum": 995})", 995, 1 << 30},
                    Range{R"({"type": "integer", "maximum": -42})", -(1L << 30), -42}}) {
        Grammar g = grammar_from_json_schema(r.schema);
        CAPTURE(r.schema);
        long from = std::max(r.lo, -1300L) - 60, to = std::min(r.hi, 1300L) + 60;
        for (long x = from; x <= to; x++) {
            CAPTURE(x);
            CHECK(g.matches(std::to_string(x)) == (x >= r.lo && x <= r.hi));
        }
        CHECK_FALSE(g.matches("-0"));
        CHECK_FALSE(g.matches("007"));
    }
    CHECK(grammar_from_json_schema(R"({"type": "integer", "minimum": 995})").matches("123456789012345"));
    CHECK(contains(schema_error(R"({"type": "integer", "minimum": 5, "maximum": 4})"), "no integer lies within"));
}

TEST_CASE("json schema: arrays, anyOf, $ref and recursion, any value") {
    check_language(
        grammar_from_json_schema(R"({"type": "array", "items": {"type": "integer"}, "minItems": 1, "maxItems": 3})"),
        {"[1]", "[1, 2, 3]", "[ 1,2 ]"}, {"[]", "[1, 2, 3, 4]", "[1,]", "[\"a\"]"});
    check_language(grammar_from_json_schema(R"({"type": "array", "maxItems": 0})"), {"[]", "[ ]"}, {"[1]"});
    check_language(
        grammar_from_json_schema(R"({"anyOf": [{"type": "string"}, {"type": "array", "items": {"$ref": "#/$defs/n"}}],
                                                "$defs": {"n": {"type": "null"}}})"),
        {R"("s")", "[]", "[null, null]"}, {"[1]", "null"});
    Grammar tree = grammar_from_json_schema(R"({"$ref": "#/definitions/node", "definitions": {"node": {"type": "object",
        "properties": {"v": {"type": "integer"}, "kids": {"type": "array", "items": {"$ref": "#/definitions/node"}}},
        "required": ["v"]}}})");
    check_language(tree, {R"({"v": 1})", R"({"v": 1, "kids": [{"v": 2}, {"v": 3, "kids": [{"v": 4}]}]})"},
                   {R"({"v": 1, "kids": [{}]})", R"({"kids": []})"});
    check_language(grammar_from_json_schema("{}"), {"1", "\"a\"", "[{\"a\": [null]}]", "true"}, {"", "[", "nul"});
    check_language(grammar_json_object(), {"{}", R"({"a": {"b": [1, "2", false]}})"}, {"[]", "1", "{\"a\"}"});
    check_language(grammar_from_json_schema(R"({"type": "object", "additionalProperties": {"type": "integer"}})"),
                   {"{}", R"({"x": 1, "y": 2})"}, {R"({"x": "1"})"});
}

TEST_CASE("json schema: unsupported and invalid schemas are refused with the keyword and its place") {
    CHECK(contains(schema_error(R"({"type": "object", "properties": {"a": {"type": "string", "minProperties": 1}}})"),
                   "json schema: /properties/a: unsupported keyword 'minProperties'"));
    CHECK(contains(schema_error(R"({"oneOf": [{"type": "string"}]})"), "(root): unsupported keyword 'oneOf'"));
    CHECK(contains(schema_error(R"({"type": "array", "items": {"not": {}}})"), "/items: unsupported keyword 'not'"));
    CHECK(contains(schema_error(R"({"type": "number", "maximum": 3})"),
                   "/maximum: 'maximum' on a number is not supported"));
    CHECK(contains(schema_error(R"({"type": "string", "format": "email"})"), "/format: unsupported format 'email'"));
    CHECK(contains(schema_error(R"({"type": "strin"})"), "/type: unknown type 'strin'"));
    CHECK(contains(schema_error(R"({"$ref": "#/$defs/missing"})"), "does not resolve"));
    CHECK(contains(schema_error(R"({"$ref": "http://example.com/s.json"})"), "only local $ref"));
    CHECK(contains(schema_error(R"({"properties": {"a": {}}, "required": ["b"]})"),
                   "/required/0: not one of the properties"));
    CHECK(contains(schema_error(R"({"properties": {"a": {}}, "additionalProperties": true})"),
                   "only false is supported"));
    CHECK(contains(schema_error(R"G({"type": "string", "pattern": "(?=x)"})G"), "/pattern: regex: at offset"));
    CHECK(contains(schema_error(R"({"allOf": [{}, {}]})"), "allOf with more than one schema"));
    CHECK(contains(schema_error(R"({"type": "string", "maxLength": -1})"), "/maxLength: expected an integer"));
    CHECK(contains(schema_error("false"), "accepts nothing"));
    CHECK(contains(schema_error("[]"), "a schema must be an object or a boolean"));
    CHECK(contains(schema_error("{\"type\": \"object\",\n \"properties\": }"), "json schema: line 2 col 16"));
    // a recursive schema without a way out can never end
    CHECK(
        contains(schema_error(R"({"$ref": "#/$defs/a", "$defs": {"a": {"type": "array", "items": {"$ref": "#/$defs/a"},
                                   "minItems": 1}}})"),
                 "can never end"));
}

// ---- token masks on the real vocabulary ----

TEST_CASE("token masks equal the brute-force oracle on the real Qwen vocabulary") {
    auto trie = real_trie();
    CHECK(trie->n_vocab == 151669);
    const char* kSchema = R"({"type": "object", "properties": {
        "name": {"type": "string", "maxLength": 12}, "age": {"type": "integer", "minimum": 0, "maximum": 150},
        "email": {"type": "string", "pattern": "^[a-z.]+@[a-z]+\\.(com|org)$"}, "tags": {"type": "array",
        "items": {"enum": ["x", "y\"z", "中文"]}, "maxItems": 3}, "score": {"type": "number"},
        "next": {"anyOf": [{"type": "null"}, {"$ref": "#"}]}}, "required": ["name", "age"]})";
    struct Case {
        const char* what;
        std::string gbnf;
    };
    std::vector<Case> cases = {
        {"json_object", json_object_gbnf()},
        {"schema", json_schema_to_gbnf(kSchema)},
        {"regex", "root ::= " + regex_to_gbnf(R"((\d{1,3}\.){3}\d{1,3}|[A-Za-z_]\w* ?= ?"[^"\n]*")") + "\n"},
        {"gbnf", R"G(root ::= (expr "\n")+
expr ::= term ([-+*/] ws term)*
term ::= [0-9]+ ws | "(" ws expr ")" ws | [一-龥]{1,3} ws
ws ::= [ ]?
)G"},
        {"choices", choices_to_gbnf({"positive", "negative", "neutral", "positively \"great\""})},
    };
    int compared = 0;
    for (const Case& c : cases) {
        CAPTURE(c.what);
        auto tg = bind_grammar(grammar_from_gbnf(c.gbnf), trie);
        for (uint64_t seed = 1; seed <= uint64_t(kScale); seed++) compared += compare_masks_on_walk(tg, seed, 60, 6);
    }
    MESSAGE("compared ", compared, " parse states with the oracle");
    CHECK(compared >= 5 * kScale * 2);
}

TEST_CASE("token masks: ends of rules inside tokens, UTF-8 split across tokens, special tokens") {
    auto trie = real_trie();
    const Vocab& v = real_vocab().vocab;
    Tokenizer tok(v);
    auto tg = bind_grammar(grammar_from_gbnf(R"(root ::= "{" item ("," item)* "}"
item ::= "\"" [^"]* "\"" | [0-9]+)"),
                           trie);
    GrammarMatcher m(tg);
    std::vector<uint32_t> mask(size_t(mask_words(trie->n_vocab)));
    m.allowed(mask.data());
    CHECK(mask_test(mask.data(), tok.find("{\"")));  // one token covers two grammar elements
    CHECK_FALSE(mask_test(mask.data(), tok.find("{}")));
    REQUIRE(m.advance_bytes("{\"a"));
    m.allowed(mask.data());
    CHECK(mask_test(mask.data(), tok.find("\",")));  // closes the rule `item` and goes on in root
    CHECK(mask_test(mask.data(), tok.find("\"}")));
    CHECK_FALSE(mask_test(mask.data(), tok.find("\"]")));
    int lead = tok.find("\xe4");  // the first byte of 中 (E4 B8 AD) is a token of its own
    REQUIRE(lead >= 0);
    CHECK(mask_test(mask.data(), lead));
    REQUIRE(m.advance(lead));
    m.allowed(mask.data());  // now only tokens that continue the character fit
    CHECK(mask_test(mask.data(), tok.find("\xb8")));
    CHECK_FALSE(mask_test(mask.data(), tok.find("a")));
    CHECK_FALSE(mask_test(mask.data(), tok.find("\xe4")));
    CHECK(count_bits(mask) == count_bits(brute_force_mask(m, *trie)));
    // special tokens are never text
    for (int id = 0; id < trie->n_vocab; id++)
        if (v.kind[size_t(id)] == TOKEN_SPECIAL) CHECK_FALSE(mask_test(mask.data(), id));
    CHECK_FALSE(m.advance(tok.find("<|im_end|>")));
    CHECK_FALSE(m.advance(-1));
    CHECK_FALSE(m.advance(trie->n_vocab));
}

TEST_CASE("matcher: refused tokens change nothing; accepts_end and finished") {
    auto trie = real_trie();
    Tokenizer tok(real_vocab().vocab);
    auto tg = bind_grammar(grammar_from_gbnf("root ::= \"ab\" \"c\"?"), trie);
    GrammarMatcher m(tg);
    CHECK_FALSE(m.accepts_end());
    CHECK_FALSE(m.advance(tok.find("b")));
    CHECK_FALSE(m.advance(tok.find("abcd")));
    REQUIRE(m.advance(tok.find("ab")));
    CHECK(m.accepts_end());
    CHECK_FALSE(m.finished());
    std::vector<uint32_t> mask(size_t(mask_words(trie->n_vocab)));
    m.allowed(mask.data());
    CHECK(count_bits(mask) == 1);
    CHECK(mask_test(mask.data(), tok.find("c")));
    REQUIRE(m.advance(tok.find("c")));
    CHECK(m.finished());
    m.allowed(mask.data());
    CHECK(count_bits(mask) == 0);
    m.reset();
    CHECK_FALSE(m.accepts_end());
    CHECK(m.advance(tok.find("abc")));
    CHECK(m.finished());
}

TEST_CASE("matcher: a long generation keeps its memory flat (the frame pool is compacted)") {
    auto trie = real_trie();
    Tokenizer tok(real_vocab().vocab);
    auto tg = bind_grammar(grammar_json_object(), trie);
    GrammarMatcher m(tg);
    REQUIRE(m.advance_bytes("{\"a\": ["));
    for (int i = 0; i < 20000; i++) REQUIRE(m.advance_bytes("[1, {\"b\": \"x\"}], "));
    REQUIRE(m.advance_bytes("1]}"));
    CHECK(m.finished());
    CHECK(m.frames() < 20000);  // 340 000 bytes went through it
}

// ---- the Sampler's mask and constrained generation ----

TEST_CASE("sampler: only allowed tokens are chosen, whatever the logits and penalties") {
    const int n = 1000;
    Rng rng(5);
    for (float temp : {0.0f, 0.7f, 1.5f})
        for (int trial = 0; trial < 50; trial++) {
            std::vector<float> logits(n);
            for (float& l : logits) l = 10.0f * (rng.uniform() - 0.5f);
            std::vector<uint32_t> mask(size_t(mask_words(n)), 0u);
            std::set<int> allowed;
            for (int k = 0; k < 1 + trial % 7; k++) allowed.insert(int(rng.next_u32() % n));
            for (int id : allowed) mask_set(mask.data(), id);
            SamplingParams p;
            p.temperature = temp;
            p.top_k = 5;
            p.top_p = 0.9f;
            p.repetition_penalty = 1e-30f;  // a huge penalty clamps to the finite floats: it must not revive a token
            p.seed = uint64_t(trial);
            Sampler s(p);
            std::vector<int> ctx;
            for (int i = 0; i < n; i += 3) ctx.push_back(i);
            int id = s.sample(logits.data(), n, ctx, 0, mask.data());
            CHECK(allowed.count(id) == 1);
        }
    std::vector<float> logits(8, 1.0f);
    std::vector<uint32_t> none(1, 0u);
    Sampler s(SamplingParams{});
    CHECK_THROWS_AS(s.sample(logits.data(), 8, {}, 0, none.data()), Error);
}

TEST_CASE("generate: the grammar holds, stop ids only where the text is complete, length before the end") {
    REQUIRE_MESSAGE(std::ifstream("build/tiny-qwen2.bin").good(), "missing build/tiny-qwen2.bin (make fixtures)");
    Model model = load_model("build/tiny-qwen2.bin");
    Tokenizer tok(model.vocab);
    CpuEngine engine(model, 512, 1);
    Session session(engine, tok);
    auto trie = std::make_shared<const TokenTrie>(model.vocab, model.config.vocab_size);
    std::vector<int> prompt = tok.encode("Answer in JSON:", false);
    const char* kSchema = R"({"type": "object", "properties": {"ok": {"type": "boolean"},
        "n": {"type": "integer", "minimum": -5, "maximum": 5}, "tag": {"enum": ["a", "b"]}},
        "required": ["ok", "n", "tag"]})";
    GenerateOptions opt;
    opt.grammar = bind_grammar(grammar_from_json_schema(kSchema), trie);
    opt.stop_ids = model.chat.stop_ids;
    opt.max_new_tokens = 200;
    for (uint64_t seed = 0; seed < 20; seed++) {
        SamplingParams p;
        p.temperature = 1.0f;
        p.top_k = 0;
        p.top_p = 1.0f;
        p.seed = seed;
        Sampler sampler(p);
        GenerateResult r = session.generate(prompt, sampler, opt);
        CAPTURE(r.text);
        CHECK(r.finish_reason == "stop");
        CHECK(opt.grammar->grammar.matches(r.text));
    }
    // max_tokens before the grammar can end: "length", with a prefix of a sentence
    opt.max_new_tokens = 4;
    SamplingParams p;
    p.temperature = 1.0f;
    p.seed = 3;
    Sampler sampler(p);
    GenerateResult r = session.generate(prompt, sampler, opt);
    CHECK(r.finish_reason == "length");
    CHECK(r.completion_tokens == 4);
    GrammarMatcher m(opt.grammar);
    CHECK(m.advance_bytes(r.text));
    CHECK_FALSE(m.accepts_end());
    // a grammar that ends by itself stops without a stop id; one whose only sentence is "" stops at once
    GenerateOptions fixed;
    fixed.grammar = bind_grammar(grammar_from_gbnf("root ::= \"hello\" [0-9]"), trie);
    fixed.max_new_tokens = 50;
    r = session.generate(prompt, sampler, fixed);
    CHECK(r.finish_reason == "stop");
    CHECK(r.text.size() == 6);
    CHECK(r.text.compare(0, 5, "hello") == 0);
    fixed.grammar = bind_grammar(grammar_from_gbnf("root ::= \"\""), trie);
    r = session.generate(prompt, sampler, fixed);
    CHECK(r.finish_reason == "stop");
    CHECK(r.text.empty());
    CHECK(r.completion_tokens == 0);
    // stop ids come only where the grammar accepts: "x"+ then the stop id
    GenerateOptions loop;
    loop.grammar = bind_grammar(grammar_from_gbnf("root ::= \"xy\"+"), trie);
    loop.stop_ids = model.chat.stop_ids;
    loop.max_new_tokens = 40;
    for (uint64_t seed = 0; seed < 10; seed++) {
        SamplingParams q;
        q.temperature = 1.0f;
        q.seed = seed;
        Sampler s(q);
        r = session.generate(prompt, s, loop);
        CAPTURE(r.text);
        GrammarMatcher g(loop.grammar);
        CHECK(g.advance_bytes(r.text));
        if (r.finish_reason == "stop")
            CHECK(g.accepts_end());  // a stop id came where the text was complete
        else
            CHECK(r.finish_reason == "length");
    }
}
