#!/usr/bin/env python3
"""The GGUF test files: how test/data/gguf/ was made, and the files the tests derive from it at build time.

    make --llama-quantize BIN [--out DIR]     the two random checkpoints sq2 (Qwen2) and sq3 (Qwen3) as Hugging Face
                                              folders, BF16/F16 GGUF files and llama-quantize's Q8_0, Q6_K, Q5_K_M,
                                              Q4_K_M and Q4_0 (how test/data/gguf/*.gguf were made)
    hf GGUF OUT_DIR                           a Hugging Face folder holding a BF16 GGUF's checkpoint (to export the
                                              same weights as weights.bin)
    variants OUT_DIR GGUF...                  a BF16 file's F32 and F16 copies; any other file split in 3 parts
    tiny OUT_DIR                              test/data/tiny-qwen2 and tiny-qwen3 as GGUF files that mix the types
                                              gguf-py can quantize (Q8_0, Q4_0, Q5_0, Q5_1, F16, BF16), small
                                              enough for the emulated GPU and to seed the fuzzer
    dequant OUT.bin                           random blocks of every type and gguf.quants.dequantize of them
    digests OUT.json GGUF...                  per tensor, a digest of gguf.quants.dequantize's float32 values
    agree --llama-bin DIR [--qwen BIN]        greedy text of ./qwen and of llama.cpp's llama-simple on case 0 of each
                                              file here, side by side (where they part: the step and the reference's
                                              margin there; llama.cpp rounds activations in its quantized dot products)

`make` mirrors llama.cpp's convert_hf_to_gguf.py for Qwen2ForCausalLM / Qwen3ForCausalLM with gguf-py's writer
(the converter itself needs torch and transformers, and stops on the 512-id test tokenizer, whose pre-tokenizer
hash it does not know): the same keys in the same order, the same tensor names, order and types. The files in
test/data/gguf were made with the gguf-py and llama-quantize of llama.cpp commit 0c1e570 (`--gguf-py
SRC/gguf-py`; llama-quantize is deterministic). With the PyPI package gguf 0.19.0 instead, `make` writes the same
tensors (checked) but two keys fewer (general.sampling.penalty_repeat, tokenizer.ggml.add_eos_token). The
references (refs.json, *.case0.logits.bin) are a float64 numpy forward pass over the exactly dequantized weights
of each file, validated first against Hugging Face transformers' fp32 logits of the tiny fixtures.
Needs numpy and gguf (pip install gguf); `make` also tokenizers.
"""
import argparse
import json
import os
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np

if "--gguf-py" in sys.argv:  # a llama.cpp tree's own gguf-py, before the installed one
    sys.path.insert(0, sys.argv[sys.argv.index("--gguf-py") + 1])
import gguf  # noqa: E402

HERE = Path(__file__).resolve().parent
DATA = HERE / "data" / "gguf"
TOKENIZER = HERE / "data" / "tokenizer-small"

# ---------------------------------------------------------------------------------------------------------
# make: random checkpoints -> Hugging Face folders -> GGUF -> llama-quantize
# ---------------------------------------------------------------------------------------------------------

MODELS = {
    # Qwen2: q/k/v biases, untied lm_head, GQA 4:1, head_dim = hidden / heads
    "sq2": dict(model_type="qwen2", cls="Qwen2ForCausalLM", hidden=256, ff=512, layers=3, heads=4, kv_heads=1,
                head_dim=None, bias=True, tied=False, seed=31415926),
    # Qwen3: q_norm / k_norm, no biases, MHA, head_dim 128 (key_length / value_length written), tied embeddings
    "sq3": dict(model_type="qwen3", cls="Qwen3ForCausalLM", hidden=256, ff=768, layers=2, heads=2, kv_heads=2,
                head_dim=128, bias=False, tied=True, seed=27182818),
}
QUANTS = ["Q8_0", "Q6_K", "Q5_K_M", "Q4_K_M", "Q4_0"]
VOCAB, THETA, EPS, CTX = 512, 1000000.0, 1e-6, 4096
BOS, EOS, PAD = 509, 511, 509


def to_bf16(a):
    """float64/32 -> bf16 bits (uint16), round to nearest even."""
    u = np.ascontiguousarray(a, dtype=np.float32).view(np.uint32)
    return ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(np.uint16)


def make_weights(spec):
    """Seeded normal weights (scales keep the logits O(4..16) and greedy margins O(1)), rounded to bf16."""
    rng = np.random.default_rng(spec["seed"])
    H, ff, nh, nkv = spec["hidden"], spec["ff"], spec["heads"], spec["kv_heads"]
    d = spec["head_dim"] or H // nh
    lin = lambda o, i, g=1.0: g * rng.standard_normal((o, i)) / np.sqrt(i)
    nrm = lambda n: 1.0 + 0.1 * rng.standard_normal(n)
    w = {"model.embed_tokens.weight": 0.25 * rng.standard_normal((VOCAB, H))}
    for l in range(spec["layers"]):
        p = f"model.layers.{l}."
        w[p + "input_layernorm.weight"] = nrm(H)
        w[p + "self_attn.q_proj.weight"] = lin(nh * d, H)
        w[p + "self_attn.k_proj.weight"] = lin(nkv * d, H)
        w[p + "self_attn.v_proj.weight"] = lin(nkv * d, H)
        if spec["bias"]:
            w[p + "self_attn.q_proj.bias"] = 0.5 * rng.standard_normal(nh * d)
            w[p + "self_attn.k_proj.bias"] = 0.5 * rng.standard_normal(nkv * d)
            w[p + "self_attn.v_proj.bias"] = 0.05 * rng.standard_normal(nkv * d)
        if spec["model_type"] == "qwen3":
            w[p + "self_attn.q_norm.weight"] = nrm(d)
            w[p + "self_attn.k_norm.weight"] = nrm(d)
        w[p + "self_attn.o_proj.weight"] = lin(H, nh * d, 3.0)
        w[p + "post_attention_layernorm.weight"] = nrm(H)
        w[p + "mlp.gate_proj.weight"] = lin(ff, H)
        w[p + "mlp.up_proj.weight"] = lin(ff, H)
        w[p + "mlp.down_proj.weight"] = lin(H, ff, 3.0)
    w["model.norm.weight"] = nrm(H)
    if not spec["tied"]:
        w["lm_head.weight"] = rng.standard_normal((VOCAB, H))
    return {k: to_bf16(v) for k, v in w.items()}


def write_safetensors_bf16(path, tensors):
    header, offset = {"__metadata__": {"format": "pt"}}, 0
    for name in sorted(tensors):
        t = tensors[name]
        header[name] = {"dtype": "BF16", "shape": list(t.shape), "data_offsets": [offset, offset + t.nbytes]}
        offset += t.nbytes
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text)
        for name in sorted(tensors):
            f.write(np.ascontiguousarray(tensors[name]).astype("<u2").tobytes())


def read_safetensors(path):
    raw = Path(path).read_bytes()
    n = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8:8 + n])
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        a, b = info["data_offsets"]
        bits = np.frombuffer(raw[8 + n + a:8 + n + b], dtype="<u2").astype(np.uint32) << 16
        out[name] = bits.view(np.float32).reshape(info["shape"])
    return out


def write_hf(spec, w, out):
    out.mkdir(parents=True, exist_ok=True)
    cfg = {"architectures": [spec["cls"]], "attention_dropout": 0.0, "bos_token_id": BOS, "eos_token_id": EOS,
           "hidden_act": "silu", "hidden_size": spec["hidden"], "initializer_range": 0.02,
           "intermediate_size": spec["ff"], "max_position_embeddings": CTX, "max_window_layers": spec["layers"],
           "model_type": spec["model_type"], "num_attention_heads": spec["heads"],
           "num_hidden_layers": spec["layers"], "num_key_value_heads": spec["kv_heads"], "rms_norm_eps": EPS,
           "rope_scaling": None, "rope_theta": THETA, "sliding_window": None, "tie_word_embeddings": spec["tied"],
           "torch_dtype": "bfloat16", "transformers_version": "4.51.0", "use_cache": True,
           "use_sliding_window": False, "vocab_size": VOCAB}
    if spec["model_type"] == "qwen3":
        cfg["attention_bias"] = False
        cfg["head_dim"] = spec["head_dim"]
        cfg = dict(sorted(cfg.items()))
    json.dump(cfg, open(out / "config.json", "w"), indent=2)
    gen = {"bos_token_id": BOS, "pad_token_id": PAD, "eos_token_id": [EOS, BOS], "do_sample": True,
           "temperature": 0.7, "top_p": 0.8, "top_k": 20, "repetition_penalty": 1.05,
           "transformers_version": "4.51.0"}
    json.dump(gen, open(out / "generation_config.json", "w"), indent=2)
    write_safetensors_bf16(out / "model.safetensors", w)
    for f in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(TOKENIZER / f, out)


def gguf_vocab(tokenizer_json, vocab_size):
    """The converter's token list: byte-level strings (NORMAL), added tokens (CONTROL when special or shaped
    <|...|>, else USER_DEFINED), [PADi] (UNUSED) up to the vocabulary size."""
    tj = json.load(open(tokenizer_json, encoding="utf-8"))
    rev = {i: t for t, i in tj["model"]["vocab"].items()}
    added = {a["id"]: a for a in tj["added_tokens"]}
    tokens, types = [], []
    for i in range(vocab_size):
        if i in added:
            t = added[i]["content"]
            special = added[i]["special"] or (t.startswith("<|") and t.endswith("|>"))
            tokens.append(t)
            types.append(gguf.TokenType.CONTROL if special else gguf.TokenType.USER_DEFINED)
        elif i in rev:
            tokens.append(rev[i])
            types.append(gguf.TokenType.NORMAL)
        else:
            tokens.append(f"[PAD{i}]")
            types.append(gguf.TokenType.UNUSED)
    return tokens, types


def write_gguf(hf_dir, out_path, outtype):
    """convert_hf_to_gguf.py HF_DIR --outtype {bf16,f16}, for Qwen2ForCausalLM / Qwen3ForCausalLM."""
    hp = json.load(open(hf_dir / "config.json"))
    arch = {"Qwen2ForCausalLM": gguf.MODEL_ARCH.QWEN2, "Qwen3ForCausalLM": gguf.MODEL_ARCH.QWEN3}[hp["architectures"][0]]
    ftype = {"bf16": gguf.LlamaFileType.MOSTLY_BF16, "f16": gguf.LlamaFileType.MOSTLY_F16}[outtype]
    qtype = {"bf16": gguf.GGMLQuantizationType.BF16, "f16": gguf.GGMLQuantizationType.F16}[outtype]
    n_layer = hp["num_hidden_layers"]
    names = gguf.get_tensor_name_map(arch, n_layer)
    writer = gguf.GGUFWriter(path=None, arch=gguf.MODEL_ARCH_NAMES[arch])
    for name, data in sorted(read_safetensors(hf_dir / "model.safetensors").items()):
        new = names.get_name(name, try_suffixes=(".weight", ".bias"))
        data = np.ascontiguousarray(data, dtype=np.float32)
        dq = gguf.GGMLQuantizationType.F32 if data.ndim <= 1 or new.endswith("_norm.weight") else qtype
        writer.add_tensor(new, gguf.quants.quantize(data, dq), raw_dtype=dq)
    writer.add_type(gguf.GGUFType.MODEL)
    total = writer.get_total_parameter_count()
    md = gguf.Metadata.load(None, Path(hf_dir), None, total[0])
    md.name = md.name or Path(hf_dir).name
    md.size_label = md.size_label or gguf.size_label(*total)
    md.set_gguf_meta_model(writer)
    writer.add_block_count(n_layer)
    writer.add_context_length(hp["max_position_embeddings"])
    writer.add_embedding_length(hp["hidden_size"])
    writer.add_feed_forward_length(hp["intermediate_size"])
    writer.add_head_count(hp["num_attention_heads"])
    writer.add_head_count_kv(hp["num_key_value_heads"])
    writer.add_rope_freq_base(hp.get("rope_theta") or hp["rope_parameters"]["rope_theta"])
    writer.add_layer_norm_rms_eps(hp["rms_norm_eps"])
    if hp.get("head_dim") is not None:
        writer.add_key_length(hp["head_dim"])
        writer.add_value_length(hp["head_dim"])
    writer.add_file_type(ftype)
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
    tokens, types = gguf_vocab(hf_dir / "tokenizer.json", hp["vocab_size"])
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("qwen2")  # the converter's choice for Qwen's real tokenizer (set by hand here)
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    gguf.SpecialVocab(Path(hf_dir), load_merges=True).add_to_gguf(writer, quiet=True)
    writer.write_header_to_file(path=Path(out_path))
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file(progress=False)
    writer.close()


def cmd_make(a):
    out = Path(a.out)
    for name, spec in MODELS.items():
        hf = out / name
        write_hf(spec, make_weights(spec), hf)
        for t in ("bf16", "f16"):
            write_gguf(hf, out / f"{name}-{t.upper()}.gguf", t)
        for q in QUANTS if a.llama_quantize else []:
            subprocess.run([a.llama_quantize, str(out / f"{name}-BF16.gguf"), str(out / f"{name}-{q}.gguf"), q, "2"],
                           check=True, capture_output=True)
        print(name, "written to", out)


# ---------------------------------------------------------------------------------------------------------
# hf: a BF16 GGUF's checkpoint as a Hugging Face folder
# ---------------------------------------------------------------------------------------------------------

HF_NAMES = {"token_embd.weight": "model.embed_tokens.weight", "output_norm.weight": "model.norm.weight",
            "output.weight": "lm_head.weight"}
HF_LAYER_NAMES = {"attn_norm": "input_layernorm", "attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj",
                  "attn_v": "self_attn.v_proj", "attn_output": "self_attn.o_proj", "attn_q_norm": "self_attn.q_norm",
                  "attn_k_norm": "self_attn.k_norm", "ffn_norm": "post_attention_layernorm",
                  "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj", "ffn_down": "mlp.down_proj"}


def hf_name(name):
    if name in HF_NAMES:
        return HF_NAMES[name]
    _, layer, part, kind = name.split(".")
    return f"model.layers.{layer}.{HF_LAYER_NAMES[part]}.{kind}"


def cmd_hf(a):
    """Every tensor of the GGUF as bf16 (exact for a BF16 file: its F32 norms and biases hold bf16 values),
    with the config files of test/data/gguf/<model>/ and the tokenizer of test/data/tokenizer-small."""
    r = gguf.GGUFReader(a.gguf)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    tensors = {}
    for t in r.tensors:
        values = gguf.quants.dequantize(t.data, t.tensor_type).astype(np.float32)
        bits = to_bf16(values)
        if not np.array_equal(bits.astype(np.uint32) << 16, values.view(np.uint32)):
            raise SystemExit(f"{a.gguf}: tensor {t.name} is not exactly bf16")
        tensors[hf_name(t.name)] = bits.reshape(values.shape)
    write_safetensors_bf16(out / "model.safetensors", tensors)
    model = Path(a.gguf).name.split("-")[0]
    for f in ("config.json", "generation_config.json"):
        shutil.copy(DATA / model / f, out)
    for f in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(TOKENIZER / f, out)


# ---------------------------------------------------------------------------------------------------------
# variants: the same model in other tensor types, and split in parts
# ---------------------------------------------------------------------------------------------------------

def copy_gguf(src, out_path, convert=None, file_type=None, split_max_tensors=0):
    """src's metadata and tensors into a new file; convert(name, type, data) -> (array, raw_dtype) or None."""
    r = gguf.GGUFReader(src)
    w = gguf.GGUFWriter(path=None, arch=r.fields["general.architecture"].contents(),
                        split_max_tensors=split_max_tensors)
    for key, f in r.fields.items():
        if key.startswith("GGUF.") or key == "general.architecture":
            continue
        value = f.contents()
        if key == "general.file_type" and file_type is not None:
            value = int(file_type)
        w.add_key_value(key, value, f.types[0], f.types[-1] if f.types[0] == gguf.GGUFValueType.ARRAY else None)
    for t in r.tensors:
        new = convert(t.name, t.tensor_type, t.data) if convert else None
        data, dtype = new if new else (t.data, t.tensor_type)
        w.add_tensor(t.name, data, raw_dtype=dtype)
    w.write_header_to_file(path=Path(out_path))
    w.write_kv_data_to_file()
    w.write_tensors_to_file(progress=False)
    w.close()


def cmd_variants(a):
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    BF16, F16, F32 = gguf.GGMLQuantizationType.BF16, gguf.GGMLQuantizationType.F16, gguf.GGMLQuantizationType.F32
    for src in a.gguf:
        stem = Path(src).name[:-len(".gguf")]
        if stem.endswith("-BF16"):
            base = stem[:-len("-BF16")]
            to_f32 = lambda n, t, d: (gguf.quants.dequantize(d, t).astype(np.float32), F32) if t == BF16 else None
            to_f16 = lambda n, t, d: (gguf.quants.quantize(gguf.quants.dequantize(d, t), F16), F16) if t == BF16 else None
            copy_gguf(src, out / f"{base}-F32.gguf", to_f32, gguf.LlamaFileType.ALL_F32)
            copy_gguf(src, out / f"{base}-F16.gguf", to_f16, gguf.LlamaFileType.MOSTLY_F16)
        else:  # a split in 3 parts: NAME-split-00001-of-00003.gguf ...
            n = len(gguf.GGUFReader(src).tensors)
            copy_gguf(src, out / f"{stem}-split.gguf", split_max_tensors=(n + 2) // 3)


# The type of each weight in the tiny mixes: per layer, q / k / v (and gate / up) differ, as _M mixes make them.
TINY_TYPES = {"token_embd": "Q8_0", "attn_q": "Q4_0", "attn_k": "Q5_0", "attn_v": "Q5_1", "attn_output": "F16",
              "ffn_gate": "Q8_0", "ffn_up": "Q5_1", "ffn_down": "Q4_0", "output": "BF16"}


def cmd_tiny(a):
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    for name in ("tiny-qwen2", "tiny-qwen3"):
        bf16 = out / f"{name}-BF16.gguf"
        write_gguf(HERE / "data" / name, bf16, "bf16")

        def mix(tensor, qtype, data):
            part = tensor.split(".")[-2]
            if qtype != gguf.GGMLQuantizationType.BF16 or part not in TINY_TYPES:
                return None
            want = gguf.GGMLQuantizationType[TINY_TYPES[part]]
            return gguf.quants.quantize(gguf.quants.dequantize(data, qtype), want), want
        copy_gguf(bf16, out / f"{name}-mix.gguf", mix)
        bf16.unlink()


# ---------------------------------------------------------------------------------------------------------
# dequant, digests: what the dequantization tests compare with
# ---------------------------------------------------------------------------------------------------------

DEQUANT_TYPES = ["F32", "F16", "BF16", "Q8_0", "Q4_0", "Q5_0", "Q5_1", "Q4_K", "Q5_K", "Q6_K"]


def random_blocks(qtype, n_blocks, rng):
    """Random block bytes whose fp16 scale fields hold finite values of every magnitude (subnormals, zero,
    negative, up to 65504), the rest random bits; 16-bit float types get random finite values of every kind."""
    block, size = gguf.GGML_QUANT_SIZES[qtype]
    raw = rng.integers(0, 256, size=(n_blocks, size), dtype=np.uint8)
    if block == 1:
        if qtype == gguf.GGMLQuantizationType.F32:
            return (rng.standard_normal(n_blocks) * 10.0 ** rng.integers(-40, 38, n_blocks)).astype(np.float32)
        bits = raw.view(np.uint16).reshape(-1)
        exp_mask = 0x7C00 if qtype == gguf.GGMLQuantizationType.F16 else 0x7F80
        bits[(bits & exp_mask) == exp_mask] &= ~np.uint16(0x4000)  # no inf / NaN
        return bits.view(np.float16 if qtype == gguf.GGMLQuantizationType.F16 else np.uint16)
    halves = rng.integers(0, 0x7C00, size=(n_blocks, 2), dtype=np.uint16) | (rng.integers(0, 2, (n_blocks, 2)) << 15).astype(np.uint16)
    offsets = {"Q8_0": [0], "Q4_0": [0], "Q5_0": [0], "Q5_1": [0, 2], "Q4_K": [0, 2], "Q5_K": [0, 2], "Q6_K": [208]}
    for k, off in enumerate(offsets[qtype.name]):
        raw[:, off:off + 2] = halves[:, k:k + 1].view(np.uint8).reshape(n_blocks, 2)
    return raw


def cmd_dequant(a):
    """Per type: u32 ggml type, u32 number of blocks, the block bytes, then the float32 values."""
    rng = np.random.default_rng(20240607)
    with open(a.out, "wb") as f:
        for name in DEQUANT_TYPES:
            qtype = gguf.GGMLQuantizationType[name]
            block, size = gguf.GGML_QUANT_SIZES[qtype]
            n = 4096 // block * 8 if block > 1 else 4096
            data = random_blocks(qtype, n, rng)
            raw = np.ascontiguousarray(data).view(np.uint8).reshape(-1)
            values = gguf.quants.dequantize(raw.reshape(1, -1), qtype).astype("<f4").reshape(-1)
            assert values.size == n * block and raw.size == n * size
            f.write(struct.pack("<II", int(qtype), n) + raw.tobytes() + values.tobytes())


def digest(values):
    """sum_i bits_i * (i * 0x9E3779B97F4A7C15 + 1) mod 2^64 over the float32 bit patterns: one changed value
    changes it (the C++ test computes the same)."""
    bits = np.ascontiguousarray(values, dtype="<f4").reshape(-1).view(np.uint32).astype(np.uint64)
    mult = np.arange(bits.size, dtype=np.uint64) * np.uint64(0x9E3779B97F4A7C15) + np.uint64(1)
    return str(int(np.sum(bits * mult, dtype=np.uint64)))


def cmd_digests(a):
    """{file name: {tensor name: digest of gguf.quants.dequantize's values, row after row}}."""
    out = {}
    for path in a.gguf:
        r = gguf.GGUFReader(path)
        out[Path(path).name] = {t.name: digest(gguf.quants.dequantize(t.data, t.tensor_type)) for t in r.tensors}
    json.dump(out, open(a.out, "w"), indent=1, sort_keys=True)


# ---------------------------------------------------------------------------------------------------------
# agree: ./qwen and llama.cpp, greedy, on the same files
# ---------------------------------------------------------------------------------------------------------

def cmd_agree(a):
    refs = json.load(open(DATA / "refs.json"))
    text = refs["cases"][0]["text"]
    env = dict(os.environ, LD_LIBRARY_PATH=a.llama_bin)
    same_files = 0
    names = sorted(n for n in refs["files"] if (DATA / n).exists())
    from test_cli import token_bytes  # id -> bytes of the files' tokenizer (tokenizer-small)
    table = token_bytes("tokenizer-small")
    for name in names:
        ids, margins = refs["files"][name]["results"][0]["greedy_ids"], refs["files"][name]["results"][0]["margins"]
        ours = subprocess.run([a.qwen, "-m", str(DATA / name), "--cpu", "--raw", "-p", text, "-n", "24", "--temp", "0",
                               "--repeat-penalty", "1"],  # pure greedy, as llama-simple (the files say 1.05)
                              capture_output=True, check=True).stdout
        theirs = subprocess.run([os.path.join(a.llama_bin, "llama-simple"), "-m", str(DATA / name), "-n", "24", text],
                                capture_output=True, check=True, env=env).stdout
        theirs = theirs[len(text.encode()):] if theirs.startswith(text.encode()) else theirs
        ours, theirs = ours.rstrip(b"\n"), theirs.rstrip(b"\n")
        if ours == theirs:
            same_files += 1
            print(f"{name:<18} identical ({len(ours)} bytes)")
            continue
        common = 0
        while common < min(len(ours), len(theirs)) and ours[common] == theirs[common]:
            common += 1
        # the step at which they part: reference tokens whose bytes lie wholly in the common prefix
        step, n = 0, 0
        lens = [len(table[i]) for i in ids]
        while step < len(lens) and n + lens[step] <= common:
            n += lens[step]
            step += 1
        print(f"{name:<18} part at step {step + 1} of {len(ids)}, reference margin there {margins[step]:.3f}")
    print(f"identical: {same_files} of {len(names)} files")


def main():
    ap = argparse.ArgumentParser(prog="gguf_fixtures.py", description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("make")
    p.add_argument("--llama-quantize", help="llama.cpp's llama-quantize binary (without it: HF folders, BF16, F16)")
    p.add_argument("--gguf-py", help="a llama.cpp tree's gguf-py folder, used instead of the installed gguf")
    p.add_argument("--out", default=str(DATA))
    p = sub.add_parser("hf")
    p.add_argument("gguf")
    p.add_argument("out")
    p = sub.add_parser("variants")
    p.add_argument("out")
    p.add_argument("gguf", nargs="+")
    p = sub.add_parser("tiny")
    p.add_argument("out")
    p = sub.add_parser("dequant")
    p.add_argument("out")
    p = sub.add_parser("digests")
    p.add_argument("out")
    p.add_argument("gguf", nargs="+")
    p = sub.add_parser("agree")
    p.add_argument("--llama-bin", required=True, help="folder of llama.cpp's llama-simple")
    p.add_argument("--qwen", default=str(HERE.parent / "qwen"))
    a = ap.parse_args()
    commands = {"make": cmd_make, "hf": cmd_hf, "variants": cmd_variants, "tiny": cmd_tiny, "dequant": cmd_dequant,
                "digests": cmd_digests, "agree": cmd_agree}
    commands[a.cmd](a)


if __name__ == "__main__":
    main()
