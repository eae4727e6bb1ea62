"""Pieces every command shares: consoles, model options, reading inputs."""

from __future__ import annotations

import io
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
)

from ..errors import JinalocError

# stdout carries only data; everything for humans goes to stderr. Rich honours NO_COLOR.
err_console = Console(stderr=True)
out_console = Console()

ModelOpt = Annotated[
    str | None,
    typer.Option("--model", "-m", help="Registry name (`jinaloc models list`) or a local folder."),
]
BackendOpt = Annotated[
    str,
    typer.Option("--backend", "-b", help="mlx, gguf or auto (MLX on Apple Silicon, else GGUF)."),
]
QuantOpt = Annotated[
    str | None,
    typer.Option("--quant", help="GGUF quant (F16, Q8_0, Q4_K_M...) or MLX q8/q4."),
]
OfflineOpt = Annotated[
    bool,
    typer.Option("--offline", help="Never touch the network (also HF_HUB_OFFLINE=1)."),
]
TaskOpt = Annotated[
    str,
    typer.Option("--task", "-t", help="retrieval, text-matching, clustering or classification."),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="One JSON document on stdout.")]
JsonlOpt = Annotated[bool, typer.Option("--jsonl", help="One JSON object per line.")]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar or summary.")]
InputOpt = Annotated[
    str,
    typer.Option("--input", help='stdin as lines, jsonl ({"id", "text"}) or auto.'),
]
BatchOpt = Annotated[int, typer.Option("--batch-size", help="Texts per forward pass.", min=1)]


def load_embedder(model, backend, quant, offline, dim=None, task=None):
    """Load a model with a spinner on stderr when it is a terminal."""
    from ..embedder import load_embedder as load

    args = dict(backend=backend, quant=quant, offline=offline, dim=dim, task=task)
    if err_console.is_terminal:
        with err_console.status(f"loading {model or 'default model'}…"):
            return load(model, **args)
    return load(model, **args)


def load_reranker(reranker, quant, offline, doc_tokens):
    """Load a cross-encoder with a spinner on stderr when it is a terminal."""
    from ..reranker import load_reranker as load

    args = dict(quant=quant, offline=offline, doc_tokens=doc_tokens)
    if err_console.is_terminal:
        with err_console.status(f"loading {reranker or 'default reranker'}…"):
            return load(reranker, **args)
    return load(reranker, **args)


def iter_stdin() -> Iterator[str]:
    """stdin lines (without their newline), streamed; an error when stdin is a terminal."""
    if sys.stdin is None or sys.stdin.isatty():
        raise JinalocError("no input: pass arguments or pipe lines on stdin")
    stream = io.TextIOWrapper(sys.stdin.buffer, encoding="utf-8", errors="strict", newline=None)
    lineno = 0
    try:
        for lineno, line in enumerate(stream, 1):  # noqa: B007 - used in the error below
            yield line.rstrip("\n")
    except UnicodeDecodeError:
        raise JinalocError(f"stdin line {lineno + 1}: not valid UTF-8") from None


def stdin_lines() -> list[str]:
    """Non-empty lines of stdin."""
    return [line for line in iter_stdin() if line.strip()]


def read_text_file(path: Path, max_bytes: int = 50_000_000) -> str:
    """A whole text file, with one-line errors for the usual ways it can fail."""
    try:
        if path.is_dir():
            raise JinalocError(f"{path}: is a directory")
        size = path.stat().st_size
        if size > max_bytes:
            raise JinalocError(f"{path}: too large ({size} bytes, limit {max_bytes})")
        data = path.read_bytes()
    except FileNotFoundError:
        raise JinalocError(f"{path}: no such file") from None
    except PermissionError:
        raise JinalocError(f"{path}: permission denied") from None
    except OSError as e:
        raise JinalocError(f"{path}: {e.strerror or e}") from None
    if b"\0" in data[:8192]:
        raise JinalocError(f"{path}: binary file")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise JinalocError(f"{path}: not valid UTF-8 (byte {e.start})") from None


@contextmanager
def embed_progress(total: int, label: str = "embedding", quiet: bool = False):
    """A rich progress bar on stderr (texts, tokens/s, ETA); yields an Embedder progress
    callback. Silent with -q or when stderr is not a terminal."""
    if quiet or not err_console.is_terminal:
        yield None
        return
    columns = (
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]}"),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=err_console, transient=True) as bar:
        task = bar.add_task(label, total=total, rate="")
        start, tokens = time.perf_counter(), 0

        def advance(texts: int, step_tokens: int) -> None:
            nonlocal tokens
            tokens += step_tokens
            rate = tokens / max(time.perf_counter() - start, 1e-9)
            bar.update(task, advance=texts, rate=f"{rate:,.0f} tok/s")

        yield advance
