"""tools/export.py: what it refuses (with one clear line) and what it must write identically however the
checkpoint is laid out (one file or shards, bf16 or fp32, old or new config layout)."""
import importlib.util
import json
import math
import os
import random
import shutil
import struct
from fractions import Fraction
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXPORT = os.path.join(ROOT, "tools", "export.py")
DATA = os.path.join(ROOT, "test", "data")


def run_export(*args):
    return subprocess.run([sys.executable, EXPORT, *map(str, args)], capture_output=True, text=True, cwd=ROOT)


def export_ok(src, out, *flags):
    r = run_export(*flags, src, out)
    assert r.returncode == 0, r.stderr
    with open(out, "rb") as f:
        return f.read()


def export_error(src, out):
    """Runs an export that must fail: returns its one-line error message."""
    r = run_export(src, out)
    assert r.returncode == 1, r.stdout + r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("export.py: error: "), r.stderr
    assert not os.path.exists(out) and not os.path.exists(str(out) + ".tmp")
    return lines[0]


def copy_fixture(tmp_path, name="tiny-qwen2"):
    """A private copy of a fixture folder (same folder name, so the model name is the same)."""
    dst = tmp_path / name
    shutil.copytree(os.path.join(DATA, name), dst)
    return dst


def edit_json(path, change):
    with open(path) as f:
        obj = json.load(f)
    change(obj)
    with open(path, "w") as f:
        json.dump(obj, f, indent=2)


# safetensors: u64 header length, JSON header, data
def read_safetensors(path):
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
        data = f.read()
    header.pop("__metadata__", None)
    return {name: (info["dtype"], info["shape"], data[info["data_offsets"][0]:info["data_offsets"][1]])
            for name, info in header.items()}


def write_safetensors(path, tensors):
    header, blobs, pos = {"__metadata__": {"format": "pt"}}, [], 0
    for name, (dtype, shape, data) in tensors.items():
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [pos, pos + len(data)]}
        blobs.append(data)
        pos += len(data)
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(raw)) + raw + b"".join(blobs))


HEADER = struct.Struct("<8sII9IfdffifI8IIQQQQQQ")
HEADER_FIELDS = ("magic version flags arch dim ffn_dim n_layers n_heads n_kv_heads head_dim vocab_size "
                 "max_seq_len norm_eps rope_theta temperature top_p top_k repetition_penalty n_stop_ids "
                 "stop0 stop1 stop2 stop3 stop4 stop5 stop6 stop7 reserved strings_offset strings_size "
                 "tokenizer_offset tokenizer_size tensors_offset n_tensors").split()


def header_of(blob):
    assert HEADER.size == 168
    return dict(zip(HEADER_FIELDS, HEADER.unpack_from(blob, 0)))


# ---------------------------------------------------------------------------------------------------------
# Refusals
# ---------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("missing", ["config.json", "tokenizer.json", "tokenizer_config.json", "model.safetensors"])
def test_missing_file(tmp_path, missing):
    src = copy_fixture(tmp_path)
    os.remove(src / missing)
    msg = export_error(src, tmp_path / "out.bin")
    assert ("missing weights" if missing == "model.safetensors" else f"missing file {src / missing}") in msg


def test_not_a_folder(tmp_path):
    assert "is not a folder" in export_error(tmp_path / "nowhere", tmp_path / "out.bin")


@pytest.mark.parametrize("change, expected", [
    (lambda c: c.update(architectures=["LlamaForCausalLM"]), "architecture LlamaForCausalLM is not supported"),
    (lambda c: c.update(architectures=["Qwen3MoeForCausalLM"], num_experts=8), "mixture-of-experts"),
    (lambda c: c.update(num_experts=8), "mixture-of-experts"),
    (lambda c: c.update(use_sliding_window=True, sliding_window=4096), "use_sliding_window is true"),
    (lambda c: c.update(layer_types=["full_attention", "sliding_attention"]), "non-full-attention"),
    (lambda c: c["rope_parameters"].update(rope_type="yarn", factor=4.0), "RoPE scaling type 'yarn'"),
    (lambda c: c.update(rope_scaling={"type": "dynamic", "factor": 2.0}), "RoPE scaling type 'dynamic'"),
    (lambda c: c.update(hidden_act="gelu"), "hidden_act 'gelu'"),
    (lambda c: c.update(hidden_size=0), "hidden_size must be a positive integer"),
    (lambda c: c.update(intermediate_size=100), "config implies [100, 64]"),
    (lambda c: c.update(num_hidden_layers=3), "missing tensor model.layers.2."),
])
def test_unsupported_config(tmp_path, change, expected):
    src = copy_fixture(tmp_path)
    edit_json(src / "config.json", change)
    assert expected in export_error(src, tmp_path / "out.bin")


def test_qwen3_attention_bias_is_refused(tmp_path):
    src = copy_fixture(tmp_path, "tiny-qwen3")
    edit_json(src / "config.json", lambda c: c.update(attention_bias=True))
    assert "attention_bias" in export_error(src, tmp_path / "out.bin")


def test_missing_tensor(tmp_path):
    src = copy_fixture(tmp_path)
    tensors = read_safetensors(src / "model.safetensors")
    del tensors["model.layers.1.mlp.up_proj.weight"]
    write_safetensors(src / "model.safetensors", tensors)
    assert "missing tensor model.layers.1.mlp.up_proj.weight" in export_error(src, tmp_path / "out.bin")


def test_wrong_tensor_shape(tmp_path):
    src = copy_fixture(tmp_path)
    tensors = read_safetensors(src / "model.safetensors")
    dtype, shape, data = tensors["model.norm.weight"]
    tensors["model.norm.weight"] = (dtype, [32], data[:64])
    write_safetensors(src / "model.safetensors", tensors)
    assert "tensor model.norm.weight has shape [32], config implies [64]" in export_error(src, tmp_path / "out.bin")


def test_unsupported_dtype(tmp_path):
    src = copy_fixture(tmp_path)
    tensors = read_safetensors(src / "model.safetensors")
    dtype, shape, data = tensors["model.norm.weight"]
    tensors["model.norm.weight"] = ("I16", shape, data)
    write_safetensors(src / "model.safetensors", tensors)
    assert "dtype I16" in export_error(src, tmp_path / "out.bin")


def test_more_tokens_than_embedding_rows(tmp_path):
    src = copy_fixture(tmp_path)
    tensors = read_safetensors(src / "model.safetensors")
    dtype, shape, data = tensors["model.embed_tokens.weight"]
    tensors["model.embed_tokens.weight"] = (dtype, [500, shape[1]], data[:500 * shape[1] * 2])
    write_safetensors(src / "model.safetensors", tensors)
    edit_json(src / "config.json", lambda c: c.update(vocab_size=500))
    assert "512 tokens but the embedding has only 500 rows" in export_error(src, tmp_path / "out.bin")


# ---------------------------------------------------------------------------------------------------------
# Shards: the same file whatever the checkpoint's layout
# ---------------------------------------------------------------------------------------------------------

def split_into_shards(folder, n_shards):
    """Rewrites model.safetensors as n shards + model.safetensors.index.json, as transformers saves them."""
    tensors = read_safetensors(folder / "model.safetensors")
    os.remove(folder / "model.safetensors")
    names = sorted(tensors)
    weight_map = {}
    for k in range(n_shards):
        shard = f"model-{k + 1:05d}-of-{n_shards:05d}.safetensors"
        part = names[k * len(names) // n_shards:(k + 1) * len(names) // n_shards]
        write_safetensors(folder / shard, {name: tensors[name] for name in part})
        weight_map.update({name: shard for name in part})
    with open(folder / "model.safetensors.index.json", "w") as f:
        json.dump({"metadata": {"total_size": sum(len(t[2]) for t in tensors.values())}, "weight_map": weight_map}, f)


@pytest.mark.parametrize("name", ["tiny-qwen2", "tiny-qwen15", "tiny-qwen3"])
def test_sharded_export_is_identical(tmp_path, name):
    single = export_ok(os.path.join(DATA, name), tmp_path / "single.bin")
    src = copy_fixture(tmp_path, name)
    split_into_shards(src, 2)
    assert export_ok(src, tmp_path / "sharded.bin") == single


def test_shard_listed_but_absent(tmp_path):
    src = copy_fixture(tmp_path)
    split_into_shards(src, 2)
    os.remove(src / "model-00002-of-00002.safetensors")
    msg = export_error(src, tmp_path / "out.bin")
    assert "model-00002-of-00002.safetensors" in msg and "listed in" in msg


# ---------------------------------------------------------------------------------------------------------
# Conversion to bf16 and config layouts
# ---------------------------------------------------------------------------------------------------------

def bf16_to_f32_bytes(data):
    """Each bf16 becomes the f32 with the same value: the 16 bits on top, zeros below."""
    halves = struct.unpack(f"<{len(data) // 2}H", data)
    return struct.pack(f"<{len(halves)}I", *(h << 16 for h in halves))


def test_f32_checkpoint_exports_identically(tmp_path):
    pytest.importorskip("numpy", reason="numpy is needed to convert F32 checkpoints")
    single = export_ok(os.path.join(DATA, "tiny-qwen3"), tmp_path / "bf16.bin")
    src = copy_fixture(tmp_path, "tiny-qwen3")
    tensors = read_safetensors(src / "model.safetensors")
    write_safetensors(src / "model.safetensors",
                      {n: ("F32", shape, bf16_to_f32_bytes(d)) for n, (_, shape, d) in tensors.items()})
    # bf16 -> f32 is exact, so rounding back must give the same bytes.
    assert export_ok(src, tmp_path / "f32.bin") == single


def load_export_module():
    spec = importlib.util.spec_from_file_location("export", EXPORT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def reference_bf16(bits):
    """The bf16 nearest to the f32 with these bits, ties to the even one, found by comparing exact values (not
    by the exporter's bit trick, so that this is an independent oracle); overflow rounds to infinity as IEEE
    does (the largest bf16 plus half a step and beyond); NaN stays a quiet NaN (what torch does)."""
    if (bits & 0x7FFFFFFF) > 0x7F800000:
        return (bits >> 16) | 0x40
    sign, mag = bits & 0x80000000, bits & 0x7FFFFFFF
    value = lambda b16: Fraction(2) ** 128 if b16 == 0x7F80 else Fraction(struct.unpack("<f", struct.pack("<I", b16 << 16))[0])
    x = Fraction(struct.unpack("<f", struct.pack("<I", mag))[0]) if mag != 0x7F800000 else None
    if x is None:
        return (sign >> 16) | 0x7F80
    lo = mag >> 16  # the bf16 at or below x in magnitude; lo + 1 the one above
    d_lo, d_hi = x - value(lo), value(lo + 1) - x
    pick = lo if d_lo < d_hi or (d_lo == d_hi and lo % 2 == 0) else lo + 1
    return (sign >> 16) | pick


def test_f32_to_bf16_rounds_to_nearest_even(tmp_path):
    pytest.importorskip("numpy", reason="numpy is needed to convert F32 checkpoints")
    export = load_export_module()
    rng = random.Random(7)
    bits = [0x3F808000, 0x3F818000, 0x3F807FFF, 0x7F7FFFFF, 0xFF7FFFFF, 0x7F800000, 0xFF800000, 0x7FC00001,
            0xFF800001, 0x00000001, 0x80000000, 0] + [rng.getrandbits(32) for _ in range(5000)]
    src_path = tmp_path / "f32.raw"
    src_path.write_bytes(struct.pack(f"<{len(bits)}I", *bits))
    with open(src_path, "rb") as src, open(tmp_path / "bf16.raw", "wb") as dst:
        export.convert_to_bf16(src, len(bits) * 4, "F32", dst)
    got = struct.unpack(f"<{len(bits)}H", (tmp_path / "bf16.raw").read_bytes())
    assert list(got) == [reference_bf16(b) for b in bits]


def test_f16_to_bf16_every_value(tmp_path):
    pytest.importorskip("numpy", reason="numpy is needed to convert F16 checkpoints")
    export = load_export_module()
    halves = list(range(1 << 16))
    src_path = tmp_path / "f16.raw"
    src_path.write_bytes(struct.pack(f"<{len(halves)}H", *halves))
    with open(src_path, "rb") as src, open(tmp_path / "bf16.raw", "wb") as dst:
        export.convert_to_bf16(src, len(halves) * 2, "F16", dst)
    got = struct.unpack(f"<{len(halves)}H", (tmp_path / "bf16.raw").read_bytes())
    for h, g in zip(halves, got):
        value = struct.unpack("<e", struct.pack("<H", h))[0]
        if math.isnan(value):
            assert (g & 0x7F80) == 0x7F80 and (g & 0x7F) != 0, hex(h)
        else:
            (f32_bits,) = struct.unpack("<I", struct.pack("<f", value))
            assert g == reference_bf16(f32_bits), hex(h)


def test_old_config_layout_exports_identically(tmp_path):
    new = export_ok(os.path.join(DATA, "tiny-qwen2"), tmp_path / "new.bin")
    src = copy_fixture(tmp_path)

    def old_layout(c):
        c["rope_theta"] = c.pop("rope_parameters")["rope_theta"]
        c["rope_scaling"] = None
        del c["layer_types"]

    edit_json(src / "config.json", old_layout)
    assert export_ok(src, tmp_path / "old.bin") == new


def test_summary_line_and_header(tmp_path):
    r = run_export(os.path.join(DATA, "tiny-qwen15"), tmp_path / "out.bin")
    assert r.returncode == 0, r.stderr
    assert r.stderr == ""                           # no progress output when stderr is not a terminal
    summary = r.stdout.strip()
    assert len(summary.splitlines()) == 1
    for part in ["Qwen2ForCausalLM", "dim 48", "ffn 128", "2 layers", "heads 3/3", "vocab 512", "512 tokens", "MB"]:
        assert part in summary
    blob = (tmp_path / "out.bin").read_bytes()
    h = header_of(blob)
    assert h["magic"] == b"QWENBIN\0" and h["version"] == 1
    assert h["flags"] == 0b010101                   # weights, q/k/v bias, default system prompt; not tied
    assert (h["arch"], h["dim"], h["n_layers"], h["head_dim"], h["max_seq_len"]) == (2, 48, 2, 16, 1024)
    assert h["rope_theta"] == 1e6 and h["norm_eps"] == struct.unpack("<f", struct.pack("<f", 1e-6))[0]
    assert h["temperature"] == 0 and math.isnan(h["top_p"]) and h["top_k"] == -1
    assert (h["n_stop_ids"], h["stop0"], h["stop1"]) == (1, 511, 0)
    assert h["n_tensors"] == 10 and h["tensors_offset"] % 256 == 0
    s = h["strings_offset"]
    assert blob[s:s + 4 + 4 + len(b"tiny-qwen15")] == struct.pack("<II", 2, 11) + b"tiny-qwen15"


def test_tensor_table_layout(tmp_path):
    blob = export_ok(os.path.join(DATA, "tiny-qwen3"), tmp_path / "out.bin")
    h = header_of(blob)
    names, end = [], 0
    for i in range(h["n_tensors"]):
        name, dtype, ndim, s0, s1, s2, offset, reserved = struct.unpack_from(
            "<32sII3IQI", blob, h["tensors_offset"] + 64 * i)
        names.append(name.rstrip(b"\0").decode())
        assert dtype == 0 and reserved == 0 and offset % 256 == 0 and offset >= end
        end = offset + 2 * math.prod([s0, s1, s2][:ndim])
    assert end == len(blob)
    assert names == ["token_embd", "attn_norm", "wqkv", "q_norm", "k_norm", "wo", "ffn_norm", "w_gate_up",
                     "w_down", "out_norm"]


# ---------------------------------------------------------------------------------------------------------
# Chat facts
# ---------------------------------------------------------------------------------------------------------

QWEN2_TEMPLATE = ("{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
                  "{{ '<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n' }}{% endif %}"
                  "{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
                  "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")
QWEN25_TEMPLATE = """{%- if tools %}
    {{- '<|im_start|>system\\n' }}
    {%- if messages[0]['role'] == 'system' %}
        {{- messages[0]['content'] }}
    {%- else %}
        {{- 'You are Qwen, created by Alibaba Cloud. You are a helpful assistant.' }}
    {%- endif %}
    {{- "\\n\\n# Tools\\n\\n<tools>" }}
    {{- "\\n</tools><|im_end|>\\n" }}
{%- else %}
    {%- if messages[0]['role'] == 'system' %}
        {{- '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' }}
    {%- else %}
        {{- '<|im_start|>system\\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\\n' }}
    {%- endif %}
{%- endif %}"""


@pytest.mark.parametrize("template, expected", [
    (QWEN2_TEMPLATE.replace("assistant.", "assistant"), "You are a helpful assistant"),  # Qwen1.5
    (QWEN2_TEMPLATE, "You are a helpful assistant."),
    (QWEN25_TEMPLATE, "You are Qwen, created by Alibaba Cloud. You are a helpful assistant."),
    ("{{- '<|im_start|>system\n' + messages[0].content + '<|im_end|>\n' }}", None),
    ("{{ \"<|im_start|>system\\nYou're kind.<|im_end|>\\n\" }}", "You're kind."),       # escaped \n form
    ("{{ '<|im_start|>system\\nYou\\'re kind.\\nBe brief.<|im_end|>\\n' }}", "You're kind.\nBe brief."),
    ("", None),
])
def test_default_system_prompt(template, expected):
    assert load_export_module().default_system_prompt(template) == expected


def test_qwen3_tokenizer_chat_facts(tmp_path):
    blob = export_ok(os.path.join(DATA, "qwen-tokenizer"), tmp_path / "tok.bin", "--tokenizer-only")
    h = header_of(blob)
    assert h["flags"] == 0b1100000                  # thinking and tools: no weights, no default system prompt
    assert (h["n_stop_ids"], h["stop0"]) == (1, 151645)
    assert h["n_tensors"] == 0 and h["dim"] == 0 and h["tensors_offset"] == len(blob)
    assert math.isnan(h["temperature"])             # no generation_config.json: nothing given


def test_generation_config_defaults_and_stop_ids(tmp_path):
    src = copy_fixture(tmp_path)
    edit_json(src / "generation_config.json", lambda g: g.update(
        do_sample=True, temperature=0.7, top_p=0.8, top_k=20, repetition_penalty=1.05, eos_token_id=[511, 509]))
    h = header_of(export_ok(src, tmp_path / "out.bin"))
    f32 = lambda x: struct.unpack("<f", struct.pack("<f", x))[0]  # noqa: E731
    assert (h["temperature"], h["top_p"], h["top_k"], h["repetition_penalty"]) == (f32(0.7), f32(0.8), 20, f32(1.05))
    assert (h["n_stop_ids"], h["stop0"], h["stop1"], h["stop2"]) == (2, 511, 509, 0)   # <|im_end|> not repeated


def test_invalid_sampling_default(tmp_path):
    src = copy_fixture(tmp_path)
    edit_json(src / "generation_config.json", lambda g: g.update(do_sample=True, top_p=0))
    assert "top_p 0.0 must be in (0, 1]" in export_error(src, tmp_path / "out.bin")


def test_stop_id_outside_the_tokenizer(tmp_path):
    src = copy_fixture(tmp_path)
    edit_json(src / "generation_config.json", lambda g: g.update(eos_token_id=[511, 700]))
    assert "stop token id 700" in export_error(src, tmp_path / "out.bin")


# ---------------------------------------------------------------------------------------------------------
# --quant q8_0: format version 2
# ---------------------------------------------------------------------------------------------------------

def test_quant_q8_0_matches_gguf_quantize(tmp_path):
    # The six matrices in Q8_0 (dtype 1, 34 bytes per 32 values), quantized exactly as llama.cpp and the gguf
    # package do; norms and biases stay bf16; the file says version 2.
    gguf = pytest.importorskip("gguf")
    np = pytest.importorskip("numpy")
    src = os.path.join(DATA, "tiny-qwen2")
    blob = export_ok(src, tmp_path / "q8.bin", "--quant", "q8_0")
    h = header_of(blob)
    assert h["version"] == 2
    hf = read_safetensors(os.path.join(src, "model.safetensors"))

    def values(name):  # the checkpoint's bf16 tensor as float32
        _, shape, raw = hf[name]
        return (np.frombuffer(raw, dtype="<u2").astype(np.uint32) << 16).view(np.float32).reshape(shape)

    layers = json.load(open(os.path.join(src, "config.json")))["num_hidden_layers"]
    sources = {"token_embd": ["model.embed_tokens.weight"],
               "wqkv": [f"model.layers.{l}.self_attn.{p}_proj.weight" for l in range(layers) for p in "qkv"],
               "wo": [f"model.layers.{l}.self_attn.o_proj.weight" for l in range(layers)],
               "w_gate_up": [f"model.layers.{l}.mlp.{p}_proj.weight" for l in range(layers) for p in ("gate", "up")],
               "w_down": [f"model.layers.{l}.mlp.down_proj.weight" for l in range(layers)]}
    seen, end = [], 0
    for i in range(h["n_tensors"]):
        name, dtype, ndim, s0, s1, s2, offset = struct.unpack_from("<32sII3IQ", blob, h["tensors_offset"] + 64 * i)
        name = name.rstrip(b"\0").decode()
        count = math.prod([s0, s1, s2][:ndim])
        size = count // 32 * 34 if dtype == 1 else count * 2
        assert dtype == (1 if name in sources else 0), name
        if name in sources:
            want = b"".join(gguf.quants.quantize(values(t), gguf.GGMLQuantizationType.Q8_0).tobytes()
                            for t in sources[name])
            assert blob[offset:offset + size] == want, name
            seen.append(name)
        end = offset + size
    assert end == len(blob) and sorted(seen) == sorted(sources)
    bf16 = export_ok(src, tmp_path / "bf16.bin")
    assert len(blob) < 0.65 * len(bf16)


def test_quant_refusals(tmp_path):
    # tiny-qwen15's rows of 48 values are not whole blocks of 32; a tokenizer has no matrices.
    for args, expected in [(["--quant", "q8_0", os.path.join(DATA, "tiny-qwen15")], "not whole Q8_0 blocks of 32"),
                           (["--quant", "q8_0", "--tokenizer-only", os.path.join(DATA, "tiny-qwen2")],
                            "--quant and --tokenizer-only do not go together")]:
        r = run_export(*args, tmp_path / "out.bin")
        assert r.returncode == 1 and r.stderr.startswith("export.py: error: ") and expected in r.stderr, r.stderr
        assert r.stderr.count("\n") == 1 and not os.path.exists(tmp_path / "out.bin")
    r = run_export("--quant", "q4_k", os.path.join(DATA, "tiny-qwen2"), tmp_path / "out.bin")
    assert r.returncode == 2 and "invalid choice" in r.stderr
