#!/usr/bin/env python3
"""llama.cpp side by side with `qwen --bench`, on the same GGUF files.

Writes a GGUF of a benchmark shape with random weights (BF16, laid out as llama.cpp's converter writes a Qwen
checkpoint, with the real Qwen tokenizer of test/data/qwen-tokenizer), makes each requested type from it with
llama.cpp's own `llama-quantize` (so a q4_k_m file has llama-quantize's mix of types), then runs on each file
`./qwen --bench FILE --json` and `llama-bench -m FILE` with the same prompt lengths and decode depths as
qwen's bench (CPU: prefill 128 and 512, 16 decode steps after 128 and 512 cached tokens; GPU: prefill 512 and
2048, 64 decode steps after 128 and 4096), and prints one table of tok/s, ours and llama.cpp's, with the ratio.
With --rounds N the two take turns N times and the table has the medians (a shared machine's speed drifts).

Needs numpy and the gguf package (PyPI), and a llama.cpp build (llama-bench, llama-quantize: see
docs/engines.md); not used by the tests.

    python3 tools/bench_llama.py qwen2.5-0.5b --cpu --types bf16,q8_0 --llama-bin LLAMA_BUILD/bin
    python3 tools/bench_llama.py qwen2-7b --types q4_k_m,q8_0 --llama-bin LLAMA_BUILD/bin   # on a GPU
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "test"))
sys.path.insert(0, str(ROOT / "tools"))
import gguf  # noqa: E402
from gguf_fixtures import gguf_vocab, to_bf16  # noqa: E402  (the converter's token list, bf16 rounding)

from bench_hf import SHAPES  # noqa: E402  (qwen.hpp's preset shapes, in Hugging Face config names)
TYPES = {"bf16": None, "q8_0": "Q8_0", "q6_k": "Q6_K", "q5_k_m": "Q5_K_M", "q4_k_m": "Q4_K_M", "q4_0": "Q4_0"}
TOKENIZER = ROOT / "test" / "data" / "qwen-tokenizer"
# (prefill lengths, decode depths, decode steps) of qwen's bench: bench.hpp run_bench
PLAN = {"cpu": ([128, 512], [128, 512], 16), "gpu": ([512, 2048], [128, 4096], 64)}


def write_bf16_gguf(shape, path, seed=1):
    """Random weights of `shape` as a BF16 GGUF (norms F32), the metadata llama.cpp's converter writes for Qwen2."""
    s, rng = SHAPES[shape], np.random.default_rng(seed)
    H, ff, L = s["hidden_size"], s["intermediate_size"], s["num_hidden_layers"]
    heads, kv_heads, vocab = s["num_attention_heads"], s["num_key_value_heads"], s["vocab_size"]
    d = H // heads
    w = gguf.GGUFWriter(path=None, arch="qwen2")

    def mat(name, rows, cols, scale=1.0):  # N(0, scale^2 / cols), rounded to bf16
        a = (rng.standard_normal((rows, cols), dtype=np.float32) * np.float32(scale / np.sqrt(cols)))
        w.add_tensor(name, to_bf16(a), raw_dtype=gguf.GGMLQuantizationType.BF16)

    def vec(name, n, mean=0.0, sd=0.02):
        w.add_tensor(name, (mean + sd * rng.standard_normal(n)).astype(np.float32))

    mat("token_embd.weight", vocab, H, np.sqrt(H) * 0.02)
    for l in range(L):
        p = f"blk.{l}."
        vec(p + "attn_norm.weight", H, 1.0, 0.1)
        mat(p + "attn_q.weight", heads * d, H)
        mat(p + "attn_k.weight", kv_heads * d, H)
        mat(p + "attn_v.weight", kv_heads * d, H)
        vec(p + "attn_q.bias", heads * d)
        vec(p + "attn_k.bias", kv_heads * d)
        vec(p + "attn_v.bias", kv_heads * d)
        mat(p + "attn_output.weight", H, heads * d)
        vec(p + "ffn_norm.weight", H, 1.0, 0.1)
        mat(p + "ffn_gate.weight", ff, H)
        mat(p + "ffn_up.weight", ff, H)
        mat(p + "ffn_down.weight", H, ff)
    vec("output_norm.weight", H, 1.0, 0.1)
    if not s["tie_word_embeddings"]:
        mat("output.weight", vocab, H)
    w.add_type(gguf.GGUFType.MODEL)
    w.add_name(f"synthetic {shape}")
    w.add_block_count(L)
    w.add_context_length(32768)
    w.add_embedding_length(H)
    w.add_feed_forward_length(ff)
    w.add_head_count(heads)
    w.add_head_count_kv(kv_heads)
    w.add_rope_freq_base(1000000.0)
    w.add_layer_norm_rms_eps(1e-6)
    w.add_file_type(gguf.LlamaFileType.MOSTLY_BF16)
    w.add_quantization_version(gguf.GGML_QUANT_VERSION)
    tokens, types = gguf_vocab(TOKENIZER / "tokenizer.json", vocab)
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("qwen2")
    w.add_token_list(tokens)
    w.add_token_types(types)
    gguf.SpecialVocab(TOKENIZER, load_merges=True).add_to_gguf(w, quiet=True)
    w.write_header_to_file(path=Path(path))
    w.write_kv_data_to_file()
    w.write_tensors_to_file(progress=False)
    w.close()


def run_json(cmd, env=None):
    r = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if r.returncode != 0:
        sys.exit(f"bench_llama: {' '.join(map(str, cmd))} failed ({r.returncode}):\n{r.stderr[-2000:]}")
    return json.loads(r.stdout)


def bench_qwen(binary, path, cpu, threads):
    """{test name: tok/s} of `qwen --bench FILE --json`."""
    cmd = [binary, "--bench", str(path), "--json"] + (["--cpu", "-t", str(threads)] if cpu else [])
    return {r["test"]: r["tok_s"] for r in run_json(cmd)["results"]}


def bench_llama(bin_dir, path, cpu, threads, reps):
    """{test name: tok/s} of llama-bench on the same prefill lengths and decode depths, named as qwen's rows."""
    prefill, depths, steps = PLAN["cpu" if cpu else "gpu"]
    base = [str(Path(bin_dir) / "llama-bench"), "-m", str(path), "-o", "json", "-r", str(reps), "-t", str(threads),
            "-ngl", "0" if cpu else "99"]
    env = dict(os.environ, LD_LIBRARY_PATH=f"{bin_dir}:{os.environ.get('LD_LIBRARY_PATH', '')}")
    out = {}
    for r in run_json(base + ["-p", ",".join(map(str, prefill)), "-n", "0"], env):
        out[f"prefill {r['n_prompt']}"] = r["avg_ts"]
    for r in run_json(base + ["-p", "0", "-n", str(steps), "-d", ",".join(map(str, depths))], env):
        out[f"decode @{r['n_depth']}"] = r["avg_ts"]
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("shape", choices=sorted(SHAPES))
    ap.add_argument("--types", default="bf16,q8_0", help=f"comma-separated, of {','.join(TYPES)} (default bf16,q8_0)")
    ap.add_argument("--llama-bin", required=True, help="folder of llama.cpp's llama-bench and llama-quantize")
    ap.add_argument("--qwen", default=str(ROOT / "qwen"), help="the qwen binary (default ./qwen)")
    ap.add_argument("--cpu", action="store_true", help="both on the CPU (default: both on the GPU)")
    ap.add_argument("-t", "--threads", type=int, default=os.cpu_count(), help="CPU threads for both")
    ap.add_argument("--reps", type=int, default=3, help="llama-bench repetitions (default 3)")
    ap.add_argument("--rounds", type=int, default=1, help="runs of each, taking turns; the table has the medians")
    ap.add_argument("--dir", help="where the GGUF files go (default: a temporary folder, removed after)")
    a = ap.parse_args()
    types = a.types.split(",")
    bad = [t for t in types if t not in TYPES]
    if bad:
        sys.exit(f"bench_llama: unknown type {bad[0]!r} (known: {', '.join(TYPES)})")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(a.dir or tmp)
        folder.mkdir(parents=True, exist_ok=True)
        bf16 = folder / f"{a.shape}-bf16.gguf"
        if not bf16.exists():
            print(f"writing {bf16} ...", file=sys.stderr)
            write_bf16_gguf(a.shape, bf16)
        rows = []
        for t in types:
            path = bf16 if TYPES[t] is None else folder / f"{a.shape}-{t}.gguf"
            if not path.exists():
                subprocess.run([str(Path(a.llama_bin) / "llama-quantize"), str(bf16), str(path), TYPES[t]], check=True,
                               capture_output=True, env=dict(os.environ, LD_LIBRARY_PATH=a.llama_bin))
            ours, theirs = [], []  # one dict per round; the two take turns so that both see the same machine
            for k in range(a.rounds):
                print(f"{t} ({path.stat().st_size / 1e9:.2f} GB), round {k + 1} of {a.rounds} ...", file=sys.stderr)
                ours.append(bench_qwen(a.qwen, path, a.cpu, a.threads))
                theirs.append(bench_llama(a.llama_bin, path, a.cpu, a.threads, a.reps))
            for test in ours[0]:
                if test in theirs[0]:
                    rows.append((t, test, statistics.median(r[test] for r in ours),
                                 statistics.median(r[test] for r in theirs)))
    where = f"CPU, {a.threads} threads" if a.cpu else "GPU"
    print(f"{a.shape}, synthetic weights, {where}: tok/s" + (f", medians of {a.rounds} rounds" if a.rounds > 1 else ""))
    print(f"{'type':<8} {'test':<14} {'qwen':>10} {'llama.cpp':>10} {'ratio':>7}")
    for t, test, q, l in rows:
        print(f"{t:<8} {test:<14} {q:>10.1f} {l:>10.1f} {q / l:>6.2f}x")


if __name__ == "__main__":
    main()
