// qwen.hpp (development form: the parts are merged into this one file before release)
#pragma once
#include "parts/p0_common.hpp"
#include "parts/p1_model.hpp"
#include "parts/p2_unicode.hpp"
#include "parts/p3_tokenizer.hpp"
#include "parts/p4_sampler.hpp"
#include "parts/p5_engine.hpp"
#include "parts/p6_cpu.hpp"
#include "parts/p7_generate.hpp"
