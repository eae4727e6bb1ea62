"""`jinaloc index`'s progress bar: imported by the command when it runs, since it is an
indexer Progress (numpy, sqlite) and rich.progress, which `--help` need not load."""

from __future__ import annotations

import time

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeRemainingColumn,
)

from ..index import Progress as IndexProgress


class IndexBar(IndexProgress):
    """The run's progress on `console` (stderr): files, chunks, tokens/s and ETA."""

    def __init__(self, console: Console):
        self.bar = Progress(
            SpinnerColumn(),
            TextColumn("[progress.description]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[chunks]} chunks"),
            TextColumn("{task.fields[rate]}"),
            TimeRemainingColumn(),
            console=console,
            transient=True,
        )
        self.task = self.bar.add_task("scanning files", total=None, chunks=0, rate="")
        self.tokens = 0
        self.chunks = 0
        self.started = time.perf_counter()

    def note(self, what: str) -> None:
        self.bar.update(self.task, description=what)

    def start(self, files: int) -> None:
        self.started = time.perf_counter()
        self.bar.update(self.task, description="indexing", total=files, completed=0)

    def embedded(self, texts: int, tokens: int) -> None:
        self.tokens += tokens
        rate = self.tokens / max(time.perf_counter() - self.started, 1e-9)
        self.bar.update(self.task, rate=f"{rate:,.0f} tok/s")

    def file_done(self, chunks: int) -> None:
        self.chunks += chunks
        self.bar.update(self.task, advance=1, chunks=self.chunks)
