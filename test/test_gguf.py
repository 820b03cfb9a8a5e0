"""GGUF files end to end: ./qwen and ./qwen-server with -m FILE.gguf (llama.cpp's own test files, test/data/gguf).

Greedy text is compared with the float64 references of test/data/gguf/refs.json (computed over the exactly
decoded weights of each file) on the CPU engine; the GPU engine (or build/qwen_emu, the emulated device) is
compared with the CPU engine. Bad files are refused with one line and exit status 1.
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from test_cli import DATA, ROOT, ids_of, ok, run, token_bytes
from test_server import Server, get_json, post

GGUF = DATA / "gguf"
REFS = json.loads((GGUF / "refs.json").read_text())
FILES = ["sq2-Q4_K_M", "sq2-Q5_K_M", "sq3-Q8_0", "sq3-Q4_K_M", "sq3-Q4_0", "sq2-BF16"]
EMU = ROOT / "build" / "qwen_emu"
HAS_GPU = Path("/dev/nvidia0").exists()


STOPS = {511, 509}  # the files' stop ids: eos <|im_end|>, and <|endoftext|>


def expected_bytes(ids):
    """The bytes the CLI prints for generated ids: up to the first stop id."""
    table, out = token_bytes("tokenizer-small"), b""
    for i in ids:
        if i in STOPS:
            break
        out += table[i]
    return out


def cases(mode):
    return [(i, c) for i, c in enumerate(REFS["cases"]) if c["mode"] == mode]


@pytest.mark.parametrize("name", FILES)
def test_raw_greedy_matches_the_references(name):
    # The references generate 24 tokens without stopping; the CLI stops at the stop ids (<|im_end|>,
    # <|endoftext|>), so the expected text ends there. No repetition penalty: the file's default is 1.05.
    results = REFS["files"][name + ".gguf"]["results"]
    for i, case in cases("raw"):
        p = ok("-m", GGUF / f"{name}.gguf", "--raw", "--temp", "0", "--repeat-penalty", "1", "-n", "24", "--cpu",
               "-p", case["prompt"])
        assert p.stdout == expected_bytes(results[i]["greedy_ids"]), case["prompt"]


@pytest.mark.parametrize("name", ["sq2-Q4_K_M", "sq3-Q4_0"])
def test_chat_greedy_matches_the_references(name):
    # The file's chat template has the default system prompt the references' chat cases use.
    results = REFS["files"][name + ".gguf"]["results"]
    for i, case in cases("chat"):
        p = ok("-m", GGUF / f"{name}.gguf", "--temp", "0", "--repeat-penalty", "1", "-n", "24", "--cpu",
               "-p", case["prompt"])
        assert p.stdout == expected_bytes(results[i]["greedy_ids"]) + b"\n", case["prompt"]


def test_tokenize_from_gguf_metadata():
    for _, case in cases("raw") + cases("chat"):
        raw = ["--raw"] if case["mode"] == "raw" else []
        p = ok("-m", GGUF / "sq3-Q4_0.gguf", "--tokenize", *raw, "-p", case["prompt"])
        assert ids_of(p) == case["input_ids"], case["prompt"]


def test_verbose_names_the_model_from_its_metadata():
    p = ok("-m", GGUF / "sq2-Q4_K_M.gguf", "--verbose", "--cpu", "-n", "1", "-p", "hi")
    err = p.stderr.decode()
    assert "model Sq2: arch qwen2, 3 layers, dim 256, ffn 512, heads 4/1 x 64, vocab 512" in err, err
    assert "temp 0.7, top-p 0.8, top-k 20" in err and "repeat-penalty 1.05" in err, err


def write_changed_copy(src, dst, arch="qwen3", cut=None, template=None):
    """src (a qwen3 file) with another architecture name or chat template (gguf-py's writer), or cut short."""
    if cut is not None:
        dst.write_bytes(src.read_bytes()[:cut])
        return
    import gguf
    r = gguf.GGUFReader(src)
    w = gguf.GGUFWriter(path=None, arch=arch)
    for key, f in r.fields.items():
        if key.startswith("GGUF.") or key == "general.architecture":
            continue
        value = template if key == "tokenizer.chat_template" and template is not None else f.contents()
        w.add_key_value(key.replace("qwen3.", arch + "."), value, f.types[0],
                        f.types[-1] if f.types[0] == gguf.GGUFValueType.ARRAY else None)
    for t in r.tensors:
        w.add_tensor(t.name, t.data, raw_dtype=t.tensor_type)
    w.write_header_to_file(path=dst)
    w.write_kv_data_to_file()
    w.write_tensors_to_file(progress=False)
    w.close()


def test_chat_facts_come_from_the_template_as_the_exporter_finds_them(tmp_path):
    # The same template in a GGUF and in a checkpoint folder exported to weights.bin: the same chat prompt,
    # token for token (default system prompt, <think> mode), with and without --no-think.
    pytest.importorskip("gguf")
    from test_export import QWEN2_TEMPLATE, QWEN25_TEMPLATE
    qwen3 = ("{%- for m in messages %}{{- '<|im_start|>' + m.role + '\\n' + m.content + '<|im_end|>\\n' }}"
             "{%- endfor %}{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}"
             "{%- if enable_thinking is defined and enable_thinking is false %}{{- '<think>\\n\\n</think>\\n\\n' }}"
             "{%- endif %}{%- endif %}")
    for i, template in enumerate([QWEN2_TEMPLATE, QWEN25_TEMPLATE, qwen3, ""]):
        gguf_file = tmp_path / f"t{i}.gguf"
        write_changed_copy(GGUF / "sq3-Q4_0.gguf", gguf_file, template=template)
        folder = tmp_path / f"t{i}"
        folder.mkdir()
        (folder / "tokenizer.json").write_bytes((DATA / "tokenizer-small" / "tokenizer.json").read_bytes())
        config = json.loads((DATA / "tokenizer-small" / "tokenizer_config.json").read_text())
        config["chat_template"] = template
        (folder / "tokenizer_config.json").write_text(json.dumps(config))
        subprocess.run([sys.executable, str(ROOT / "tools" / "export.py"), "--tokenizer-only", str(folder),
                        str(tmp_path / f"t{i}.bin")], check=True, capture_output=True)
        for extra in ([], ["--no-think"], ["-sys", "Be brief."]):
            a = ok("-m", gguf_file, "--tokenize", "-p", "hi", *extra).stdout
            b = ok("-m", tmp_path / f"t{i}.bin", "--tokenize", "-p", "hi", *extra).stdout
            assert a == b, (template[:60], extra)


def test_unsupported_and_corrupt_files_are_one_line_errors(tmp_path):
    pytest.importorskip("gguf")
    src = GGUF / "sq3-Q4_0.gguf"
    llama = tmp_path / "llama.gguf"
    write_changed_copy(src, llama, arch="llama")
    assert b"general.architecture" in llama.read_bytes()[:200]
    cut = tmp_path / "cut.gguf"
    write_changed_copy(src, cut, cut=src.stat().st_size - 5000)
    for path, message in [(llama, "architecture 'llama' is not supported (supported: qwen2, qwen3)"),
                          (cut, "lies outside the file")]:
        for args in (["-p", "hi", "--cpu"], ["--tokenize", "-p", "hi"]):
            p = run("-m", path, *args)
            err = p.stderr.decode()
            assert p.returncode == 1, err
            assert err.startswith(f"qwen: error: {path}: ") and err.count("\n") == 1, err
            assert message in err, err


def test_server_serves_a_gguf_file():
    s = Server("server-gguf", "-m", str(GGUF / "sq3-Q4_0.gguf"))
    try:
        assert get_json(s.url + "/v1/models")["data"][0]["id"] == "sq3-Q4_0"
        case = REFS["cases"][0]
        body = {"prompt": case["prompt"], "temperature": 0, "max_tokens": 24, "repetition_penalty": 1}
        status, _, answer = post(s.url + "/v1/completions", body)
        assert status == 200, answer
        cli = ok("-m", GGUF / "sq3-Q4_0.gguf", "--raw", "--temp", "0", "--repeat-penalty", "1", "-n", "24", "--cpu",
                 "-p", case["prompt"]).stdout
        assert answer["choices"][0]["text"] == cli.decode("utf-8", "replace")
    finally:
        assert s.stop() == 0, s.log_text()


@pytest.mark.skipif(not HAS_GPU and not EMU.exists(), reason="no GPU and no emulated build (make build/qwen_emu)")
def test_gpu_engine_runs_gguf_like_the_cpu():
    # A mixed-type file (Q8_0 / Q4_0 / Q5_0 / Q5_1 / F16, gate and up of different types) on the GPU engine:
    # the same greedy text as the CPU engine (the emulated device is slow: a short run).
    binary = ROOT / "qwen" if HAS_GPU else EMU
    model = ROOT / "build" / "gguf" / "tiny-qwen2-mix.gguf"
    args = ["-m", model, "--raw", "--temp", "0", "-n", "8", "-p", "Once upon a time"]
    env = dict(os.environ, ASAN_OPTIONS="detect_leaks=0")
    gpu = subprocess.run([str(binary), *map(str, args), "--verbose"], capture_output=True, cwd=ROOT, env=env,
                         timeout=600)
    assert gpu.returncode == 0, gpu.stderr.decode()
    assert b"engine cuda" in gpu.stderr, gpu.stderr
    cpu = ok(*args, "--cpu")
    assert gpu.stdout == cpu.stdout
