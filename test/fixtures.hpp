// The tiny Hugging Face fixtures shared by the forward-pass tests (CPU and GPU): the exported weights in
// build/ and the reference logits in test/data/. Tests run from the repository root.
#pragma once
#include <doctest/doctest.h>

#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "../qwen.hpp"

// Qwen2 with GQA and bias (tied), Qwen1.5-like MHA with a separate lm_head, Qwen3 with q/k norm.
inline const char* const kFixtures[] = {"tiny-qwen2", "tiny-qwen15", "tiny-qwen3"};

struct Reference {
    nlohmann::json cases;       // reference.json "cases"
    std::vector<float> logits;  // reference_logits.f32, all cases concatenated
};

inline Reference load_reference(const std::string& name) {
    std::string dir = "test/data/" + name + "/";
    std::ifstream js(dir + "reference.json");
    REQUIRE_MESSAGE(js.good(), "missing ", dir, "reference.json (run the tests from the repository root)");
    Reference r;
    r.cases = nlohmann::json::parse(js)["cases"];
    std::ifstream bin(dir + "reference_logits.f32", std::ios::binary | std::ios::ate);
    REQUIRE(bin.good());
    r.logits.resize(size_t(bin.tellg()) / sizeof(float));
    bin.seekg(0);
    bin.read(reinterpret_cast<char*>(r.logits.data()), std::streamsize(r.logits.size() * sizeof(float)));
    return r;
}

// The exported weights.bin of a fixture (made by `make fixtures`).
inline qwen::Model load_fixture(const std::string& name) {
    std::string path = "build/" + name + ".bin";
    REQUIRE_MESSAGE(std::ifstream(path).good(), "missing ", path, " (run `make fixtures`)");
    return qwen::load_model(path);
}
