#!/usr/bin/env python3
"""Export a Hugging Face Qwen checkpoint folder to one self-contained weights.bin.

    python3 tools/export.py HF_DIR OUT.bin                   # model + tokenizer + chat facts
    python3 tools/export.py --quant q8_0 HF_DIR OUT.bin      # the same with Q8_0 matrices (half the bytes)
    python3 tools/export.py --tokenizer-only HF_DIR OUT.bin  # tokenizer + chat facts only

HF_DIR holds config.json, generation_config.json (optional), tokenizer.json, tokenizer_config.json and
model.safetensors (or model-0000k-of-0000n.safetensors shards with model.safetensors.index.json).
Supported: Qwen2ForCausalLM (Qwen1.5, Qwen2, Qwen2.5) and Qwen3ForCausalLM, dense, full attention.

The output format is specified in docs/format.md. The weights are stacked over layers (wqkv holds every
layer's q, k and v rows), so the engine finds each tensor with one pointer. bf16 weights are copied byte for byte in chunks, so memory use stays small
whatever the model size; F16/F32 weights are rounded to bf16 (needs numpy). With --quant q8_0 the matrices
are stored in llama.cpp's Q8_0 blocks instead (format version 2; needs numpy), quantized from the checkpoint's
own values exactly as llama.cpp's quantize_row_q8_0 does; norms and biases stay bf16.

Only the Python standard library is needed (numpy only for F16/F32 checkpoints and --quant).
"""
import argparse
import json
import math
import os
import re
import struct
import sys

MAGIC = b"QWENBIN\0"
VERSION = 1                      # bf16 only; version 2 adds Q8_0 matrices (dtype 1)
HEADER_SIZE = 256
TENSOR_ENTRY_SIZE = 64
ALIGN = 256                      # tensor data alignment in the file
DTYPE_BF16 = 0
DTYPE_Q8_0 = 1                   # llama.cpp's Q8_0: 32 values in 34 bytes (f16 scale d, 32 int8 q), x = d * q
MAX_STOP_IDS = 8
CHUNK = 16 << 20                 # bytes copied per read: bounds memory whatever the tensor size

ARCH_QWEN2, ARCH_QWEN3 = 2, 3
ARCHS = {"Qwen2ForCausalLM": ARCH_QWEN2, "Qwen3ForCausalLM": ARCH_QWEN3}

# header flags
FLAG_HAS_WEIGHTS = 1 << 0
FLAG_TIED = 1 << 1
FLAG_QKV_BIAS = 1 << 2
FLAG_QK_NORM = 1 << 3
FLAG_DEFAULT_SYSTEM = 1 << 4
FLAG_THINKING = 1 << 5
FLAG_TOOLS = 1 << 6

KIND_REGULAR, KIND_SPECIAL, KIND_ADDED = 0, 1, 2


class ExportError(Exception):
    pass


def fail(msg):
    raise ExportError(msg)


def align_up(n, a=ALIGN):
    return (n + a - 1) // a * a


def read_json(path, required=True):
    if not os.path.isfile(path):
        if required:
            fail(f"missing file {path}")
        return None
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError) as e:
        fail(f"{path}: cannot read JSON: {e}")


# ---------------------------------------------------------------------------------------------------------
# Model config: the dims, and a refusal for anything the engine does not implement
# ---------------------------------------------------------------------------------------------------------

def rope_type_of(cfg):
    """The RoPE scaling type from either config layout ('default' when there is none)."""
    for key in ("rope_scaling", "rope_parameters"):
        params = cfg.get(key)
        if isinstance(params, dict):
            kind = params.get("rope_type", params.get("type"))
            if kind not in (None, "default"):
                return kind
    return "default"


def read_config(folder):
    path = os.path.join(folder, "config.json")
    cfg = read_json(path)
    archs = cfg.get("architectures") or [cfg.get("model_type", "?")]
    name = archs[0]
    if "moe" in name.lower() or cfg.get("num_experts") or cfg.get("num_local_experts"):
        fail(f"{path}: {name} is a mixture-of-experts model; only dense models are supported")
    if name not in ARCHS:
        fail(f"{path}: architecture {name} is not supported (supported: {', '.join(ARCHS)})")
    arch = ARCHS[name]
    if cfg.get("use_sliding_window"):
        fail(f"{path}: use_sliding_window is true; only full attention is supported")
    if any(t != "full_attention" for t in cfg.get("layer_types") or []):
        fail(f"{path}: layer_types has non-full-attention layers; only full attention is supported")
    rope_type = rope_type_of(cfg)
    if rope_type != "default":
        fail(f"{path}: RoPE scaling type '{rope_type}' is not supported (only the default RoPE)")
    if cfg.get("hidden_act", "silu") != "silu":
        fail(f"{path}: hidden_act '{cfg['hidden_act']}' is not supported (only silu)")

    def field(key):
        value = cfg.get(key)
        if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
            fail(f"{path}: {key} must be a positive integer, got {value!r}")
        return value

    dim, n_heads = field("hidden_size"), field("num_attention_heads")
    n_kv_heads = cfg.get("num_key_value_heads") or n_heads
    if n_heads % n_kv_heads:
        fail(f"{path}: num_attention_heads {n_heads} is not a multiple of num_key_value_heads {n_kv_heads}")
    if not cfg.get("head_dim") and dim % n_heads:
        fail(f"{path}: hidden_size {dim} is not a multiple of num_attention_heads {n_heads}")
    head_dim = cfg.get("head_dim") or dim // n_heads
    rope_theta = cfg.get("rope_theta")
    if rope_theta is None and isinstance(cfg.get("rope_parameters"), dict):
        rope_theta = cfg["rope_parameters"].get("rope_theta")
    if rope_theta is None:
        rope_theta = 10000.0          # the transformers default for both classes
    # Qwen2 always has q/k/v biases; Qwen3 has them (and an o_proj bias) only with attention_bias.
    qkv_bias = arch == ARCH_QWEN2 or bool(cfg.get("attention_bias"))
    if arch == ARCH_QWEN3 and qkv_bias:
        fail(f"{path}: attention_bias is true (o_proj bias) which is not supported")
    return {
        "arch_name": name,
        "arch": arch,
        "dim": dim,
        "ffn_dim": field("intermediate_size"),
        "n_layers": field("num_hidden_layers"),
        "n_heads": n_heads,
        "n_kv_heads": n_kv_heads,
        "head_dim": head_dim,
        "vocab_size": field("vocab_size"),
        "max_seq_len": field("max_position_embeddings"),
        "norm_eps": float(cfg.get("rms_norm_eps", 1e-6)),
        "rope_theta": float(rope_theta),
        "tied": bool(cfg.get("tie_word_embeddings", False)),
        "qkv_bias": qkv_bias,
        "qk_norm": arch == ARCH_QWEN3,
        "eos_token_id": cfg.get("eos_token_id"),
    }


# ---------------------------------------------------------------------------------------------------------
# safetensors: u64 header length, a JSON header {name: {dtype, shape, data_offsets}}, then the raw data
# ---------------------------------------------------------------------------------------------------------

DTYPE_SIZES = {"BF16": 2, "F16": 2, "F32": 4}


def read_safetensors_header(path):
    try:
        with open(path, "rb") as f:
            raw = f.read(8)
            if len(raw) != 8:
                fail(f"{path}: truncated safetensors header")
            (n,) = struct.unpack("<Q", raw)
            if n > 100 << 20:
                fail(f"{path}: safetensors header of {n} bytes is implausible")
            text = f.read(n)
            if len(text) != n:
                fail(f"{path}: truncated safetensors header")
            file_size = os.fstat(f.fileno()).st_size
        header = json.loads(text)
    except OSError as e:
        fail(f"{path}: {e.strerror}")
    except ValueError as e:
        fail(f"{path}: bad safetensors header: {e}")
    tensors = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        try:
            begin, end = (8 + n + int(x) for x in info["data_offsets"])
            tensors[name] = {"path": path, "dtype": str(info["dtype"]), "shape": [int(d) for d in info["shape"]],
                             "begin": begin, "end": end}
        except (KeyError, TypeError, ValueError):
            fail(f"{path}: bad safetensors header entry for {name}")
        if not 8 + n <= begin <= end <= file_size:
            fail(f"{path}: tensor {name} lies outside the file")
    return tensors


def find_tensors(folder):
    """name -> {path, dtype, shape, begin, end} over the single file or every shard."""
    single = os.path.join(folder, "model.safetensors")
    index = os.path.join(folder, "model.safetensors.index.json")
    if os.path.isfile(single):
        return read_safetensors_header(single)
    if not os.path.isfile(index):
        fail(f"missing weights: neither {single} nor {index} exists")
    weight_map = read_json(index).get("weight_map") or {}
    tensors = {}
    for shard in sorted(set(weight_map.values())):
        shard_path = os.path.join(folder, shard)
        if not os.path.isfile(shard_path):
            fail(f"missing file {shard_path} (listed in {index})")
        tensors.update(read_safetensors_header(shard_path))
    return tensors


def tensor_plan(c):
    """The output tensors in file order: (name, shape, [(HF tensor, HF shape) per part, layer-major])."""
    L, dim, ffn, hd = c["n_layers"], c["dim"], c["ffn_dim"], c["head_dim"]
    q_dim, kv_dim = c["n_heads"] * hd, c["n_kv_heads"] * hd
    layer = "model.layers.{}."

    def stacked(name, shape, parts):
        return (name, [L] + shape, [(layer.format(i) + p, s) for i in range(L) for p, s in parts])

    plan = [("token_embd", [c["vocab_size"], dim], [("model.embed_tokens.weight", [c["vocab_size"], dim])]),
            stacked("attn_norm", [dim], [("input_layernorm.weight", [dim])]),
            stacked("wqkv", [q_dim + 2 * kv_dim, dim], [("self_attn.q_proj.weight", [q_dim, dim]),
                                                        ("self_attn.k_proj.weight", [kv_dim, dim]),
                                                        ("self_attn.v_proj.weight", [kv_dim, dim])])]
    if c["qkv_bias"]:
        plan.append(stacked("bqkv", [q_dim + 2 * kv_dim], [("self_attn.q_proj.bias", [q_dim]),
                                                           ("self_attn.k_proj.bias", [kv_dim]),
                                                           ("self_attn.v_proj.bias", [kv_dim])]))
    if c["qk_norm"]:
        plan.append(stacked("q_norm", [hd], [("self_attn.q_norm.weight", [hd])]))
        plan.append(stacked("k_norm", [hd], [("self_attn.k_norm.weight", [hd])]))
    plan += [stacked("wo", [dim, q_dim], [("self_attn.o_proj.weight", [dim, q_dim])]),
             stacked("ffn_norm", [dim], [("post_attention_layernorm.weight", [dim])]),
             stacked("w_gate_up", [2 * ffn, dim], [("mlp.gate_proj.weight", [ffn, dim]),
                                                   ("mlp.up_proj.weight", [ffn, dim])]),
             stacked("w_down", [dim, ffn], [("mlp.down_proj.weight", [dim, ffn])]),
             ("out_norm", [dim], [("model.norm.weight", [dim])])]
    if not c["tied"]:
        plan.append(("lm_head", [c["vocab_size"], dim], [("lm_head.weight", [c["vocab_size"], dim])]))
    return plan


def check_sources(plan, tensors):
    """Every HF tensor the plan needs exists with the right shape and a dtype we can read."""
    numpy_needed = None
    for _, _, parts in plan:
        for hf_name, shape in parts:
            t = tensors.get(hf_name)
            if t is None:
                fail(f"missing tensor {hf_name}")
            if t["shape"] != shape:
                fail(f"tensor {hf_name} has shape {t['shape']}, config implies {shape}")
            if t["dtype"] not in DTYPE_SIZES:
                fail(f"tensor {hf_name} has dtype {t['dtype']}; supported: BF16, F16, F32")
            if t["end"] - t["begin"] != math.prod(shape) * DTYPE_SIZES[t["dtype"]]:
                fail(f"tensor {hf_name}: data size does not match its shape and dtype")
            if t["dtype"] != "BF16":
                numpy_needed = numpy_needed or hf_name
    if numpy_needed:
        try:
            import numpy  # noqa: F401
        except ImportError:
            fail(f"tensor {numpy_needed} is {tensors[numpy_needed]['dtype']}; converting it to bf16 "
                 "needs numpy (pip install numpy)")


# ---------------------------------------------------------------------------------------------------------
# Tokenizer: token bytes (the GPT-2 byte-to-unicode mapping undone), kinds, merges as id pairs
# ---------------------------------------------------------------------------------------------------------

def unicode_to_byte():
    """Inverse of the GPT-2 byte-level alphabet: printable bytes stand for themselves, the other 68 bytes
    are shifted to U+0100 onwards in byte order."""
    printable = list(range(0x21, 0x7F)) + list(range(0xA1, 0xAD)) + list(range(0xAE, 0x100))
    table = {chr(b): b for b in printable}
    shifted = 0
    for b in range(256):
        if b not in printable:
            table[chr(256 + shifted)] = b
            shifted += 1
    return table


def read_tokenizer(folder):
    path = os.path.join(folder, "tokenizer.json")
    tj = read_json(path)
    model = tj.get("model") or {}
    if model.get("type") != "BPE":
        fail(f"{path}: tokenizer model is {model.get('type')}, expected byte-level BPE")
    to_byte = unicode_to_byte()
    vocab = model.get("vocab") or {}
    tokens = {}                                     # id -> (bytes, kind)
    for text, i in vocab.items():
        try:
            tokens[i] = (bytes(to_byte[ch] for ch in text), KIND_REGULAR)
        except KeyError:
            fail(f"{path}: token {text!r} is not in the byte-level alphabet")
    for added in tj.get("added_tokens") or []:
        kind = KIND_SPECIAL if added.get("special") else KIND_ADDED
        tokens[added["id"]] = (added["content"].encode("utf-8"), kind)
    n_tokens = len(tokens)
    if n_tokens == 0 or any(i not in tokens for i in range(n_tokens)):
        fail(f"{path}: token ids are not contiguous from 0 (the format needs ids 0..n-1)")
    merges = []
    for rank, m in enumerate(model.get("merges") or []):
        pair = m.split(" ") if isinstance(m, str) else m
        if len(pair) != 2 or any(p not in vocab for p in pair):
            fail(f"{path}: merge {rank} {m!r} does not name two tokens of the vocabulary")
        if pair[0] + pair[1] not in vocab:
            fail(f"{path}: merge {rank} {m!r} makes a token that is not in the vocabulary")
        merges.append((vocab[pair[0]], vocab[pair[1]]))
    return [tokens[i] for i in range(n_tokens)], merges


# ---------------------------------------------------------------------------------------------------------
# Chat facts: default system prompt, thinking mode, stop tokens, sampling defaults
# ---------------------------------------------------------------------------------------------------------

# A system turn written as one string literal of the template: '<|im_start|>system\n...<|im_end|>'. The text
# may not contain the literal's own quote (unless escaped) or a Jinja brace, so a match never spans two
# literals (as in '<|im_start|>system\n' + message.content + '<|im_end|>').
SYSTEM_LITERAL = re.compile(r"""(['"])<\|im_start\|>system(?:\n|\\n)((?:\\.|(?!\1)[^\\{}])+?)<\|im_end\|>""")
JINJA_ESCAPES = {"n": "\n", "t": "\t"}


def default_system_prompt(template):
    m = SYSTEM_LITERAL.search(template or "")
    if not m:
        return None
    return re.sub(r"\\(.)", lambda e: JINJA_ESCAPES.get(e.group(1), e.group(1)), m.group(2))


def read_chat_template(folder, tok_cfg):
    template = tok_cfg.get("chat_template")
    if isinstance(template, list):                  # named templates: use the default one
        named = {t.get("name"): t.get("template") for t in template}
        template = named.get("default")
    jinja = os.path.join(folder, "chat_template.jinja")
    if not template and os.path.isfile(jinja):
        with open(jinja, encoding="utf-8") as f:
            template = f.read()
    return template or ""


def sampling_defaults(gen):
    """(temperature, top_p, top_k, repetition_penalty); NaN / -1 where the generation config gives none."""
    nan = float("nan")
    if gen is None:
        return nan, nan, -1, nan

    def number(key, missing):
        value = gen.get(key)
        if value is None:
            return missing
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            fail(f"generation_config.json: {key} must be a number, got {value!r}")
        return value

    temperature = float(number("temperature", nan)) if gen.get("do_sample") else 0.0
    top_p, top_k = float(number("top_p", nan)), int(number("top_k", -1))
    repetition_penalty = float(number("repetition_penalty", nan))
    # The same ranges the loader accepts (NaN / -1 = not given).
    if not (math.isnan(temperature) or 0 <= temperature < math.inf):
        fail(f"generation_config.json: temperature {temperature} must be >= 0")
    if not (math.isnan(top_p) or 0 < top_p <= 1):
        fail(f"generation_config.json: top_p {top_p} must be in (0, 1]")
    if top_k < -1:
        fail(f"generation_config.json: top_k {top_k} must be >= 0")
    if not (math.isnan(repetition_penalty) or 0 < repetition_penalty < math.inf):
        fail(f"generation_config.json: repetition_penalty {repetition_penalty} must be > 0")
    return temperature, top_p, top_k, repetition_penalty


def model_name(folder):
    """The folder's name; for a Hugging Face cache snapshot (models--Org--Name/snapshots/<hash>), Name."""
    path = os.path.normpath(os.path.abspath(folder))
    parts = path.split(os.sep)
    if len(parts) >= 3 and parts[-2] == "snapshots" and parts[-3].startswith("models--"):
        return parts[-3].split("--")[-1]
    return parts[-1]


def read_chat(folder, tokens, config_eos):
    tok_cfg = read_json(os.path.join(folder, "tokenizer_config.json"))
    gen = read_json(os.path.join(folder, "generation_config.json"), required=False)
    template = read_chat_template(folder, tok_cfg)
    eos = gen["eos_token_id"] if gen and "eos_token_id" in gen else config_eos
    stop_ids = eos if isinstance(eos, list) else [] if eos is None else [eos]
    im_end = [i for i, (b, kind) in enumerate(tokens) if kind != KIND_REGULAR and b == b"<|im_end|>"]
    stop_ids = list(dict.fromkeys(int(i) for i in stop_ids + im_end))   # deduplicated, in order
    if not stop_ids:
        fail(f"{folder}: no stop token (no eos_token_id and no <|im_end|> token)")
    if len(stop_ids) > MAX_STOP_IDS:
        fail(f"{folder}: {len(stop_ids)} stop tokens, the format holds at most {MAX_STOP_IDS}")
    for i in stop_ids:
        if not 0 <= i < len(tokens):
            fail(f"{folder}: stop token id {i} is not a token of the tokenizer ({len(tokens)} tokens)")
    return {
        "model_name": model_name(folder),
        "default_system": default_system_prompt(template),
        "thinking": "<think>" in template,
        "tools": "tools" in template and "<tool_call>" in template,
        "stop_ids": stop_ids,
        "sampling": sampling_defaults(gen),
    }


# ---------------------------------------------------------------------------------------------------------
# Writing the file
# ---------------------------------------------------------------------------------------------------------

def pack_strings(chat):
    out = bytearray(struct.pack("<I", 2))
    for s in (chat["model_name"], chat["default_system"] or ""):
        b = s.encode("utf-8")
        out += struct.pack("<I", len(b)) + b
    return bytes(out)


def pack_tokenizer(tokens, merges):
    out = bytearray(struct.pack("<II", len(tokens), len(merges)))
    for b, kind in tokens:
        out += struct.pack("<IB", len(b), kind) + b
    for left, right in merges:
        out += struct.pack("<II", left, right)
    return bytes(out)


def pack_header(c, chat, flags, sections, version=VERSION):
    """The 256-byte header; offsets in the comments are the field offsets of the format."""
    h = bytearray(HEADER_SIZE)
    # A tokenizer-only file has all model dims 0.
    dims = [c[k] if c else 0 for k in ("arch", "dim", "ffn_dim", "n_layers", "n_heads", "n_kv_heads",
                                       "head_dim", "vocab_size", "max_seq_len")]
    norm_eps, rope_theta = (c["norm_eps"], c["rope_theta"]) if c else (0.0, 0.0)
    stops = chat["stop_ids"] + [0] * (MAX_STOP_IDS - len(chat["stop_ids"]))
    struct.pack_into("<8sII", h, 0, MAGIC, version, flags)                      # 0..15
    struct.pack_into("<9I", h, 16, *dims)                                       # 16..51
    struct.pack_into("<fd", h, 52, norm_eps, rope_theta)                        # 52..63
    struct.pack_into("<ffif", h, 64, *chat["sampling"])                         # 64..79
    struct.pack_into("<I8II", h, 80, len(chat["stop_ids"]), *stops, 0)          # 80..119 (116: reserved)
    struct.pack_into("<6Q", h, 120, *sections)                                  # 120..167, then zeros
    return bytes(h)


def copy_bf16(src, nbytes, dst, progress):
    while nbytes > 0:
        chunk = src.read(min(CHUNK, nbytes))
        if not chunk:
            fail(f"{src.name}: unexpected end of file")
        dst.write(chunk)
        nbytes -= len(chunk)
        progress.add(len(chunk))


def convert_to_bf16(src, nbytes, dtype, dst, progress=None):
    """F16/F32 -> bf16, round to nearest even (NaN stays a quiet NaN), in chunks."""
    import numpy as np
    np_dtype, size = ("<f2", 2) if dtype == "F16" else ("<f4", 4)
    step = CHUNK // size * size
    while nbytes > 0:
        chunk = src.read(min(step, nbytes))
        if len(chunk) == 0 or len(chunk) % size:
            fail(f"{src.name}: unexpected end of file")
        nbytes -= len(chunk)
        u = np.frombuffer(chunk, dtype=np_dtype).astype(np.float32).view(np.uint32)
        nan = (u & 0x7FFFFFFF) > 0x7F800000
        rounded = (u + np.uint32(0x7FFF) + ((u >> 16) & 1)) >> 16
        rounded[nan] = (u[nan] >> 16) | 0x40
        dst.write(rounded.astype("<u2").tobytes())
        if progress:
            progress.add(len(chunk) // size * 2)


def quantize_q8_0(x):
    """(rows, cols) float32, cols a multiple of 32 -> (rows, cols / 32 * 34) bytes of Q8_0 blocks, as llama.cpp's
    quantize_row_q8_0 computes them in fp32: d = max|x| / 127 (stored as f16), q = round(x / d) half away from
    zero (x * (1 / d), as llama.cpp multiplies by the inverse)."""
    import numpy as np
    blocks = x.reshape(-1, 32).astype(np.float32)
    d = np.abs(blocks).max(axis=1, keepdims=True) / np.float32(127)
    with np.errstate(divide="ignore"):
        inv = np.where(d == 0, np.float32(0), np.float32(1) / d).astype(np.float32)
    scaled = blocks * inv
    a = np.abs(scaled)
    q = np.sign(scaled) * (np.floor(a) + np.floor(np.float32(2) * (a - np.floor(a))))  # round half away from 0
    out = np.concatenate([d.astype("<f2").view(np.uint8), q.astype(np.int8).view(np.uint8)], axis=1)
    return out.reshape(x.shape[0], -1)


def copy_q8_0(src, nbytes, dtype, cols, dst, progress):
    """A bf16 / f16 / f32 matrix with rows of `cols` values -> Q8_0, whole rows at a time, in chunks."""
    import numpy as np
    size = DTYPE_SIZES[dtype]
    rows_per_chunk = max(1, CHUNK // (cols * size))
    while nbytes > 0:
        chunk = src.read(min(rows_per_chunk * cols * size, nbytes))
        if len(chunk) == 0 or len(chunk) % (cols * size):
            fail(f"{src.name}: unexpected end of file")
        nbytes -= len(chunk)
        if dtype == "BF16":
            x = (np.frombuffer(chunk, dtype="<u2").astype(np.uint32) << 16).view(np.float32)
        else:
            x = np.frombuffer(chunk, dtype="<f2" if dtype == "F16" else "<f4").astype(np.float32)
        q = quantize_q8_0(x.reshape(-1, cols))
        dst.write(q.tobytes())
        progress.add(q.size)


def tensor_bytes(shape, dtype):
    return math.prod(shape) // 32 * 34 if dtype == DTYPE_Q8_0 else math.prod(shape) * 2


class Progress:
    """Bytes written and percent on stderr, only for a terminal."""

    def __init__(self, total):
        self.total, self.done, self.shown = total, 0, -1
        self.enabled = sys.stderr.isatty()

    def add(self, n):
        self.done += n
        percent = 100 * self.done // max(self.total, 1)
        if self.enabled and percent != self.shown:
            self.shown = percent
            sys.stderr.write(f"\r  {self.done / 1e6:,.1f} / {self.total / 1e6:,.1f} MB  {percent:3d}%")
            sys.stderr.flush()

    def finish(self):
        if self.enabled:
            sys.stderr.write("\n")


def write_tensor_data(out, plan, tensors, offsets, dtypes, progress):
    files = {}
    try:
        for (_, _, parts), offset, dtype in zip(plan, offsets, dtypes):
            padding = offset - out.tell()
            out.write(b"\0" * padding)
            progress.add(padding)
            for hf_name, shape in parts:
                t = tensors[hf_name]
                src = files.get(t["path"]) or files.setdefault(t["path"], open(t["path"], "rb"))
                src.seek(t["begin"])
                if dtype == DTYPE_Q8_0:
                    copy_q8_0(src, t["end"] - t["begin"], t["dtype"], shape[-1], out, progress)
                elif t["dtype"] == "BF16":
                    copy_bf16(src, t["end"] - t["begin"], out, progress)
                else:
                    convert_to_bf16(src, t["end"] - t["begin"], t["dtype"], out, progress)
    finally:
        for f in files.values():
            f.close()


MATRICES = {"token_embd", "wqkv", "wo", "w_gate_up", "w_down", "lm_head"}


def export(folder, out_path, tokenizer_only, quant=None):
    if not os.path.isdir(folder):
        fail(f"{folder} is not a folder")
    c = None if tokenizer_only else read_config(folder)
    plan, tensors = [], {}
    if c:
        tensors = find_tensors(folder)
        plan = tensor_plan(c)
        check_sources(plan, tensors)
    if quant:
        try:
            import numpy  # noqa: F401
        except ImportError:
            fail("--quant needs numpy (pip install numpy)")
        for name, shape, _ in plan:
            if name in MATRICES and shape[-1] % 32:
                fail(f"{name}: rows of {shape[-1]} values are not whole Q8_0 blocks of 32")
    # Matrices in Q8_0 with --quant (format version 2), everything else bf16.
    dtypes = [DTYPE_Q8_0 if quant and name in MATRICES else DTYPE_BF16 for name, _, _ in plan]
    tokens, merges = read_tokenizer(folder)
    if c and len(tokens) > c["vocab_size"]:
        fail(f"tokenizer has {len(tokens)} tokens but the embedding has only {c['vocab_size']} rows")
    chat = read_chat(folder, tokens, c["eos_token_id"] if c else None)

    # Layout: header | strings | tokenizer | (pad) tensor table | (pad) each tensor's data.
    strings = pack_strings(chat)
    tokenizer = pack_tokenizer(tokens, merges)
    strings_offset = HEADER_SIZE
    tokenizer_offset = strings_offset + len(strings)
    table_offset = align_up(tokenizer_offset + len(tokenizer))
    offsets, table = [], bytearray()
    end = table_offset + TENSOR_ENTRY_SIZE * len(plan)
    for (name, shape, _), dtype in zip(plan, dtypes):
        offsets.append(align_up(end))
        entry = struct.pack("<32sII3IQ", name.encode(), dtype, len(shape),
                            *(shape + [0] * (3 - len(shape))), offsets[-1])
        table += entry + b"\0" * (TENSOR_ENTRY_SIZE - len(entry))           # last 4: reserved u32
        end = offsets[-1] + tensor_bytes(shape, dtype)
    file_size = end                                 # the file ends with the last tensor's data

    flags = (FLAG_DEFAULT_SYSTEM if chat["default_system"] else 0) | (FLAG_THINKING if chat["thinking"] else 0)
    flags |= FLAG_TOOLS if chat["tools"] else 0
    if c:
        flags |= FLAG_HAS_WEIGHTS | (FLAG_TIED if c["tied"] else 0)
        flags |= (FLAG_QKV_BIAS if c["qkv_bias"] else 0) | (FLAG_QK_NORM if c["qk_norm"] else 0)
    sections = (strings_offset, len(strings), tokenizer_offset, len(tokenizer), table_offset, len(plan))
    header = pack_header(c, chat, flags, sections, 2 if quant else VERSION)

    tmp_path = out_path + ".tmp"
    progress = Progress(file_size)
    try:
        with open(tmp_path, "wb") as out:
            out.write(header + strings + tokenizer)
            out.write(b"\0" * (table_offset - out.tell()) + table)
            progress.add(out.tell())
            write_tensor_data(out, plan, tensors, offsets, dtypes, progress)
        os.replace(tmp_path, out_path)
    except OSError as e:
        fail(f"{e.filename or out_path}: {e.strerror}")
    finally:
        progress.finish()
        if os.path.exists(tmp_path):
            os.remove(tmp_path)

    what = "tokenizer only" if not c else (
        f"{c['arch_name']}, dim {c['dim']}, ffn {c['ffn_dim']}, {c['n_layers']} layers, "
        f"heads {c['n_heads']}/{c['n_kv_heads']} x {c['head_dim']}, vocab {c['vocab_size']}"
        + (", Q8_0 matrices" if quant else ""))
    print(f"wrote {out_path}: {what}, {len(tokens)} tokens, {len(merges)} merges, "
          f"{file_size / 1e6:.2f} MB")


def main():
    ap = argparse.ArgumentParser(prog="export.py",
                                 description="Export a Hugging Face Qwen checkpoint folder to weights.bin.")
    ap.add_argument("--tokenizer-only", action="store_true", help="write the tokenizer and chat facts only")
    ap.add_argument("--quant", choices=["q8_0"], help="store the matrices in llama.cpp's Q8_0 blocks (needs numpy)")
    ap.add_argument("hf_dir", help="checkpoint folder (config.json, tokenizer.json, *.safetensors, ...)")
    ap.add_argument("out", help="output file, e.g. weights.bin")
    args = ap.parse_args()
    try:
        if args.quant and args.tokenizer_only:
            fail("--quant and --tokenizer-only do not go together (a tokenizer has no weights)")
        export(args.hf_dir, args.out, args.tokenizer_only, args.quant)
    except ExportError as e:
        print(f"export.py: error: {e}", file=sys.stderr)
        sys.exit(1)
    except (KeyError, TypeError, ValueError) as e:      # a JSON file with an unexpected structure
        print(f"export.py: error: unexpected content in {args.hf_dir}: {type(e).__name__}: {e}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
