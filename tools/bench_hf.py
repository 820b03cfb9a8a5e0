#!/usr/bin/env python3
"""Hugging Face transformers baseline for `qwen --bench`.

Runs HF generate() on the three benchmark shapes with random weights (the config is built here, nothing is
downloaded), bf16 on CUDA, and prints prefill tok/s for 512- and 2048-token prompts and decode tok/s for 128
new tokens (min_new_tokens so that an end-of-sequence token does not stop it early). With --qwen it also
runs `./qwen --bench SHAPE --json` in the same run and prints the ratio table.

Needs torch and transformers (and a GPU); not used by the tests.

    python3 tools/bench_hf.py                      # all three shapes
    python3 tools/bench_hf.py qwen2-7b --qwen ./qwen
"""
import argparse
import json
import subprocess
import sys
import time

# The same shapes as qwen.hpp's preset_config().
SHAPES = {
    "qwen2.5-0.5b": dict(hidden_size=896, intermediate_size=4864, num_hidden_layers=24, num_attention_heads=14,
                         num_key_value_heads=2, vocab_size=151936, tie_word_embeddings=True),
    "qwen2.5-1.5b": dict(hidden_size=1536, intermediate_size=8960, num_hidden_layers=28, num_attention_heads=12,
                         num_key_value_heads=2, vocab_size=151936, tie_word_embeddings=True),
    "qwen2-7b": dict(hidden_size=3584, intermediate_size=18944, num_hidden_layers=28, num_attention_heads=28,
                     num_key_value_heads=4, vocab_size=152064, tie_word_embeddings=False),
}


def build_model(shape):
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    cfg = Qwen2Config(max_position_embeddings=32768, rope_theta=1000000.0, rms_norm_eps=1e-6,
                      use_sliding_window=False, **SHAPES[shape])
    torch.manual_seed(0)
    with torch.device("cuda"):
        model = Qwen2ForCausalLM(cfg).to(torch.bfloat16)  # random init: speed does not depend on the values
    model.eval()
    return model


def timed(fn, reps):
    import torch

    fn()  # warm-up
    torch.cuda.synchronize()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return sorted(times)[len(times) // 2]


def bench_hf(shape, new_tokens=128):
    import torch

    model = build_model(shape)
    vocab = SHAPES[shape]["vocab_size"]
    out = {}
    with torch.inference_mode():
        for n in (512, 2048):
            ids = torch.randint(0, vocab, (1, n), device="cuda")
            t = timed(lambda: model(ids), 3)
            out[f"prefill {n}"] = n / t
        prompt = torch.randint(0, vocab, (1, 128), device="cuda")
        gen = dict(max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False, pad_token_id=0)
        t_prefill = timed(lambda: model.generate(prompt, max_new_tokens=1, min_new_tokens=1, do_sample=False,
                                                 pad_token_id=0), 3)
        t_all = timed(lambda: model.generate(prompt, **gen), 2)
        out["decode @128"] = (new_tokens - 1) / max(t_all - t_prefill, 1e-9)
    del model
    torch.cuda.empty_cache()
    return out


def bench_qwen(binary, shape):
    r = subprocess.run([binary, "--bench", shape, "--json"], capture_output=True, text=True, check=True)
    return {row["test"]: row["tok_s"] for row in json.loads(r.stdout)["results"]}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("shapes", nargs="*", default=list(SHAPES), help="shapes to run (default: all)")
    ap.add_argument("--qwen", metavar="BINARY", help="also run BINARY --bench SHAPE --json and compare")
    args = ap.parse_args()
    for shape in args.shapes:
        if shape not in SHAPES:
            sys.exit(f"unknown shape {shape!r}; known: {', '.join(SHAPES)}")
        hf = bench_hf(shape)
        ours = bench_qwen(args.qwen, shape) if args.qwen else {}
        print(f"\n{shape}")
        print(f"{'test':<14} {'HF tok/s':>10} {'qwen tok/s':>11} {'ratio':>7}")
        for test in ("prefill 512", "prefill 2048", "decode @128", "decode @4096"):
            a, b = hf.get(test), ours.get(test)
            if a is None and b is None:
                continue
            fa = f"{a:10.1f}" if a else f"{'-':>10}"
            fb = f"{b:11.1f}" if b else f"{'-':>11}"
            ratio = f"{b / a:7.2f}" if a and b else f"{'-':>7}"
            print(f"{test:<14} {fa} {fb} {ratio}")


if __name__ == "__main__":
    main()
