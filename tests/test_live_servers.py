"""`serve`, `mcp` and `watch` opened before another process re-dims their index
(`jinaloc index --dim N` elsewhere) search right after it: each holds a long-lived session
whose meta follows the file (index/meta.py), on the tiny nano GGUF fixture."""

from __future__ import annotations

import json
import sys
import threading
import time

import pytest
from index_helpers import cli, have_gguf, make_notes
from server_helpers import MODEL_ARGS, ServeProcess, call, subprocess_env

if not have_gguf():
    pytest.skip("needs the gguf extra (llama-cpp-python)", allow_module_level=True)

QUERY = "tomato compost"


@pytest.fixture
def indexed(tmp_path):
    make_notes(tmp_path / "notes", 12, paragraphs=2, words=10)
    db = tmp_path / "index.db"
    cli("index", tmp_path / "notes", "--db", db, *MODEL_ARGS, "--no-server", "-q")
    return tmp_path / "notes", db


def redim(db, dim: int) -> None:
    """What another process does: its own connection, its own commit."""
    cli("index", "--db", db, "--dim", dim, *MODEL_ARGS, "--no-server", "-q")


def cold(db, mode: str) -> list[str]:
    """The paths a fresh `jinaloc search` finds (the reference)."""
    out = cli("search", QUERY, "-k", 3, "--db", db, "--mode", mode, "--json", "--no-server")
    return [hit["path"] for hit in json.loads(out.stdout)]


def test_serve_searches_right_after_a_redim_elsewhere(indexed, tmp_path):
    notes, db = indexed
    server = ServeProcess(tmp_path / "state", "--db", str(db), *MODEL_ARGS[2:])
    try:
        for mode in ("hybrid", "semantic"):
            status, body = call(server.url, "/v1/search", {"query": QUERY, "k": 3, "mode": mode})
            assert status == 200 and len(body) == 3
        redim(db, 16)
        for mode in ("hybrid", "semantic", "lexical"):
            status, body = call(server.url, "/v1/search", {"query": QUERY, "k": 3, "mode": mode})
            assert status == 200, body
            assert [hit["path"] for hit in body] == cold(db, mode)
    finally:
        server.stop()


def test_mcp_searches_right_after_a_redim_elsewhere(indexed, tmp_path):
    pytest.importorskip("mcp")
    import anyio
    from mcp.client.session import ClientSession
    from mcp.client.stdio import StdioServerParameters, stdio_client

    notes, db = indexed
    params = StdioServerParameters(
        command=sys.executable,
        args=["-m", "jinaloc", "mcp", "--db", str(db), *MODEL_ARGS[2:]],
        env=subprocess_env(tmp_path / "state"),
        cwd=str(tmp_path),
    )

    async def main():
        async with stdio_client(params) as (read, write), ClientSession(read, write) as session:
            await session.initialize()
            before = await session.call_tool("search", {"query": QUERY, "k": 3})
            redim(db, 16)
            after = [
                await session.call_tool("search", {"query": QUERY, "k": 3, "mode": mode})
                for mode in ("hybrid", "semantic")
            ]
            return before, after

    before, after = anyio.run(main)
    assert not before.is_error and len(before.structured_content["result"]) == 3
    for result, mode in zip(after, ("hybrid", "semantic"), strict=True):
        assert not result.is_error, result.content
        assert [hit["path"] for hit in result.structured_content["result"]] == cold(db, mode)


def test_watch_indexes_and_searches_right_after_a_redim_elsewhere(indexed, tmp_path):
    from jinaloc.index import Index
    from jinaloc.load import load_embedder
    from jinaloc.watch import Watcher

    notes, db = indexed
    batches = []
    stop = threading.Event()
    with Index.open(db, loader=load_embedder) as idx:
        idx.use_model(MODEL_ARGS[1], "gguf", "F32", True)
        watcher = Watcher(idx, debounce_ms=50, on_batch=batches.append, record=False)
        thread = threading.Thread(target=watcher.run, args=(stop,), daemon=True)
        thread.start()
        try:
            time.sleep(0.5)  # the watch is set up
            redim(db, 16)
            (notes / "garden" / "rain-lily.md").write_text(
                "# Zephyranthes\n\nbulbs flower after rain\n"
            )
            deadline = time.monotonic() + 60
            while not any(b.report.added for b in batches) and time.monotonic() < deadline:
                time.sleep(0.05)
        finally:
            stop.set()
            thread.join(20)
        assert any(b.report.added for b in batches), "the watcher did not index the new note"
        assert idx.meta.dim == 16  # the session that wrote it, opened at 64
        for mode in ("hybrid", "semantic"):
            assert [h.path for h in idx.search(QUERY, 3, mode=mode)] == cold(db, mode)
        assert idx.search("zephyranthes", 1, mode="lexical")[0].path.endswith("rain-lily.md")
    with Index.open(db) as fresh:
        assert fresh.problems() == []  # the new note's vectors packed at the new dim
