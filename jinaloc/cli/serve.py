"""`jinaloc serve` (a warm local embeddings server) and `jinaloc mcp` (the index for agents)."""

import contextlib
from pathlib import Path
from typing import Annotated

import typer

from ..errors import JinalocError
from .common import (
    BackendOpt,
    ModelOpt,
    OfflineOpt,
    QuantOpt,
    ThreadsOpt,
    err_console,
    settings,
    threads_env,
)
from .core import app
from .watch import batch_line

SERVE_EXAMPLES = """
[b]Examples[/b]

  jinaloc serve                                [dim]# the default index and its model[/]
  jinaloc serve --db notes.db --port 9000
  jinaloc serve --host 0.0.0.0 --token "$(openssl rand -hex 16)"

While it runs, embed, search, rerank, classify, cluster and dedup use it when they would
load the same model (see `--no-server`). It speaks OpenAI's and Jina's embeddings API:

  curl -s localhost:8089/v1/embeddings -d '{"input": ["hello"], "dimensions": 256}'
"""


RelativeToOpt = Annotated[
    Path | None,
    typer.Option(
        "--relative-to",
        help="Show result paths relative to DIR when inside it (default: absolute).",
        metavar="DIR",
        file_okay=False,
    ),
]


def _require(*modules: str) -> None:
    import importlib.util

    for module in modules:
        if importlib.util.find_spec(module) is None:
            raise JinalocError(f"{module} is not installed: pip install 'jinaloc[serve]'")


@app.command(epilog=SERVE_EXAMPLES)
def serve(
    host: Annotated[
        str, typer.Option("--host", help="Address to listen on (others need --token).")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", help="Port (0: any free one).", min=0)] = 8089,
    db: Annotated[
        Path | None,
        typer.Option("--db", help="Index to serve on /v1/search (default: the default index)."),
    ] = None,
    model: ModelOpt = None,
    backend: BackendOpt = "auto",
    quant: QuantOpt = None,
    offline: OfflineOpt = False,
    token: Annotated[
        str | None,
        typer.Option(
            "--token",
            envvar="JINALOC_TOKEN",
            help="Require `Authorization: Bearer TOKEN` on every request (also JINALOC_TOKEN).",
        ),
    ] = None,
    threads: ThreadsOpt = None,
    watch: Annotated[
        bool,
        typer.Option("--watch", help="Keep the served index fresh as its files change."),
    ] = False,
    queue: Annotated[
        int, typer.Option("--queue", help="Requests waiting for the model at most.", min=1)
    ] = 64,
    max_body: Annotated[
        int, typer.Option("--max-body", help="Largest request body in bytes.", min=1024)
    ] = 2 * 1024 * 1024,
    max_inputs: Annotated[
        int, typer.Option("--max-inputs", help="Texts per request at most.", min=1)
    ] = 2048,
    timeout: Annotated[
        float, typer.Option("--timeout", help="Seconds a request may wait for the model.")
    ] = 600.0,
    relative_to: RelativeToOpt = None,
) -> None:
    """Keep a model warm and serve it on an OpenAI- and Jina-compatible HTTP API.

    Loopback only unless --host says otherwise (then --token is required). Browser pages
    of other sites are refused (Origin); a client gets 10 s to send its request headers;
    one address holds 64 connections at most, and a client that sends its request at
    once always gets in (slow connections are closed to make room). /v1/search paths are
    absolute unless --relative-to."""
    _require("uvicorn", "starlette")
    from ..paths import default_db
    from ..server import check_bind
    from ..server import serve as run
    from ..server.app import Limits

    check_bind(host, token)
    # Absolute: the record tells clients in other directories which index this is.
    db_path = (db.expanduser() if db is not None else default_db()).absolute()
    if watch and not db_path.exists():
        raise JinalocError(f"--watch serves an index: no index at {db_path}")
    if db is not None and not db_path.exists():
        raise JinalocError(f"no index at {db_path}: build one with `jinaloc index PATH`")

    def ready(record) -> None:
        served = f", index {record.db}" if record.db else ""
        err_console.print(
            f"serving {record.model} ({record.backend}, {record.quant}){served}"
            f" at {record.url} · Ctrl-C stops",
            highlight=False,
            soft_wrap=True,
        )

    limits = Limits(max_body=max_body, max_inputs=max_inputs, timeout=timeout)
    # uvicorn stops on SIGINT; a 2nd one
    with threads_env(settings().threads), contextlib.suppress(KeyboardInterrupt):
        run(
            host,
            port,
            model=model,
            backend=backend,
            quant=quant,
            offline=offline,
            db=db_path if db_path.exists() else None,
            db_required=db is not None,
            token=token,
            queue_size=queue,
            limits=limits,
            ready=ready,
            relative_to=relative_to,
            watch=watch,
            on_batch=lambda batch: err_console.print(batch_line(batch), highlight=False),
        )


MCP_EXAMPLES = """
[b]Register it[/b] (Claude Desktop, Claude Code, Cursor: an "mcpServers" entry):

  {"mcpServers": {"jinaloc": {"command": "jinaloc", "args": ["mcp", "--db", "/abs/notes.db"]}}}
  claude mcp add jinaloc -- jinaloc mcp --db /abs/notes.db
"""


@app.command(epilog=MCP_EXAMPLES)
def mcp(
    db: Annotated[
        Path | None,
        typer.Option("--db", help="Index file (default: JINALOC_DB, else the XDG data dir)."),
    ] = None,
    model: ModelOpt = None,
    backend: BackendOpt = "auto",
    quant: QuantOpt = None,
    offline: OfflineOpt = False,
    threads: ThreadsOpt = None,
    relative_to: RelativeToOpt = None,
) -> None:
    """Serve the index to agents over MCP (stdio): search, get, status, update.

    `get` reads only indexed files inside the indexed folders. Paths are absolute unless
    --relative-to; `search`'s path glob matches paths relative to the indexed folder, with
    or without the folder's name (`git/*` and `til/git/*` for a folder til)."""
    _require("mcp")
    from ..paths import default_db
    from ..server.mcp_app import run_stdio

    with threads_env(settings().threads):
        run_stdio((db or default_db()).expanduser(), model, backend, quant, offline, relative_to)
