"""`jinaloc serve` on the tiny nano GGUF fixture: the official openai client, Jina-shaped
payloads, errors and limits, auth, a concurrent load, and the CLI using the server."""

from __future__ import annotations

import base64
import json
import os
import select
import socket
import sqlite3
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from index_helpers import cli, have_gguf, make_notes, nano_embedder
from server_helpers import MODEL_ARGS, ServeProcess, ThreadServer, call
from typer.testing import CliRunner

from jinaloc.cli import app
from jinaloc.vectors import quantize

pytestmark = pytest.mark.skipif(not have_gguf(), reason="needs llama-cpp-python")
for _module in ("uvicorn", "starlette", "openai"):  # the serve and dev extras
    pytest.importorskip(_module)

HEAD = b"POST /v1/embeddings HTTP/1.1\r\nHost: localhost\r\n"  # raw-socket requests
TEXTS = ["the cat sat on the mat", "Steuererklärung bis Ende Mai", "how do I rotate api keys"]


def cli_vectors(*args) -> np.ndarray:
    out = cli("embed", *MODEL_ARGS, "--no-server", *args, *TEXTS).stdout
    return np.array([json.loads(line)["embedding"] for line in out.splitlines()], np.float32)


def cos(a, b) -> np.ndarray:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return (a * b).sum(-1) / np.linalg.norm(a, axis=-1) / np.linalg.norm(b, axis=-1)


@pytest.fixture(scope="module")
def notes_db(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("served")
    make_notes(tmp / "notes", 24, paragraphs=2, words=12)
    db = tmp / "index.db"
    cli("index", tmp / "notes", "--db", db, *MODEL_ARGS, "--no-server", "-q")
    return tmp / "notes", db


@pytest.fixture(scope="module")
def server(tmp_path_factory, notes_db):
    proc = ServeProcess(tmp_path_factory.mktemp("run") / "state", "--db", str(notes_db[1]))
    try:
        yield proc
    finally:
        proc.stop()


@pytest.fixture
def worker():
    from jinaloc.server.worker import ModelWorker, open_served

    return lambda queue_size=64: ModelWorker(
        lambda: open_served(MODEL_ARGS[1], "gguf", "F32", True, None), queue_size
    )


# --- the official openai client -----------------------------------------------------------


@pytest.mark.parametrize("encoding", ["float", "base64", None])
def test_openai_client_vectors_equal_jinaloc_embed(server, encoding):
    from openai import OpenAI

    client = OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0)
    extra = {} if encoding is None else {"encoding_format": encoding}
    r = client.embeddings.create(model="tiny-v5-nano", input=TEXTS, dimensions=32, **extra)
    # Asked for explicitly, base64 comes back as sent; left out, the client decodes it.
    rows = [d.embedding for d in r.data]
    if encoding == "base64":
        rows = [np.frombuffer(base64.b64decode(row), "<f4") for row in rows]
    got = np.array(rows, np.float32)
    assert got.shape == (3, 32)
    assert cos(got, cli_vectors("--dim", "32")).min() > 0.99999
    assert r.model == "tiny-v5-nano"
    assert r.usage.prompt_tokens == r.usage.total_tokens > len(TEXTS)
    single = client.embeddings.create(model="tiny-v5-nano", input=TEXTS[0])
    assert len(single.data) == 1 and len(single.data[0].embedding) == 64


def test_openai_client_sees_errors_as_bad_request(server):
    import openai

    client = openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0)
    with pytest.raises(openai.BadRequestError) as e:
        client.embeddings.create(model="text-embedding-3-small", input="hi")
    assert "not served here" in str(e.value)
    with pytest.raises(openai.BadRequestError, match="Matryoshka|between"):
        client.embeddings.create(model="tiny-v5-nano", input="hi", dimensions=4096)


# --- Jina-shaped payloads -----------------------------------------------------------------


def test_jina_query_task_and_every_embedding_type(server):
    status, body = call(
        server.url,
        "/v1/embeddings",
        {
            "model": "tiny-v5-nano",
            "task": "retrieval.query",
            "dimensions": 32,
            "input": [{"text": t} for t in TEXTS],
            "embedding_type": ["float", "binary", "ubinary", "base64"],
        },
    )
    assert status == 200, body
    expected = cli_vectors("--dim", "32", "--prompt", "query")
    floats = np.array([d["embedding"]["float"] for d in body["data"]], np.float32)
    assert cos(floats, expected).min() > 0.99999
    for kind in ("binary", "ubinary"):
        got = np.array([d["embedding"][kind] for d in body["data"]])
        assert (got == quantize(floats, kind)).all()
    decoded = [
        np.frombuffer(base64.b64decode(d["embedding"]["base64"]), "<f4") for d in body["data"]
    ]
    assert (np.array(decoded) == floats).all()
    assert [d["index"] for d in body["data"]] == [0, 1, 2]


@pytest.mark.parametrize(
    "task,args",
    [
        ("retrieval.passage", []),
        ("text-matching", ["--task", "text-matching"]),
        ("clustering", ["--task", "clustering"]),
        ("classification", ["--task", "classification"]),
    ],
)
def test_tasks_switch_per_request(server, task, args):
    status, body = call(server.url, "/v1/embeddings", {"input": TEXTS, "task": task})
    assert status == 200, body
    got = np.array([d["embedding"] for d in body["data"]])
    assert cos(got, cli_vectors(*args)).min() > 0.99999


def test_single_embedding_type_and_unnormalized(server):
    _, floats = call(server.url, "/v1/embeddings", {"input": TEXTS})
    status, body = call(server.url, "/v1/embeddings", {"input": TEXTS, "embedding_type": "ubinary"})
    assert status == 200
    unit = np.array([d["embedding"] for d in floats["data"]], np.float32)
    assert [d["embedding"] for d in body["data"]] == quantize(unit, "ubinary").tolist()
    _, raw = call(server.url, "/v1/embeddings", {"input": TEXTS, "normalized": False})
    raw = np.array([d["embedding"] for d in raw["data"]])
    assert not np.allclose(np.linalg.norm(raw, axis=1), 1)
    assert cos(raw, unit).min() > 0.99999


def test_truncate_or_refuse_long_inputs(server):
    long_text = "word " * 2000  # the fixture's context is 512 tokens
    status, body = call(server.url, "/v1/embeddings", {"input": [long_text]})
    assert status == 400 and body["error"]["code"] == "context_length_exceeded"
    status, body = call(server.url, "/v1/embeddings", {"input": [long_text], "truncate": True})
    assert status == 200
    assert body["data"][0]["tokens"] == 512 < body["data"][0]["input_tokens"]


# --- errors: clear 4xx, and the server keeps serving --------------------------------------


@pytest.mark.parametrize(
    "payload,param",
    [
        ({"input": 5}, "input"),
        ({"input": []}, "input"),
        ({"input": [[1, 2, 3]]}, "input"),
        ({"input": ["a", None]}, "input"),
        ({"input": "a", "dimensions": "32"}, "dimensions"),
        ({"input": "a", "dimensions": True}, "dimensions"),
        ({"input": "a", "dimensions": 0}, "dimensions"),
        ({"input": "a", "model": "jina-embeddings-v3"}, "model"),
        ({"input": "a", "late_chunking": True}, "late_chunking"),
        ({"input": "a", "return_multivector": True}, "return_multivector"),
        ({"input": "a", "task": "separation"}, "task"),
        ({"input": "a", "embedding_type": "int4"}, "embedding_type"),
        (
            {"input": "a", "encoding_format": "float", "embedding_type": "ubinary"},
            "encoding_format",
        ),
        ({"input": "a", "dimension": 32}, "dimension"),
        ({"model": "tiny-v5-nano"}, "input"),
    ],
)
def test_bad_requests_get_400_in_openai_shape(server, payload, param):
    status, body = call(server.url, "/v1/embeddings", payload)
    assert status == 400, body
    assert set(body["error"]) == {"message", "type", "param", "code"}
    assert body["error"]["param"] == param
    assert body["error"]["type"] == "invalid_request_error"
    assert call(server.url, "/health")[0] == 200


def test_late_chunking_off_is_fine(server):
    assert call(server.url, "/v1/embeddings", {"input": "a", "late_chunking": False})[0] == 200


@pytest.mark.parametrize("raw", [b"{bad json", b"[1, 2]", b"\xff\xfe", b""])
def test_malformed_bodies(server, raw):
    status, body = call(server.url, "/v1/embeddings", raw=raw)
    assert status == 400 and body["error"]["code"] == "invalid_json"


def test_huge_body_is_refused_by_length_and_by_stream(server):
    host, port = server.url.removeprefix("http://").split(":")
    # Refused on its Content-Length, before the body is read.
    with socket.create_connection((host, int(port)), timeout=30) as s:
        s.sendall(HEAD + b"Content-Length: 3000000\r\n\r\n")
        answer = s.recv(4096)
        assert b" 413 " in answer
    # Chunked, with no Content-Length: cut off while streaming.
    with socket.create_connection((host, int(port)), timeout=30) as s:
        s.sendall(HEAD + b"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n")
        chunk = b"a" * 100_000
        answer = b""
        for _ in range(40):  # 4 MB at most; read the answer as soon as there is one
            s.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            if select.select([s], [], [], 0.05)[0]:
                answer = s.recv(200)
                break
        assert b" 413 " in answer
    assert call(server.url, "/health")[0] == 200


def test_wrong_method_and_path(server):
    assert call(server.url, "/v1/embeddings")[0] == 405
    status, body = call(server.url, "/v2/anything")
    assert status == 404 and "error" in body


def test_slow_client_gets_408(worker):
    from jinaloc.server.app import Limits

    srv = ThreadServer(worker(), Limits(read_timeout=0.5))
    try:
        host, port = srv.url.removeprefix("http://").split(":")
        with socket.create_connection((host, int(port)), timeout=10) as s:
            s.sendall(HEAD + b"Content-Length: 100\r\n\r\n{")
            assert b" 408 " in s.recv(200)
        assert call(srv.url, "/v1/embeddings", {"input": "still here"})[0] == 200
    finally:
        srv.stop()


def test_full_queue_gets_429_and_recovers(worker):
    srv = ThreadServer(worker(queue_size=1))
    release = threading.Event()
    try:
        running = threading.Event()
        blocker = srv.worker.submit(lambda s: (running.set(), release.wait(30)))
        running.wait(10)
        queued = srv.worker.submit(lambda s: s.embedder.name)  # the one queue slot
        status, body = call(srv.url, "/v1/embeddings", {"input": "a"})
        assert status == 429 and body["error"]["type"] == "rate_limit_error"
        release.set()
        assert blocker.result(10)[1] and queued.result(10) == "tiny-v5-nano"
        assert call(srv.url, "/v1/embeddings", {"input": "a"})[0] == 200
    finally:
        release.set()
        srv.stop()


def test_request_timeout_gets_504(worker):
    from jinaloc.server.app import Limits

    srv = ThreadServer(worker(), Limits(timeout=0.3))
    release = threading.Event()
    try:
        srv.worker.submit(lambda s: release.wait(30))
        status, body = call(srv.url, "/v1/embeddings", {"input": "a"})
        assert status == 504
        release.set()
        assert call(srv.url, "/v1/embeddings", {"input": "a"})[0] == 200
    finally:
        release.set()
        srv.stop()


def test_too_many_inputs(worker):
    from jinaloc.server.app import Limits

    srv = ThreadServer(worker(), Limits(max_inputs=4))
    try:
        status, body = call(srv.url, "/v1/embeddings", {"input": ["a"] * 5})
        assert status == 400 and "at most 4" in body["error"]["message"]
    finally:
        srv.stop()


# --- auth and binding ---------------------------------------------------------------------


def test_token_auth(worker):
    srv = ThreadServer(worker(), token="s3cret")
    try:
        for headers in ({}, {"Authorization": "Bearer nope"}, {"Authorization": "s3cret"}):
            status, body = call(srv.url, "/v1/embeddings", {"input": "a"}, headers=headers)
            assert status == 401 and body["error"]["type"] == "authentication_error"
            assert call(srv.url, "/health", headers=headers)[0] == 401
        good = {"Authorization": "Bearer s3cret"}
        assert call(srv.url, "/v1/embeddings", {"input": "a"}, headers=good)[0] == 200
    finally:
        srv.stop()


def test_without_a_token_only_loopback_host_names(server):
    for host in ("evil.example:8089", "192.168.1.5"):
        status, body = call(server.url, "/v1/embeddings", {"input": "a"}, headers={"Host": host})
        assert status == 403 and body["error"]["code"] == "host"
    assert call(server.url, "/health", headers={"Host": "localhost"})[0] == 200


def test_non_loopback_bind_needs_a_token():
    r = cli("serve", "--host", "0.0.0.0", *MODEL_ARGS, ok=(2,))
    assert "without --token" in r.stderr
    from jinaloc.server import check_bind, is_loopback

    check_bind("0.0.0.0", "t")
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.2")


# --- rerank, search, models, health -------------------------------------------------------


def test_rerank_jina_shape_matches_cli(server):
    docs = ["a kitten sleeping", "tax return deadline", "a cat on the sofa", "gpu memory"]
    status, body = call(
        server.url,
        "/v1/rerank",
        {"query": "cats", "documents": [docs[0], {"text": docs[1]}, *docs[2:]], "top_n": 3},
    )
    assert status == 200, body
    assert len(body["results"]) == 3 and body["usage"]["total_tokens"] > 0
    lines = cli("rerank", "cats", "--scores", "--no-server", *MODEL_ARGS, input="\n".join(docs))
    expected = [line.split("\t") for line in lines.stdout.splitlines()][:3]
    got = [(f"{r['relevance_score']:.4f}", r["document"]["text"]) for r in body["results"]]
    assert got == [tuple(x) for x in expected]
    _, bare = call(
        server.url, "/v1/rerank", {"query": "cats", "documents": docs, "return_documents": False}
    )
    assert "document" not in bare["results"][0] and len(bare["results"]) == 4


def test_rerank_by_a_cross_encoder_of_the_registry(server):
    from jinaloc.reranker import load_reranker

    gguf = Path(__file__).parent / "fixtures/tiny-qwen3-reranker/gguf/tiny-qwen3-reranker-F32.gguf"
    config = Path(server.state).parent / "config"
    config.mkdir(exist_ok=True)
    (config / "models.toml").write_text(
        f'[models.tiny-rr]\npath = {json.dumps(str(gguf))}\nkind = "reranker"\n'
    )
    docs = ["cats purr", "stock prices", "a kitten sleeps", "tax forms"]
    status, body = call(
        server.url, "/v1/rerank", {"model": "tiny-rr", "query": "cats", "documents": docs}
    )
    assert status == 200 and body["model"] == "tiny-rr", body
    reranker = load_reranker(str(gguf))
    try:
        want = reranker.score("cats", docs)
    finally:
        reranker.close()
    got = {r["index"]: r["relevance_score"] for r in body["results"]}
    assert [r["index"] for r in body["results"]] == sorted(range(4), key=lambda i: -want[i])
    assert all(abs(got[i] - want[i]) < 1e-5 for i in range(4))
    status, body = call(
        server.url,
        "/v1/rerank",
        {"model": "jina-reranker-v3", "query": "q", "documents": ["a"]},
    )
    assert status == 400 and body["error"]["code"] == "model_not_found"


def test_search_returns_what_search_json_returns(server, notes_db):
    _, db = notes_db
    for options, flags in (
        ({}, []),
        ({"all_chunks": True, "min_score": 0.0}, ["--all-chunks", "--min-score", "0"]),
        ({"exact": True, "path_glob": "garden/*"}, ["--exact", "--path", "garden/*"]),
    ):
        status, hits = call(
            server.url, "/v1/search", {"query": "tomato compost", "k": 5, **options}
        )
        assert status == 200, hits
        out = cli("search", "tomato compost", "-k", 5, "--db", db, "--json", "--no-server", *flags)
        assert hits == json.loads(out.stdout)
        assert hits


@pytest.mark.parametrize(
    "payload,code",
    [
        ({"query": "x", "path_glob": "../*"}, "path_traversal"),
        ({"query": "x", "path_glob": "garden/../../etc/*"}, "path_traversal"),
        ({"query": "x", "exclude_files": [1]}, "unknown_parameter"),
        ({"query": "x", "no_such_option": 1}, "unknown_parameter"),
        ({"query": "x", "exact": "yes"}, "invalid_type"),
        ({"query": "x", "k": 0}, "invalid_value"),
        ({"query": ""}, "missing_parameter"),
    ],
)
def test_search_refuses_bad_options(server, payload, code):
    status, body = call(server.url, "/v1/search", payload)
    assert status == 400 and body["error"]["code"] == code


def test_search_options_follow_the_signatures():
    from jinaloc.server.api import search_options

    options = search_options()
    assert {"path_glob", "min_score", "all_chunks", "exact", "oversample"} <= set(options)
    assert "exclude_files" not in options
    assert options["exact"] == ((bool,), False)


def test_models_and_health(server):
    status, body = call(server.url, "/v1/models")
    assert status == 200 and body["data"][0]["id"] == "tiny-v5-nano"
    status, body = call(server.url, "/health")
    assert body["status"] == "ok" and body["pid"] == server.proc.pid
    assert body["db"] == server.record["db"]


# --- a bounded concurrent load ------------------------------------------------------------


def test_concurrent_load_every_answer_correct(server):
    texts = [f"note number {i} about {w}" for i, w in enumerate(["tea", "tax", "code", "rain"])]
    expected = {}
    for t in texts:
        _, body = call(server.url, "/v1/embeddings", {"input": t, "dimensions": 32})
        expected[t] = body["data"][0]["embedding"]

    def client(n: int) -> int:
        ok = 0
        for i in range(50):
            t = texts[(n + i) % len(texts)]
            status, body = call(server.url, "/v1/embeddings", {"input": t, "dimensions": 32})
            ok += status == 200 and body["data"][0]["embedding"] == expected[t]
        return ok

    with ThreadPoolExecutor(8) as pool:
        assert list(pool.map(client, range(8))) == [50] * 8


# --- the CLI uses a recorded server -------------------------------------------------------


@pytest.fixture
def use_server(server, monkeypatch):
    monkeypatch.setenv("JINALOC_STATE_DIR", str(server.state))
    return server


def test_cli_loader_picks_the_matching_server(use_server, monkeypatch):
    from jinaloc.cli.common import load_embedder  # outside a command: servers allowed
    from jinaloc.server.client import RemoteEmbedder, find_server

    model = MODEL_ARGS[1]
    assert isinstance(load_embedder(model, "gguf", "F32", True), RemoteEmbedder)
    # Another quant, backend or model would not load the same vectors: in-process.
    assert find_server(model, "gguf", "Q8_0") is None
    assert find_server(model, "gguf", None) is None
    assert find_server(model, "mlx", "F32") is None
    monkeypatch.setenv("JINALOC_NO_SERVER", "1")
    assert not isinstance(load_embedder(model, "gguf", "F32", True), RemoteEmbedder)


@pytest.mark.parametrize(
    "args",
    [
        ["embed", "--dim", "32", *TEXTS],
        ["embed", "--format", "json", "--type", "ubinary", "--task", "clustering", *TEXTS],
        ["embed", "--file", __file__],
    ],
)
def test_cli_embed_identical_through_the_server(use_server, args):
    served = call(use_server.url, "/health")[1]["served"]
    through = cli(*args[:1], *MODEL_ARGS, *args[1:]).stdout
    assert call(use_server.url, "/health")[1]["served"] > served  # it did go there
    local = cli(*args[:1], *MODEL_ARGS, "--no-server", *args[1:]).stdout
    assert call(use_server.url, "/health")[1]["served"] == served + 1
    assert through == local and through


def test_cli_pipes_and_search_identical_through_the_server(use_server, notes_db):
    notes, db = notes_db
    lines = "\n".join(p.read_text().splitlines()[0] for p in sorted(notes.rglob("*.md")))
    commands = [
        (["rerank", "tomato", "--scores", "-k", "5"], lines),
        (["classify", "-l", "gardening", "-l", "money", "--jsonl"], lines),
        (["cluster", "-k", "3", "--json"], lines),
        (["dedup", "--jsonl"], lines),
    ]
    for args, stdin in commands:
        through = cli(*args, *MODEL_ARGS, input=stdin, ok=(0, 1)).stdout
        local = cli(*args, *MODEL_ARGS, "--no-server", input=stdin, ok=(0, 1)).stdout
        assert through == local, args
    for flags in ([], ["--all-chunks", "-k", "20"]):
        through = cli("search", "python bug", "--db", db, "--json", *flags).stdout
        local = cli("search", "python bug", "--db", db, "--json", "--no-server", *flags).stdout
        assert through == local and json.loads(through)


def test_stale_records_are_ignored(tmp_path, monkeypatch):
    from dataclasses import replace

    from jinaloc.records import ServerRecord, recorded_servers, server_path, write_server
    from jinaloc.server.client import find_server

    base = ServerRecord(
        url="http://127.0.0.1:9", pid=os.getpid(), model="tiny-v5-nano",
        model_path=MODEL_ARGS[1], backend="gguf", quant="F32", quant_asked="F32",
        hidden_size=64, max_tokens=512, db="", token="", max_body=2**21, max_inputs=2048,
    )  # fmt: skip
    dead = replace(base, pid=2**22 + 12345)
    write_server(base, 9)
    write_server(dead, 10)
    assert recorded_servers() == [base]  # the dead one is gone
    assert not server_path(10).exists()
    # Alive but not answering (nothing listens on port 9): ignored.
    assert find_server(MODEL_ARGS[1], "gguf", "F32") is None
    assert (server_path(9).stat().st_mode & 0o777) == 0o600


def test_cli_truncation_warning_through_the_server(use_server):
    long_text = "word " * 2000
    through = cli("embed", *MODEL_ARGS, "--dim", "32", long_text)
    local = cli("embed", *MODEL_ARGS, "--no-server", "--dim", "32", long_text)
    assert through.stdout == local.stdout
    assert "truncated" in local.stderr and through.stderr == local.stderr


def test_cli_index_through_the_server_stores_the_same_vectors(use_server, tmp_path):
    make_notes(tmp_path / "notes", 6, paragraphs=2, words=12)
    dbs = {}
    for name, flags in (("through", []), ("local", ["--no-server"])):
        dbs[name] = tmp_path / f"{name}.db"
        cli("index", tmp_path / "notes", "--db", dbs[name], *MODEL_ARGS, *flags, "-q")
    stored = {}
    for name, db in dbs.items():
        with sqlite3.connect(db) as con:
            stored[name] = con.execute("SELECT hash, full FROM chunks ORDER BY hash").fetchall()
    assert stored["through"] == stored["local"] and stored["local"]


def test_stopping_the_server_removes_its_record(tmp_path):
    proc = ServeProcess(tmp_path / "state", *MODEL_ARGS)
    files = list((tmp_path / "state" / "servers").glob("*.json"))
    assert len(files) == 1 and call(proc.url, "/health")[0] == 200
    proc.stop()  # SIGTERM: uvicorn shuts down, the record goes with it
    assert proc.proc.returncode == 0
    assert not files[0].exists()


def test_remote_embedder_errors_are_one_line(use_server):
    from dataclasses import replace

    from jinaloc.errors import JinalocError
    from jinaloc.records import ServerRecord
    from jinaloc.registry import resolve
    from jinaloc.server.client import RemoteEmbedder

    record = ServerRecord.from_json(use_server.record)
    remote = RemoteEmbedder(resolve(MODEL_ARGS[1]), record)
    local = nano_embedder()
    assert remote.count_tokens(TEXTS, "query") == local.count_tokens(TEXTS, "query")
    local.close()
    with pytest.raises(JinalocError, match="larger than the server's request limit"):
        remote.embed(["x" * record.max_body])
    with pytest.raises(JinalocError, match="refused the request: unknown task"):
        remote.embed_raw(["a"], "separation", "document")
    gone = RemoteEmbedder(resolve(MODEL_ARGS[1]), replace(record, url="http://127.0.0.1:9"))
    with pytest.raises(JinalocError, match="stopped answering"):
        gone.embed(["a"])


def test_serve_watch_keeps_the_served_index_fresh(tmp_path):
    notes = tmp_path / "notes"
    make_notes(notes, 4)
    db = tmp_path / "w.db"
    r = CliRunner().invoke(app, ["index", str(notes), "--db", str(db), "-q", *MODEL_ARGS])
    assert r.exit_code == 0, r.stderr
    proc = ServeProcess(tmp_path / "run" / "state", "--db", str(db), "--watch")
    try:
        (notes / "fresh.md").write_text("# Fresh\n\nzeppelin hangar timetable\n")
        deadline = time.monotonic() + 30
        found = []
        while time.monotonic() < deadline and not found:
            status, body = call(
                proc.url, "/v1/search", {"query": "zeppelin hangar", "k": 1, "mode": "lexical"}
            )
            found = [h for h in body if h["path"].endswith("fresh.md")] if status == 200 else []
            time.sleep(0.3)
        assert found, "the new note never became searchable through the server"
        # Searches keep working while the watcher writes, and see committed state only.
        status, body = call(proc.url, "/v1/search", {"query": "tomato", "k": 3})
        assert status == 200 and len(body) == 3
    finally:
        proc.stop()
    assert proc.proc.returncode == 0


# --- names that are not UTF-8, a dead watcher ---------------------------------------------


def test_search_answers_a_path_with_undecodable_bytes(tmp_path):
    notes = tmp_path / "notes"
    notes.mkdir()
    bad = os.path.join(os.fsencode(notes), b"zeppelin\xffhangar.md")
    with open(bad, "wb") as f:
        f.write(b"# Hangar\n\nThe zeppelin hangar is huge.\n")
    db = tmp_path / "index.db"
    cli("index", notes, "--db", db, *MODEL_ARGS, "--no-server", "-q")
    proc = ServeProcess(tmp_path / "state", "--db", str(db))
    try:
        status, body = call(
            proc.url, "/v1/search", {"query": "zeppelin", "k": 1, "mode": "lexical"}
        )
    finally:
        proc.stop()
    assert status == 200, body
    assert os.fsencode(body[0]["path"]) == bad


def test_health_reports_a_dead_watcher(worker, notes_db):
    from jinaloc.index import Index
    from jinaloc.watch import Watcher

    served = ThreadServer(worker())
    try:
        status, body = call(served.url, "/health")
        assert status == 200 and body["status"] == "ok" and body["watcher"] is None
        with Index.open(notes_db[1]) as idx:
            watcher = served.worker.served.watcher = Watcher(idx)
            status, body = call(served.url, "/health")
            assert body["status"] == "ok" and body["watcher"]["error"] is None
            watcher.error = "OSError: [Errno 28] No space left on device"  # as run() records it
            status, body = call(served.url, "/health")
    finally:
        served.stop()
    assert status == 200 and body["status"] == "degraded"
    assert body["watcher"]["error"].startswith("OSError")
