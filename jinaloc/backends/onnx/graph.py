"""The ONNX graph of EuroBERT (nano) or Qwen3 (small), written from config.json and the
weights with onnx.helper: no exporter, no torch, no code from the model repo.

Inputs `input_ids` and `attention_mask` (int64, batch x seq, right padded); output `pooled`:
the final-normed hidden state of each row's last real token (batch x hidden). Pooling inside
the graph lets the last layer run its queries, output projection and MLP on that one token
per row (nano 12 layers: ~8% less work), and only (batch x hidden) floats leave the graph.

int8 graphs store int8 weights (per output column) and quantize activations per token row
inside the graph (`int8_matmul`): a text's vector never depends on what it is batched or
padded with, which onnxruntime's dynamic quantizer (one activation scale for the whole batch,
padding included) could not promise.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper

from ...errors import JinalocError

OPSET = 17
CONTRIB = "com.microsoft"  # onnxruntime's contrib ops (MatMulIntegerToFloat, RotaryEmbedding, ...)
# Added to the attention scores of hidden keys: exp() of it is 0, and no row is all hidden
# (every query sees at least the first token), so softmax never divides by zero.
MASKED = -1e30


class Builder:
    """Nodes plus initializers streamed to one external data file (no 2 GB protobuf limit,
    and no second in-memory copy of the weights)."""

    def __init__(self, data_file: Path, quant: str = "fp32"):
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self.data_file = data_file
        self.quant = check_quant(quant)
        self._data = data_file.open("wb")
        self._n = 0

    def name(self, hint: str) -> str:
        self._n += 1
        return f"{hint}_{self._n}"

    def names(self, hint: str, n: int) -> list[str]:
        return [self.name(hint) for _ in range(n)]

    def weight(self, name: str, array: np.ndarray) -> str:
        """A float32 (or already int8/uint8) tensor, stored in the external data file."""
        if array.dtype not in (np.int8, np.uint8):
            array = np.asarray(array, np.float32)
        array = np.ascontiguousarray(array)
        tensor = TensorProto()
        tensor.name = name
        tensor.data_type = helper.np_dtype_to_tensor_dtype(array.dtype)
        tensor.dims.extend(array.shape)
        offset = self._data.tell()
        self._data.write(array.tobytes())
        pad = -self._data.tell() % 64  # aligned, so that ORT can map the file
        self._data.write(b"\0" * pad)
        tensor.data_location = TensorProto.EXTERNAL
        for key, value in (
            ("location", self.data_file.name),
            ("offset", offset),
            ("length", array.nbytes),
        ):
            entry = tensor.external_data.add()
            entry.key, entry.value = key, str(value)
        self.initializers.append(tensor)
        return name

    def const(self, value, dtype=np.int64) -> str:
        """A small constant stored inline."""
        name = self.name("const")
        self.initializers.append(onnx.numpy_helper.from_array(np.asarray(value, dtype), name))
        return name

    def op(self, op_type: str, *inputs: str, outputs: int = 1, **attrs):
        names = self.names(op_type.lower(), outputs)
        self.nodes.append(helper.make_node(op_type, list(inputs), names, **attrs))
        return names[0] if outputs == 1 else names

    def close(self) -> None:
        self._data.close()


class Spec:
    """The shape facts the graph needs, from config.json."""

    def __init__(self, config: dict, architecture: str):
        try:
            self.hidden = int(config["hidden_size"])
            self.layers = int(config["num_hidden_layers"])
            self.heads = int(config["num_attention_heads"])
            self.kv_heads = int(config.get("num_key_value_heads") or self.heads)
            self.head_dim = int(config.get("head_dim") or self.hidden // self.heads)
            self.eps = float(config.get("rms_norm_eps", 1e-6))
            self.theta = float(config.get("rope_theta", 10000.0))
        except (KeyError, TypeError, ValueError) as e:
            raise JinalocError(f"config.json lacks a field the ONNX graph needs: {e}") from None
        if config.get("hidden_act", "silu") != "silu":
            raise JinalocError(f"config.json: unsupported hidden_act {config['hidden_act']!r}")
        if self.heads % self.kv_heads:
            raise JinalocError("config.json: attention heads are not a multiple of kv heads")
        self.rope_factor = rope_factor(config.get("rope_scaling"))
        self.causal = architecture == "qwen3"
        self.qk_norm = architecture == "qwen3"


def rope_factor(scaling: dict | None) -> float:
    """Plain or linearly scaled RoPE only; other schemes would silently give wrong vectors."""
    if not scaling:
        return 1.0
    kind = scaling.get("rope_type") or scaling.get("type") or "default"
    if kind == "default":
        return 1.0
    if kind == "linear":
        return float(scaling.get("factor", 1.0))
    raise JinalocError(f"config.json: rope_scaling {kind!r} is not supported by the ONNX backend")


def rms_norm(g: Builder, x: str, weight: str, eps: float) -> str:
    # Pow/ReduceMean/Add/Sqrt/Div/Mul: the pattern ORT fuses into SimplifiedLayerNormalization.
    var = g.op("ReduceMean", g.op("Pow", x, g.const(2.0, np.float32)), axes=[-1], keepdims=1)
    std = g.op("Sqrt", g.op("Add", var, g.const(eps, np.float32)))
    return g.op("Mul", g.op("Div", x, std), weight)


def linear(g: Builder, x: str, weights: dict, *keys: str) -> list[str]:
    """x @ W.T (+ b) for each key's weight (stored transposed, (in, out) as MatMul wants it).
    int8 graphs quantize x once for all of them (q/k/v, gate/up); one matmul per weight, not
    one over the weights side by side, whose split would copy the whole output again."""
    rows = quantize_rows(g, x) if g.quant != "fp32" else None
    out = []
    for key in keys:
        w = weights.pop(f"{key}.weight").T
        if rows is None:
            y = g.op("MatMul", x, g.weight(f"{key}.weight", w))
        else:
            y = int8_matmul(g, x, rows, w, f"{key}.weight")
        bias = weights.pop(f"{key}.bias", None)
        out.append(y if bias is None else g.op("Add", y, g.weight(f"{key}.bias", bias)))
    return out


# --- int8 ---------------------------------------------------------------------------------
# Activations are rounded to int8 per row (each token on its own max |x|) and sent as uint8 +
# 128 with a zero point of 128; weights are symmetric per output column. qint8 keeps the
# weights int8 within +-63 (onnxruntime's U8S8 kernels, the fast ones; on x86 without VNNI they
# add pairs of products in saturating int16 (VPMADDUBSW), which 7-bit weights cannot
# overflow); quint8 keeps 8-bit weights as uint8 + 128 (its exact U8U8 kernels).
QUANTS = ("fp32", "qint8", "quint8")


def opset_imports() -> list:
    """What a graph built here imports: standard ONNX and onnxruntime's contrib ops."""
    return [helper.make_opsetid("", OPSET), helper.make_opsetid(CONTRIB, 1)]


def check_quant(quant: str) -> str:
    if quant not in QUANTS:
        raise JinalocError(f"unknown ONNX graph quant {quant!r}: one of {', '.join(QUANTS)}")
    return quant


def quantize_columns(w: np.ndarray, limit: int = 127) -> tuple[np.ndarray, np.ndarray]:
    """(int8 codes within +-limit, float32 scale per column) of w (in, out): w ~ q * scale."""
    w = np.asarray(w, np.float32)
    scale = np.abs(w).max(axis=0) / limit
    scale = np.where(scale > 0, scale, 1).astype(np.float32)
    return np.clip(np.rint(w / scale), -limit, limit).astype(np.int8), scale


def quantize_rows(g: Builder, x: str) -> tuple[str, str]:
    """x (..., K) float -> (uint8 codes (rows, K), zero point 128; scale (rows,)): each token
    row rounded on its own max |x| / 127, so no row's codes depend on any other row's values.
    The rows are flattened to (rows, K), so that one QuantizeLinear with a scale per row
    (per-axis) divides, rounds half to even, adds the zero point and saturates in one pass."""
    x = g.op("Flatten", x, axis=-1)
    amax = g.op("ReduceMax", g.op("Abs", x), axes=[-1], keepdims=0)
    scale = g.op("Mul", g.op("Max", amax, g.const(1e-30, np.float32)), g.const(1 / 127, np.float32))
    zero = g.op("Expand", g.const([128], np.uint8), g.op("Shape", scale))
    return g.op("QuantizeLinear", x, scale, zero, axis=0), scale


def int8_matmul(g: Builder, x: str, rows: tuple[str, str], w: np.ndarray, name: str) -> str:
    """x @ w (float, x (B, L, K), w (K, N)) in integer arithmetic, as `g.quant` says, from
    x's row codes and scales (`quantize_rows`): exact int32 sums of int8 activations and int8
    weights (a scale per column), rescaled to float. onnxruntime's MatMulIntegerToFloat (a
    contrib op: the graph imports CONTRIB) does the sums and the column scales in one kernel;
    the row scales follow, and the result takes x's leading shape back. Any graph's
    projections can be built with it (the reranker's too)."""
    zero = g.const(128, np.uint8)
    codes, row_scale = rows
    if g.quant == "quint8":
        q, col_scale = quantize_columns(w)
        weights, w_zero = g.weight(name, (q.astype(np.int16) + 128).astype(np.uint8)), zero
    else:
        q, col_scale = quantize_columns(w, 63)
        weights, w_zero = g.weight(name, q), g.const(0, np.int8)
    y = g.op(
        "MatMulIntegerToFloat",
        codes,
        weights,
        g.const(1.0, np.float32),
        g.weight(f"{name}.scale", col_scale),
        zero,
        w_zero,
        domain=CONTRIB,
    )
    y = g.op("Mul", y, g.op("Unsqueeze", row_scale, g.const([1])))
    lead = g.op("Slice", g.op("Shape", x), g.const([0]), g.const([-1]))
    return g.op("Reshape", y, g.op("Concat", lead, g.const([w.shape[1]]), axis=0))


def embedding(g: Builder, table: np.ndarray, ids: str) -> str:
    """Rows of the token embedding table; int8 graphs keep it int8 with a scale per token
    (a quarter of the bytes), dequantized on lookup."""
    if g.quant == "fp32":
        return g.op("Gather", g.weight("embed_tokens", table), ids)
    q, scale = quantize_columns(np.asarray(table, np.float32).T)
    rows = g.op("Gather", g.weight("embed_tokens", np.ascontiguousarray(q.T)), ids)
    scales = g.op("Gather", g.weight("embed_tokens.scale", scale), ids)
    return g.op(
        "Mul", g.op("Cast", rows, to=TensorProto.FLOAT), g.op("Unsqueeze", scales, g.const([-1]))
    )


def rope_tables(g: Builder, s: Spec, seq_len: str) -> tuple[str, str]:
    """cos and sin of shape (seq, head_dim / 2), computed in float32 like the reference: the
    caches onnxruntime's RotaryEmbedding reads (NEOX style: halves, not interleaved pairs)."""
    half = s.head_dim // 2
    inv_freq = 1.0 / (s.theta ** (np.arange(0, s.head_dim, 2, dtype=np.float32) / s.head_dim))
    inv_freq = (inv_freq / s.rope_factor).astype(np.float32)[:half]
    pos = g.op("Cast", g.op("Range", g.const(0), seq_len, g.const(1)), to=TensorProto.FLOAT)
    freqs = g.op("Mul", g.op("Unsqueeze", pos, g.const([1])), g.const(inv_freq, np.float32))
    return g.op("Cos", freqs), g.op("Sin", freqs)


def rotate(g: Builder, x: str, rope: tuple[str, str], positions: str) -> str:
    """RoPE of x (B, L, heads * hd) at `positions` ((1,): L positions from there; (B, L): one
    per token), in one contrib kernel instead of Split/Neg/Concat/Mul/Mul/Add."""
    return g.op("RotaryEmbedding", x, positions, *rope, domain=CONTRIB)


def attention_bias(g: Builder, s: Spec, mask: str, seq_len: str, causal: bool) -> str:
    """Additive bias (batch, 1, 1|seq, seq): pad keys hidden, and later keys if causal."""
    keep = g.op("Cast", mask, to=TensorProto.BOOL)
    keep = g.op("Unsqueeze", keep, g.const([1, 2]))  # (B, 1, 1, L)
    if causal:
        idx = g.op("Range", g.const(0), seq_len, g.const(1))
        rows = g.op("Unsqueeze", idx, g.const([1]))  # (L, 1) query positions
        past = g.op("LessOrEqual", idx, rows)  # (L, L): key <= query
        keep = g.op("And", keep, past)  # (B, 1, L, L)
    bias = g.op("Where", keep, g.const(0.0, np.float32), g.const(MASKED, np.float32))
    if s.kv_heads != s.heads:
        bias = g.op("Unsqueeze", bias, g.const([1]))  # for the (B, kv, rep, L, L) scores
    return bias


def take_last(g: Builder, x: str, last: str) -> str:
    """x[b, last[b]] per row b, keeping a length-1 sequence axis: (B, L, ...) -> (B, 1, ...)."""
    picked = g.op("GatherND", x, g.op("Unsqueeze", last, g.const([1])), batch_dims=1)
    return g.op("Unsqueeze", picked, g.const([1]))


def head_norm(g: Builder, s: Spec, x: str, weights: dict, key: str, heads: int) -> str:
    """Qwen3's RMSNorm of each head of x (B, L, heads * hd)."""
    x = g.op("Reshape", x, g.const([0, 0, heads, s.head_dim]))
    x = rms_norm(g, x, g.weight(key, weights.pop(key)), s.eps)
    return g.op("Reshape", x, g.const([0, 0, heads * s.head_dim]))


def attention(g, s: Spec, x: str, weights: dict, p: str, rope, bias, last=None) -> str:
    """Self-attention of normed `x` (B, L, H). With `last`, only each row's last real token
    queries (B, 1, H): in the final layer no other token's output is ever used. q, k and v
    share one quantization of x (k and v only, with `last`); 1/sqrt(hd) is folded into q's
    weights (or into q_norm's, which follows them)."""
    hd, rep = s.head_dim, s.heads // s.kv_heads
    scaled = f"{p}.q_norm.weight" if s.qk_norm else f"{p}.q_proj.weight"
    weights[scaled] = weights[scaled] * np.float32(hd**-0.5)
    if not s.qk_norm and f"{p}.q_proj.bias" in weights:
        weights[f"{p}.q_proj.bias"] = weights[f"{p}.q_proj.bias"] * np.float32(hd**-0.5)
    start = g.const([0])  # positions 0..L-1
    if last is None:
        q, k, v = linear(g, x, weights, f"{p}.q_proj", f"{p}.k_proj", f"{p}.v_proj")
        q_pos = start
    else:
        (q,) = linear(g, take_last(g, x, last), weights, f"{p}.q_proj")
        k, v = linear(g, x, weights, f"{p}.k_proj", f"{p}.v_proj")
        q_pos = g.op("Unsqueeze", last, g.const([1]))  # (B, 1)
    if s.qk_norm:  # Qwen3: per-head RMSNorm of q and k, before RoPE
        q = head_norm(g, s, q, weights, f"{p}.q_norm.weight", s.heads)
        k = head_norm(g, s, k, weights, f"{p}.k_norm.weight", s.kv_heads)
    q = g.op("Reshape", rotate(g, q, rope, q_pos), g.const([0, 0, s.heads, hd]))
    k = g.op("Reshape", rotate(g, k, rope, start), g.const([0, 0, s.kv_heads, hd]))
    v = g.op("Reshape", v, g.const([0, 0, s.kv_heads, hd]))
    q = g.op("Transpose", q, perm=[0, 2, 1, 3])  # (B, H, Lq, hd)
    k = g.op("Transpose", k, perm=[0, 2, 3, 1])  # (B, KV, hd, L)
    v = g.op("Transpose", v, perm=[0, 2, 1, 3])  # (B, KV, L, hd)
    if rep > 1:  # grouped-query: each kv head serves `rep` query heads, by broadcasting
        q = g.op("Reshape", q, g.const([0, s.kv_heads, rep, -1, hd]))
        k = g.op("Unsqueeze", k, g.const([2]))
        v = g.op("Unsqueeze", v, g.const([2]))
    scores = g.op("Add", g.op("MatMul", q, k), bias)
    out = g.op("MatMul", g.op("Softmax", scores, axis=-1), v)
    if rep > 1:
        out = g.op("Reshape", out, g.const([0, s.heads, -1, hd]))
    out = g.op("Reshape", g.op("Transpose", out, perm=[0, 2, 1, 3]), g.const([0, 0, s.heads * hd]))
    return linear(g, out, weights, f"{p}.o_proj")[0]


def mlp(g: Builder, x: str, weights: dict, p: str) -> str:
    gate, up = linear(g, x, weights, f"{p}.gate_proj", f"{p}.up_proj")
    act = g.op("Mul", gate, g.op("Sigmoid", gate))  # SiLU
    return linear(g, g.op("Mul", act, up), weights, f"{p}.down_proj")[0]


def add_norm(g: Builder, h: str, y: str, weight: str, eps: float) -> tuple[str, str]:
    """(RMSNorm(h + y), h + y) in one contrib kernel: the residual sum is read once."""
    normed, total = g.names("add_norm", 2)
    g.nodes.append(
        helper.make_node(
            "SkipSimplifiedLayerNormalization",
            [h, y, weight],
            [normed, "", "", total],
            domain=CONTRIB,
            epsilon=eps,
        )
    )
    return normed, total


def build(
    config: dict,
    architecture: str,
    weights: dict,
    path: Path,
    quant: str = "fp32",
    hidden_states: bool = False,
) -> Path:
    """Write the model to `path` (+ `path.data`), float32 or int8 (`quant` qint8 / quint8);
    consumes `weights` as it goes. `hidden_states`: output `last_hidden_state` (batch x seq x
    hidden, every token final-normed) instead of `pooled`, as exported models do, for
    runtimes that pool themselves (the peers in scripts/bench_embed.py); the final layer
    then runs on every token."""
    if architecture not in ("eurobert", "qwen3"):
        raise JinalocError(f"the ONNX backend cannot run {architecture!r} models")
    s = Spec(config, architecture)
    g = Builder(path.with_name(path.name + ".data"), quant)
    try:
        ids = helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "seq"])
        mask = helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["batch", "seq"])
        if hidden_states:
            out = helper.make_tensor_value_info(
                "last_hidden_state", TensorProto.FLOAT, ["batch", "seq", s.hidden]
            )
        else:
            out = helper.make_tensor_value_info("pooled", TensorProto.FLOAT, ["batch", s.hidden])
        seq_len = g.op("Gather", g.op("Shape", "input_ids"), g.const(1), axis=0)
        rope = rope_tables(g, s, seq_len)
        bias = attention_bias(g, s, "attention_mask", seq_len, s.causal)
        # The last real token sees every real token, causal or not: padding is all it masks.
        last_bias = attention_bias(g, s, "attention_mask", seq_len, False) if s.causal else bias
        # Last real token of each row: sum(mask) - 1 (right padding).
        total = g.op("ReduceSum", "attention_mask", g.const([1]), keepdims=0)
        last = g.op("Sub", total, g.const(1))
        try:
            h = embedding(g, weights.pop("embed_tokens.weight"), ids.name)
            norm = g.weight("layers.0.in_norm", weights.pop("layers.0.input_layernorm.weight"))
            x = rms_norm(g, h, norm, s.eps)
            for i in range(s.layers):
                p = f"layers.{i}"
                final = i == s.layers - 1 and not hidden_states
                a = attention(
                    g, s, x, weights, f"{p}.self_attn", rope, last_bias if final else bias,
                    last if final else None,
                )  # fmt: skip
                norm = g.weight(
                    f"{p}.post_norm", weights.pop(f"{p}.post_attention_layernorm.weight")
                )
                x, h = add_norm(g, take_last(g, h, last) if final else h, a, norm, s.eps)
                if i == s.layers - 1:
                    norm = g.weight("norm", weights.pop("norm.weight"))
                else:
                    key = f"layers.{i + 1}.input_layernorm.weight"
                    norm = g.weight(f"layers.{i + 1}.in_norm", weights.pop(key))
                x, h = add_norm(g, h, mlp(g, x, weights, f"{p}.mlp"), norm, s.eps)
        except KeyError as e:
            raise JinalocError(
                f"model.safetensors lacks {e.args[0]} (does it match config.json?)"
            ) from None
        if not hidden_states:
            x = g.op("Squeeze", x, g.const([1]))
        g.nodes.append(helper.make_node("Identity", [x], [out.name]))
    finally:
        g.close()
    graph = helper.make_graph(g.nodes, architecture, [ids, mask], [out], g.initializers)
    model = helper.make_model(graph, opset_imports=opset_imports())
    model.ir_version = 8  # readable by every onnxruntime that knows opset 17
    onnx.save_model(model, str(path))
    return path
