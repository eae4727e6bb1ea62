"""Applying an update plan to an index: chunk, embed and write new and changed files.

Renamed files are moved without re-embedding, deleted ones removed, then new and changed
files are chunked, embedded and written a few at a time. Each file is written in its own
transaction: an interrupted run keeps every finished file, and the next run starts where it
stopped. Chunks whose embedded text is already in the index (copied files, unchanged
sections of an edited file) reuse the stored vector."""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..chunking import Document, DocumentChunker, meta_of
from ..errors import EmbedFailed
from ..reader import Unreadable, extract_text, read_bytes
from ..walk import Candidate
from .meta import IndexMeta
from .plan import Roots, Scope, Work, plan_update, sha256
from .store import FileRecord, NewChunk, NoteMeta, Store

if TYPE_CHECKING:
    from ..embedder import Embeds

# settle() -> (the index's meta, written first for a new index; the model that embeds)
Settle = Callable[[], tuple[IndexMeta, "Embeds"]]

# Chunks embedded per step (then their files are written): an interrupted run loses at most
# one step of work. The embedder sorts a step's texts by length into its passes, so a bigger
# step pads less: on 1,874 real notes (jbranchaud/til, 4,074 chunks) passes of 32 padded to
# their longest computed 25% more tokens than real in steps of 32 chunks in file order, 11%
# in steps of 128, 6.5% in steps of 256 (docs/benchmarks.md "Indexing at the engine's rate").
STEP_CHUNKS = 128
# With a server backend (requests in flight), a step is a few requests and its files fail
# together when one fails: small steps keep the rest (the server sorts its own batches).
SERVER_STEP_CHUNKS = 32
# Characters of planned texts a run keeps from planning to writing, so that each file is
# read, hashed and extracted once; past it, files are read again when written.
KEEP_CHARS = 64 << 20
# A run that wrote at least CROWD_MIN_FILES files names its biggest files (the top
# CROWD_FILES of them, at least one) when they hold CROWD_SHARE of its chunks or more:
# tables and link lists (translation tables, lists of hundreds of links) that would fill
# results, for the user to keep out with .jinalocignore. In notes, chunk counts follow note
# length; 1% of the files holding a quarter of the chunks means files ~30x the others.
CROWD_MIN_FILES = 50
CROWD_FILES = 0.01
CROWD_SHARE = 0.25


@dataclass
class Report:
    added: int = 0
    updated: int = 0
    unchanged: int = 0
    removed: int = 0
    reread: int = 0  # unchanged files read again for their tags and date (no embedding)
    renamed: list[tuple[str, str]] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    # Of the skipped: unreadable in an earlier run and unchanged since (not read again).
    known_skips: set[str] = field(default_factory=set)
    left_out: dict[str, int] = field(default_factory=dict)  # files not of a selected type
    chunks_embedded: int = 0
    chunks_reused: int = 0
    tokens: int = 0
    # Chunks cut to the model's limit: (path, tokens before the cut); reported once a run.
    truncated: list[tuple[str, int]] = field(default_factory=list)
    token_limit: int | None = None
    seconds: float = 0.0
    interrupted: bool = False
    # A re-dim done first: {"from", "to", "blocks", "seconds"} (no model, nothing embedded).
    redim: dict | None = None
    # Files not written because the embeddings server failed them: (path, why). The next
    # run embeds them again.
    failed: list[tuple[str, str]] = field(default_factory=list)
    # Chunks written per file (by path), for crowding().
    file_chunks: dict[str, int] = field(default_factory=dict)

    def crowding(self) -> list[tuple[str, int]]:
        """The few files holding a large share of the chunks this run wrote, biggest first
        (see CROWD_SHARE); none when the run wrote fewer than CROWD_MIN_FILES files."""
        if len(self.file_chunks) < CROWD_MIN_FILES:
            return []
        top = sorted(self.file_chunks.items(), key=lambda item: -item[1])
        top = top[: math.ceil(len(top) * CROWD_FILES)]
        total = sum(self.file_chunks.values())
        return top if sum(n for _, n in top) >= CROWD_SHARE * total else []

    def to_json(self) -> dict:
        return {
            "added": self.added,
            "updated": self.updated,
            "unchanged": self.unchanged,
            "removed": self.removed,
            "renamed": len(self.renamed),
            "reread": self.reread,
            "skipped": len(self.skipped),
            "skipped_before": len(self.known_skips),
            "renamed_files": [{"from": a, "to": b} for a, b in self.renamed],
            "skipped_files": [{"path": p, "reason": r} for p, r in self.skipped],
            "left_out": sum(self.left_out.values()),
            "left_out_by_type": self.left_out,
            "chunks_embedded": self.chunks_embedded,
            "chunks_reused": self.chunks_reused,
            "tokens": self.tokens,
            "truncated": len(self.truncated),
            "truncated_longest": max((n for _, n in self.truncated), default=None),
            "truncated_files": [{"path": p, "tokens": n} for p, n in self.truncated],
            "token_limit": self.token_limit,
            "seconds": round(self.seconds, 3),
            "interrupted": self.interrupted,
            "redim": self.redim,
            "failed": len(self.failed),
            "failed_files": [{"path": p, "reason": r} for p, r in self.failed],
            "crowding_files": [{"path": p, "chunks": n} for p, n in self.crowding()],
        }


class Progress:
    """What a run reports as it goes; the CLI draws it, the default ignores it."""

    def start(self, files: int) -> None:
        """`files` new or changed files are about to be embedded."""

    def embedded(self, texts: int, tokens: int) -> None:
        """One forward pass finished."""

    def file_done(self, chunks: int) -> None:
        """One file was written to the index."""


class Writer:
    """Applies plans to one store. `settle` is called once something must be embedded: it
    loads the model (and writes the meta of a new index)."""

    def __init__(
        self,
        store: Store,
        settle: Settle,
        progress: Progress | None = None,
        report: Report | None = None,
    ):
        self.store = store
        self.settle = settle
        self.embedder: Embeds | None = None
        self.embed_dim: int | None = None  # of the vectors chunks keep, once settled
        self.progress = progress or Progress()
        self.report = report or Report()
        self._chunker: DocumentChunker | None = None
        # Hashes of texts a step in flight embeds: a later step waits for its vectors.
        self._claimed: set[str] = set()

    def chunker(self) -> DocumentChunker:
        if self._chunker is None:
            meta, self.embedder = self.settle()
            self.embed_dim = meta.kept_dim  # chunks keep the whole vector; the store slices it
            self._chunker = DocumentChunker(self.embedder, meta.chunk_tokens)
        return self._chunker

    def run(self, roots: Roots, scope: Scope | None = None) -> Report:
        """Index `roots` (each with its walk options; only the paths in `scope` of those it
        names). On KeyboardInterrupt the report so far stays in `self.report` and the index
        keeps every finished file."""
        start = time.monotonic()
        report = self.report
        try:
            # Planned before any model loads: bad roots fail fast.
            plan = plan_update(self.store, roots, scope, keep=KEEP_CHARS)
            report.skipped = plan.skipped
            report.known_skips = plan.known_skips
            if plan.new_skips or plan.cleared_skips:
                self.store.set_skips(plan.new_skips, plan.cleared_skips)
            report.left_out = plan.left_out_by_type()
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
            for record, cand in plan.reread:
                self._reread(record, cand)
            self._embed_all([*plan.changed, *plan.new])
        except KeyboardInterrupt:
            self._save_roots(roots)  # so the next run resumes them
            raise
        finally:
            report.seconds = time.monotonic() - start
        # Not saved when the run failed (no model, say): a root is indexed or not at all.
        self._save_roots(roots)
        return report

    def _save_roots(self, roots: Roots) -> None:
        for root, options in roots:
            self.store.set_root(str(Path(root).expanduser().resolve()), options.__dict__)

    def _embed_all(self, todo: list[Work]) -> None:
        """Read, embed and write `todo` a step at a time; with a server backend, up to its
        `in_flight` steps are embedded while the next files are read and finished ones
        written (in order). A server that keeps failing stops the run: the files not written
        are reported in `report.failed`."""
        if not todo:
            return
        self.progress.start(len(todo))
        steps: deque[_Step] = deque()
        pending: list[_File] = []
        stopped = None
        for n, work in enumerate(todo):
            if stopped is None and steps and steps[0].future.done():
                stopped = self._finish(steps.popleft())
            if stopped is not None:
                left = [f.work for f in pending] + todo[n:]
                self.report.failed += [(str(w.candidate.path), stopped) for w in left]
                break
            file = self._read(work)
            if file is None:
                self.progress.file_done(0)
                continue
            pending.append(file)
            if sum(len(f.hashes) for f in pending) >= self._step_chunks():
                steps.append(self._start(pending))
                pending = []
                while len(steps) >= self._depth() and stopped is None:
                    stopped = self._finish(steps.popleft())
        else:
            if pending:
                steps.append(self._start(pending))
        while steps:
            self._finish(steps.popleft())

    def _step_chunks(self) -> int:
        return STEP_CHUNKS if self.embedder.in_flight == 1 else SERVER_STEP_CHUNKS

    def _depth(self) -> int:
        """Steps outstanding at most: one for a local model (written as soon as embedded);
        for a server, twice its requests in flight, so that none waits for the next."""
        n = self.embedder.in_flight
        return 1 if n == 1 else 2 * n

    def _read(self, work: Work) -> _File | None:
        """Chunk a file: its text as planned, else as it is now (read again only when the
        plan did not keep it), with each embedded text and its hash."""
        cand = work.candidate
        extracted, work.content = work.content, None
        if extracted is None:
            try:
                data = read_bytes(cand.path, work.max_size)
                extracted = extract_text(data, cand.rel)
            except Unreadable as e:
                self.report.skipped.append((str(cand.path), str(e)))
                return None
            work.hash = sha256(data)
        doc = self.chunker().chunk(extracted.text, cand.rel, extracted.pages or ())
        for c in doc.chunks:
            c.page = extracted.page_of(c.start_line)
        if not doc.chunks:
            self.report.skipped.append((str(cand.path), "no text to index"))
            return None
        texts = doc.embed_texts()
        return _File(work, doc, texts, [sha256(t.encode()) for t in texts])

    def _reread(self, record: FileRecord, cand: Candidate) -> None:
        """Record the tags and date of a file indexed before they were kept: read from its
        text, without a model; its chunks and vectors stay."""
        try:
            data = read_bytes(cand.path, cand.size)
            text = extract_text(data, cand.rel).text
        except Unreadable:
            return  # the next run sees what became of it
        if sha256(data) != record.hash:
            return
        meta = meta_of(text, cand.rel)
        self.store.set_file_meta(
            record.id, NoteMeta(meta.tags, meta.aliases, meta.date), cand.mtime_ns
        )
        self.report.reread += 1

    def _start(self, pending: list[_File]) -> _Step:
        """The step's texts not in the index (nor embedded by a step in flight), sent."""
        step = _Step(pending)
        for f in pending:
            for text, h in zip(f.texts, f.hashes, strict=True):
                step.texts[h] = text
                step.owner.setdefault(h, str(f.work.candidate.path))
        step.vectors = self.store.vectors_for_hashes(step.texts)
        step.missing = [h for h in step.texts if h not in step.vectors and h not in self._claimed]
        self._claimed.update(step.missing)
        self.report.chunks_reused += sum(len(f.hashes) for f in pending) - len(step.missing)
        step.future = self.embedder.embed_later(
            [step.texts[h] for h in step.missing],
            task="retrieval",
            prompt="document",
            dim=self.embed_dim,
            truncated=step.truncated,
            progress=self.progress.embedded,
        )
        return step

    def _finish(self, step: _Step) -> str | None:
        """Write the step's files once its vectors are in; on failure, report its files and
        return why when the server failed for good (None: go on)."""
        self._claimed.difference_update(step.missing)
        try:
            result = step.future.result()
        except EmbedFailed as e:
            why = e.message
            self.report.failed += [(str(f.work.candidate.path), why) for f in step.pending]
            for _ in step.pending:
                self.progress.file_done(0)
            return why if e.transient else None
        self.report.truncated += [(step.owner[step.missing[i]], n) for i, n in step.truncated]
        self.report.token_limit = self.embedder.max_tokens
        vectors = step.vectors
        vectors.update(zip(step.missing, result.vectors, strict=True))
        self.report.chunks_embedded += len(step.missing)
        self.report.tokens += sum(result.token_counts)
        # Texts an earlier step embedded are in the index now (or that step failed).
        rest = [h for h in step.texts if h not in vectors]
        if rest:
            vectors.update(self.store.vectors_for_hashes({h: step.texts[h] for h in rest}))
        for f in step.pending:
            work, doc, hashes = f.work, f.doc, f.hashes
            if any(h not in vectors for h in hashes):
                self.report.failed.append((str(work.candidate.path), "a text it shares failed"))
                self.progress.file_done(0)
                continue
            chunks = []
            for c, h in zip(doc.chunks, hashes, strict=True):
                vector = np.asarray(vectors[h], dtype=np.float32)
                chunks.append(
                    NewChunk(
                        c.start_line, c.end_line, c.heading, c.text, c.tokens, h, vector, c.page
                    )
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
                NoteMeta(doc.tags, doc.aliases, doc.date),
            )
            self.report.file_chunks[str(cand.path)] = len(chunks)
            if work.record is None:
                self.report.added += 1
            else:
                self.report.updated += 1
            self.progress.file_done(len(chunks))
        return None


@dataclass
class _File:
    """A file read and chunked: its embedded texts and their sha256, built once."""

    work: Work
    doc: Document
    texts: list[str]
    hashes: list[str]


@dataclass
class _Step:
    """Files whose texts are embedded together, then written."""

    pending: list[_File]
    texts: dict[str, str] = field(default_factory=dict)  # sha256 -> embedded text
    owner: dict[str, str] = field(default_factory=dict)  # sha256 -> path (for truncation)
    vectors: dict = field(default_factory=dict)  # already in the index
    missing: list[str] = field(default_factory=list)  # sent to the embedder
    truncated: list[tuple[int, int]] = field(default_factory=list)
    future: Future | None = None
