// Generation: StopMatcher (stop strings found however the text is cut into pieces, nothing after them released,
// nothing before them held back at the end), Session::generate with stop strings that span tokens and with
// min_new_tokens, and ChatOutputParser (reasoning, answer and tool calls, however the output is cut).
#include <doctest/doctest.h>

#include "../qwen.hpp"
#include "fixtures.hpp"

using namespace qwen;

namespace {

// Feeds the pieces one by one; returns everything released (push, then flush) and whether it stopped.
std::pair<std::string, bool> feed(const std::vector<std::string>& stops, const std::vector<std::string>& pieces) {
    StopMatcher m(stops);
    std::string out;
    for (const std::string& p : pieces) out += m.push(p);
    out += m.flush();
    return {out, m.stopped};
}

// Every way of cutting `text` into pieces of `size` bytes (the last one shorter).
std::vector<std::string> cut(const std::string& text, size_t size) {
    std::vector<std::string> pieces;
    for (size_t i = 0; i < text.size(); i += size) pieces.push_back(text.substr(i, size));
    return pieces;
}

}  // namespace

TEST_CASE("StopMatcher: a stop string split across 2, 3 and many pieces is found, and nothing of it leaks") {
    const std::string stop = "</answer>";
    const std::string text = "the answer is 42</answer> and then more";
    for (size_t size = 1; size <= text.size(); size++) {
        CAPTURE(size);
        auto [out, stopped] = feed({stop}, cut(text, size));
        CHECK(stopped);
        CHECK(out == "the answer is 42");
    }
    // split exactly at 2 and 3 places inside the stop string
    CHECK(feed({stop}, {"x</ans", "wer> y"}) == std::make_pair(std::string("x"), true));
    CHECK(feed({stop}, {"x</", "answ", "er> y"}) == std::make_pair(std::string("x"), true));
}

TEST_CASE("StopMatcher: what only looked like the start of a stop string is released, in order") {
    StopMatcher m({"</answer>"});
    CHECK(m.push("a</an") == "a");  // "</an" could still become "</answer>": held back
    CHECK(m.push("d b") == "</and b");
    CHECK(m.push("</") == "");
    CHECK(m.flush() == "</");       // the end of the text: the held part was not a stop string after all
    CHECK(!m.stopped);
}

TEST_CASE("StopMatcher: a stop string that ends inside a UTF-8 character's bytes") {
    // "é" is C3 A9; the pieces cut the character in two, as tokens do
    auto [out, stopped] = feed({"\xC3\xA9!"}, {"caf\xC3", "\xA9!", " more"});
    CHECK(stopped);
    CHECK(out == "caf");
    auto [out2, stopped2] = feed({"\xC3\xA9!"}, {"caf\xC3", "\xA9", "?"});
    CHECK(!stopped2);
    CHECK(out2 == "caf\xC3\xA9?");
}

TEST_CASE("StopMatcher: overlapping prefixes and several stop strings: the earliest match wins") {
    // "abc" is a prefix of "abcd" and ends with "bc", a prefix of "bcx": both must stay possible
    for (size_t size = 1; size <= 4; size++) {
        CAPTURE(size);
        CHECK(feed({"abcd", "bcx"}, cut("zabcx", size)) == std::make_pair(std::string("za"), true));
        CHECK(feed({"abcd", "bcx"}, cut("zabcd", size)) == std::make_pair(std::string("z"), true));
        CHECK(feed({"abcd", "bcx"}, cut("zabcy", size)) == std::make_pair(std::string("zabcy"), false));
    }
    CHECK(feed({"END", "STOP"}, {"xxSTOPyyEND"}) == std::make_pair(std::string("xx"), true));
    CHECK(feed({"END", "STOP"}, {"xxEN", "D yy STOP"}) == std::make_pair(std::string("xx"), true));
    // a stop string that is a suffix of another's prefix: "aab" in "aaab"
    CHECK(feed({"aab"}, {"a", "a", "a", "b"}) == std::make_pair(std::string("a"), true));
    // empty stop strings are ignored (they would match everywhere)
    CHECK(feed({"", "zz"}, {"abc"}) == std::make_pair(std::string("abc"), false));
}

TEST_CASE("Session: a stop string that spans two generated tokens ends the answer before it") {
    Model model = load_fixture("tiny-qwen2");
    Tokenizer tok(model.vocab);
    CpuEngine engine(model, 256, 1);
    Session session(engine, tok);
    std::vector<int> prompt = tok.encode("Once upon a time", true);
    SamplingParams greedy;
    greedy.temperature = 0;
    GenerateOptions free_run;
    free_run.max_new_tokens = 24;
    Sampler s0(greedy);
    GenerateResult full = session.generate(prompt, s0, free_run);
    // the generated tokens, to find a token boundary with a byte on each side whose pair occurs first there
    session.reset();
    std::vector<int> ids = prompt;
    engine.forward(prompt.data(), int(prompt.size()), 0);
    std::vector<size_t> ends;  // byte offset in full.text where each generated token ends
    std::string text;
    for (int i = 0; i < 24; i++) {
        Sampler s(greedy);
        int next = engine.sample(s, tok.n_tokens(), ids, prompt.size());
        text += tok.token_bytes(next);
        ends.push_back(text.size());
        ids.push_back(next);
        engine.forward(&next, 1, int(ids.size()) - 1);
    }
    REQUIRE(text == full.text);
    std::string stop;
    size_t at = 0;
    for (size_t k = 0; k + 1 < ends.size() && stop.empty(); k++) {
        std::string candidate = text.substr(ends[k] - 1, 2);  // last byte of token k, first of token k + 1
        if (text.find(candidate) == ends[k] - 1) stop = candidate, at = ends[k] - 1;
    }
    REQUIRE_MESSAGE(!stop.empty(), "no token boundary to test in ", text);
    GenerateOptions with_stop = free_run;
    with_stop.stop = {stop};
    session.reset();
    Sampler s1(greedy);
    std::string streamed;
    GenerateResult r = session.generate(prompt, s1, with_stop, [&](const std::string& piece) {
        streamed += piece;
        return true;
    });
    CHECK(r.finish_reason == "stop");
    CHECK(r.text == text.substr(0, at));
    CHECK(streamed == r.text);  // nothing of the stop string was streamed and then taken back
}

// ---- ChatOutputParser: reasoning, answer and tool calls from streamed output ----------------------------------

namespace {

// The parts of `text` fed in pieces of `size` bytes, merged by kind as a client merges deltas: (reasoning,
// content, "name|arguments" of each call).
struct Parsed {
    std::string reasoning, content;
    std::vector<std::string> calls;
    bool operator==(const Parsed& o) const {
        return reasoning == o.reasoning && content == o.content && calls == o.calls;
    }
};
Parsed parse(const std::string& text, bool reasoning, bool tools, size_t size) {
    ChatOutputParser p(reasoning, tools);
    Parsed out;
    auto add = [&](const std::vector<ChatPart>& parts) {
        for (const ChatPart& c : parts) {
            if (c.kind == ChatPart::REASONING) out.reasoning += c.text;
            else if (c.kind == ChatPart::CONTENT) out.content += c.text;
            else out.calls.push_back(c.call.name + "|" + c.call.arguments);
        }
    };
    for (const std::string& piece : cut(text, size)) add(p.push(piece));
    add(p.finish());
    return out;
}

// The same parts whatever the pieces (1 byte at a time up to the whole text).
Parsed parse_all_ways(const std::string& text, bool reasoning, bool tools) {
    Parsed whole = parse(text, reasoning, tools, text.size() + 1);
    for (size_t size = 1; size <= text.size(); size++) {
        CAPTURE(size);
        CHECK(parse(text, reasoning, tools, size) == whole);
    }
    return whole;
}

}  // namespace

TEST_CASE("ChatOutputParser: Qwen3 reasoning goes apart from the answer, newlines dropped as the template does") {
    Parsed p = parse_all_ways("<think>\nLet me add.\n\n2 and 2\n</think>\n\nIt is 4.", true, false);
    CHECK(p.reasoning == "Let me add.\n\n2 and 2");
    CHECK(p.content == "It is 4.");
    p = parse_all_ways("  \n<think>\n\n</think>\n\nNo thoughts.", true, false);  // empty reasoning, whitespace first
    CHECK(p.reasoning == "");
    CHECK(p.content == "No thoughts.");
    p = parse_all_ways("<think>\ncut short by the token limit\n", true, false);  // never closed: all reasoning
    CHECK(p.reasoning == "cut short by the token limit");
    CHECK(p.content == "");
    p = parse_all_ways("Plain answer <think> not at the start </think> stays.", true, false);
    CHECK(p.reasoning == "");
    CHECK(p.content == "Plain answer <think> not at the start </think> stays.");
    p = parse_all_ways("<thin", true, false);  // only the start of the tag, then the end: answer text
    CHECK(p.content == "<thin");
    p = parse_all_ways("<think>\nx\n</think>\n\nA", false, false);  // reasoning off: everything inline
    CHECK(p.content == "<think>\nx\n</think>\n\nA");
}

TEST_CASE("ChatOutputParser: tool calls become calls, several of them, malformed ones stay text") {
    Parsed p = parse_all_ways("<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\","
                              "\"days\":2}}\n</tool_call>\n<tool_call>\n{\"name\": \"get_time\", \"arguments\": {}}\n"
                              "</tool_call>",
                              false, true);
    CHECK(p.content == "");
    CHECK(p.calls == std::vector<std::string>{"get_weather|{\"city\": \"Paris\", \"days\": 2}", "get_time|{}"});
    // reasoning, then words, then a call: the whitespace before the call goes
    p = parse_all_ways("<think>\nneed weather\n</think>\n\nLet me check.\n<tool_call>\n{\"name\": \"w\", "
                       "\"arguments\": {\"q\": \"雨\"}}\n</tool_call>", true, true);
    CHECK(p.reasoning == "need weather");
    CHECK(p.content == "Let me check.");
    CHECK(p.calls == std::vector<std::string>{"w|{\"q\": \"雨\"}"});
    // malformed JSON, a missing name, arguments that are not an object: all stay text, no call
    for (const char* bad : {"<tool_call>\n{\"name\": \"w\", \"arguments\": {\"q\": }\n</tool_call>",
                            "<tool_call>\n{\"arguments\": {}}\n</tool_call>",
                            "<tool_call>\n{\"name\": \"w\", \"arguments\": \"{}\"}\n</tool_call>",
                            "<tool_call>\n{\"name\": \"w\", \"arguments\": {}}"}) {  // never closed
        CAPTURE(bad);
        p = parse_all_ways(bad, false, true);
        CHECK(p.calls.empty());
        CHECK(p.content == bad);
    }
    // a good call and a bad one: the good one counts, the bad one is text
    p = parse_all_ways("<tool_call>{\"name\": \"a\", \"arguments\": {}}</tool_call><tool_call>oops</tool_call>", false,
                       true);
    CHECK(p.calls == std::vector<std::string>{"a|{}"});
    CHECK(p.content == "<tool_call>oops</tool_call>");
    // tools off: the tags are text; with tools on and no call, trailing whitespace is kept
    p = parse_all_ways("<tool_call>{\"name\": \"a\", \"arguments\": {}}</tool_call>", false, false);
    CHECK(p.calls.empty());
    p = parse_all_ways("Just words.\n\n", false, true);
    CHECK(p.content == "Just words.\n\n");
}

TEST_CASE("Session: min_new_tokens holds the stop ids back; the ids and logprobs of the answer are recorded") {
    Model model = load_fixture("tiny-qwen2");
    Tokenizer tok(model.vocab);
    CpuEngine engine(model, 256, 1);
    Session session(engine, tok);
    std::vector<int> prompt = tok.encode("Once upon a time", true);
    SamplingParams greedy;
    greedy.temperature = 0;
    greedy.logprobs = 2;
    Sampler s0(greedy);
    GenerateOptions opt;
    opt.max_new_tokens = 16;
    GenerateResult free_run = session.generate(prompt, s0, opt);
    REQUIRE(free_run.ids.size() >= 2);
    CHECK(free_run.logprobs.size() == free_run.ids.size());
    // make the greedy choice at the 3rd step a stop id: without min_new_tokens the answer ends there
    opt.stop_ids = {free_run.ids[2]};
    Sampler s1(greedy);
    std::vector<int> seen;
    opt.on_token = [&](int id, const Sampler&) { seen.push_back(id); };
    GenerateResult stopped = session.generate(prompt, s1, opt);
    CHECK(stopped.finish_reason == "stop");
    REQUIRE(stopped.ids.size() <= 3);
    CHECK(seen.size() == stopped.ids.size() - 1);  // on_token: the answer's tokens, not the stop id
    opt.min_new_tokens = 8;
    Sampler s2(greedy);
    GenerateResult held = session.generate(prompt, s2, opt);
    REQUIRE(held.ids.size() >= 8);
    for (size_t i = 0; i < 7; i++) CHECK(held.ids[i] != free_run.ids[2]);
}

TEST_CASE("tool_calls_gbnf: the calls the templates ask for, arguments under each tool's schema") {
    std::vector<ToolSpec> tools = {
        {"get_weather", R"({"type": "object", "properties": {"city": {"type": "string", "maxLength": 5}},
                            "required": ["city"], "additionalProperties": false})"},
        {"now", ""}};  // no schema: any JSON object
    const std::string w = "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Oslo\"}}\n</tool_call>";
    const std::string n = "<tool_call>\n{\"name\": \"now\", \"arguments\": {\"tz\": [1, 2]}}\n</tool_call>";
    Grammar one = grammar_from_gbnf(tool_calls_gbnf(tools, false, false));
    CHECK(one.matches(w));
    CHECK(one.matches(n));
    CHECK_FALSE(one.matches(w + "\n" + n));  // one call only
    CHECK_FALSE(one.matches("<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Bergen\"}}\n"
                            "</tool_call>"));
    CHECK_FALSE(one.matches("<tool_call>\n{\"name\": \"other\", \"arguments\": {}}\n</tool_call>"));
    CHECK_FALSE(one.matches("<think>\nhm\n</think>\n\n" + w));  // no thinking unless asked
    Grammar many = grammar_from_gbnf(tool_calls_gbnf(tools, true, true));
    CHECK(many.matches(w + "\n" + n + "\n" + w));
    CHECK(many.matches("<think>\nWeather first, then the time.\n</think>\n\n" + w + "\n" + n));
    CHECK_FALSE(many.matches("<think>\nno </ inside\n</think>\n\n" + w));
    std::vector<ToolSpec> bad = {{"f", R"({"type": "object", "properties": {"a": {"oneOf": []}}})"}};
    CHECK_THROWS_WITH_AS(tool_calls_gbnf(bad, false, false),
                         "tool 'f': json schema: /properties/a: unsupported keyword 'oneOf'", Error);
    CHECK_THROWS_AS(tool_calls_gbnf({}, false, false), Error);
}
