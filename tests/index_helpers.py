"""Helpers for the index tests: a model-free embedder and a generated notes folder."""

from __future__ import annotations

import hashlib
import random
import re
from pathlib import Path
from types import SimpleNamespace

import numpy as np
from conftest import model_dir

from jinaloc.embedder import Embedding
from jinaloc.vectors import check_dim, matryoshka

WORD = re.compile(r"\w+|[^\w\s]")


class FakeEmbedder:
    """Same interface as jinaloc's Embedder: one word-hashed vector per token, summed, so
    texts sharing words are close. Counts its calls and embedded texts."""

    def __init__(self, name: str = "fake-model", hidden: int = 64, max_tokens: int = 512):
        self.spec = SimpleNamespace(name=name, matryoshka_dims=[], prompts={})
        self.backend = SimpleNamespace(name="fake")
        self.hidden_size = hidden
        self.max_tokens = max_tokens
        self.embedded: list[str] = []

    def check_dim(self, dim):
        return check_dim(dim, self.hidden_size, None)

    def count_tokens(self, texts, prompt="document"):
        return [len(WORD.findall(t)) + 2 for t in texts]  # the prompt word and an EOS

    def _vector(self, text: str) -> np.ndarray:
        v = np.zeros(self.hidden_size, np.float32)
        for word in WORD.findall(text.lower()):
            seed = int.from_bytes(hashlib.sha1(word.encode()).digest()[:4], "little")
            v += np.random.default_rng(seed).standard_normal(self.hidden_size).astype(np.float32)
        return v if v.any() else np.ones(self.hidden_size, np.float32)

    def embed_with_counts(
        self, texts, task="retrieval", prompt="document", dim=None, batch_size=32, progress=None
    ):
        texts = list(texts)
        self.embedded += texts
        raw = (
            np.stack([self._vector(t) for t in texts]) if texts else np.zeros((0, self.hidden_size))
        )
        counts = self.count_tokens(texts)
        if progress:
            progress(len(texts), sum(counts))
        return Embedding(matryoshka(raw, self.check_dim(dim)), counts)

    def embed(
        self, texts, task="retrieval", prompt="document", dim=None, batch_size=32, progress=None
    ):
        return self.embed_with_counts(texts, task, prompt, dim, batch_size, progress).vectors


TOPICS = {
    "cooking": "pasta sauce tomato basil garlic oven bread flour yeast dough salt",
    "travel": "train ticket airport hotel passport luggage map museum beach city",
    "finance": "budget invoice tax salary savings bank account expenses receipt loan",
    "garden": "seeds soil compost tomato plants watering roses pruning weeds spring",
    "coding": "python function tests bug commit branch compiler loop variable class",
}


def make_notes(
    folder: Path, n: int, seed: int = 0, paragraphs: int = 3, words: int = 30
) -> list[Path]:
    """`n` small markdown notes, each about one topic, with headings and a list."""
    rng = random.Random(seed)
    names = list(TOPICS)
    paths = []
    for i in range(n):
        topic = names[i % len(names)]
        vocab = TOPICS[topic].split()
        sub = folder / topic
        sub.mkdir(parents=True, exist_ok=True)
        body = [f"# {topic.title()} note {i}", ""]
        for p in range(paragraphs):
            body += [f"## Part {p}", "", " ".join(rng.choice(vocab) for _ in range(words)), ""]
        body += [f"- {rng.choice(vocab)} item" for _ in range(3)]
        path = sub / f"note-{i:04d}.md"
        path.write_text("\n".join(body) + "\n", encoding="utf-8")
        paths.append(path)
    return paths


def nano_embedder():
    """The tiny nano fixture on the GGUF backend, F32 (exact)."""
    from jinaloc.embedder import load_embedder

    return load_embedder(str(model_dir("nano")), backend="gguf", quant="F32", offline=True)


def have_gguf() -> bool:
    try:
        import llama_cpp  # noqa: F401

        import jinaloc.backends.gguf  # noqa: F401
    except ImportError:
        return False
    return True
