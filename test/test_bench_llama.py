"""tools/bench_llama.py: the GGUF it writes loads in ./qwen (its tokenizer equal to the one of the exported
weights.bin, its tensors of the shape asked for), llama-bench's JSON is read into the rows qwen's bench names,
and a whole run prints both figures and their ratio; llama.cpp's binaries are stand-ins here (the real ones are
not built in the tests), so what is tested is the tool, not llama.cpp.
"""
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
TOOL = ROOT / "tools" / "bench_llama.py"
QWEN = Path(os.environ.get("QWEN_BIN", ROOT / "qwen"))

_spec = importlib.util.spec_from_file_location("bench_llama", TOOL)
bl = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bl)

TINY = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
            vocab_size=151936, tie_word_embeddings=True)



def in_child(call, timeout=300):
    """Runs `call` (Python, with the tool imported as bl and the tiny shape among its presets) in a child
    process and returns its stdout: the Qwen tokenizer's tables the tool builds would otherwise stay in this
    process's memory, and a child started later reports this process's peak as part of its own (test_hostile
    measures children's peak memory)."""
    code = (f"import importlib.util, json, sys\n"
            f"spec = importlib.util.spec_from_file_location('bench_llama', {str(TOOL)!r})\n"
            f"bl = importlib.util.module_from_spec(spec)\n"
            f"spec.loader.exec_module(bl)\n"
            f"bl.SHAPES['tiny'] = {TINY!r}\n{call}\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout)
    assert r.returncode == 0, r.stderr
    return r.stdout


def fake_llama_bin(folder):
    """llama-bench printing JSON rows for the -p / -n / -d it is given, and llama-quantize copying its input."""
    folder.mkdir()
    (folder / "llama-bench").write_text(f"""#!{sys.executable}
import json, sys
a = sys.argv
arg = lambda f: a[a.index(f) + 1]
assert arg("-o") == "json" and arg("-t") == "2" and arg("-ngl") == "0", a
p, n = [int(x) for x in arg("-p").split(",")], int(arg("-n"))
d = [int(x) for x in arg("-d").split(",")] if "-d" in a else [0]
rows = [dict(n_prompt=x, n_gen=0, n_depth=0, avg_ts=1000.0 + x) for x in p if n == 0]
rows += [dict(n_prompt=0, n_gen=n, n_depth=x, avg_ts=50.0 - x / 64) for x in d if n > 0]
print(json.dumps(rows))
""")
    (folder / "llama-quantize").write_text("#!/bin/sh\ncp \"$1\" \"$2\"\n")
    for f in folder.iterdir():
        f.chmod(0o755)
    return folder


def test_written_gguf_loads_in_qwen_with_the_shape_and_the_real_tokenizer(tmp_path):
    path = tmp_path / "tiny.gguf"
    t = json.loads(in_child(f"bl.write_bf16_gguf('tiny', {str(path)!r})\n"
                            f"r = bl.gguf.GGUFReader({str(path)!r})\n"
                            "print(json.dumps({x.name: [list(map(int, x.shape)), x.tensor_type.name] for x in r.tensors}))"))
    assert len(t) == 1 + 2 * 12 + 1  # embedding, 12 per layer, final norm; tied: no output.weight
    assert t["blk.1.ffn_down.weight"] == [[128, 64], "BF16"]  # ggml order: (cols, rows)
    assert t["token_embd.weight"] == [[64, 151936], "BF16"]
    assert t["blk.0.attn_k.weight"] == [[64, 32], "BF16"]
    assert t["blk.0.attn_norm.weight"] == [[64], "F32"]
    # ./qwen reads it and tokenizes as the Qwen tokenizer does (test/data/qwen-tokenizer/cases.json)
    case = json.loads((ROOT / "test/data/qwen-tokenizer/cases.json").read_text())[0]
    out = subprocess.run([str(QWEN), "-m", str(path), "--tokenize", "--raw", "-p", case["text"]], capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert [int(x) for x in out.stdout.split()] == case["ids"]
    gen = subprocess.run([str(QWEN), "-m", str(path), "--cpu", "--raw", "-p", "hi", "-n", "3", "--temp", "0"],
                         capture_output=True, text=True, timeout=60)
    assert gen.returncode == 0 and "3 tokens generated" in gen.stderr, gen.stderr


def test_llama_bench_rows_are_named_as_qwen_bench_rows(tmp_path):
    fake = fake_llama_bin(tmp_path / "bin")
    rows = bl.bench_llama(fake, tmp_path / "x.gguf", cpu=True, threads=2, reps=1)
    assert rows == {"prefill 128": 1128.0, "prefill 512": 1512.0, "decode @128": 48.0, "decode @512": 42.0}


def test_a_whole_run_prints_both_and_the_ratio(tmp_path):
    fake = fake_llama_bin(tmp_path / "bin")
    argv = ["bench_llama.py", "tiny", "--cpu", "-t", "2", "--reps", "1", "--types", "bf16,q8_0", "--llama-bin",
            str(fake), "--qwen", str(QWEN), "--dir", str(tmp_path / "files"), "--rounds", "2"]
    out = in_child(f"sys.argv = {argv!r}\nbl.main()").splitlines()
    assert out[0] == "tiny, synthetic weights, CPU, 2 threads: tok/s, medians of 2 rounds"
    rows = [line.split() for line in out[2:]]
    # per type: qwen's CPU rows (prefill 128 and 512, decode @128 and @512), each with llama.cpp's figure
    assert [(r[0], " ".join(r[1:3])) for r in rows] == [
        (t, test) for t in ("bf16", "q8_0") for test in ("prefill 128", "decode @128", "prefill 512", "decode @512")]
    for r in rows:
        ours, theirs = float(r[3]), float(r[4])
        assert ours > 0 and theirs == {"prefill 128": 1128.0, "prefill 512": 1512.0, "decode @128": 48.0,
                                       "decode @512": 42.0}[" ".join(r[1:3])]
        assert r[5].endswith("x") and abs(float(r[5][:-1]) - ours / theirs) <= 0.011  # ours is printed rounded
    assert (tmp_path / "files" / "tiny-q8_0.gguf").exists()


def test_bad_type_is_one_line_and_exit_status(tmp_path):
    r = subprocess.run([sys.executable, str(TOOL), "qwen2.5-0.5b", "--types", "q3_k", "--llama-bin", str(tmp_path)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode != 0
    assert r.stderr.strip() == "bench_llama: unknown type 'q3_k' (known: bf16, q8_0, q6_k, q5_k_m, q4_k_m, q4_0)"
