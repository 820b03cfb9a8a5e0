// Generation: StopMatcher (stop strings found however the text is cut into pieces, nothing after them released,
// nothing before them held back at the end) and Session::generate with stop strings that span tokens.
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
