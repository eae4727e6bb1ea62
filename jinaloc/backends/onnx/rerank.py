"""A Qwen3-Reranker on ONNX Runtime: P(yes) against "no" at the last token of each pair.

The graph is jinaloc's own Qwen3 graph (graph.py, the one v5-small runs) written from the
reranker's safetensors, plus a 2-column head: the LM head's rows of "yes" and "no" (the tied
embedding rows when there is no lm_head). Its output is those two logits at each row's last
real token, the only position the card's recipe reads; P(yes) = softmax([yes, no])[0], as
llama.cpp's rank head computes it. Built once per model and quant, cached like the embedding
graphs (int8: weights per column, activations per token row, as `graph.int8_matmul` does).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
from onnx import helper, numpy_helper
from tokenizers import Tokenizer

from ...errors import JinalocError
from ...paths import cache_dir
from ...registry import detect_architecture
from ..canonical import max_tokens, read_json, read_weights, weight_files
from ..quants import onnx_quant
from ..threads import default_threads
from . import build_once, graph, open_session

CACHE_FORMAT = 3  # bump when the graph or its head change (2: per-row int8; 3: issue 25 graph)
# Padded tokens per forward pass: pairs are sorted by length so that little of it is padding.
PACK_TOKENS = 2048
# Attention scores of one pass (rows x heads x seq^2 floats) stay under this, as for embedding.
SCORE_BYTES = 256 << 20


def cache_path(folder: Path, quant: str) -> Path:
    """Keyed by the weight files (path, size, mtime) and the quant."""
    h = hashlib.sha256(f"rerank v{CACHE_FORMAT} {quant}".encode())
    for f in weight_files(folder):
        st = f.stat()
        h.update(f"\n{f.resolve()} {st.st_size} {st.st_mtime_ns}".encode())
    return cache_dir() / "onnx" / f"{folder.name}-rerank-{quant}-{h.hexdigest()[:16]}"


def head_rows(weights: dict[str, np.ndarray], ids: tuple[int, int]) -> np.ndarray:
    """The LM head's rows of the given token ids (hidden x 2): lm_head, or the tied embedding."""
    table = weights.get("lm_head.weight")
    if table is None:
        table = weights.get("embed_tokens.weight")
    if table is None:
        raise JinalocError("model.safetensors has neither lm_head.weight nor embed_tokens.weight")
    return np.ascontiguousarray(table[list(ids)].T, np.float32)


def add_head(path: Path, head: np.ndarray) -> None:
    """Replace the graph's `pooled` output by `logits` = pooled @ head (batch x 2)."""
    model = onnx.load(str(path), load_external_data=False)
    g = model.graph
    g.initializer.append(numpy_helper.from_array(head, "rerank_head"))
    g.node.append(helper.make_node("MatMul", ["pooled", "rerank_head"], ["logits"]))
    del g.output[:]
    g.output.append(
        helper.make_tensor_value_info("logits", onnx.TensorProto.FLOAT, ["batch", head.shape[1]])
    )
    onnx.save_model(model, str(path))


def build(folder: Path, config: dict, ids: tuple[int, int], quant: str, out: Path) -> None:
    """Write `out`/model.onnx (+ .data): the Qwen3 graph (float32 or int8, as the embedding
    graphs) with the yes/no head, which stays float32 (two columns)."""
    weights = read_weights(folder)
    head = head_rows(weights, ids)
    weights.pop("lm_head.weight", None)  # the graph stops at the final norm
    out.mkdir(parents=True, exist_ok=True)
    graph.build(config, "qwen3", weights, out / "model.onnx", quant)
    del weights
    add_head(out / "model.onnx", head)


class ONNXReranker:
    """A Qwen3-Reranker folder (config.json, model.safetensors, tokenizer.json) on ONNX
    Runtime, with the interface jinaloc.reranker.Reranker drives (as GGUFReranker)."""

    mode = "onnx"

    def __init__(
        self,
        folder: Path,
        quant: str | None = None,
        threads: int | None = None,
        cap: int | None = None,
        pack_tokens: int = PACK_TOKENS,
    ):
        self.folder = Path(folder)
        self.path = self.folder
        self.quant = onnx_quant(quant)
        self.config = read_json(self.folder / "config.json")
        if detect_architecture(self.config) != "qwen3":
            raise JinalocError(f"{self.folder}: not a Qwen3 model, so not a Qwen3-Reranker")
        self.max_tokens = max_tokens(self.config, cap)
        self.heads = int(self.config["num_attention_heads"])
        self.vocab_size = int(self.config.get("vocab_size") or 0)
        self.pack_tokens = pack_tokens
        tok_file = self.folder / "tokenizer.json"
        if not tok_file.is_file():
            raise JinalocError(f"missing tokenizer.json in {self.folder}")
        self.tokenizer = Tokenizer.from_file(str(tok_file))
        self.tokenizer.no_padding()
        self.tokenizer.no_truncation()
        self.yes_id, self.no_id = self._single_token("yes"), self._single_token("no")
        model = build_once(
            cache_path(self.folder, self.quant),
            lambda tmp: build(self.folder, self.config, (self.yes_id, self.no_id), self.quant, tmp),
            f"{self.folder.name} (reranker, {self.quant})",
        )
        self.session = open_session(model, threads or default_threads())
        self.model_file = model

    def tokenize(self, text: str) -> list[int]:
        # Special tokens written in the text ("<|im_start|>") are parsed as the HF tokenizer
        # does; nothing is added (the Qwen3 tokenizer adds no BOS).
        return self.tokenizer.encode(text, add_special_tokens=False).ids

    def detokenize(self, ids: list[int]) -> str:
        """Text of the tokens; a character cut in the middle (decoded as U+FFFD) is dropped."""
        return self.tokenizer.decode(ids, skip_special_tokens=False).rstrip("\ufffd")

    def _single_token(self, word: str) -> int:
        ids = self.tokenize(word)
        if len(ids) != 1:
            raise JinalocError(f"{self.folder.name}: {word!r} is not one token: not a reranker?")
        return ids[0]

    def _batches(self, lengths: list[int]) -> list[list[int]]:
        """Indices by length (shortest first), each batch within the padded-token budget and
        the attention-score budget."""
        order = sorted(range(len(lengths)), key=lambda i: lengths[i])
        batches: list[list[int]] = []
        for i in order:
            if batches:
                rows = len(batches[-1]) + 1
                width = lengths[i]  # the longest so far: sorted
                if (
                    rows * width <= self.pack_tokens
                    and rows * self.heads * width**2 * 4 <= SCORE_BYTES
                ):
                    batches[-1].append(i)
                    continue
            batches.append([i])
        return batches

    def score_tokens(
        self, seqs: list[list[int]], progress: Callable[[int, int], None] | None = None
    ) -> np.ndarray:
        """P(yes) of each full prompt (token ids), in input order."""
        if not seqs:
            return np.zeros(0)
        lengths = [len(s) for s in seqs]
        if min(lengths) == 0:
            raise JinalocError("cannot score an empty token sequence")
        if max(lengths) > self.max_tokens:
            raise JinalocError(f"a pair of {max(lengths)} tokens exceeds {self.max_tokens}")
        out = np.empty(len(seqs))
        for batch in self._batches(lengths):
            width = max(lengths[i] for i in batch)
            ids = np.zeros((len(batch), width), np.int64)
            mask = np.zeros((len(batch), width), np.int64)
            for row, i in enumerate(batch):  # right padding: the graph pools sum(mask) - 1
                ids[row, : lengths[i]] = seqs[i]
                mask[row, : lengths[i]] = 1
            if self.vocab_size and (ids.min() < 0 or ids.max() >= self.vocab_size):
                raise JinalocError(f"token id outside the vocabulary (0..{self.vocab_size - 1})")
            logits = self.session.run(["logits"], {"input_ids": ids, "attention_mask": mask})[0]
            z = logits.astype(np.float64)
            out[batch] = 1.0 / (1.0 + np.exp(z[:, 1] - z[:, 0]))  # softmax([yes, no])[yes]
            if progress:
                progress(len(batch), sum(lengths[i] for i in batch))
        return out

    def close(self) -> None:
        self.session = None
