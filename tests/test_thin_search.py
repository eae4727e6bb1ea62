"""`jinaloc search` through a running `jinaloc serve` of the same index: the whole search
runs on the server and the CLI process loads neither numpy, the index nor the model, with
output byte-identical to `--no-server`; whatever the server cannot answer exactly as the
process would is searched in-process (docs/benchmarks.md "Warm search and start-up")."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from index_helpers import cli, have_gguf, make_notes
from server_helpers import MODEL_ARGS, ServeProcess, call, subprocess_env
from test_cold_start import HEAVY, PROBE

pytestmark = pytest.mark.skipif(not have_gguf(), reason="needs llama-cpp-python")
for _module in ("uvicorn", "starlette"):  # the serve extra
    pytest.importorskip(_module)


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """Notes, their index (built by path relative to the served folder) and a server of it
    started with a relative --db in that folder."""
    base = tmp_path_factory.mktemp("thin")
    notes = base / "notes"
    make_notes(notes, 24, paragraphs=2, words=12)
    (notes / "work").mkdir()
    (notes / "work" / "standup.md").write_text(
        "---\ntags: [work]\ndate: 2024-03-04\n---\n# Standup\n\ntomato budget review\n"
    )
    db = base / "index.db"
    cli("index", notes, "--db", db, *MODEL_ARGS, "--no-server", "-q")
    proc = ServeProcess(base / "state", "--db", "index.db", cwd=base)
    try:
        yield base, proc
    finally:
        proc.stop()


def search(served, *args, cwd=None):
    """(exit code, stdout bytes, heavy modules loaded) of `jinaloc search ARGS --db DB` in a
    fresh process that may use the server."""
    base, proc = served
    run = subprocess.run(
        [sys.executable, "-c", PROBE, json.dumps(HEAVY), "search", *args]
        + ["--db", str(base / "index.db")],
        capture_output=True,
        env=subprocess_env(proc.state),
        cwd=cwd or base,
    )
    loaded = json.loads(run.stderr.decode().rsplit("LOADED ", 1)[1])
    return run.returncode, run.stdout, loaded


QUERIES = [
    ["tomato compost", "--json"],
    ["tomato compost", "--jsonl", "-k", "3"],
    ["tomato compost", "--files"],
    ["tomato compost", "--files", "-0"],
    ["tomato compost"],  # text, as for a pipe
    ["tomato compost", "--explain"],
    ["tomato compost", "--json", "--explain", "--mode", "semantic"],
    ["tomato", "--jsonl", "--mode", "lexical"],
    ["budget", "--json", "--tag", "work", "--since", "2024-03"],
    ["python bug", "--jsonl", "--all-chunks", "-k", "20", "--exact", "--min-score", "-1"],
    ["python bug", "--json", "--oversample", "2", "--before", "2999-01-01"],
    ["tomato", "--json", "--path", "work/*"],  # from the server's own directory
    ["zzqx", "--json", "--min-score", "0.99"],  # nothing: exit 1 both ways
    ["tomato", "--json", *MODEL_ARGS],  # the served model named as the index names it
]


@pytest.mark.parametrize("args", QUERIES, ids=lambda a: " ".join(a))
def test_through_the_server_byte_identical_and_thin(served, args):
    _, proc = served
    before = call(proc.url, "/health")[1]["served"]
    code, out, loaded = search(served, *args)
    assert call(proc.url, "/health")[1]["served"] == before + 1  # the server ran it
    assert loaded == [], loaded  # and this process loaded none of the heavy modules
    local_code, local, local_loaded = search(served, *args, "--no-server")
    assert "jinaloc.index.session" in local_loaded  # searched in-process
    assert (code, out) == (local_code, local)
    assert code == (1 if args[0] == "zzqx" else 0)


def test_paths_shown_from_the_callers_directory(served):
    """From inside the notes, paths come relative to there, as the CLI shows them."""
    base, _ = served
    code, out, loaded = search(served, "tomato compost", "--files", cwd=base / "notes")
    assert code == 0 and loaded == []
    paths = out.decode().splitlines()
    assert paths and not any(os.path.isabs(p) for p in paths)
    assert all((base / "notes" / p).exists() for p in paths)
    assert search(served, "tomato compost", "--files", "--no-server", cwd=base / "notes")[1] == out


@pytest.mark.parametrize(
    "args,cwd",
    [
        (["--quant", "Q8_0"], None),  # another quant than the served one: other vectors
        (["--model", "v5-small"], None),  # another model: the in-process error
        (["--rerank"], None),  # the cross-encoder runs here
        (["--path", "work/*"], "notes"),  # globs match paths shown from another directory
        (["--backend", "api"], None),
    ],
)
def test_what_the_server_cannot_answer_runs_here(served, args, cwd):
    base, _ = served
    where = base / cwd if cwd else base
    code, out, loaded = search(served, "tomato", "--json", *args, cwd=where)
    assert "jinaloc.index.session" in loaded or code == 2  # searched in-process
    local = search(served, "tomato", "--json", *args, "--no-server", cwd=where)
    assert (code, out) == local[:2]


def test_no_server_env_keeps_it_here(served):
    base, proc = served
    env = {**subprocess_env(proc.state), "JINALOC_NO_SERVER": "1"}
    run = subprocess.run(
        [sys.executable, "-c", PROBE, json.dumps(HEAVY), "search", "tomato"]
        + ["--json", "--db", str(base / "index.db")],
        capture_output=True,
        env=env,
        cwd=base,
    )
    assert run.returncode == 0 and "jinaloc.index.session" in run.stderr.decode()


def test_the_record_names_the_index_absolutely(served):
    base, proc = served
    assert proc.record["db"] == str(base / "index.db")


@pytest.mark.parametrize(
    "extra,status,code",
    [
        ({"explain": "yes"}, 400, "invalid_type"),
        ({"cwd": "relative/dir"}, 400, "invalid_value"),
        ({"local": {"model": None}}, 400, "invalid_value"),
        ({"local": {"model": 1, "backend": "auto", "quant": None}}, 400, "invalid_type"),
        ({"tags": ["work", 3]}, 400, "invalid_type"),
        ({"local": {"model": None, "backend": "gguf", "quant": "Q8_0"}}, 409, "other_model"),
        ({"local": {"model": "v5-small", "backend": "auto", "quant": None}}, 409, "other_model"),
        ({"local": {"model": "/etc", "backend": "auto", "quant": None}}, 409, "other_model"),
        ({"path_glob": "work/*", "cwd": "/"}, 409, "other_cwd"),
    ],
)
def test_search_caller_fields_are_checked(served, extra, status, code):
    _, proc = served
    got, body = call(proc.url, "/v1/search", {"query": "tomato", **extra})
    assert (got, body["error"]["code"]) == (status, code)


def test_search_caller_fields_shape_the_rows(served):
    base, proc = served
    notes = str(base / "notes")
    status, rows = call(
        proc.url,
        "/v1/search",
        {"query": "tomato", "k": 3, "explain": True, "cwd": notes, "tags": ["work"]},
    )
    assert status == 200 and rows
    assert all("explain" in row and not Path(row["path"]).is_absolute() for row in rows)
    assert all(row["tags"] == ["work"] for row in rows)
