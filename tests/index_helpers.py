"""Helpers for the index tests: a model-free backend and a generated notes folder."""

from __future__ import annotations

import hashlib
import random
import re
from pathlib import Path

import numpy as np
from conftest import model_dir

from jinaloc.backends.base import Backend
from jinaloc.embedder import Embedder
from jinaloc.registry import ModelSpec

WORD = re.compile(r"\w+|[^\w\s]")


VOCAB = 1 << 16
BOS, EOS = 1, 2


class HashBackend(Backend):
    """A model-free backend: each word is a token (hashed into a vocabulary), a text's
    hidden state is the sum of its words' fixed random vectors, so texts sharing words are
    close. Runs inside the real Embedder (prompts, batching, truncation, Matryoshka)."""

    name = "fake"

    def __init__(self, hidden: int = 64, max_tokens: int = 512):
        self.hidden_size = hidden
        self.max_tokens = max_tokens
        self.table = np.random.default_rng(0).standard_normal((VOCAB, hidden)).astype(np.float32)

    def tokenize(self, texts):
        ids, lengths = [], []
        for text in texts:
            words = [
                3 + int.from_bytes(hashlib.sha1(w.encode()).digest()[:4], "little") % (VOCAB - 3)
                for w in WORD.findall(text.lower())
            ]
            full = [BOS, *words, EOS]
            lengths.append(len(full))
            ids.append(
                full if len(full) <= self.max_tokens else [*full[: self.max_tokens - 1], EOS]
            )
        return ids, lengths

    def embed_tokens(self, batch, task):
        out = np.ones((len(batch), self.hidden_size), np.float32)
        for row, seq in zip(out, batch, strict=True):
            words = [t for t in seq if t not in (BOS, EOS)]
            if words:
                row[:] = self.table[words].sum(axis=0)
        return out


class FakeEmbedder(Embedder):
    """The real Embedder on the HashBackend; records (task, prompt, texts) of each call."""

    def __init__(self, name: str = "fake-model", hidden: int = 64, max_tokens: int = 512):
        spec = ModelSpec(name=name, dims=hidden, max_tokens=max_tokens, prompts={})
        super().__init__(spec, HashBackend(hidden, max_tokens))
        self.calls: list[tuple[str, str, list[str]]] = []

    @property
    def embedded(self) -> list[str]:
        return [t for _, _, texts in self.calls for t in texts]

    def embed_with_counts(self, texts, task="retrieval", prompt="document", *args, **kwargs):
        texts = list(texts)
        self.calls.append((task, prompt, texts))
        return super().embed_with_counts(texts, task, prompt, *args, **kwargs)


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
    from jinaloc.load import load_embedder

    return load_embedder(str(model_dir("nano")), backend="gguf", quant="F32", offline=True)


def have_gguf() -> bool:
    try:
        import llama_cpp  # noqa: F401

        import jinaloc.backends.gguf  # noqa: F401
    except ImportError:
        return False
    return True


def pdf_bytes(pages: list[str], image_only: bool = False) -> bytes:
    """A PDF made here with fpdf2: one page per text, or pages with only a picture."""
    from fpdf import FPDF
    from PIL import Image

    pdf = FPDF()
    pdf.set_font("helvetica", size=12)
    for text in pages:
        pdf.add_page()
        if image_only:
            pdf.image(Image.new("RGB", (60, 40), "gray"), x=10, y=10, w=60)
        else:
            pdf.multi_cell(0, 8, text)
    return bytes(pdf.output())


def docx_bytes(blocks: list[tuple[str, str]], table: list[list[str]] = ()) -> bytes:
    """A Word file made here with python-docx: (style, text) paragraphs, then a table."""
    import io

    import docx

    document = docx.Document()
    for style, text in blocks:
        document.add_paragraph(text, style=style)
    if table:
        t = document.add_table(rows=len(table), cols=len(table[0]))
        for r, row in enumerate(table):
            for c, text in enumerate(row):
                t.cell(r, c).text = text
    out = io.BytesIO()
    document.save(out)
    return out.getvalue()


def cli(*args, input=None, ok=(0,), embedder=None):
    """`jinaloc ARGS` in-process (typer's runner); an AssertionError with both streams unless
    the exit code is in `ok`. `embedder`: every model the command loads is this one (the
    CLI's test seam: no native runtime)."""
    from typer.testing import CliRunner

    from jinaloc.cli import app
    from jinaloc.cli.common import Settings

    obj = Settings(load=lambda *a, **k: embedder) if embedder is not None else None
    result = CliRunner().invoke(app, [str(a) for a in args], input=input, obj=obj)
    if result.exit_code not in ok:
        raise AssertionError(
            f"exit {result.exit_code}\nstdout: {result.stdout}\nstderr: {result.stderr}"
        ) from result.exception
    return result
