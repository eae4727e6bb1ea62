"""Bringing an index up to date with the files under some roots.

A run walks the roots, compares each file with the index (size and mtime first, then the
content hash), moves renamed files without re-embedding (same hash, new path), removes
deleted ones, then chunks, embeds and writes new and changed files a few at a time. Each
file is written in its own transaction: an interrupted run keeps every finished file, and
the next run starts where it stopped. Chunks whose embedded text is already in the index
(copied files, unchanged sections of an edited file) reuse the stored vector."""

from __future__ import annotations

import hashlib
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import __version__
from .chunking import Document, TokenCounter, chunk_text, embed_text
from .errors import JinalocError
from .files import DEFAULT_MAX_SIZE, Candidate, Skipped, Unreadable, Walker, decode_text, read_bytes
from .store import FileRecord, NewChunk, Store
from .vectors import l2_normalize

TASK = "retrieval"
# Index dim when none is given (clamped to the model's width); see README "Defaults".
DEFAULT_DIM = 512
DEFAULT_CHUNK_TOKENS = 512
# Layout of embed_text(); a new layout needs a re-index.
CHUNK_FORMAT = "1"
# Chunks embedded per step (then their files are written): one batch of the embedder, so an
# interrupted run loses at most one forward pass of work.
STEP_CHUNKS = 32
# Tokens kept free for the title/heading prefix under the model's maximum.
PREFIX_RESERVE = 32


@dataclass
class WalkOptions:
    include: list[str] = field(default_factory=list)
    exclude: list[str] = field(default_factory=list)
    max_size: int = DEFAULT_MAX_SIZE

    def walker(self) -> Walker:
        return Walker(self.include, self.exclude, self.max_size)


@dataclass
class Work:
    """A file to (re-)embed, or the new place of a renamed file."""

    candidate: Candidate
    hash: str
    record: FileRecord | None  # the indexed version at this path, if any
    max_size: int


@dataclass
class Plan:
    unchanged: int = 0
    touched: list[tuple[FileRecord, Candidate]] = field(default_factory=list)
    new: list[Work] = field(default_factory=list)
    changed: list[Work] = field(default_factory=list)
    renamed: list[tuple[FileRecord, Work]] = field(default_factory=list)
    removed: list[FileRecord] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)


@dataclass
class Report:
    added: int = 0
    updated: int = 0
    unchanged: int = 0
    removed: int = 0
    renamed: list[tuple[str, str]] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    chunks_embedded: int = 0
    chunks_reused: int = 0
    tokens: int = 0
    seconds: float = 0.0
    interrupted: bool = False

    def to_json(self) -> dict:
        return {
            "added": self.added,
            "updated": self.updated,
            "unchanged": self.unchanged,
            "removed": self.removed,
            "renamed": len(self.renamed),
            "skipped": len(self.skipped),
            "renamed_files": [{"from": a, "to": b} for a, b in self.renamed],
            "skipped_files": [{"path": p, "reason": r} for p, r in self.skipped],
            "chunks_embedded": self.chunks_embedded,
            "chunks_reused": self.chunks_reused,
            "tokens": self.tokens,
            "seconds": round(self.seconds, 3),
            "interrupted": self.interrupted,
        }


class Progress:
    """What a run reports as it goes; the CLI draws it, the default ignores it."""

    def start(self, files: int) -> None:
        """`files` new or changed files are about to be embedded."""

    def embedded(self, texts: int, tokens: int) -> None:
        """One forward pass finished."""

    def file_done(self, chunks: int) -> None:
        """One file was written to the index."""


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def model_ref(model: str | None) -> str | None:
    """How to load the model again later: a folder as an absolute path, a name as is."""
    if model and Path(model).expanduser().is_dir():
        return str(Path(model).expanduser().resolve())
    return model


def reindex_hint(db: Path) -> str:
    return (
        f"re-index with `jinaloc index --reindex --db {db} [--model M] [--dim N]`,"
        " or use a new --db"
    )


def check_compatible(meta: dict, db: Path, model: str | None, dim: int | None) -> None:
    """Refuse another model or dim than the index was built with (another backend is fine)."""
    if not meta.get("model"):
        return
    if model is not None:
        from .registry import resolve

        name = resolve(model).name
        if name != meta["model"]:
            raise JinalocError(
                f"{db} was indexed with model {meta['model']}, not {name}: search it with"
                f" --model {meta['model_ref']} (or no --model), or {reindex_hint(db)}"
            )
    if dim is not None and dim != int(meta["dim"]):
        raise JinalocError(
            f"{db} was indexed at dim {meta['dim']}, not {dim}: leave --dim out, or"
            f" {reindex_hint(db)}"
        )


def quant_name(embedder, quant: str | None) -> str:
    """The quantization an index is built with, for its meta record."""
    if quant:
        return quant
    if embedder.backend.name == "gguf":
        from .backends import pick_gguf_quant

        return pick_gguf_quant(embedder.spec, TASK, None)
    return "default"


def token_counter(embedder) -> tuple[TokenCounter, int]:
    """Raw token counts with the model's tokenizer, and the tokens the prompt and special
    tokens add to every text."""
    overhead = embedder.count_tokens([""], "document")[0]

    def count(texts: Sequence[str]) -> list[int]:
        if not texts:
            return []
        return [max(n - overhead, 0) for n in embedder.count_tokens(list(texts), "document")]

    return count, overhead


class Indexer:
    """Updates one store with one model. `load` returns the Embedder, called only when
    something must be embedded (or the index is new)."""

    def __init__(
        self,
        store: Store,
        load: Callable[[], object],
        model: str | None = None,
        dim: int | None = None,
        chunk_tokens: int | None = None,
        progress: Progress | None = None,
        quant: str | None = None,
    ):
        self.store = store
        self._load = load
        self._embedder = None
        self.progress = progress or Progress()
        self.report = Report()
        meta = store.meta()
        check_compatible(meta, store.path, model, dim)
        if meta.get("chunk_tokens") and chunk_tokens and chunk_tokens != int(meta["chunk_tokens"]):
            raise JinalocError(
                f"{store.path} was chunked at {meta['chunk_tokens']} tokens, not {chunk_tokens}:"
                f" leave --chunk-tokens out, or {reindex_hint(store.path)}"
            )
        if meta.get("chunk_format", CHUNK_FORMAT) != CHUNK_FORMAT:
            raise JinalocError(
                f"{store.path} was written by another jinaloc version: {reindex_hint(store.path)}"
            )
        self.model = model
        self.quant = quant
        self.dim = int(meta["dim"]) if meta.get("dim") else dim
        self.chunk_tokens = int(meta.get("chunk_tokens") or chunk_tokens or DEFAULT_CHUNK_TOKENS)
        self._count: TokenCounter | None = None
        self._budget = 0

    def embedder(self):
        """The Embedder, loaded on first use."""
        if self._embedder is None:
            self._embedder = self._load()
            self._setup()
        return self._embedder

    def _setup(self) -> None:
        e = self._embedder
        meta = self.store.meta()
        if meta.get("model") and e.spec.name != meta["model"]:
            raise JinalocError(
                f"{self.store.path} was indexed with model {meta['model']}, not {e.spec.name}:"
                f" {reindex_hint(self.store.path)}"
            )
        self.dim = e.check_dim(self.dim or min(DEFAULT_DIM, e.hidden_size))
        if not meta.get("model"):
            self.store.set_meta(
                {
                    "model": e.spec.name,
                    "model_ref": model_ref(self.model) or e.spec.name,
                    "backend": e.backend.name,
                    "quant": quant_name(e, self.quant),
                    "task": TASK,
                    "prompt": "document",
                    "dim": self.dim,
                    "bit_order": "lsb-first",  # vectors.pack_bits, as sqlite-vec packs bit[N]
                    "chunk_tokens": self.chunk_tokens,
                    "chunk_format": CHUNK_FORMAT,
                    "created_by": f"jinaloc {__version__}",
                }
            )
        self._count, overhead = token_counter(e)
        self._budget = max(8, min(self.chunk_tokens, e.max_tokens - overhead - PREFIX_RESERVE))

    def file_vector(self, path: Path) -> np.ndarray:
        """One vector for a file outside the index: its chunks embedded and averaged."""
        try:
            text = decode_text(read_bytes(path.expanduser(), DEFAULT_MAX_SIZE))
        except Unreadable as e:
            raise JinalocError(f"{path}: {e}") from None
        embedder = self.embedder()
        doc = chunk_text(text, path.name, self._count, self._budget)
        texts = [embed_text(doc.title, c.heading, c.text) for c in doc.chunks]
        vectors = embedder.embed(texts, task=TASK, prompt="document", dim=self.dim)
        return l2_normalize(vectors.mean(axis=0))

    # planning: what changed, without writing anything

    def plan(self, roots: Sequence[tuple[Path, WalkOptions]]) -> Plan:
        plan = Plan()
        known: dict[str, FileRecord] = {}
        present: dict[str, tuple[Candidate, int]] = {}
        db = str(self.store.path.resolve())
        own = {db + suffix for suffix in ("", "-wal", "-shm", "-journal")}
        for root, options in roots:
            resolved = str(Path(root).expanduser().resolve())
            known.update(self.store.files_under(resolved))
            record = self.store.file(resolved)  # a file given as a root
            if record:
                known[record.path] = record
            for item in options.walker().walk(Path(root)):
                if str(item.path) in own:
                    continue
                if isinstance(item, Skipped):
                    plan.skipped.append((str(item.path), item.reason))
                else:
                    present.setdefault(str(item.path), (item, options.max_size))
        readable: set[str] = set()
        for path, (cand, max_size) in present.items():
            record = known.get(path)
            if record and (record.size, record.mtime_ns) == (cand.size, cand.mtime_ns):
                plan.unchanged += 1
                readable.add(path)
                continue
            try:
                data = read_bytes(cand.path, max_size)
                decode_text(data)
            except Unreadable as e:
                plan.skipped.append((path, str(e)))
                continue
            readable.add(path)
            work = Work(cand, sha256(data), record, max_size)
            if record is None:
                plan.new.append(work)
            elif record.hash == work.hash:
                plan.unchanged += 1
                plan.touched.append((record, cand))
            else:
                plan.changed.append(work)
        gone = {p: r for p, r in known.items() if p not in readable}
        by_hash: dict[str, list[FileRecord]] = defaultdict(list)
        for record in gone.values():
            by_hash[record.hash].append(record)
        for work in list(plan.new):
            if by_hash[work.hash]:
                old = by_hash[work.hash].pop()
                plan.renamed.append((old, work))
                plan.new.remove(work)
                del gone[old.path]
        plan.removed = list(gone.values())
        return plan

    # applying a plan

    def run(self, roots: Sequence[tuple[Path, WalkOptions]]) -> Report:
        """Index `roots` (each with its walk options). On KeyboardInterrupt the report so
        far stays in `self.report` and the index keeps every finished file."""
        start = time.monotonic()
        report = self.report
        try:
            plan = self.plan(roots)  # before any model is loaded: a bad root fails fast
            for root, options in roots:
                self.store.set_root(str(Path(root).expanduser().resolve()), options.__dict__)
            report.skipped = plan.skipped
            report.unchanged = plan.unchanged
            for record, cand in plan.touched:
                self.store.touch_file(record.id, cand.size, cand.mtime_ns)
            for old, work in plan.renamed:
                c = work.candidate
                self.store.move_file(old.id, str(c.path), str(c.root), c.rel, c.size, c.mtime_ns)
                report.renamed.append((old.path, str(c.path)))
            for record in plan.removed:
                self.store.remove_file(record.id)
                report.removed += 1
            self._embed_all([*plan.changed, *plan.new])
        finally:
            report.seconds = time.monotonic() - start
        return report

    def _embed_all(self, todo: list[Work]) -> None:
        if not todo:
            return
        self.progress.start(len(todo))
        pending: list[tuple[Work, Document]] = []
        for work in todo:
            doc = self._read(work)
            if doc is None:
                self.progress.file_done(0)
                continue
            pending.append((work, doc))
            if sum(len(d.chunks) for _, d in pending) >= STEP_CHUNKS:
                self._write(pending)
                pending = []
        self._write(pending)

    def _read(self, work: Work) -> Document | None:
        """Chunk a file as it is now (it may have changed since planning)."""
        cand = work.candidate
        try:
            data = read_bytes(cand.path, work.max_size)
            text = decode_text(data)
        except Unreadable as e:
            self.report.skipped.append((str(cand.path), str(e)))
            return None
        self.embedder()  # the token counter comes with the model
        doc = chunk_text(text, cand.rel, self._count, self._budget)
        if not doc.chunks:
            self.report.skipped.append((str(cand.path), "no text to index"))
            return None
        work.hash = sha256(data)
        return doc

    def _write(self, pending: list[tuple[Work, Document]]) -> None:
        if not pending:
            return
        texts = {}
        for _, doc in pending:
            for c in doc.chunks:
                text = embed_text(doc.title, c.heading, c.text)
                texts[sha256(text.encode())] = text
        vectors = self.store.vectors_for_hashes(texts)
        missing = [h for h in texts if h not in vectors]
        self.report.chunks_reused += sum(len(d.chunks) for _, d in pending) - len(missing)
        if missing:
            result = self.embedder().embed_with_counts(
                [texts[h] for h in missing],
                task=TASK,
                prompt="document",
                dim=self.dim,
                progress=self.progress.embedded,
            )
            vectors.update(zip(missing, result.vectors, strict=True))
            self.report.chunks_embedded += len(missing)
            self.report.tokens += sum(result.token_counts)
        for work, doc in pending:
            chunks = []
            for c in doc.chunks:
                h = sha256(embed_text(doc.title, c.heading, c.text).encode())
                vector = np.asarray(vectors[h], dtype=np.float32)
                chunks.append(
                    NewChunk(c.start_line, c.end_line, c.heading, c.text, c.tokens, h, vector)
                )
            cand = work.candidate
            self.store.write_file(
                str(cand.path),
                str(cand.root),
                cand.rel,
                work.hash,
                cand.size,
                cand.mtime_ns,
                doc.title,
                chunks,
            )
            if work.record is None:
                self.report.added += 1
            else:
                self.report.updated += 1
            self.progress.file_done(len(chunks))
