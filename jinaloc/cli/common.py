"""Pieces every command shares: consoles, model options, reading inputs."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Annotated

import typer
from rich.console import Console

from ..errors import JinalocError

# stdout carries only data; everything for humans goes to stderr. Rich honours NO_COLOR.
# Data is printed as it is: no emoji codes (`:x:` in a path) and no highlighting.
err_console = Console(stderr=True, emoji=False, highlight=False)
out_console = Console(emoji=False, highlight=False)

ModelOpt = Annotated[
    str | None,
    typer.Option("--model", "-m", help="Registry name (`jinaloc models list`) or a local folder."),
]
BackendOpt = Annotated[
    str,
    typer.Option(
        "--backend",
        "-b",
        help="mlx, gguf, onnx or auto (MLX on Apple Silicon, ONNX on x86, else GGUF);"
        " api: through an embeddings server (--api-url), never chosen by auto.",
    ),
]
QuantOpt = Annotated[
    str | None,
    typer.Option(
        "--quant", help="GGUF quant (F16, Q8_0, Q4_K_M...), MLX q8/q4 or ONNX fp32/int8/quint8."
    ),
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


RerankerOpt = Annotated[
    str | None,
    typer.Option(
        "--reranker",
        help="Cross-encoder: a registry reranker (`jinaloc models list`), a .gguf or a folder.",
    ),
]
InstructionOpt = Annotated[
    str | None,
    typer.Option("--instruction", help="The cross-encoder's task instruction (default: notes)."),
]


@dataclass
class Settings:
    """What a command's options set for the code below it, kept on the command's context
    (click's `ctx.obj`) instead of module globals. Tests pass their own (`CliRunner.invoke(
    app, args, obj=Settings(load=...))`) to run commands on a pure-numpy embedder."""

    threads: int | None = None  # --threads (else JINALOC_THREADS, else free cores)
    use_server: bool = True  # --no-server: load the model here even when a server runs it
    api: dict = field(default_factory=dict)  # --api-* given (backends/api.APISettings fields)
    null_input: bool = False  # -0/--null: stdin items end in NUL
    # How a command loads a model (load.load_embedder's arguments); None: load.load_embedder.
    load: Callable | None = None


def settings() -> Settings:
    """The running command's settings (defaults outside a command)."""
    # Typer carries its own copy of click: its context is the one to ask.
    from typer._click.globals import get_current_context

    ctx = get_current_context(silent=True)
    return ctx.find_root().ensure_object(Settings) if ctx is not None else Settings()


def _set_threads(ctx: typer.Context, value: int | None) -> None:
    settings().threads = value


ThreadsOpt = Annotated[
    int | None,
    typer.Option(
        "--threads",
        help="CPU threads for the model (default: free physical cores; JINALOC_THREADS).",
        min=1,
        callback=_set_threads,
        expose_value=False,
    ),
]


def _no_server(ctx: typer.Context, value: bool) -> bool:
    settings().use_server = not value
    return value


NoServerOpt = Annotated[
    bool,
    typer.Option(
        "--no-server",
        help="Load the model here even when `jinaloc serve` runs it (also JINALOC_NO_SERVER=1).",
        callback=_no_server,
    ),
]


def _api_option(name: str):
    """A callback keeping --api-NAME in the settings; JINALOC_API_* fill in the rest."""

    def store(ctx: typer.Context, value):
        settings().api[name] = value or None
        return value

    return store


ApiUrlOpt = Annotated[
    str | None,
    typer.Option(
        "--api-url",
        help="With --backend api: the embeddings server, e.g. http://gpu:8000/v1"
        " (JINALOC_API_URL); texts are sent there. Key: JINALOC_API_KEY.",
        callback=_api_option("url"),
        expose_value=False,
    ),
]
ApiKindOpt = Annotated[
    str | None,
    typer.Option(
        "--api-kind",
        help="jina (task field) or openai (prefixes added here); default: auto (JINALOC_API_KIND).",
        callback=_api_option("kind"),
        expose_value=False,
    ),
]
ApiModelOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--api-model",
        help="Served model name, or TASK=NAME for one adapter (repeatable; JINALOC_API_MODEL).",
        callback=_api_option("models"),
        expose_value=False,
    ),
]
ApiJobsOpt = Annotated[
    int | None,
    typer.Option(
        "--api-jobs",
        help="Requests in flight to the server (default 4; JINALOC_API_JOBS).",
        min=1,
        callback=_api_option("jobs"),
        expose_value=False,
    ),
]


def load_embedder(model, backend, quant, offline, dim=None, task=None, spinner=True):
    """The model: through an embeddings server with --backend api; else on a running
    `jinaloc serve` that loaded the same one (unless --no-server), else loaded here, with a
    spinner on stderr when it is a terminal."""
    s = settings()
    if s.load is None:
        from ..load import load_embedder as load
    else:
        load = s.load
    args = dict(backend=backend, quant=quant, offline=offline, dim=dim, task=task)

    def here():
        return _loading(model or "default model", lambda: load(model, **args), spinner)

    given = {k: v for k, v in s.api.items() if v is not None}
    if backend == "api":
        from ..backends.api import APISettings

        args["api"] = APISettings.from_env(**given)
    elif given:
        raise JinalocError(
            f"--api-{next(iter(given)).replace('models', 'model')} goes with --backend api"
        )
    elif s.use_server:
        from ..server.client import find_server

        # Loaded here after all when the server stays busy.
        remote = find_server(model, backend, quant, task, fallback=here)
        if remote is not None:
            return remote
    return here()


def load_reranker(reranker, quant, offline, doc_tokens=None, backend="auto"):
    """Load a cross-encoder with a spinner on stderr when it is a terminal. `backend`: onnx,
    gguf or auto; an embedding backend (mlx) leaves the choice to auto."""
    from ..reranker import DOC_TOKENS
    from ..reranker import load_reranker as load

    backend = backend if backend in ("onnx", "gguf") else "auto"
    args = dict(quant=quant, offline=offline, doc_tokens=doc_tokens or DOC_TOKENS, backend=backend)
    return _loading(reranker or "default reranker", lambda: load(reranker, **args))


def _loading(name: str, load: Callable, spinner: bool = True):
    """`load()` with --threads in effect, and a spinner on stderr when it is a terminal."""
    with threads_env(settings().threads):
        if spinner and err_console.is_terminal:
            with err_console.status(f"loading {name}…"):
                return load()
        return load()


@contextmanager
def threads_env(threads: int | None):
    """JINALOC_THREADS (which every backend reads as it loads) set to --threads while a
    model loads, then as it was."""
    if threads is None:
        yield
        return
    before = os.environ.get("JINALOC_THREADS")
    os.environ["JINALOC_THREADS"] = str(threads)
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("JINALOC_THREADS", None)
        else:
            os.environ["JINALOC_THREADS"] = before


def _null_input(ctx: typer.Context, value: bool) -> bool:
    settings().null_input = value
    return value


NullInputOpt = Annotated[
    bool,
    typer.Option(
        "--null",
        "-0",
        help="stdin items end in NUL, as from `find -print0` (file names with newlines).",
        callback=_null_input,
        expose_value=False,
    ),
]


def iter_stdin_null() -> Iterator[str]:
    """NUL-terminated stdin records, streamed; names decoded as the OS does (any bytes)."""
    if sys.stdin is None or sys.stdin.isatty():
        raise JinalocError("no input: pass arguments or pipe items on stdin")
    pending = b""
    while chunk := sys.stdin.buffer.read(65536):
        *records, pending = (pending + chunk).split(b"\0")
        yield from map(os.fsdecode, records)
    if pending:
        yield os.fsdecode(pending)


def iter_stdin() -> Iterator[str]:
    """stdin lines (without their newline), streamed; an error when stdin is a terminal."""
    if sys.stdin is None or sys.stdin.isatty():
        raise JinalocError("no input: pass arguments or pipe lines on stdin")
    # Bytes line by line, decoded one at a time, so a bad line is reported by its number
    # (a text wrapper decodes ahead in blocks). \r\n and \r endings are dropped as newlines.
    for lineno, raw in enumerate(sys.stdin.buffer, 1):
        try:
            yield raw.decode("utf-8").rstrip("\n").rstrip("\r")
        except UnicodeDecodeError:
            raise JinalocError(f"stdin line {lineno}: not valid UTF-8") from None


@contextmanager
def embed_progress(total: int, label: str = "embedding", quiet: bool = False):
    """A rich progress bar on stderr (texts, tokens/s, ETA); yields an Embedder progress
    callback. Silent with -q or when stderr is not a terminal."""
    if quiet or not err_console.is_terminal:
        yield None
        return
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
    )

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
