#!/usr/bin/env python3
"""Hugging Face transformers baseline for `qwen --bench`.

Runs HF generate() on the three benchmark shapes with random weights (the config is built here, nothing is
downloaded), bf16 on CUDA, and prints prefill tok/s for 512- and 2048-token prompts and decode tok/s for 128
new tokens (min_new_tokens so that an end-of-sequence token does not stop it early). With --qwen it also
runs `./qwen --bench SHAPE --json` in the same run and prints the ratio table.

With --batch B1,B2,... it measures batched decoding instead: generate() on B random 128-token prompts at once
(all of one length, so the attention mask is all ones and nothing is padded), aggregate decode tok/s for each B;
with --qwen, beside `./qwen --bench SHAPE --parallel B1,B2,... --json`.

Decode time is the time of the whole generate() minus that of a 1-token generate() on the same prompts (the
prefill and the first token), so decode tok/s = B * (new tokens - 1) / decode time.

Needs torch and transformers (and a GPU); not used by the tests.

    python3 tools/bench_hf.py                      # all three shapes
    python3 tools/bench_hf.py qwen2-7b --qwen ./qwen
    python3 tools/bench_hf.py qwen2.5-1.5b --batch 1,8,32,64 --qwen ./qwen
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


def decode_tok_s(model, prompts, new_tokens):
    """Aggregate decode tok/s of generate() on a batch of prompts (B, T) of one length: the B * (new_tokens - 1)
    tokens after the first over the time of the whole generate() minus that of a 1-token one."""
    import torch

    mask = torch.ones_like(prompts)  # one length: nothing to pad (unequal ones would need left padding here)

    def generate(n):
        return model.generate(prompts, attention_mask=mask, max_new_tokens=n, min_new_tokens=n, do_sample=False,
                              pad_token_id=0)

    t_first = timed(lambda: generate(1), 3)
    t_all = timed(lambda: generate(new_tokens), 2)
    return prompts.shape[0] * (new_tokens - 1) / max(t_all - t_first, 1e-9)


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
        out["decode @128"] = decode_tok_s(model, prompt, new_tokens)
    del model
    torch.cuda.empty_cache()
    return out


def bench_hf_batched(shape, batches, prompt_tokens=128, new_tokens=128):
    """{B: aggregate decode tok/s} of generate() on B random prompts at once, for each B in batches."""
    import torch

    model = build_model(shape)
    vocab = SHAPES[shape]["vocab_size"]
    out = {}
    with torch.inference_mode():
        for b in batches:
            prompts = torch.randint(0, vocab, (b, prompt_tokens), device="cuda")
            out[b] = decode_tok_s(model, prompts, new_tokens)
    del model
    torch.cuda.empty_cache()
    return out


def bench_qwen(binary, shape):
    r = subprocess.run([binary, "--bench", shape, "--json"], capture_output=True, text=True, check=True)
    return {row["test"]: row["tok_s"] for row in json.loads(r.stdout)["results"]}


def parse_parallel(text):
    """{B: decode tok/s} from the JSON of `qwen --bench SHAPE --parallel ... --json`, read defensively (the format
    may still change): rows without a usable batch size or speed are left out. Expected:
        {"shape": "qwen2-7b",
         "parallel": [{"batch": 8, "decode_tok_s": 1234.5, "ms_per_step": 6.48}, ...]}
    decode_tok_s is the aggregate of all B sequences; without it, B * 1000 / ms_per_step (one token per sequence
    each step)."""
    try:
        data = json.loads(text)
    except ValueError:
        return {}
    rows = data.get("parallel") if isinstance(data, dict) else None
    out = {}
    for row in rows if isinstance(rows, list) else []:
        if not isinstance(row, dict):
            continue
        b, tok_s, ms = row.get("batch"), row.get("decode_tok_s"), row.get("ms_per_step")
        if not isinstance(b, int) or isinstance(b, bool) or b < 1:
            continue
        if not isinstance(tok_s, (int, float)) and isinstance(ms, (int, float)) and ms > 0:
            tok_s = b * 1000 / ms
        if isinstance(tok_s, (int, float)) and not isinstance(tok_s, bool) and tok_s > 0:
            out[b] = float(tok_s)
    return out


def bench_qwen_parallel(binary, shape, batches):
    """{B: decode tok/s} of BINARY --bench SHAPE --parallel B1,B2,... --json; {} (with a warning) where it fails or
    prints nothing readable, so that the HF figures still show."""
    cmd = [binary, "--bench", shape, "--parallel", ",".join(map(str, batches)), "--json"]
    try:
        r = subprocess.run(cmd, capture_output=True, text=True)
    except OSError as e:
        print(f"warning: cannot run {binary}: {e}", file=sys.stderr)
        return {}
    out = parse_parallel(r.stdout) if r.returncode == 0 else {}
    if not out:
        why = f"exit status {r.returncode}: {r.stderr.strip()[-300:]}" if r.returncode else "no batch speeds found"
        print(f"warning: {' '.join(cmd)}: {why}", file=sys.stderr)
    return out


def print_ratios(rows):
    """One table: (test, HF tok/s or None, qwen tok/s or None) rows, with the ratio qwen / HF."""
    print(f"{'test':<14} {'HF tok/s':>10} {'qwen tok/s':>11} {'ratio':>7}")
    for test, a, b in rows:
        if a is None and b is None:
            continue
        fa = f"{a:10.1f}" if a else f"{'-':>10}"
        fb = f"{b:11.1f}" if b else f"{'-':>11}"
        ratio = f"{b / a:7.2f}" if a and b else f"{'-':>7}"
        print(f"{test:<14} {fa} {fb} {ratio}")


def batch_sizes(text):
    try:
        sizes = [int(x) for x in text.split(",")]
    except ValueError:
        sizes = []
    if not sizes or min(sizes) < 1:
        raise argparse.ArgumentTypeError(f"expected batch sizes like 1,8,32,64, got {text!r}")
    return sizes


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("shapes", nargs="*", default=list(SHAPES), help="shapes to run (default: all)")
    ap.add_argument("--qwen", metavar="BINARY", help="also run BINARY --bench SHAPE --json and compare")
    ap.add_argument("--batch", type=batch_sizes, metavar="B1,B2,...",
                    help="batched decoding instead: aggregate decode tok/s for each batch size (with --qwen: "
                         "BINARY --bench SHAPE --parallel B1,B2,... --json beside it)")
    args = ap.parse_args()
    for shape in args.shapes:
        if shape not in SHAPES:
            sys.exit(f"unknown shape {shape!r}; known: {', '.join(SHAPES)}")
    for shape in args.shapes:
        if args.batch:
            hf = bench_hf_batched(shape, args.batch)
            ours = bench_qwen_parallel(args.qwen, shape, args.batch) if args.qwen else {}
            print(f"\n{shape}: batched decode, 128-token prompts, 128 new tokens (qwen: its --parallel bench)")
            print_ratios([(f"batch {b}", hf.get(b), ours.get(b)) for b in args.batch])
            continue
        hf = bench_hf(shape)
        ours = bench_qwen(args.qwen, shape) if args.qwen else {}
        print(f"\n{shape}")
        print_ratios([(test, hf.get(test), ours.get(test))
                      for test in ("prefill 512", "prefill 2048", "decode @128", "decode @4096")])


if __name__ == "__main__":
    main()
