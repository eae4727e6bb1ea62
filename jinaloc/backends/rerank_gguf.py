"""A Qwen3-Reranker GGUF run by llama.cpp: P(yes) against "no" at the last token of each pair.

llama.cpp's converter turns a Qwen3-Reranker into pooling type RANK with a 2-row `cls.output`
head (the lm_head rows of "yes" and "no") and llama.cpp applies a softmax over them, so one
pooled output per pair is the score. GGUFs converted as a plain LM (no cls head) give the full
logits instead: the same softmax is taken over their "no" and "yes" columns.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import llama_cpp
import numpy as np

from ..errors import JinalocError
from .gguf import MAX_SEQS, Context, default_threads, load_model

POOLING_RANK = 4  # LLAMA_POOLING_TYPE_RANK
# Pairs share their prompt prefix (system prompt, instruction, query): it is decoded once and
# every pair continues it in the KV cache. Shorter common prefixes are not worth a decode.
MIN_SHARED = 8
# Tokens after the shared prefix packed into one decode (a pair longer than this runs alone).
# Measured by scripts/bench_rerank.py (docs/benchmarks.md).
PACK_TOKENS = 512


class GGUFReranker:
    """`mode`: "rank" (the cls head; needs a GGUF that has one), "logits" (any Qwen3 LM
    GGUF), or None for rank where the file has the head."""

    def __init__(
        self,
        path: Path,
        threads: int | None = None,
        pack_tokens: int = PACK_TOKENS,
        mode: str | None = None,
    ):
        self.path = Path(path)
        self.model, info = load_model(self.path, vocab_only=False, architectures=("qwen3",))
        self.max_tokens = info["n_ctx_train"]
        self.n_vocab = info["n_vocab"]
        self.pack_tokens = pack_tokens
        self.yes_id, self.no_id = self._single_token("yes"), self._single_token("no")
        labels = self._cls_labels()
        # The converter's head is ["yes", "no"]; read the order rather than assume it.
        has_head = info["pooling"] == str(POOLING_RANK) and {"yes", "no"} <= set(labels)
        if mode == "rank" and not has_head:
            raise JinalocError(f"{self.path.name} has no yes/no rank head")
        self.rank = has_head if mode is None else mode == "rank"
        if self.rank:
            self.width, self.yes_col = len(labels), labels.index("yes")
        else:
            self.width = self.n_vocab
        threads = threads or default_threads()
        self.context = Context(
            self.model, threads, flash=False, pooling=POOLING_RANK if self.rank else None
        )

    @property
    def mode(self) -> str:
        return "rank" if self.rank else "logits"

    def _cls_labels(self) -> list[str]:
        n = llama_cpp.llama_model_n_cls_out(self.model.model)
        labels = []
        for i in range(n):
            label = llama_cpp.llama_model_cls_label(self.model.model, i)
            labels.append(label.decode("utf-8", "replace") if label else "")
        return labels

    def tokenize(self, text: str) -> list[int]:
        # special=True: "<|im_start|>" and the like are parsed as the HF tokenizer does.
        return self.model.tokenize(text.encode("utf-8", "replace"), add_bos=False, special=True)

    def detokenize(self, ids: list[int]) -> str:
        """Text of the tokens; a character cut in the middle is dropped."""
        return self.model.detokenize(ids, special=True).decode("utf-8", "ignore")

    def _single_token(self, word: str) -> int:
        ids = self.tokenize(word)
        if len(ids) != 1:
            raise JinalocError(f"{self.path.name}: {word!r} is not one token: not a reranker?")
        return ids[0]

    def _yes(self, out: np.ndarray) -> np.ndarray:
        if self.rank:
            return out[:, self.yes_col].astype(np.float64)
        z = out[:, [self.no_id, self.yes_id]].astype(np.float64)
        return 1.0 / (1.0 + np.exp(z[:, 0] - z[:, 1]))

    def score_tokens(
        self, seqs: list[list[int]], progress: Callable[[int, int], None] | None = None
    ) -> np.ndarray:
        """P(yes) of each full prompt (token ids), in input order."""
        if not seqs:
            return np.zeros(0)
        if min(map(len, seqs)) == 0:
            raise JinalocError("cannot score an empty token sequence")
        if max(map(len, seqs)) > self.max_tokens:
            raise JinalocError(f"a pair of {max(map(len, seqs))} tokens exceeds {self.max_tokens}")
        shared = _common_prefix(seqs)
        if shared < MIN_SHARED:
            shared = 0
        tails = [s[shared:] for s in seqs]
        packs = _packs([len(t) for t in tails], self.pack_tokens)
        ctx = self.context
        ctx.ensure(shared + max(sum(len(tails[i]) for i in p) for p in packs), self.max_tokens)
        if shared:
            ctx.share_prefix(seqs[0][:shared])
        out = np.empty(len(seqs))
        for p in packs:
            out[p] = self._yes(ctx.run([tails[i] for i in p], self.width, start=shared))
            if progress:
                progress(len(p), sum(len(tails[i]) for i in p))
        return out

    def close(self) -> None:
        self.context.close()
        self.model.close()


def _common_prefix(seqs: list[list[int]]) -> int:
    """Length of the token prefix all sequences share, leaving each at least one token."""
    first = seqs[0]
    n = min(map(len, seqs)) - 1
    for s in seqs[1:]:
        k = 0
        while k < n and s[k] == first[k]:
            k += 1
        n = k
    return max(n, 0)


def _packs(lengths: list[int], budget: int) -> list[list[int]]:
    """Indices grouped by similar length (shortest first) within the token budget."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    packs: list[list[int]] = []
    used = 0
    for i in order:
        if packs and used + lengths[i] <= budget and len(packs[-1]) < MAX_SEQS:
            packs[-1].append(i)
            used += lengths[i]
        else:
            packs.append([i])
            used = lengths[i]
    return packs
