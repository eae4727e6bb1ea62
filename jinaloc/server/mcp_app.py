"""`jinaloc mcp`: the index as Model Context Protocol tools over stdio (the official `mcp`
SDK): search, get (files inside the indexed roots only), status and update.

The index and its model live on one worker thread (as in `jinaloc serve`: the SQLite
connection belongs to the thread that opened it); the model loads on the first search or
update and then stays warm, or is a running `jinaloc serve`'s when one matches."""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from pathlib import Path
from typing import Annotated, Any

from ..errors import JinalocError
from ..reader import read_input
from . import api
from .api import GLOB_ESCAPES, glob_escapes, search_options
from .worker import ModelWorker

# A `get` answer holds at most this many characters (agents' context is precious).
MAX_GET_CHARS = 200_000

INSTRUCTIONS = """Semantic search over the user's notes, indexed locally by jinaloc.
`search` finds the passages most like a query (absolute path, lines, heading, score, text);
`get` reads a file (or a line range) from the indexed folders; `status` says what is
indexed and what changed on disk; `update` re-indexes what changed."""
NO_RESULTS = "no results"


def inside_roots(path: str, roots: list[str], cwd: Path | None = None) -> Path:
    """The real path of `path` (relative: to `cwd`) if it lies inside an indexed root,
    else an error: symlinks and '..' are resolved before the check."""
    candidate = Path(path).expanduser()
    if not candidate.is_absolute():
        candidate = (cwd or Path.cwd()) / candidate
    real = Path(os.path.realpath(candidate))
    for root in roots:
        base = Path(os.path.realpath(root))
        if real == base or real.is_relative_to(base):
            return real
    raise JinalocError(f"{path} is outside the indexed folders")


def indexed_file(idx, path: str, base: Path | None = None) -> Path:
    """The real path of an indexed file inside the index's roots (relative: to `base`,
    else the working directory), else an error."""
    real = inside_roots(path, list(idx.roots()), base)
    given = Path(path).expanduser()
    given = given if given.is_absolute() else (base or Path.cwd()) / given
    if not (idx.is_indexed(str(real)) or idx.is_indexed(str(given))):
        raise JinalocError(f"{path} is not an indexed file")
    return real


def read_lines(path: Path, start_line: int | None, end_line: int | None) -> dict:
    text = read_input(path)
    lines = text.splitlines()
    start = start_line or 1
    end = min(end_line or len(lines), len(lines))
    if start < 1 or (end_line is not None and end_line < start):
        raise JinalocError("start_line must be at least 1 and end_line not before it")
    body = "\n".join(lines[start - 1 : end])
    truncated = len(body) > MAX_GET_CHARS
    return {
        "path": str(path),
        "start_line": start,
        "end_line": end,
        "total_lines": len(lines),
        "text": body[:MAX_GET_CHARS],
        "truncated": truncated,
    }


def create_mcp(worker: ModelWorker, relative_to: Path | None = None):
    """The MCP server on a started worker whose state is an open `Index`. Paths are
    absolute, or relative to `relative_to` (an absolute directory) when inside it."""
    from mcp.server.mcpserver import MCPServer
    from mcp.server.mcpserver.exceptions import ToolError
    from mcp.types import CallToolResult, TextContent

    from .. import __version__
    from ..index import SearchOptions

    server = MCPServer(
        "jinaloc", instructions=INSTRUCTIONS, version=__version__, log_level="WARNING"
    )
    base = str(relative_to) if relative_to is not None else None
    options = search_options()

    async def run(job) -> Any:
        try:
            return await asyncio.wrap_future(worker.submit(job))
        except JinalocError as e:
            raise ToolError(str(e)) from None  # the SDK shows only ToolError's text

    async def search(
        query: str, k: int = 10, path: str | None = None, mode: str | None = None
    ) -> list[dict]:
        """The indexed passages most like `query`, best first (paths absolute); "no
        results" when nothing matches. `path`: only files matching this gitignore-style
        glob, matched against each file's path relative to its indexed folder, with or
        without that folder's name in front: for a folder ~/notes holding work/a.md, both
        'work/*.md' and 'notes/work/*.md' match it ('*.md' matches at any depth, '/' at the
        start anchors to the folder). `mode`: a search mode, where this jinaloc has
        several."""
        kwargs: dict[str, Any] = {}
        if not query.strip():
            raise ToolError("the query is empty")
        if not 1 <= k <= 1000:
            raise ToolError("k must be between 1 and 1000")
        if path:
            if glob_escapes(path):
                raise ToolError(GLOB_ESCAPES)
            kwargs["path_glob"] = path
        if mode is not None:
            if "mode" not in options:
                raise ToolError("this jinaloc has one search mode: leave mode out")
            kwargs["mode"] = mode
        try:
            chosen = SearchOptions(**kwargs)
        except JinalocError as e:
            raise ToolError(str(e)) from None
        hits = await run(lambda idx: idx.search(query.strip(), k, chosen))
        if not hits:
            # An empty list is no content at all to an agent: say so.
            where = f" in files matching {path!r}" if path else ""
            text = f"{NO_RESULTS} for {query.strip()!r}{where}"
            return CallToolResult(
                content=[TextContent(type="text", text=text)], structured_content={"result": []}
            )
        return [api.hit_json(hit, base) for hit in hits]

    # A list of hits, or the "no results" note (a CallToolResult) with an empty list as its
    # structured content. Set as an object: the SDK cannot resolve this module's string
    # annotations for names imported inside this function.
    search.__annotations__["return"] = Annotated[CallToolResult, list[dict]]
    server.tool()(search)

    @server.tool()
    async def get(path: str, start_line: int | None = None, end_line: int | None = None) -> dict:
        """A file of the indexed folders, whole or lines start_line..end_line (1-based,
        inclusive), as text. Paths as `search` shows them."""

        def job(idx) -> dict:
            lines = read_lines(indexed_file(idx, path, relative_to), start_line, end_line)
            return {**lines, "path": api.shown_path(lines["path"], base)}

        return await run(job)

    @server.tool()
    async def status() -> dict:
        """What the index holds (roots, files, chunks, model) and what changed on disk."""
        return await run(lambda idx: idx.status())

    @server.tool()
    async def update() -> dict:
        """Re-index the indexed folders incrementally: new and changed files are embedded,
        renamed ones moved, deleted ones removed."""
        return await run(lambda idx: idx.update().to_json())

    return server


def _load(model, backend, quant, offline, task):
    """A running `jinaloc serve`'s model when it is the same, else loaded here."""
    from ..load import load_embedder
    from .client import find_server

    def here():
        return load_embedder(model, backend=backend, quant=quant, offline=offline, task=task)

    return find_server(model, backend, quant, task, fallback=here) or here()


def open_index(db: Path | None, model, backend, quant, offline):
    from ..index import Index

    return Index.open_built(db, model, backend, quant, offline, readonly=False, loader=_load)


def run_stdio(
    db: Path | None,
    model=None,
    backend="auto",
    quant=None,
    offline=False,
    relative_to: Path | None = None,
) -> None:
    from . import survive_clients

    survive_clients()
    worker = ModelWorker(lambda: open_index(db, model, backend, quant, offline))
    worker.start()
    base = Path(relative_to).absolute() if relative_to is not None else None
    try:
        create_mcp(worker, base).run("stdio")
    except BaseException as e:
        if not _client_gone(e):
            raise
        # Nobody reads stdout any more; Python's own flush at exit would fail on it too.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        logging.getLogger("jinaloc").warning("the MCP client closed its end: stopping")
    finally:
        worker.stop()


def _client_gone(e: BaseException) -> bool:
    """A write to the client failed because it went away (possibly inside a task group's
    exception group)."""
    inner = getattr(e, "exceptions", None)
    if inner:
        return all(_client_gone(x) for x in inner)
    return isinstance(e, (BrokenPipeError, ConnectionResetError))
