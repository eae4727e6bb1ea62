"""One index session: the store, what its vectors mean, the model that serves it, and every
rule about which requests it can serve.

Commands and the Python API open an `Index`, say which model they would like (`use_model`:
the index's own unless asked otherwise), and then plan, update, search or read it. The model
loads on first use, so planning, status and stored-vector reads never need one."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from .. import __version__
from ..errors import IndexCorrupt, JinalocError
from ..paths import default_db
from ..reader import read_input
from ..walk import WalkOptions, inside
from .meta import DEFAULT_CHUNK_TOKENS, DEFAULT_DIM, TASK, IndexMeta, Meta, model_ref
from .options import SearchOptions, given
from .plan import Plan, Roots, Scope, plan_update
from .store import MAX_K, SCHEMA_VERSION, IndexedDocument, Store, new_file, writer_lock

if TYPE_CHECKING:
    import numpy as np

    from ..embedder import Embeds
    from .eval import Query, Result
    from .health import Problem
    from .search import Hit
    from .write import Progress, Report

# Files up to this size get SQLite's quick check of every page before an update or a status;
# bigger ones of the tables those read (measured: 1.5 s for a 479 MB, 100k-chunk file).
VERIFY_ALL_BYTES = 64 << 20
SMALL_TABLES = ("meta", "roots", "files")

# loader(model, backend, quant, offline, task) -> an embedder
Loader = Callable[..., "Embeds"]


def _default_loader(model, backend, quant, offline, task):
    from ..load import load_embedder

    return load_embedder(model, backend=backend, quant=quant, offline=offline, task=task)


class Index:
    """An open index file. `loader` loads the embedder (the CLI's shows a spinner)."""

    def __init__(self, store: Store, loader: Loader | None = None):
        self.store = store
        self.path = store.path
        self._meta = Meta(store)
        self._loader = loader or _default_loader
        self._embedder: Embeds | None = None
        self._owns_model = True
        self._choice: tuple = (None, "auto", None, False)

    @property
    def meta(self) -> IndexMeta | None:
        """What the vectors mean (None: nothing indexed yet), as the file says now: a
        long-lived session (serve, mcp, watch) follows a re-dim made by another process."""
        return self._meta.value

    @classmethod
    def open(
        cls,
        path: Path | str | None = None,
        *,
        create: bool = False,
        readonly: bool = False,
        loader: Loader | None = None,
        cache_mb: int = 0,
    ) -> Index:
        """The index at `path` (default: JINALOC_DB, else the XDG data dir); `readonly` for
        readers, which then write nothing (read-only mounts work). `cache_mb`: vector
        blocks kept in memory between searches, for sessions that serve many (exact scans
        then run at numpy's in-memory speed; README "Search at scale")."""
        store = Store.open(Path(path or default_db()), create=create, readonly=readonly)
        store.cache.budget = cache_mb << 20
        return cls(store, loader)

    @classmethod
    def open_built(
        cls,
        path: Path | str | None = None,
        model: str | None = None,
        backend: str = "auto",
        quant: str | None = None,
        offline: bool = False,
        *,
        readonly: bool = True,
        loader: Loader | None = None,
    ) -> Index:
        """An index that holds vectors, opened to read (by default) with the model to serve
        it chosen: its own unless `model` names another (which must be the same model)."""
        idx = cls.open(path, readonly=readonly, loader=loader)
        try:
            idx.require_built()
            idx.check(model=model)
        except BaseException:
            idx.close()
            raise
        return idx.use_model(model, backend, quant, offline)

    def session(self, loader: Loader | None = None) -> Index:
        """Another session on this index file, on its own connection, that shares this one's
        model (loaded once, here, when either needs it; or what `loader` gives, such as the
        served model behind a server's worker): a writer thread beside readers in one
        process (`Watcher` beside a server), each reading the last committed state. The
        model is not thread-safe: its calls must not overlap."""
        other = Index(
            Store.open(self.path, create=False),
            loader or (lambda *a, task=TASK: self.load(task)),
        )
        other._choice = self._choice
        other._owns_model = False
        return other

    def close(self) -> None:
        if self._embedder is not None and self._owns_model:
            self._embedder.close()
        self._embedder = None
        self.store.close()

    def __enter__(self) -> Index:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # what the index can serve

    def require_built(self) -> IndexMeta:
        """The meta, or IndexEmpty when nothing is indexed yet."""
        return self._meta.built()

    def check(
        self, model: str | None = None, dim: int | None = None, chunk_tokens: int | None = None
    ) -> None:
        """Refuse another model, dim or chunking than the index was built with (another
        backend or quant is fine: the vectors agree across them)."""
        self._meta.check(model, dim, chunk_tokens)

    def use_model(
        self,
        model: str | None = None,
        backend: str = "auto",
        quant: str | None = None,
        offline: bool = False,
    ) -> Index:
        """Choose the model to load when one is needed: the index's own unless `model` says
        otherwise, and (unless asked otherwise) its backend and quant, so queries match the
        documents' vectors exactly."""
        from ..load import default_backend

        m = self.meta
        if m is not None:
            model = model or m.model_ref
            if backend == "auto" and quant is None and _installed(m.backend):
                backend = m.backend  # the machine's default may differ from the index's
            wanted = default_backend() if backend == "auto" else backend
            if quant is None and m.backend == wanted and m.quant != "default":
                quant = m.quant
        self._choice = (model, backend, quant, offline)
        return self

    @property
    def choice(self) -> tuple:
        """(model, backend, quant, offline): what a load would use (after `use_model`)."""
        return self._choice

    @property
    def embedder(self) -> Embeds:
        """The model, loaded on first use."""
        return self.load()

    def load(self, task: str = TASK) -> Embeds:
        """The model, loaded now if it is not yet; `task` is the adapter used first (GGUF
        files are per task, so a clustering run never fetches the retrieval one)."""
        if self._embedder is None:
            embedder = self._loader(*self._choice, task=task)
            self._meta.check_model(embedder.spec.name)
            self._embedder = embedder
        return self._embedder

    def settle(self, dim: int | None = None, chunk_tokens: int | None = None) -> IndexMeta:
        """The index's meta, written now from the loaded model if the index is new."""
        if self.meta is not None:
            return self.meta
        e = self.embedder
        meta = IndexMeta(
            model=e.spec.name,
            model_ref=model_ref(self._choice[0]) or e.spec.name,
            backend=e.backend_name,
            quant=e.quant,
            dim=e.check_dim(dim or min(DEFAULT_DIM, e.hidden_size)),
            full_dim=e.hidden_size,
            chunk_tokens=chunk_tokens or DEFAULT_CHUNK_TOKENS,
            created_by=f"jinaloc {__version__}",
        )
        self._meta.write(meta)
        return meta

    def redim(self, dim: int) -> int:
        """The index's vectors at another Matryoshka dim, from the vectors its chunks keep:
        no model, one transaction (searches go on at the old dim until it commits), and
        nothing re-embedded. Returns the blocks written."""
        m = self.require_built()
        if dim == m.dim:
            return 0
        self._meta.check_redim(dim)
        with self.writing():
            return self.store.redim(dim)

    def rebuild(
        self, roots: Roots | Sequence[str | Path], *, wait: bool = True, **options
    ) -> Report:
        """Index `roots` afresh with the chosen model (`use_model`) into a file beside this
        one (FILE.reindex), then copy it over this one in one SQLite transaction under the
        writer lock: searches read the old index until that commits, and an interrupted or
        killed rebuild leaves it whole. `options` as `update`'s."""
        beside = self.path.with_name(self.path.name + ".reindex")
        leftovers = [Path(f"{beside}{s}") for s in ("", "-wal", "-shm", ".lock")]
        for p in leftovers:  # of a rebuild that was killed
            p.unlink(missing_ok=True)
        # Same page size as the file it is copied into: SQLite copies WAL files page for page.
        size = self.store.conn.execute("PRAGMA page_size").fetchone()[0]
        new_file(beside, size)
        try:
            with Index(Store.open(beside), self._loader) as new:
                new._choice = self._choice
                report = new.update(roots, wait=wait, **options)
                with self.writing(wait):
                    new.store.conn.backup(self.store.conn)
        finally:
            for p in leftovers:
                p.unlink(missing_ok=True)
        self.store.cache.writes += 1  # this connection wrote it: what it read is stale
        return report

    # updating

    def saved_roots(self) -> list[tuple[Path, WalkOptions]]:
        """The indexed roots that still exist, with the options they were indexed with."""
        return [
            (Path(root), WalkOptions(**options))
            for root, options in self.store.roots().items()
            if Path(root).exists()
        ]

    def root_options(self, path: Path | str) -> WalkOptions:
        """The walk options a folder was indexed with (the defaults for a new one)."""
        known = self.store.roots().get(str(Path(path).expanduser().resolve()))
        return WalkOptions(**known) if known is not None else WalkOptions()

    def plan(self, roots: Roots | None = None) -> Plan:
        """What an update would do (no model needed)."""
        return plan_update(self.store, self.saved_roots() if roots is None else roots)

    def update(
        self,
        roots: Roots | Sequence[str | Path] | None = None,
        *,
        dim: int | None = None,
        chunk_tokens: int | None = None,
        progress: Progress | None = None,
        report: Report | None = None,
        wait: bool = True,
        scope: Scope | None = None,
    ) -> Report:
        """Bring the index up to date with `roots` (paths, or (path, WalkOptions) pairs;
        default: its own; `scope`: only some paths of them, see planner.Scope). On
        KeyboardInterrupt
        the index keeps every finished file, and `report` (when given) has the run so far."""
        import time

        from .write import Report, Writer

        report = report or Report()
        if dim is not None and self.meta is not None and dim != self.meta.dim:
            start, before = time.monotonic(), self.meta.dim
            written = self.redim(dim)
            report.redim = {
                "from": before,
                "to": dim,
                "blocks": written,
                "seconds": round(time.monotonic() - start, 3),
            }
        self.check(dim=dim, chunk_tokens=chunk_tokens)
        if roots is None:
            roots = self.saved_roots()
        # A bare path is walked with the default options.
        roots = [(r, WalkOptions()) if isinstance(r, (str, Path)) else r for r in roots]

        def settle() -> tuple[IndexMeta, Embeds]:
            return self.settle(dim, chunk_tokens), self.embedder

        with self.writing(wait):
            return Writer(self.store, settle, progress, report).run(roots, scope)

    def writing(self, wait: bool = True):
        """Hold the index's writer lock: one update at a time (searches go on meanwhile).
        `wait=False` refuses at once when another process holds it."""
        return writer_lock(self.path, wait, self.store.identity)

    def verify(self) -> None:
        """Raise IndexCorrupt when SQLite's quick check finds the file damaged: the whole
        file up to VERIFY_ALL_BYTES (about 0.2 s), else the tables every run reads (a whole
        check of 100k chunks took 1.5 s here: `jinaloc check` does it)."""
        from .health import integrity

        whole = self.path.stat().st_size <= VERIFY_ALL_BYTES
        problems = integrity(self.store, quick=True, tables=None if whole else SMALL_TABLES)
        if problems:
            raise IndexCorrupt(self.path, problems[0])

    def forget(self, path: Path | str) -> int:
        """Drop an indexed folder (or file) and its files, except those another indexed
        root also covers. Returns how many files were removed."""
        root = str(Path(path).expanduser().absolute())
        roots = self.store.roots()
        if root not in roots:
            root = str(Path(path).expanduser().resolve())
        if root not in roots:
            raise JinalocError(
                f"{path} is not an indexed folder of {self.path}",
                "see the indexed roots in the index's status",
            )
        others = [r.rstrip("/") for r in roots if r != root]
        files = self.store.files_under(root)
        single = self.store.file(root)
        if single:
            files[single.path] = single
        removed = 0
        with self.writing():
            for file_path, record in files.items():
                if any(file_path == o or file_path.startswith(o + "/") for o in others):
                    continue
                self.store.remove_file(record.id)
                removed += 1
            self.store.remove_root(root)
        return removed

    # reading

    def search(
        self,
        query: str,
        k: int = 10,
        options: SearchOptions | None = None,
        *,
        reranker=None,
        rerank_progress=None,
        **fields,
    ) -> list[Hit]:
        """The best chunks (one per file unless `all_chunks`) for a text query, ranked and
        filtered as `options` (a `SearchOptions`, or its fields as keywords) say; lexical
        mode needs no model. With a `reranker` (reranker.load_reranker), the first stage's
        best `rerank_top` chunks (default: k), and more until they span k files (unless
        `all_chunks`), are reordered by it."""
        from .search import embed_query, rerank_hits, search

        o = given(options, fields)
        meta = self.require_built()
        vector = None if o.mode == "lexical" else embed_query(self.embedder, query, meta.dim)
        keep = self._servable()
        if reranker is None:
            return _present(lambda n: search(self.store, query, vector, n, o), k, keep)
        per_file = not o.all_chunks
        first = replace(o, all_chunks=True)
        candidates = _rerank_candidates(
            lambda n: search(self.store, query, vector, n, first),
            o.rerank_top or k,
            k if per_file else 0,
            keep,
        )
        return rerank_hits(candidates, reranker, query, k, per_file, o.instruction, rerank_progress)

    def similar(
        self, path: Path, k: int = 10, options: SearchOptions | None = None, **fields
    ) -> list[Hit]:
        """The notes most like a file: an indexed one by its stored vectors (no model),
        any other embedded as the index would embed it; `options` as `search`'s."""
        from .search import file_vector, search_vector

        o = given(options, fields)
        self.require_built()
        path = Path(path).expanduser()
        record = self.store.file(str(path.absolute())) or self.store.file(str(path.resolve()))
        if record is not None:
            vector, exclude = file_vector(self.store, record.id), [record.id]
        else:
            vector, exclude = self.embed_file(path), []
        return _present(
            lambda n: search_vector(self.store, vector, n, o, exclude), k, self._servable()
        )

    def embed_file(self, path: Path) -> np.ndarray:
        """One vector for a file outside the index: its chunks embedded and averaged."""
        from ..chunking import DocumentChunker
        from ..vectors import note_vectors

        meta = self.require_built()
        text = read_input(path)
        doc = DocumentChunker(self.embedder, meta.chunk_tokens).chunk(text, path.name)
        if not doc.chunks:
            raise JinalocError(f"{path}: no text to index")
        vectors = self.embedder.embed(doc.embed_texts(), TASK, "document", meta.dim)
        return note_vectors(vectors, [len(vectors)])[0]

    def servable(self, path: str, root: str | None = None) -> bool:
        """Whether a file may be shown or served: it exists and, unless its root was indexed
        with `follow_outside`, its real path lies inside its root's (a note swapped for a
        symlink to /etc/passwd since it was indexed is not). `root`: the folder it was
        indexed from (`Hit.root`); by default the indexed root holding `path`. Search and
        `similar` apply it to every hit; servers apply it to a path they are asked for."""
        return self._servable()(path, root)

    def _servable(self) -> Callable[[str, str | None], bool]:
        """`servable` with the roots read once (a search checks many hits)."""
        roots = self.store.roots()

        def keep(path: str, root: str | None) -> bool:
            if root is None:
                root = max((r for r in roots if inside(path, r)), key=len, default=None)
                if root is None:
                    return False
            options = roots.get(root) or roots.get(path) or {}
            if not os.path.exists(path):
                return False
            return bool(options.get("follow_outside")) or inside(
                os.path.realpath(path), os.path.realpath(root)
            )

        return keep

    def roots(self) -> dict[str, dict]:
        """The indexed roots (resolved paths) with the walk options they were indexed with."""
        return self.store.roots()

    def files_under(self, root: str) -> int:
        """How many indexed files lie under `root`."""
        return len(self.store.files_under(root))

    def is_indexed(self, path: str) -> bool:
        """Whether `path` (absolute, as indexed) is an indexed file."""
        return self.store.file(path) is not None

    def counts(self) -> dict[str, int]:
        """Files, chunks and other rows the index holds."""
        return self.store.counts()

    def lexical_too_common(self, query: str) -> bool:
        """Whether every word of `query` is in most chunks (too common to rank by)."""
        return self.store.lexical_too_common(query)

    def problems(self) -> list[Problem]:
        """What `jinaloc check` finds (health.check); [] for a sound index."""
        from .health import check

        return check(self.store)

    def vacuum(self) -> tuple[int, int]:
        """Rewrite the file without its free pages, under the writer lock: (bytes before,
        after)."""
        from .health import vacuum

        with self.writing():
            return vacuum(self.store)

    def eval_queries(
        self, path: Path | None = None, sample: int = 200, seed: int = 0
    ) -> list[Query]:
        """Known-item queries for `evaluate`: read from `path` (JSON lines or TSV), else
        made from `sample` sampled notes."""
        from .eval import generate_queries, read_queries

        if path is not None:
            return read_queries(path, self.store)
        return generate_queries(self.store, sample, seed)

    def evaluate(self, queries: Sequence[Query], k: int = 10, **options) -> Result:
        """Every search configuration scored on `queries` (eval.evaluate; `options` as its)."""
        from .eval import evaluate

        meta = self.require_built()
        return evaluate(self.store, self.embedder, meta.dim, queries, k, **options)

    def documents(self, paths: Sequence[str] | None = None) -> Iterator[IndexedDocument]:
        return self.store.iter_documents(paths)

    def status(self) -> dict:
        """What the index holds, what changed on disk since the last run (no model) and the
        watcher keeping it fresh, if one runs. A damaged file raises IndexCorrupt (SQLite's
        quick check)."""
        from ..records import read_watcher

        self.verify()
        m = self.meta
        roots = self.store.roots()
        present = [r for r in roots if Path(r).exists()]
        plan = self.plan()
        changed = plan.changes()
        return {
            "db": str(self.path),
            "db_bytes": sum(
                p.stat().st_size for p in (self.path, Path(f"{self.path}-wal")) if p.exists()
            ),
            "schema_version": SCHEMA_VERSION,
            "roots": [
                {
                    "path": r,
                    # A file given as a root is its only file.
                    "files": len(self.store.files_under(r)) or int(self.store.file(r) is not None),
                    "exists": r in present,
                    **roots[r],
                }
                for r in roots
            ],
            **self.store.counts(),
            **{
                key: getattr(m, key, None)
                for key in ("model", "model_ref", "backend", "quant", "task", "dim", "bit_order")
            },
            "kept_dim": m.kept_dim if m else None,
            "chunk_tokens": m.chunk_tokens if m else None,
            "changed": {key: len(value) for key, value in changed.items()},
            "changed_files": changed,
            "skipped": len(plan.skipped),
            "watcher": read_watcher(self.path),
            "left_out_by_type": plan.left_out_by_type(),
        }


def _rerank_candidates(
    run: Callable[[int], list[Hit]], top: int, files: int, keep: Callable[[str, str], bool]
) -> list[Hit]:
    """The first stage's best `top` chunks, and more while they hold fewer than `files`
    distinct files (and the index has more), so a per-file rerank can return k files."""
    n = top
    while True:
        hits = _present(run, n, keep)
        seen: set[int] = set()
        for i, hit in enumerate(hits):
            seen.add(hit.file_id)
            if len(seen) >= files and i + 1 >= top:
                return hits[: i + 1]
        if len(hits) < n or n >= MAX_K:
            return hits
        n *= 2


def _present(run: Callable[[int], list[Hit]], k: int, keep: Callable[[str, str], bool]):
    """The top k hits whose files `keep` allows: a deleted note (or a folder gone since the
    last update), or one now leading outside its folder, is never shown; asks for more
    while some were dropped."""
    n = k
    for _ in range(4):
        hits = run(n)
        kept = [h for h in hits if keep(h.path, h.root)]
        if len(kept) >= k or len(hits) < n:
            return kept[:k]
        n *= 4
    return kept[:k]


def _installed(backend: str) -> bool:
    """Whether this machine can run `backend` (the index's own, for its queries)."""
    import importlib.util

    modules = {"gguf": "llama_cpp", "onnx": "onnxruntime", "mlx": "mlx"}
    name = modules.get(backend)
    return name is not None and importlib.util.find_spec(name) is not None
