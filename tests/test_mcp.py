"""`jinaloc mcp` driven by the official MCP SDK's stdio client, on the tiny nano fixture."""

from __future__ import annotations

import json
import sys

import anyio
import pytest
from index_helpers import have_gguf, make_notes
from server_helpers import MODEL_ARGS, subprocess_env
from typer.testing import CliRunner

from jinaloc import __version__
from jinaloc.cli import app
from jinaloc.errors import JinalocError
from jinaloc.server.mcp_app import inside_roots

pytestmark = pytest.mark.skipif(not have_gguf(), reason="needs llama-cpp-python")
pytest.importorskip("mcp")  # the serve extra


def cli(*args, ok=(0,)):
    result = CliRunner().invoke(app, [str(a) for a in args])
    assert result.exit_code in ok, result.stderr
    return result


@pytest.fixture
def indexed(tmp_path):
    notes = tmp_path / "notes"
    make_notes(notes, 12, paragraphs=2, words=10)
    (tmp_path / "secret.txt").write_text("outside the index\n")
    (notes / "link.md").symlink_to(tmp_path / "secret.txt")
    db = tmp_path / "index.db"
    cli("index", notes, "--db", db, *MODEL_ARGS, "--no-server", "-q")
    return notes, db


def session_run(db, tmp_path, calls, *extra):
    """Start `jinaloc mcp` with the SDK's stdio client, list the tools, make `calls`."""
    from mcp.client.session import ClientSession
    from mcp.client.stdio import StdioServerParameters, stdio_client

    params = StdioServerParameters(
        command=sys.executable,
        args=[
            "-m",
            "jinaloc",
            "mcp",
            "--db",
            str(db),
            "--backend",
            "gguf",
            "--quant",
            "F32",
            *extra,
        ],
        env=subprocess_env(tmp_path / "state"),
        cwd=str(tmp_path),
    )

    async def main():
        async with stdio_client(params) as (read, write), ClientSession(read, write) as session:
            init = await session.initialize()
            tools = {t.name: t for t in (await session.list_tools()).tools}
            results = [await session.call_tool(name, args) for name, args in calls]
            return tools, results, init

    return anyio.run(main)


def payload(result):
    """A tool's answer: lists come structured, dicts as one JSON text."""
    assert not result.is_error, result
    if result.structured_content is not None:
        return result.structured_content["result"]
    return json.loads(result.content[0].text)


def test_mcp_tools_through_the_sdk_client(indexed, tmp_path, monkeypatch):
    notes, db = indexed
    monkeypatch.chdir(tmp_path)  # where the MCP server runs: paths still show absolute
    target = sorted((notes / "garden").glob("*.md"))[0]
    calls = [
        ("search", {"query": "tomato compost", "k": 3}),
        ("search", {"query": "tomato compost", "k": 3, "path": "coding/*"}),
        ("get", {"path": str(target), "start_line": 1, "end_line": 2}),
        ("get", {"path": str(target.relative_to(tmp_path))}),
        ("status", {}),
        ("get", {"path": str(notes / ".." / "secret.txt")}),
        ("get", {"path": str(notes / "link.md")}),
        ("get", {"path": "/etc/passwd"}),
        ("search", {"query": "x", "path": "../*"}),
        ("search", {"query": "x", "mode": "fuzzy"}),
    ]
    # A new note, then update: the index picks it up.
    (notes / "garden" / "new-note.md").write_text("# Roses\n\npruning roses in spring\n")
    calls += [("update", {}), ("search", {"query": "pruning roses in spring", "k": 1})]
    calls += [("search", {"query": "pruning roses", "k": 2, "mode": "lexical"})]
    # What the CLI finds before the session's update (which changes the lexical statistics).
    expected = cli("search", "tomato compost", "-k", 3, "--db", db, "--json", "--no-server")
    calls += [
        ("search", {"query": "tomato compost", "k": 3, "path": "notes/coding/*"}),
        ("search", {"query": "tomato compost", "path": "nowhere/*"}),
    ]
    tools, results, init = session_run(db, tmp_path, calls)
    assert set(tools) == {"search", "get", "status", "update"}
    assert init.server_info.name == "jinaloc" and init.server_info.version == __version__
    assert "relative to its indexed folder" in tools["search"].description
    hits = payload(results[0])
    shown = [{**h, "path": str(tmp_path / h["path"])} for h in json.loads(expected.stdout)]
    assert hits == shown  # the CLI's, with absolute paths
    coding = payload(results[1])
    assert coding and all(h["path"].startswith(f"{notes}/coding/") for h in coding)
    part = payload(results[2])
    assert part["text"] == "\n".join(target.read_text().splitlines()[:2])
    assert part["start_line"] == 1 and part["end_line"] == 2
    assert payload(results[3])["text"] == target.read_text().rstrip("\n")
    status = payload(results[4])
    # 12 notes; link.md leads outside the root: skipped, never indexed (nor served).
    assert status["files"] == 12 and status["model"] == "tiny-v5-nano"
    for refused in results[5:10]:
        assert refused.is_error, refused
    assert "outside the indexed folders" in results[5].content[0].text
    assert "outside" in results[6].content[0].text  # the symlink leads out
    assert "outside" in results[7].content[0].text
    assert "unknown mode 'fuzzy'" in results[9].content[0].text
    assert "'..'" in results[8].content[0].text
    report = payload(results[10])
    assert report["added"] == 1
    assert payload(results[11])[0]["path"].endswith("new-note.md")
    lexical = payload(results[12])
    assert lexical and all(h["mode"] == "lexical" and h["lexical"]["rank"] for h in lexical)
    # The glob may name the indexed folder too; the index changed since results[1].
    assert {h["path"] for h in payload(results[13])} <= {str(p) for p in notes.rglob("*.md")}
    assert all("/coding/" in h["path"] for h in payload(results[13])) and payload(results[13])
    empty = results[14]
    assert not empty.is_error and empty.structured_content == {"result": []}
    assert empty.content[0].text == "no results for 'tomato compost' in files matching 'nowhere/*'"


def test_inside_roots_resolves_before_checking(tmp_path):
    root = tmp_path / "root"
    (root / "sub").mkdir(parents=True)
    (root / "sub" / "a.md").write_text("a")
    assert (
        inside_roots(str(root / "sub" / ".." / "sub" / "a.md"), [str(root)])
        == (root / "sub" / "a.md").resolve()
    )
    assert inside_roots("sub/a.md", [str(root)], cwd=root) == (root / "sub" / "a.md").resolve()
    for bad in (str(root / ".." / "x"), "/etc/passwd", str(tmp_path / "rootx")):
        with pytest.raises(JinalocError):
            inside_roots(bad, [str(root)])


def test_mcp_without_an_index_says_so(tmp_path):
    r = cli("mcp", "--db", tmp_path / "none.db", ok=(2,))
    assert "no index" in r.stderr


def test_mcp_embeds_through_a_running_server(indexed, tmp_path):
    from server_helpers import ServeProcess, call

    _, db = indexed
    server = ServeProcess(tmp_path / "state", *MODEL_ARGS)
    try:
        before = call(server.url, "/health")[1]["served"]
        _, results, _ = session_run(db, tmp_path, [("search", {"query": "tomato compost"})])
        assert payload(results[0])
        assert call(server.url, "/health")[1]["served"] > before
    finally:
        server.stop()


def test_mcp_paths_relative_to_a_folder(indexed, tmp_path):
    notes, db = indexed
    target = sorted((notes / "garden").glob("*.md"))[0]
    calls = [
        ("search", {"query": "tomato compost", "k": 3}),
        ("get", {"path": str(target.relative_to(notes)), "end_line": 1}),
    ]
    _, results, _ = session_run(db, tmp_path, calls, "--relative-to", str(notes))
    hits = payload(results[0])
    assert hits and all(
        not h["path"].startswith("/") and (notes / h["path"]).is_file() for h in hits
    )
    assert payload(results[1])["path"] == str(target.relative_to(notes))


def test_mcp_client_that_stops_reading(indexed, tmp_path):
    """The client closes its end of stdout mid-session: the server stops with one line,
    not a traceback, and not killed by SIGPIPE."""
    import subprocess

    _, db = indexed
    proc = subprocess.Popen(
        [sys.executable, "-m", "jinaloc", "mcp", "--db", str(db), *MODEL_ARGS[2:]],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=subprocess_env(tmp_path / "state"),
    )

    def send(message: dict) -> None:
        proc.stdin.write((json.dumps({"jsonrpc": "2.0", **message}) + "\n").encode())
        proc.stdin.flush()

    info = {
        "protocolVersion": "2025-06-18",
        "capabilities": {},
        "clientInfo": {"name": "t", "version": "1"},
    }
    send({"id": 1, "method": "initialize", "params": info})
    assert b'"result"' in proc.stdout.readline()
    send({"method": "notifications/initialized"})
    proc.stdout.close()
    for i in range(3):
        search = {"name": "search", "arguments": {"query": "tomato"}}
        send({"id": 2 + i, "method": "tools/call", "params": search})
    proc.stdin.close()
    assert proc.wait(60) == 0
    assert proc.stderr.read().decode().strip() == "warning: the MCP client closed its end: stopping"
