"""What the pipeline commands read (stdin lines, JSON lines, files) and how it streams
through the model: in blocks, files read only when their block is embedded."""

from __future__ import annotations

import itertools
import json
import logging
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..chunking import embed_text, title_of
from ..errors import JinalocError
from ..inputs import STREAM_BLOCK, batched, records
from ..paths import display_path
from ..reader import read_input
from ..vectors import note_vectors

log = logging.getLogger("jinaloc")

# grep -n / grep -rn output: "path:line:text" (the path without colons).
_GREP_LINE = re.compile(r"([^\s:][^:]*):(\d+):(.*)", re.DOTALL)
TITLE_CHARS = 120


@dataclass
class Item:
    """One input: `text` is embedded, `out` is printed back as it came in."""

    out: str
    text: str | None = None  # None for files until their block is read
    path: str | None = None
    line: int | None = None
    id: Any = None
    has_id: bool = False
    title: str | None = None

    def describe(self) -> dict:
        """The item's identity for JSON output (its text only where it is short input)."""
        row: dict[str, Any] = {}
        if self.has_id:
            row["id"] = self.id
        if self.path is not None:
            row["path"] = self.path
        if self.line is not None:
            row["line"] = self.line
        if self.line is not None or self.path is None:
            row["text"] = self.text
        return row


def split_grep_prefix(line: str) -> tuple[str, int, str] | None:
    """(path, line number, text) of a `grep -n`-style line, else None."""
    m = _GREP_LINE.fullmatch(line)
    return (m.group(1), int(m.group(2)), m.group(3)) if m else None


def line_items(lines: Iterable[str], fmt: str = "auto", grep_prefix: bool = True) -> Iterator[Item]:
    """Items from stdin lines: plain (a grep prefix is kept for output, not embedded) or
    JSON lines {"id", "text"}, which are printed back as JSON."""
    for rec in records(lines, fmt):
        parsed = split_grep_prefix(rec.text) if grep_prefix and not rec.has_id else None
        if parsed:
            path, lineno, text = parsed
            yield Item(
                out=rec.text, text=text, path=path, line=lineno, title=text.strip()[:TITLE_CHARS]
            )
        elif rec.has_id:
            out = json.dumps({"id": rec.id, "text": rec.text}, ensure_ascii=False)
            yield Item(
                out=out, text=rec.text, id=rec.id, has_id=True, title=rec.text.strip()[:TITLE_CHARS]
            )
        else:
            yield Item(out=rec.text, text=rec.text, title=rec.text.strip()[:TITLE_CHARS])


def path_items(paths: Iterable[str | Path]) -> Iterator[Item]:
    """Items for files, read later by `embed_blocks`; blank lines (from find, say) skipped."""
    for p in paths:
        p = str(p).rstrip("\r\n")
        if "\0" in p:
            raise JinalocError("file names on stdin hold NUL bytes: pass -0 (for find -print0)")
        if p.strip():
            yield Item(out=p, path=p)


def _load(block: list[Item], read: Callable[[Path], str]) -> list[Item]:
    """The block with file texts read in; unreadable files warned about and dropped."""
    kept = []
    for item in block:
        if item.text is None:
            try:
                item.text = read(Path(item.path))
            except JinalocError as e:
                log.warning("skipped %s", e)
                continue
            item.title = title_of(item.text, item.path)[:TITLE_CHARS]
        kept.append(item)
    return kept


def embed_blocks(
    items: Iterable[Item],
    embed: Callable[[list[str]], np.ndarray],
    read: Callable[[Path], str] = read_input,
    block: int = STREAM_BLOCK,
) -> Iterator[tuple[list[Item], np.ndarray]]:
    """(items, their vectors) one block at a time. File contents are dropped once embedded,
    so memory holds one block of texts however many files stream through."""
    for chunk in batched(items, block):
        chunk = _load(chunk, read)
        if not chunk:
            continue
        vectors = embed([item.text for item in chunk])
        for item in chunk:
            if item.path is not None and item.line is None:
                item.text = None
        yield chunk, vectors


def note_blocks(
    documents: Iterable[Any],
    embed: Callable[[list[str]], np.ndarray] | None,
    block: int = STREAM_BLOCK,
) -> Iterator[tuple[list[Item], np.ndarray]]:
    """(items, vectors) for the notes of an index (`Store.iter_documents()`).

    A note's vector is the normalized mean of its chunks' vectors, as `jinaloc similar` uses:
    long notes count whole, not cut at the model's context. Chunks are re-embedded with
    `embed` as the index embeds them (title and heading path first); `embed=None` takes the
    stored vectors instead (retrieval adapter, no model needed)."""
    for docs in batched((d for d in documents if d.texts), block):
        if embed is None:
            vectors = np.concatenate([d.vectors for d in docs])
        else:
            vectors = embed(
                [
                    embed_text(d.title, heading, text, d.aliases, d.path)
                    for d in docs
                    for heading, text in zip(d.headings, d.texts, strict=True)
                ]
            )
        pooled = note_vectors(vectors, [len(d.texts) for d in docs])
        shown = [display_path(d.path) for d in docs]  # as `search` shows paths
        yield [Item(out=p, path=p, title=d.title) for p, d in zip(shown, docs, strict=True)], pooled


def nonempty(items: Iterable[Item], what: str = "stdin") -> Iterator[Item]:
    """`items`, or a one-line error now (before loading a model) when there are none."""
    it = iter(items)
    first = next(it, None)
    if first is None:
        raise JinalocError(f"no input: {what} is empty")
    return itertools.chain([first], it)
