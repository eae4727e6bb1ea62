"""The one model worker: a thread that owns the model (and the served index) and runs
requests in order from a bounded queue.

One thread, because the model is not safe to call from several at once and a CPU backend
uses every core anyway; the index's SQLite connection belongs to the thread that opened it,
so it is opened there too. A full queue is refused at once (`Busy`), never waited on."""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

log = logging.getLogger("jinaloc")
# Vector blocks the served index keeps in memory (100k chunks at dim 512 take 200 MB).
CACHE_MB = 1024

if TYPE_CHECKING:
    from ..embedder import Embeds
    from ..index import Index


class Busy(Exception):
    """The queue is full."""


@dataclass
class Served:
    """What the worker holds: the loaded model, the index it serves (if any), and the quant
    the model was asked for ("" for the default), which the CLI matches its requests on."""

    embedder: Embeds
    index: Index | None
    quant_asked: str
    offline: bool = False
    rerankers: dict = field(default_factory=dict)
    watcher: Any = None  # the `serve --watch` Watcher, for /health

    def reranker(self, name: str):
        """A registry cross-encoder, loaded on first use and kept (worker thread only)."""
        if name not in self.rerankers:
            from ..reranker import load_reranker

            self.rerankers[name] = load_reranker(name, offline=self.offline)
        return self.rerankers[name]

    def searches_as(self, model: str | None, backend: str, quant: str | None) -> bool:
        """Whether `jinaloc search` of the served index with these --model, --backend and
        --quant would embed its query with the served model: the choice `Index.use_model`
        makes for them, matched as `client.find_server` matches a record."""
        from ..errors import JinalocError
        from ..index import Index
        from ..registry import resolve
        from .api import model_names
        from .client import loads_same

        e = self.embedder
        # A name of the served model, or none: never a path the server would go and read.
        if self.index is None or (model is not None and model not in model_names(e)):
            return False
        loaded = SimpleNamespace(
            model=e.name,
            model_path=str(e.spec.path or ""),
            backend=e.backend.name,
            quant=e.quant,
            quant_asked=self.quant_asked,
        )
        try:
            self.index.check(model=model)  # another model: the CLI's own error
            # A fresh Index on the same connection: the served one keeps its own choice.
            model, backend, quant, _ = (
                Index(self.index.store).use_model(model, backend, quant).choice
            )
            return loads_same(loaded, resolve(model), backend, quant)
        except JinalocError:
            return False

    def close(self) -> None:
        for cross in self.rerankers.values():
            cross.close()
        if self.index is not None:
            self.index.close()  # closes the embedder it loaded too
        else:
            self.embedder.close()


def open_served(
    model: str | None,
    backend: str,
    quant: str | None,
    offline: bool,
    db: Path | None,
    db_required: bool = True,
) -> Served:
    """Load the model; with `db`, open that index and load its model (unless `model` says
    otherwise, which must then be the same model: the index refuses another). An index
    that is not `db_required` (the default one) is left out, with a warning, when it is
    missing, empty or built with another model."""
    from ..errors import IndexEmpty, IndexMismatch, IndexNotFound
    from ..index import Index
    from ..load import load_embedder

    if db is not None and not db_required:
        try:
            return open_served(model, backend, quant, offline, db)
        except (IndexNotFound, IndexEmpty, IndexMismatch) as e:
            log.warning("not serving the index: %s", e)
            db = None
    if db is None:
        embedder = load_embedder(model, backend=backend, quant=quant, offline=offline)
        return warm(Served(embedder, None, quant or "", offline))
    idx = Index.open(db, cache_mb=CACHE_MB)
    try:
        idx.require_built()
        idx.check(model=model)
        idx.use_model(model, backend, quant, offline)
        embedder = idx.load()
    except BaseException:
        idx.close()
        raise
    return warm(Served(embedder, idx, idx.choice[2] or "", offline))


def warm(served: Served) -> Served:
    """One query embedded now: the backend sets up its buffers before the first client
    waits (the first call on a fresh GGUF context costs hundreds of ms)."""
    served.embedder.embed(["warm up"], "retrieval", "query")
    return served


Job = Callable[[Any], Any]


class ModelWorker:
    """Runs `setup()` (what it returns, a `Served` or an `Index`, has a `close()`) and then
    jobs on it, in order."""

    def __init__(self, setup: Callable[[], Any], queue_size: int = 64):
        self._setup = setup
        self._queue: queue.Queue = queue.Queue(queue_size)
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self.served: Any = None
        self._thread = threading.Thread(target=self._run, name="jinaloc-model", daemon=True)

    def start(self) -> Any:
        """Load the model in the worker thread; its errors are raised here."""
        self._thread.start()
        self._ready.wait()
        if self._error is not None:
            raise self._error
        return self.served

    def submit(self, job: Job) -> Future:
        """Queue `job(served)`; its result or exception arrives on the future."""
        future: Future = Future()
        try:
            self._queue.put_nowait((job, future))
        except queue.Full:
            raise Busy from None
        return future

    @property
    def pending(self) -> int:
        return self._queue.qsize()

    def _run(self) -> None:
        try:
            self.served = self._setup()
        except BaseException as e:
            self._error = e
            return
        finally:
            self._ready.set()
        while (item := self._queue.get()) is not None:
            job, future = item
            # A request that timed out while queued was cancelled: skip it.
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(job(self.served))
            except BaseException as e:
                future.set_exception(e)
        self.served.close()

    def stop(self, timeout: float = 30) -> None:
        """Finish the queued jobs, then free the model."""
        if not self._thread.is_alive():
            return
        try:
            self._queue.put(None, timeout=timeout)
        except queue.Full:
            return
        self._thread.join(timeout)


class WorkerEmbedder:
    """The served model for a thread beside the worker (`serve --watch`): each call runs as
    a job on the worker thread, in turn with the requests, as the model is not thread-safe.
    Plain attributes (spec, backend, sizes) are read directly."""

    def __init__(self, worker: ModelWorker):
        self._worker = worker
        self._embedder = worker.served.embedder

    def __getattr__(self, name: str):
        value = getattr(self._embedder, name)
        if not callable(value):
            return value

        def call(*args, **kwargs):
            while True:
                try:
                    future = self._worker.submit(
                        lambda s: getattr(s.embedder, name)(*args, **kwargs)
                    )
                except Busy:  # requests first; the watcher can wait
                    time.sleep(0.05)
                    continue
                return future.result()

        return call

    def close(self) -> None:
        """The worker owns the model."""
