#!/usr/bin/env python3
"""Independent NumPy reference of the Hugging Face Qwen2-MoE forward.

This is the forward of transformers' ``Qwen2MoeForCausalLM`` (the
Qwen1.5-MoE-A2.7B architecture), written from the published equations rather
than from any C++ in this repository, so that Switchyard's implementation can
be checked against it.  It uses python3 + numpy only and computes in float64.

Usage:
  qwen2_moe_ref.py --model DIR --token-ids 1,5,9 [--out ref.npy]
                   [--compare dump.npy] [--rtol R] [--atol A] [--print-top K]
  qwen2_moe_ref.py --self-test

See tests/reference/README.md.
"""

import argparse
import json
import math
import os
import struct
import sys
import tempfile

try:
    import numpy as np
except ImportError:  # pragma: no cover - environment convenience only
    # Debian's python3-numpy lives under /usr/bin/python3; a pyenv python3 on
    # PATH may not see it.  Re-run this script with the system interpreter.
    _SYS_PY = "/usr/bin/python3"
    if os.path.exists(_SYS_PY) and os.path.realpath(sys.executable) != os.path.realpath(_SYS_PY) \
            and not os.environ.get("QWEN2_MOE_REF_REEXEC"):
        os.environ["QWEN2_MOE_REF_REEXEC"] = "1"
        os.execv(_SYS_PY, [_SYS_PY] + sys.argv)
    sys.stderr.write("qwen2_moe_ref.py needs numpy (apt-get install -y python3-numpy)\n")
    sys.exit(2)


# ---------------------------------------------------------------------------
# safetensors
# ---------------------------------------------------------------------------

# dtype name -> (numpy storage dtype, bytes per element)
_ST_DTYPES = {
    "F64": (np.dtype("<f8"), 8),
    "F32": (np.dtype("<f4"), 4),
    "F16": (np.dtype("<f2"), 2),
    "BF16": (np.dtype("<u2"), 2),
}


def bf16_bits_to_float32(bits):
    """BF16 is the upper 16 bits of an IEEE float32: f32 bits = bf16 bits << 16."""
    return (bits.astype(np.uint32) << np.uint32(16)).view(np.float32)


def float32_to_bf16_bits(x):
    """Round-to-nearest-even float32 -> BF16 bits (used only to write test files)."""
    u = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32).astype(np.uint64)
    rounded = (u + 0x7FFF + ((u >> 16) & 1)) >> 16
    return rounded.astype(np.uint16)


def read_safetensors_header(path):
    """Return (header dict, absolute offset of the data buffer).

    Layout: u64 little-endian N, then N bytes of JSON
    {name: {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__": {...}},
    then the data buffer; data_offsets are relative to the start of the buffer.
    """
    with open(path, "rb") as f:
        raw = f.read(8)
        if len(raw) != 8:
            raise ValueError("%s: too short for a safetensors header" % path)
        (n,) = struct.unpack("<Q", raw)
        header = json.loads(f.read(n).decode("utf-8"))
    return header, 8 + n


class TensorStore:
    """Name -> tensor (float64), read lazily from one or more safetensors files."""

    def __init__(self, entries, cache=True):
        # entries: name -> (path, data_start, info dict)
        self._entries = entries
        self._cache = {} if cache else None

    @classmethod
    def from_files(cls, paths, wanted=None, cache=True):
        entries = {}
        for path in paths:
            header, data_start = read_safetensors_header(path)
            for name, info in header.items():
                if name == "__metadata__":
                    continue
                if wanted is not None and wanted.get(name) != os.path.basename(path):
                    continue
                if name in entries:
                    raise ValueError("tensor %s appears in two files" % name)
                entries[name] = (path, data_start, info)
        return cls(entries, cache)

    def __contains__(self, name):
        return name in self._entries

    def names(self):
        return sorted(self._entries)

    def dtype_of(self, name):
        return self._entries[name][2]["dtype"]

    def get(self, name):
        """Return tensor `name` as a float64 array of its declared shape."""
        if self._cache is not None and name in self._cache:
            return self._cache[name]
        if name not in self._entries:
            raise KeyError("checkpoint has no tensor %r" % name)
        path, data_start, info = self._entries[name]
        dtype = info["dtype"]
        if dtype not in _ST_DTYPES:
            raise ValueError("%s: unsupported dtype %s" % (name, dtype))
        np_dtype, size = _ST_DTYPES[dtype]
        shape = tuple(int(s) for s in info["shape"])
        begin, end = (int(o) for o in info["data_offsets"])
        count = int(np.prod(shape, dtype=np.int64)) if shape else 1
        if end - begin != count * size:
            raise ValueError("%s: data_offsets %s do not match shape %s x %s"
                             % (name, info["data_offsets"], shape, dtype))
        with open(path, "rb") as f:
            f.seek(data_start + begin)
            buf = f.read(end - begin)
        if len(buf) != end - begin:
            raise ValueError("%s: file truncated" % name)
        arr = np.frombuffer(buf, dtype=np_dtype, count=count)
        if dtype == "BF16":
            arr = bf16_bits_to_float32(arr)
        arr = arr.astype(np.float64).reshape(shape)
        if self._cache is not None:
            self._cache[name] = arr
        return arr

    def maybe(self, name):
        return self.get(name) if name in self else None


def open_checkpoint_tensors(model_dir, cache=True):
    """Open model.safetensors.index.json (sharded) or model.safetensors."""
    index_path = os.path.join(model_dir, "model.safetensors.index.json")
    if os.path.exists(index_path):
        with open(index_path) as f:
            index = json.load(f)
        weight_map = index["weight_map"]
        shards = sorted(set(weight_map.values()))
        store = TensorStore.from_files([os.path.join(model_dir, s) for s in shards],
                                       wanted=weight_map, cache=cache)
        missing = [n for n in weight_map if n not in store]
        if missing:
            raise ValueError("index names tensors missing from their shard: %s" % missing[:5])
        return store
    single = os.path.join(model_dir, "model.safetensors")
    if os.path.exists(single):
        return TensorStore.from_files([single], cache=cache)
    raise FileNotFoundError("%s has neither model.safetensors nor "
                            "model.safetensors.index.json" % model_dir)


def write_safetensors(path, tensors, dtypes=None, metadata=None):
    """Write {name: array} as safetensors (F32 unless dtypes[name] says BF16/F16)."""
    dtypes = dtypes or {}
    header = {}
    blobs = []
    offset = 0
    for name in sorted(tensors):
        arr = np.asarray(tensors[name])
        dt = dtypes.get(name, "F32")
        if dt == "F32":
            data = arr.astype("<f4").tobytes()
        elif dt == "F16":
            data = arr.astype("<f2").tobytes()
        elif dt == "BF16":
            data = float32_to_bf16_bits(arr.astype(np.float32)).astype("<u2").tobytes()
        else:
            raise ValueError(dt)
        header[name] = {"dtype": dt, "shape": list(arr.shape),
                        "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    header["__metadata__"] = dict(metadata or {"format": "pt"})
    hbytes = json.dumps(header).encode("utf-8")
    hbytes += b" " * ((8 - len(hbytes) % 8) % 8)  # pad like the reference writer
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(hbytes)))
        f.write(hbytes)
        for b in blobs:
            f.write(b)


# ---------------------------------------------------------------------------
# config
# ---------------------------------------------------------------------------

class Qwen2MoeConfig:
    """The Qwen2MoeConfig keys the forward needs, with transformers' defaults."""

    def __init__(self, d):
        self.vocab_size = int(d["vocab_size"])
        self.hidden_size = int(d["hidden_size"])
        self.num_hidden_layers = int(d["num_hidden_layers"])
        self.num_attention_heads = int(d["num_attention_heads"])
        nkv = d.get("num_key_value_heads")
        self.num_key_value_heads = int(nkv) if nkv is not None else self.num_attention_heads
        self.intermediate_size = int(d.get("intermediate_size", 0) or 0)
        self.moe_intermediate_size = int(d.get("moe_intermediate_size", 0) or 0)
        self.shared_expert_intermediate_size = int(d.get("shared_expert_intermediate_size", 0) or 0)
        self.num_experts = int(d.get("num_experts", 0) or 0)
        self.num_experts_per_tok = int(d.get("num_experts_per_tok", 0) or 0)
        self.norm_topk_prob = bool(d.get("norm_topk_prob", False))
        self.rms_norm_eps = float(d.get("rms_norm_eps", 1e-6))
        self.rope_theta = float(d.get("rope_theta", 1e6))
        self.decoder_sparse_step = int(d.get("decoder_sparse_step", 1) or 1)
        self.mlp_only_layers = [int(i) for i in (d.get("mlp_only_layers") or [])]
        self.tie_word_embeddings = bool(d.get("tie_word_embeddings", False))
        if self.hidden_size % self.num_attention_heads:
            raise ValueError("hidden_size not divisible by num_attention_heads")
        self.head_dim = self.hidden_size // self.num_attention_heads
        if d.get("head_dim") not in (None, self.head_dim):
            raise ValueError("head_dim %r != hidden_size / num_attention_heads" % d["head_dim"])
        if self.num_attention_heads % self.num_key_value_heads:
            raise ValueError("num_attention_heads not divisible by num_key_value_heads")
        scaling = d.get("rope_scaling")
        if scaling and scaling.get("rope_type", scaling.get("type", "default")) != "default":
            raise NotImplementedError("rope_scaling %r is not modelled" % (scaling,))
        if d.get("use_sliding_window"):
            raise NotImplementedError("use_sliding_window=true is not modelled")

    def is_sparse_layer(self, i):
        """HF Qwen2MoeDecoderLayer: sparse iff i not in mlp_only_layers and
        num_experts > 0 and (i + 1) % decoder_sparse_step == 0."""
        return (i not in self.mlp_only_layers and self.num_experts > 0
                and (i + 1) % self.decoder_sparse_step == 0)


def load_model(model_dir, cache=True):
    """Return (config, tensor store) for a Hugging Face checkpoint folder."""
    with open(os.path.join(model_dir, "config.json")) as f:
        cfg = Qwen2MoeConfig(json.load(f))
    return cfg, open_checkpoint_tensors(model_dir, cache=cache)


# ---------------------------------------------------------------------------
# blocks
# ---------------------------------------------------------------------------

def rms_norm(x, w, eps):
    """RMSNorm(x, w) = w * x / sqrt(mean(x^2) + eps), mean over the last axis."""
    return w * (x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps))


def silu(x):
    """SiLU(x) = x * sigmoid(x)."""
    return x * sigmoid(x)


def sigmoid(x):
    """sigmoid(x) = 1 / (1 + exp(-x)), evaluated without overflow."""
    x = np.asarray(x, dtype=np.float64)
    out = np.empty_like(x)
    pos = x >= 0
    out[pos] = 1.0 / (1.0 + np.exp(-x[pos]))
    e = np.exp(x[~pos])
    out[~pos] = e / (1.0 + e)
    return out


def softmax(x, axis=-1):
    """softmax(x)_i = exp(x_i - max x) / sum_j exp(x_j - max x)."""
    m = np.max(x, axis=axis, keepdims=True)
    e = np.exp(x - m)
    return e / np.sum(e, axis=axis, keepdims=True)


def linear(x, w, b=None):
    """y = x W^T (+ b), W stored [out, in] as in torch.nn.Linear."""
    y = x @ w.T
    return y + b if b is not None else y


def rope_cos_sin(positions, head_dim, theta):
    """Qwen2 rotary tables: inv_freq_j = theta^(-2j/hd), j < hd/2;
    angle = pos * inv_freq; cos/sin of concat(angle, angle) -> [T, hd]."""
    inv_freq = theta ** (-(np.arange(0, head_dim, 2, dtype=np.float64) / head_dim))
    angles = np.asarray(positions, dtype=np.float64)[:, None] * inv_freq[None, :]
    emb = np.concatenate([angles, angles], axis=-1)
    return np.cos(emb), np.sin(emb)


def rotate_half(x):
    """rotate_half(x) = concat(-x[hd/2:], x[:hd/2]) on the last axis."""
    half = x.shape[-1] // 2
    return np.concatenate([-x[..., half:], x[..., :half]], axis=-1)


def apply_rope(x, cos, sin):
    """x: [heads, T, hd]; returns x * cos + rotate_half(x) * sin."""
    return x * cos[None] + rotate_half(x) * sin[None]


def qkv_projection(cfg, W, prefix, a, positions):
    """q = a Wq^T + bq, k = a Wk^T + bk, v = a Wv^T + bv, split into heads,
    RoPE applied to q and k.  Returns q [nH, T, hd], k, v [nKV, T, hd]."""
    nh, nkv, hd = cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim
    T = a.shape[0]
    q = linear(a, W.get(prefix + "q_proj.weight"), W.maybe(prefix + "q_proj.bias"))
    k = linear(a, W.get(prefix + "k_proj.weight"), W.maybe(prefix + "k_proj.bias"))
    v = linear(a, W.get(prefix + "v_proj.weight"), W.maybe(prefix + "v_proj.bias"))
    q = q.reshape(T, nh, hd).transpose(1, 0, 2)
    k = k.reshape(T, nkv, hd).transpose(1, 0, 2)
    v = v.reshape(T, nkv, hd).transpose(1, 0, 2)
    cos, sin = rope_cos_sin(positions, hd, cfg.rope_theta)
    return apply_rope(q, cos, sin), apply_rope(k, cos, sin), v


def attend(cfg, q, k, v, q_positions, k_positions):
    """Causal grouped-query attention.

    scores_h = q_h k_g^T / sqrt(hd) with g = h // (nH / nKV), masked where
    key position > query position, softmax over keys, times v_g.
    q: [nH, Tq, hd]; k, v: [nKV, Tk, hd].  Returns [Tq, nH*hd] (heads concatenated).
    """
    nh, nkv, hd = cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim
    group = nh // nkv
    mask = np.asarray(k_positions)[None, :] > np.asarray(q_positions)[:, None]
    out = np.empty((q.shape[1], nh, hd))
    for h in range(nh):
        g = h // group
        scores = (q[h] @ k[g].T) / math.sqrt(hd)
        scores = np.where(mask, -np.inf, scores)
        out[:, h, :] = softmax(scores, axis=-1) @ v[g]
    return out.reshape(q.shape[1], nh * hd)


def swiglu(x, w_gate, w_up, w_down):
    """Expert(x) = down( SiLU(gate x) * up x )."""
    return linear(silu(linear(x, w_gate)) * linear(x, w_up), w_down)


def topk_indices(p, k):
    """Indices of the k largest entries of each row of p, largest first;
    ties broken towards the lower index (stable sort of -p)."""
    return np.argsort(-p, axis=-1, kind="stable")[:, :k]


def router_weights(cfg, logits):
    """p = softmax(logits) over experts; top-k of p; w = p_topk, divided by
    sum(p_topk) when norm_topk_prob.  Returns (experts [T, k], weights [T, k])."""
    p = softmax(logits, axis=-1)
    idx = topk_indices(p, cfg.num_experts_per_tok)
    w = np.take_along_axis(p, idx, axis=-1)
    if cfg.norm_topk_prob:
        w = w / np.sum(w, axis=-1, keepdims=True)
    return idx, w


def sparse_moe_block(cfg, W, prefix, b):
    """Qwen2MoeSparseMoeBlock:
    y = sum_k w_k Expert_{e_k}(b) + sigmoid(b . shared_expert_gate) * SharedExpert(b)
    (the shared term only when the shared-expert tensors are present)."""
    logits = linear(b, W.get(prefix + "gate.weight"))
    idx, w = router_weights(cfg, logits)
    y = np.zeros_like(b)
    for e in range(cfg.num_experts):
        rows, slots = np.nonzero(idx == e)
        if rows.size == 0:
            continue
        ep = "%sexperts.%d." % (prefix, e)
        out = swiglu(b[rows], W.get(ep + "gate_proj.weight"), W.get(ep + "up_proj.weight"),
                     W.get(ep + "down_proj.weight"))
        y[rows] += w[rows, slots][:, None] * out
    sp = prefix + "shared_expert."
    if sp + "gate_proj.weight" in W:
        shared = swiglu(b, W.get(sp + "gate_proj.weight"), W.get(sp + "up_proj.weight"),
                        W.get(sp + "down_proj.weight"))
        gate = sigmoid(b @ W.get(prefix + "shared_expert_gate.weight")[0])
        y = y + gate[:, None] * shared
    return y


def dense_mlp_block(W, prefix, b):
    """Qwen2MoeMLP: y = down_proj( SiLU(gate_proj b) * up_proj b )."""
    return swiglu(b, W.get(prefix + "gate_proj.weight"), W.get(prefix + "up_proj.weight"),
                  W.get(prefix + "down_proj.weight"))


def mlp_block(cfg, W, i, b):
    prefix = "model.layers.%d.mlp." % i
    if cfg.is_sparse_layer(i):
        return sparse_moe_block(cfg, W, prefix, b)
    return dense_mlp_block(W, prefix, b)


def lm_head_weight(cfg, W):
    """lm_head.weight [V, D]; embed_tokens when tied and lm_head is absent."""
    if "lm_head.weight" in W:
        return W.get("lm_head.weight")
    if cfg.tie_word_embeddings:
        return W.get("model.embed_tokens.weight")
    raise KeyError("checkpoint has no lm_head.weight and tie_word_embeddings is false")


def embed(cfg, W, ids):
    """h = embed_tokens[ids]."""
    ids = np.asarray(ids, dtype=np.int64)
    if ids.size and (ids.min() < 0 or ids.max() >= cfg.vocab_size):
        raise ValueError("token id out of range [0, %d)" % cfg.vocab_size)
    return W.get("model.embed_tokens.weight")[ids]


def final_logits(cfg, W, h):
    """logits = RMSNorm(h, model.norm.weight) lm_head^T."""
    h = rms_norm(h, W.get("model.norm.weight"), cfg.rms_norm_eps)
    return linear(h, lm_head_weight(cfg, W))


# ---------------------------------------------------------------------------
# forward (whole sequence) and incremental decode (KV cache)
# ---------------------------------------------------------------------------

def forward(cfg, W, ids):
    """Qwen2MoeForCausalLM logits [T, V] (float64) for one sequence at positions 0..T-1."""
    positions = np.arange(len(ids))
    h = embed(cfg, W, ids)
    for i in range(cfg.num_hidden_layers):
        lp = "model.layers.%d." % i
        a = rms_norm(h, W.get(lp + "input_layernorm.weight"), cfg.rms_norm_eps)
        q, k, v = qkv_projection(cfg, W, lp + "self_attn.", a, positions)
        o = attend(cfg, q, k, v, positions, positions)
        h = h + linear(o, W.get(lp + "self_attn.o_proj.weight"))
        b = rms_norm(h, W.get(lp + "post_attention_layernorm.weight"), cfg.rms_norm_eps)
        h = h + mlp_block(cfg, W, i, b)
    return final_logits(cfg, W, h)


def new_kv_cache(cfg):
    """Per layer: keys and values seen so far, [nKV, t, hd] each."""
    empty = np.zeros((cfg.num_key_value_heads, 0, cfg.head_dim))
    return [{"k": empty, "v": empty} for _ in range(cfg.num_hidden_layers)]


def decode_step(cfg, W, token, pos, cache):
    """One token at position `pos`: append its k, v to the cache, attend over
    the cache (positions 0..pos), return its logits [V]."""
    h = embed(cfg, W, [token])
    qpos = np.array([pos])
    for i in range(cfg.num_hidden_layers):
        lp = "model.layers.%d." % i
        a = rms_norm(h, W.get(lp + "input_layernorm.weight"), cfg.rms_norm_eps)
        q, k, v = qkv_projection(cfg, W, lp + "self_attn.", a, qpos)
        cache[i]["k"] = np.concatenate([cache[i]["k"], k], axis=1)
        cache[i]["v"] = np.concatenate([cache[i]["v"], v], axis=1)
        kpos = np.arange(cache[i]["k"].shape[1])
        o = attend(cfg, q, cache[i]["k"], cache[i]["v"], qpos, kpos)
        h = h + linear(o, W.get(lp + "self_attn.o_proj.weight"))
        b = rms_norm(h, W.get(lp + "post_attention_layernorm.weight"), cfg.rms_norm_eps)
        h = h + mlp_block(cfg, W, i, b)
    return final_logits(cfg, W, h)[0]


def incremental_forward(cfg, W, ids):
    """Logits [T, V] computed token by token through decode_step."""
    cache = new_kv_cache(cfg)
    return np.stack([decode_step(cfg, W, t, p, cache) for p, t in enumerate(ids)])


# ---------------------------------------------------------------------------
# comparison and printing
# ---------------------------------------------------------------------------

def compare(ref, dump, rtol, atol, out=sys.stdout):
    """Pass iff every |dump - ref| <= atol + rtol * max|ref|.  Returns 0 or 1."""
    T, V = ref.shape
    dump = np.asarray(dump)
    if dump.ndim == 1 and T == 1:
        dump = dump[None, :]
    if dump.shape != ref.shape:
        print("reference: shape mismatch: dump %s vs reference %s" % (dump.shape, ref.shape),
              file=out)
        return 1
    dump = dump.astype(np.float64)
    diff = np.abs(dump - ref)
    finite = np.isfinite(dump)
    diff = np.where(finite, diff, np.inf)
    max_diff = float(np.max(diff)) if diff.size else 0.0
    max_ref = float(np.max(np.abs(ref))) if ref.size else 0.0
    rel = max_diff / max_ref if max_ref > 0 else max_diff
    agree = int(np.sum(np.argmax(dump, axis=-1) == np.argmax(ref, axis=-1))) if V else T
    print("reference: T=%d V=%d max|diff|=%.3g max|ref|=%.3g rel=%.3g argmax agree %d/%d"
          % (T, V, max_diff, max_ref, rel, agree, T), file=out)
    bound = atol + rtol * max_ref
    if max_diff <= bound:
        return 0
    t, j = np.unravel_index(int(np.argmax(diff)), diff.shape)
    print("reference: FAIL worst at t=%d id=%d: dump=%r ref=%r |diff|=%.3g > bound %.3g"
          " (atol %g + rtol %g * max|ref|)"
          % (t, j, float(dump[t, j]), float(ref[t, j]), float(diff[t, j]), bound, atol, rtol),
          file=out)
    return 1


def top_k_lines(logits, ids, k):
    """One JSON object per position: {"pos", "token", "top_ids", "top_logits"}."""
    order = np.argsort(-logits, axis=-1, kind="stable")[:, :k]
    lines = []
    for t in range(logits.shape[0]):
        lines.append(json.dumps({
            "pos": t, "token": int(ids[t]),
            "top_ids": [int(j) for j in order[t]],
            "top_logits": [float(logits[t, j]) for j in order[t]]}))
    return lines


# ---------------------------------------------------------------------------
# self-test
# ---------------------------------------------------------------------------

def tiny_config(**overrides):
    """A small Qwen2-MoE config exercising GQA, a dense layer and a shared expert."""
    d = {
        "architectures": ["Qwen2MoeForCausalLM"], "model_type": "qwen2_moe",
        "vocab_size": 53, "hidden_size": 32, "num_hidden_layers": 3,
        "num_attention_heads": 4, "num_key_value_heads": 2,
        "intermediate_size": 40, "moe_intermediate_size": 12,
        "shared_expert_intermediate_size": 20, "num_experts": 6,
        "num_experts_per_tok": 2, "norm_topk_prob": False, "rms_norm_eps": 1e-6,
        "rope_theta": 10000.0, "decoder_sparse_step": 1, "mlp_only_layers": [1],
        "tie_word_embeddings": False,
    }
    d.update(overrides)
    return d


def tiny_weights(d, rng, shared=True):
    """Random tensors with the Hugging Face names for config dict d."""
    D, V = d["hidden_size"], d["vocab_size"]
    nh = d["num_attention_heads"]
    nkv = d.get("num_key_value_heads", nh)
    hd = D // nh
    cfg = Qwen2MoeConfig(d)

    def r(*shape, scale=None):
        scale = scale if scale is not None else 1.0 / math.sqrt(shape[-1])
        return (rng.standard_normal(shape) * scale).astype(np.float32)

    t = {"model.embed_tokens.weight": r(V, D, scale=1.0),
         "model.norm.weight": (1.0 + 0.1 * rng.standard_normal(D)).astype(np.float32)}
    if not d.get("tie_word_embeddings"):
        t["lm_head.weight"] = r(V, D)
    for i in range(d["num_hidden_layers"]):
        p = "model.layers.%d." % i
        t[p + "input_layernorm.weight"] = (1.0 + 0.1 * rng.standard_normal(D)).astype(np.float32)
        t[p + "post_attention_layernorm.weight"] = (1.0 + 0.1 * rng.standard_normal(D)).astype(np.float32)
        for n, rows in (("q", nh * hd), ("k", nkv * hd), ("v", nkv * hd)):
            t[p + "self_attn.%s_proj.weight" % n] = r(rows, D)
            t[p + "self_attn.%s_proj.bias" % n] = r(rows, scale=0.1)
        t[p + "self_attn.o_proj.weight"] = r(D, nh * hd)
        m = p + "mlp."
        if cfg.is_sparse_layer(i):
            F = d["moe_intermediate_size"]
            t[m + "gate.weight"] = r(d["num_experts"], D, scale=1.0)
            for e in range(d["num_experts"]):
                ep = "%sexperts.%d." % (m, e)
                t[ep + "gate_proj.weight"] = r(F, D)
                t[ep + "up_proj.weight"] = r(F, D)
                t[ep + "down_proj.weight"] = r(D, F)
            Fs = d.get("shared_expert_intermediate_size", 0)
            if shared and Fs:
                t[m + "shared_expert.gate_proj.weight"] = r(Fs, D)
                t[m + "shared_expert.up_proj.weight"] = r(Fs, D)
                t[m + "shared_expert.down_proj.weight"] = r(D, Fs)
                t[m + "shared_expert_gate.weight"] = r(1, D)
        else:
            F = d["intermediate_size"]
            t[m + "gate_proj.weight"] = r(F, D)
            t[m + "up_proj.weight"] = r(F, D)
            t[m + "down_proj.weight"] = r(D, F)
    return t


def write_checkpoint(dirpath, config, tensors, dtypes=None, shards=1):
    """config.json plus model.safetensors (shards == 1) or shards + index."""
    os.makedirs(dirpath, exist_ok=True)
    with open(os.path.join(dirpath, "config.json"), "w") as f:
        json.dump(config, f, indent=2)
    if shards == 1:
        write_safetensors(os.path.join(dirpath, "model.safetensors"), tensors, dtypes)
        return
    names = sorted(tensors)
    weight_map = {}
    for s in range(shards):
        fname = "model-%05d-of-%05d.safetensors" % (s + 1, shards)
        part = {n: tensors[n] for n in names[s::shards]}
        write_safetensors(os.path.join(dirpath, fname), part, dtypes)
        for n in part:
            weight_map[n] = fname
    with open(os.path.join(dirpath, "model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {"total_size": 0}, "weight_map": weight_map}, f, indent=2)


class _Checks:
    def __init__(self):
        self.failed = 0

    def check(self, ok, what):
        print("  %s  %s" % ("ok  " if ok else "FAIL", what))
        if not ok:
            self.failed += 1


def _max_abs(a, b):
    return float(np.max(np.abs(np.asarray(a) - np.asarray(b))))


def self_test():
    """Build tiny random checkpoints and check invariants that need no C++."""
    rng = np.random.default_rng(1234)
    c = _Checks()
    ids = [3, 17, 0, 52, 8, 8, 41, 29, 5]
    T = len(ids)
    with tempfile.TemporaryDirectory(prefix="qwen2_moe_ref_") as tmp:
        print("self-test in %s" % tmp)

        # --- safetensors / BF16 -------------------------------------------------
        d = tiny_config()
        tensors = tiny_weights(d, rng)
        bf16_name = "model.layers.0.self_attn.q_proj.weight"
        f16_name = "model.layers.2.mlp.experts.3.down_proj.weight"
        dtypes = {bf16_name: "BF16", "model.embed_tokens.weight": "BF16", f16_name: "F16"}
        one = os.path.join(tmp, "one")
        two = os.path.join(tmp, "sharded")
        write_checkpoint(one, d, tensors, dtypes, shards=1)
        write_checkpoint(two, d, tensors, dtypes, shards=3)
        cfg, W1 = load_model(one)
        _, W3 = load_model(two)
        c.check(sorted(W1.names()) == sorted(tensors), "all %d tensors read back" % len(tensors))
        c.check(W1.dtype_of(bf16_name) == "BF16" and W1.dtype_of(f16_name) == "F16",
                "BF16 and F16 tensors present")
        bf = tensors[bf16_name]
        got = W1.get(bf16_name)
        c.check(np.max(np.abs(got - bf)) <= np.max(np.abs(bf)) * 2.0 ** -8 and
                np.array_equal(got.astype(np.float32).view(np.uint32) & 0xFFFF, np.zeros(bf.shape, np.uint32)),
                "BF16 decode = upper 16 bits, within half an ulp of bf16")
        c.check(np.array_equal(W1.get(f16_name), tensors[f16_name].astype(np.float16).astype(np.float64)),
                "F16 decode exact")
        c.check(np.array_equal(W1.get("model.norm.weight"), tensors["model.norm.weight"].astype(np.float64)),
                "F32 decode exact")
        with open(os.path.join(two, "model.safetensors.index.json")) as f:
            c.check(len(set(json.load(f)["weight_map"].values())) == 3, "index maps to 3 shard files")

        # --- sharded == unsharded -------------------------------------------------
        full = forward(cfg, W1, ids)
        full3 = forward(cfg, W3, ids)
        c.check(full.shape == (T, d["vocab_size"]) and np.all(np.isfinite(full)),
                "logits shape [T, V] = %s, finite" % (full.shape,))
        c.check(np.array_equal(full, full3), "sharded and unsharded logits identical")

        # --- layer kinds ----------------------------------------------------------
        c.check([cfg.is_sparse_layer(i) for i in range(3)] == [True, False, True],
                "mlp_only_layers=[1] -> layers sparse/dense/sparse")
        c.check(cfg.num_key_value_heads < cfg.num_attention_heads, "GQA nKV=2 < nH=4")
        d_step = tiny_config(decoder_sparse_step=2, mlp_only_layers=[])
        cs = Qwen2MoeConfig(d_step)
        c.check([cs.is_sparse_layer(i) for i in range(3)] == [False, True, False],
                "decoder_sparse_step=2 -> layers dense/sparse/dense")

        # --- causality ------------------------------------------------------------
        worst = 0.0
        for cut in (1, 4, T - 1):
            other = ids[:cut] + [(t * 7 + 11) % d["vocab_size"] for t in ids[cut:]]
            alt = forward(cfg, W1, other)
            worst = max(worst, _max_abs(alt[:cut], full[:cut]))
            c.check(_max_abs(alt[cut:], full[cut:]) > 1e-3,
                    "changing tokens >= %d changes later logits" % cut)
        c.check(worst <= 1e-12, "causal: logits before the change unchanged (max diff %.2g)" % worst)

        # --- incremental decode ---------------------------------------------------
        inc = incremental_forward(cfg, W1, ids)
        err = _max_abs(inc, full)
        c.check(err <= 1e-10 * max(1.0, float(np.max(np.abs(full)))),
                "KV-cache decode == full forward, all positions (max diff %.2g)" % err)
        c.check(_max_abs(inc[-1], full[-1]) <= 1e-10 * max(1.0, float(np.max(np.abs(full)))),
                "KV-cache decode of the last token == full forward")

        # --- attention sanity: position 0 attends only to itself ------------------
        a = rms_norm(embed(cfg, W1, ids), W1.get("model.layers.0.input_layernorm.weight"), cfg.rms_norm_eps)
        pos = np.arange(T)
        q, k, v = qkv_projection(cfg, W1, "model.layers.0.self_attn.", a, pos)
        o = attend(cfg, q, k, v, pos, pos).reshape(T, cfg.num_attention_heads, cfg.head_dim)
        group = cfg.num_attention_heads // cfg.num_key_value_heads
        c.check(all(np.allclose(o[0, h], v[h // group, 0], rtol=0, atol=1e-14)
                    for h in range(cfg.num_attention_heads)),
                "position 0 attention output = its own v (head h uses kv head h // %d)" % group)
        # RoPE: rotation preserves the norm of each (j, j + hd/2) pair; position 0 is identity
        cos, sin = rope_cos_sin(pos, cfg.head_dim, cfg.rope_theta)
        rq = apply_rope(q, cos, sin)
        half = cfg.head_dim // 2
        pair = lambda x: x[..., :half] ** 2 + x[..., half:] ** 2
        c.check(np.allclose(pair(rq), pair(q), rtol=1e-12, atol=1e-12) and
                np.allclose(rq[:, 0], q[:, 0], rtol=0, atol=0), "RoPE is a pairwise rotation, identity at pos 0")

        # --- MoE block against an all-experts dense formulation -------------------
        b = rms_norm(embed(cfg, W1, ids),
                     W1.get("model.layers.0.post_attention_layernorm.weight"), cfg.rms_norm_eps)
        for norm in (False, True):
            cn = Qwen2MoeConfig(tiny_config(norm_topk_prob=norm))
            got = sparse_moe_block(cn, W1, "model.layers.0.mlp.", b)
            p = softmax(b @ W1.get("model.layers.0.mlp.gate.weight").T)
            want = np.zeros_like(b)
            for tt in range(T):
                chosen = sorted(range(cn.num_experts), key=lambda e: (-p[tt, e], e))[:cn.num_experts_per_tok]
                z = sum(p[tt, e] for e in chosen) if norm else 1.0
                for e in chosen:
                    ep = "model.layers.0.mlp.experts.%d." % e
                    x = b[tt]
                    g = W1.get(ep + "gate_proj.weight") @ x
                    u = W1.get(ep + "up_proj.weight") @ x
                    want[tt] += p[tt, e] / z * (W1.get(ep + "down_proj.weight") @ (g / (1 + np.exp(-g)) * u))
                sp = "model.layers.0.mlp.shared_expert."
                g = W1.get(sp + "gate_proj.weight") @ b[tt]
                u = W1.get(sp + "up_proj.weight") @ b[tt]
                s = 1.0 / (1.0 + np.exp(-(W1.get("model.layers.0.mlp.shared_expert_gate.weight") @ b[tt])[0]))
                want[tt] += s * (W1.get(sp + "down_proj.weight") @ (g / (1 + np.exp(-g)) * u))
            c.check(_max_abs(got, want) <= 1e-12,
                    "MoE block (norm_topk_prob=%s) == per-token loop (max diff %.2g)" % (norm, _max_abs(got, want)))
            _, w = router_weights(cn, b @ W1.get("model.layers.0.mlp.gate.weight").T)
            sums = w.sum(axis=-1)
            c.check(np.allclose(sums, 1.0, atol=1e-14) if norm else bool(np.all(sums < 1.0)),
                    "norm_topk_prob=%s: top-k weights sum %s 1" % (norm, "to" if norm else "below"))

        # --- norm_topk_prob both ways through the whole model ---------------------
        dn = tiny_config(norm_topk_prob=True)
        ndir = os.path.join(tmp, "norm")
        write_checkpoint(ndir, dn, tensors, dtypes, shards=2)
        cfg_n, Wn = load_model(ndir)
        full_n = forward(cfg_n, Wn, ids)
        c.check(_max_abs(full_n, full) > 1e-6, "norm_topk_prob=true changes the logits")
        inc_n = incremental_forward(cfg_n, Wn, ids)
        c.check(_max_abs(inc_n, full_n) <= 1e-10 * max(1.0, float(np.max(np.abs(full_n)))),
                "norm_topk_prob=true: KV-cache decode == full forward")

        # --- top-k ties -----------------------------------------------------------
        ptie = np.array([[0.1, 0.3, 0.2, 0.3, 0.1]])
        c.check(topk_indices(ptie, 3).tolist() == [[1, 3, 2]], "top-k ties go to the lower index")

        # --- no shared expert, tied embeddings, MHA, defaults ---------------------
        dm = tiny_config(shared_expert_intermediate_size=0, tie_word_embeddings=True,
                         num_key_value_heads=None, mlp_only_layers=None, norm_topk_prob=None)
        dm = {k_: v_ for k_, v_ in dm.items() if v_ is not None}
        tm = tiny_weights(dm, np.random.default_rng(7), shared=False)
        mdir = os.path.join(tmp, "minimal")
        write_checkpoint(mdir, dm, tm)
        cfg_m, Wm = load_model(mdir)
        c.check(cfg_m.num_key_value_heads == cfg_m.num_attention_heads and not cfg_m.norm_topk_prob
                and cfg_m.mlp_only_layers == [], "config defaults (nKV = nH, norm_topk_prob false, mlp_only [])")
        c.check("lm_head.weight" not in Wm and not any("shared_expert" in n for n in Wm.names()),
                "no lm_head and no shared-expert tensors in that checkpoint")
        full_m = forward(cfg_m, Wm, ids)
        h_check = full_m.shape == (T, dm["vocab_size"]) and np.all(np.isfinite(full_m))
        c.check(h_check, "tied embeddings + no shared expert: forward runs")
        c.check(_max_abs(incremental_forward(cfg_m, Wm, ids), full_m) <= 1e-10 * max(1.0, float(np.max(np.abs(full_m)))),
                "tied/no-shared: KV-cache decode == full forward")

        # --- CLI: --out, --compare, --print-top -----------------------------------
        ref_path = os.path.join(tmp, "ref.npy")
        id_arg = ",".join(str(t) for t in ids)
        rc = main(["--model", two, "--token-ids", id_arg, "--out", ref_path], quiet=True)
        saved = np.load(ref_path)
        c.check(rc == 0 and saved.dtype == np.float32 and saved.shape == (T, d["vocab_size"]),
                "--out writes float32 [T, V]")
        rc = main(["--model", one, "--token-ids", id_arg, "--compare", ref_path], quiet=True)
        c.check(rc == 0, "--compare of its own float32 dump passes")
        bad = saved.copy()
        bad[2, 5] += 0.5
        bad_path = os.path.join(tmp, "bad.npy")
        np.save(bad_path, bad)
        rc = main(["--model", one, "--token-ids", id_arg, "--compare", bad_path], quiet=True)
        c.check(rc == 1, "--compare of a perturbed dump fails")
        nan = saved.copy()
        nan[0, 0] = np.nan
        np.save(bad_path, nan)
        rc = main(["--model", one, "--token-ids", id_arg, "--compare", bad_path], quiet=True)
        c.check(rc == 1, "--compare of a dump with NaN fails")
        lines = top_k_lines(full, ids, 5)
        parsed = [json.loads(line) for line in lines]
        c.check(len(parsed) == T and all(p_["top_ids"][0] == int(np.argmax(full[p_["pos"]])) and
                                         len(p_["top_ids"]) == 5 for p_ in parsed),
                "--print-top 5 lines are JSON, first id = argmax")

    print("self-test: %s (%d failed)" % ("PASS" if c.failed == 0 else "FAIL", c.failed))
    return 0 if c.failed == 0 else 1


# ---------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------

def parse_ids(text):
    ids = [int(s) for s in text.replace(" ", "").split(",") if s != ""]
    if not ids:
        raise argparse.ArgumentTypeError("--token-ids needs at least one id")
    return ids


def main(argv=None, quiet=False):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", help="Hugging Face checkpoint folder (config.json + safetensors)")
    ap.add_argument("--token-ids", type=parse_ids, help="comma-separated token ids, e.g. 1,5,9")
    ap.add_argument("--out", help="write float32 [T, V] logits here (.npy)")
    ap.add_argument("--compare", help="C++ dump, float32 [T, V] .npy, to check against")
    ap.add_argument("--rtol", type=float, default=1e-4,
                    help="relative tolerance, times max|ref| (default 1e-4)")
    ap.add_argument("--atol", type=float, default=1e-5, help="absolute tolerance (default 1e-5)")
    ap.add_argument("--print-top", type=int, metavar="K",
                    help="print the top-K ids per position, one JSON object per line")
    ap.add_argument("--self-test", action="store_true", help="run the built-in invariant checks")
    ap.add_argument("--write-tiny", metavar="DIR",
                    help="write the self-test's tiny random checkpoint (3 shards, BF16/F16 "
                         "tensors, GQA, one dense layer) to DIR and exit")
    args = ap.parse_args(argv)

    if args.self_test:
        return self_test()
    if args.write_tiny:
        d = tiny_config()
        tensors = tiny_weights(d, np.random.default_rng(1234))
        dtypes = {"model.embed_tokens.weight": "BF16",
                  "model.layers.0.self_attn.q_proj.weight": "BF16",
                  "model.layers.2.mlp.experts.3.down_proj.weight": "F16"}
        write_checkpoint(args.write_tiny, d, tensors, dtypes, shards=3)
        print("wrote %s" % args.write_tiny)
        return 0
    if not args.model or args.token_ids is None:
        ap.error("--model and --token-ids are required (or --self-test)")

    out = open(os.devnull, "w") if quiet else sys.stdout
    try:
        cfg, W = load_model(args.model)
        ids = args.token_ids
        logits = forward(cfg, W, ids)
        rc = 0
        if args.out:
            np.save(args.out, logits.astype(np.float32))
        if args.compare:
            rc = compare(logits, np.load(args.compare), args.rtol, args.atol, out=out)
        if args.print_top:
            for line in top_k_lines(logits, ids, args.print_top):
                print(line, file=out)
        if not (args.out or args.compare or args.print_top):
            print("reference: T=%d V=%d argmax %s" % (logits.shape[0], logits.shape[1],
                  ",".join(str(int(j)) for j in np.argmax(logits, axis=-1))), file=out)
        return rc
    except (OSError, ValueError, KeyError, NotImplementedError) as e:
        print("reference: error: %s" % (e,), file=sys.stderr)
        return 2
    finally:
        if quiet:
            out.close()


if __name__ == "__main__":
    sys.exit(main())
