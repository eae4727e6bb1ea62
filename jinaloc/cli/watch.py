"""`jinaloc watch`: keep an index fresh as notes change."""

import signal
import threading
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape

from ..defaults import DEFAULT_DEBOUNCE_MS
from ..errors import JinalocError
from ..output import shown, write_jsonl
from .common import (
    BackendOpt,
    ModelOpt,
    OfflineOpt,
    QuantOpt,
    ThreadsOpt,
    err_console,
    load_embedder,
)
from .core import app
from .index import DbOpt, FollowOutsideOpt, _db_path

if TYPE_CHECKING:
    from ..watch import Batch

# Skipped files named per batch at most (all of them are in --json).
SKIPPED_SHOWN = 5

WATCH_EXAMPLES = """
[b]Examples[/b]

  jinaloc watch                        [dim]# every folder of the index[/]
  jinaloc watch ~/notes                [dim]# adds it first, as `index` does[/]
  jinaloc watch --db notes.db --json | jq -c '{added, updated, removed}'
"""


def batch_line(batch: "Batch") -> str:
    r = batch.report
    counts = [
        (r.added, "added"),
        (r.updated, "updated"),
        (r.removed, "removed"),
        (len(r.renamed), "renamed"),
        (len(r.skipped), "skipped"),
    ]
    what = ", ".join(f"{n} {label}" for n, label in counts if n) or "nothing changed"
    when = datetime.fromtimestamp(batch.finished).strftime("%H:%M:%S")
    head = "caught up" if batch.catch_up else f"{batch.events} events"
    embedded = f" · {r.chunks_embedded} chunks embedded ({r.chunks_reused} reused)"
    return f"{when} {head}: {what}{embedded if r.added or r.updated else ''} in {r.seconds:.1f} s"


@app.command(epilog=WATCH_EXAMPLES)
def watch(
    paths: Annotated[
        list[Path] | None,
        typer.Argument(help="Folders or files to watch; none: every folder of the index."),
    ] = None,
    db: DbOpt = None,
    model: ModelOpt = None,
    backend: BackendOpt = "auto",
    quant: QuantOpt = None,
    offline: OfflineOpt = False,
    threads: ThreadsOpt = None,
    debounce: Annotated[
        int,
        typer.Option("--debounce", help="Apply changes once quiet this long (ms).", min=1),
    ] = DEFAULT_DEBOUNCE_MS,
    json_out: Annotated[
        bool, typer.Option("--json", help="One JSON object per applied batch on stdout.")
    ] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No line per batch.")] = False,
    follow_outside: FollowOutsideOpt = False,
) -> None:
    """Keep the index fresh: apply changes to its notes as they happen.

    Catches up first (what changed while nothing watched), then applies each group of
    changes as `index` would. Ctrl-C or SIGTERM stops it between two files."""
    from ..index import Index
    from ..watch import Watcher

    db_path = _db_path(db)
    if follow_outside and not paths:
        raise JinalocError("--follow-outside goes with the PATHs it applies to")

    def show(batch: "Batch") -> None:
        if json_out:
            write_jsonl([{**batch.to_json(), "db": str(db_path)}])
        if quiet:
            return
        err_console.print(escape(batch_line(batch)), highlight=False, soft_wrap=True)
        if not batch.catch_up:
            for path, why in batch.report.skipped[:SKIPPED_SHOWN]:
                err_console.print(
                    f"  skipped {escape(shown(path))}: {escape(shown(why))}", highlight=False
                )
        elif batch.number == 1:
            err_console.print(
                f"watching {escape(str(db_path))} (Ctrl-C stops)", highlight=False, soft_wrap=True
            )

    with Index.open(db_path, create=True, loader=load_embedder) as idx:
        if not paths and not idx.roots():
            raise JinalocError("nothing to watch: pass a folder (e.g. `jinaloc watch ~/notes`)")
        idx.use_model(model, backend, quant, offline)
        idx.check(model=model)
        roots = paths or None
        if follow_outside:  # the root's saved options, with outside links followed
            roots = [(p, replace(idx.root_options(p), follow_outside=True)) for p in paths]
        watcher = Watcher(idx, roots, debounce_ms=debounce, on_batch=show)
        stop = threading.Event()

        def on_signal(signum, frame) -> None:
            if stop.is_set():
                raise KeyboardInterrupt  # asked twice: now, not after the current file
            stop.set()

        previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            watcher.run(stop)
        except KeyboardInterrupt:
            pass  # every finished file is kept; the next run catches up on the rest
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)
    if not quiet:
        err_console.print(f"stopped: {watcher.batches} batches applied", highlight=False)
