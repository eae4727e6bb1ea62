"""`jinaloc serve` against clients that misbehave: vanished clients (SIGPIPE), slowloris
connections, browser pages of other sites, hostile JSON; and the CLI against a busy
server (retry, then the local model). Real servers on the tiny nano GGUF fixture."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import select
import signal
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from index_helpers import have_gguf, make_notes, nano_embedder
from server_helpers import MODEL_ARGS, ServeProcess, ThreadServer, call
from typer.testing import CliRunner

from jinaloc.cli import app

pytestmark = pytest.mark.skipif(not have_gguf(), reason="needs llama-cpp-python")
for _module in ("uvicorn", "starlette"):  # the serve extra
    pytest.importorskip(_module)

TEXTS = ["the cat sat on the mat", "Steuererklärung bis Ende Mai"]


@pytest.fixture
def worker():
    from jinaloc.server.worker import ModelWorker, open_served

    return lambda queue_size=64: ModelWorker(
        lambda: open_served(MODEL_ARGS[1], "gguf", "F32", True, None), queue_size
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def hang_up(port: int, request: bytes) -> None:
    """A client that sends `request` and goes away without reading the answer (as
    `curl -m 1` does when the server is slow to answer)."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
            s.sendall(request)
    except OSError:
        pass  # not listening yet


# --- clients that go away -----------------------------------------------------------------


def test_vanished_clients_do_not_kill_serve(tmp_path):
    """Probes that hang up during start-up and after: the server answers the next one.
    With SIGPIPE at its default action the first write to a gone client killed it."""
    port = free_port()
    stop = threading.Event()
    probe = b"GET /health HTTP/1.1\r\nHost: localhost\r\n\r\n"
    big = json.dumps({"input": ["word " * 200] * 40, "dimensions": 64}).encode()
    post = b"POST /v1/embeddings HTTP/1.1\r\nHost: localhost\r\nContent-Length: %d\r\n\r\n%s"

    def probes():
        while not stop.is_set():
            hang_up(port, probe)
            time.sleep(0.01)

    thread = threading.Thread(target=probes, daemon=True)
    thread.start()  # before the server: probes wait in its backlog while the model loads
    proc = ServeProcess(tmp_path / "state", *MODEL_ARGS, port=port)
    try:
        time.sleep(1.0)
        stop.set()
        thread.join(10)
        for _ in range(20):  # long answers to clients that left at once
            hang_up(port, post % (len(big), big))
        time.sleep(1.0)
        assert proc.proc.poll() is None, proc.proc.stderr.read()
        assert call(proc.url, "/health")[0] == 200
    finally:
        stop.set()
        proc.stop()
    assert proc.proc.returncode == 0
    assert not list((tmp_path / "state" / "servers").glob("*.json"))


def test_hangup_stops_serve_and_removes_its_record(tmp_path):
    proc = ServeProcess(tmp_path / "state", *MODEL_ARGS)
    records = list((tmp_path / "state" / "servers").glob("*.json"))
    assert records
    proc.proc.send_signal(signal.SIGHUP)  # the terminal went away
    assert proc.proc.wait(30) == 0, proc.proc.stderr.read()
    assert not any(r.exists() for r in records)


# --- slowloris ----------------------------------------------------------------------------


class Slowloris:
    """`n` connections sending a request's headers one byte per `interval` seconds,
    reconnecting when the server closes one."""

    HEAD = b"POST /v1/embeddings HTTP/1.1\r\nHost: localhost\r\nX-Pad: " + b"a" * 10_000

    def __init__(self, port: int, n: int, interval: float = 1.0):
        self.port, self.n, self.interval = port, n, interval
        self.stop = threading.Event()
        self.closed = 0  # connections the server closed (408, or evicted)
        self.socks: list[tuple[socket.socket, int]] = []
        for _ in range(n):
            self.socks.append((self._open(), 0))
        self.thread = threading.Thread(target=self._drip, daemon=True)
        self.thread.start()

    def _open(self) -> socket.socket:
        s = socket.create_connection(("127.0.0.1", self.port), timeout=5)
        s.setblocking(False)
        return s

    def _drip(self) -> None:
        while not self.stop.wait(self.interval):
            for i, (s, sent) in enumerate(self.socks):
                try:
                    s.send(self.HEAD[sent : sent + 1])
                    self.socks[i] = (s, sent + 1)
                except OSError:
                    s.close()
                    self.closed += 1
                    with contextlib.suppress(OSError):
                        self.socks[i] = (self._open(), 0)

    def close(self) -> None:
        self.stop.set()
        self.thread.join(10)
        for s, _ in self.socks:
            s.close()


def legit_requests(url: str, seconds: float, headers=None) -> list[int]:
    """Statuses of embeddings requests made one after another for `seconds`."""
    statuses = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        statuses.append(call(url, "/v1/embeddings", {"input": "a"}, headers=headers, timeout=10)[0])
    return statuses


@pytest.mark.parametrize("token", [None, "s3cret"])
def test_slowloris_does_not_starve_requests(worker, token):
    """300 connections dripping header bytes (more than uvicorn's 256-connection limit,
    which answered 503 to everyone): requests that come whole are still served, with and
    without a token."""
    srv = ThreadServer(worker(), token=token)
    attack = None
    try:
        attack = Slowloris(srv.port, 300, interval=0.5)
        time.sleep(1.0)
        auth = {"Authorization": f"Bearer {token}"} if token else None
        statuses = legit_requests(srv.url, 4.0, auth)
        assert statuses and set(statuses) == {200}, statuses
    finally:
        if attack is not None:
            attack.close()
        srv.stop()


def test_slow_headers_get_408_and_are_closed(worker):
    from jinaloc.server.guard import ConnectionLimits

    srv = ThreadServer(worker(), connections=ConnectionLimits(header_timeout=1.0))
    try:
        with socket.create_connection(("127.0.0.1", srv.port), timeout=10) as s:
            started = time.monotonic()
            for byte in Slowloris.HEAD[:60]:  # a byte per 0.1 s until the server answers
                if select.select([s], [], [], 0.1)[0]:
                    break
                s.sendall(bytes([byte]))
            assert b" 408 " in s.recv(500)
            assert 0.9 < time.monotonic() - started < 3.5
        # A keep-alive connection that stalls before its next request is closed too.
        with socket.create_connection(("127.0.0.1", srv.port), timeout=10) as s:
            s.sendall(b"GET /health HTTP/1.1\r\nHost: localhost\r\n\r\n")
            answer = b""
            while not answer.endswith(b"}"):  # the whole answer: headers, then the body
                answer += s.recv(1000)
            assert b" 200 " in answer
            s.sendall(b"GET /hea")
            assert b" 408 " in s.recv(1000)
        assert call(srv.url, "/health")[0] == 200
    finally:
        srv.stop()


def test_connection_caps_close_the_slowest_first(worker):
    """Over the per-address cap, the connection that waited longest for its headers makes
    room; when every connection is inside a request, a new one is turned away (503)."""
    from jinaloc.server.guard import ConnectionLimits

    srv = ThreadServer(worker(), connections=ConnectionLimits(per_ip=4, total=8))
    release = threading.Event()
    try:
        idle = [socket.create_connection(("127.0.0.1", srv.port), timeout=10) for _ in range(4)]
        time.sleep(0.2)
        assert call(srv.url, "/health")[0] == 200  # made room: the oldest idle one went
        assert idle[0].recv(100) == b""  # closed by the server
        for s in idle:
            s.close()
        # Four requests inside the model (the worker is blocked): none can be closed.
        srv.worker.submit(lambda s: release.wait(30))
        with ThreadPoolExecutor(4) as pool:
            busy = [pool.submit(call, srv.url, "/v1/embeddings", {"input": "a"}) for _ in range(4)]
            time.sleep(0.5)
            with socket.create_connection(("127.0.0.1", srv.port), timeout=10) as s:
                assert b" 503 " in s.recv(500)
            release.set()
            assert [f.result(30)[0] for f in busy] == [200] * 4
    finally:
        release.set()
        srv.stop()


# --- browsers and hostile JSON ------------------------------------------------------------


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    base = tmp_path_factory.mktemp("hostile")
    make_notes(base / "notes", 6, paragraphs=2, words=12)
    db = base / "index.db"
    r = CliRunner().invoke(
        app, ["index", str(base / "notes"), "--db", str(db), *MODEL_ARGS, "--no-server", "-q"]
    )
    assert r.exit_code == 0, r.stderr
    proc = ServeProcess(base / "state", "--db", str(db), cwd=base)
    proc.base = base
    try:
        yield proc
    finally:
        proc.stop()


def test_cross_site_pages_are_refused(server):
    served = call(server.url, "/health")[1]["served"]
    for origin in ("https://evil.example", "null", "http://127.0.0.1.evil.example"):
        status, body = call(
            server.url,
            "/v1/embeddings",
            raw=b'{"input": "a"}',
            headers={"Content-Type": "text/plain", "Origin": origin},
        )
        assert status == 403 and body["error"]["code"] == "origin", origin
    assert call(server.url, "/health")[1]["served"] == served  # nothing ran
    for headers in ({"Origin": "http://localhost:5173"}, {}):  # a local page; the CLI
        assert call(server.url, "/v1/embeddings", {"input": "a"}, headers=headers)[0] == 200


@pytest.mark.parametrize(
    "raw, code",
    [
        (b'{"input": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", "invalid_json"),
        (b'{"input": ' + b"[" * 40 + b'"a"' + b"]" * 40 + b"}", "invalid_json"),
        (b'{"input": "\\ud800"}', "invalid_unicode"),
        (b'{"input": ["ok", "a\\udfffb"]}', "invalid_unicode"),
        (b'{"input": "a", "\\ud800": 1}', "invalid_unicode"),
    ],
)
def test_hostile_json_gets_400(server, raw, code):
    for path in ("/v1/embeddings", "/v1/rerank", "/v1/tokenize", "/v1/search"):
        status, body = call(server.url, path, raw=raw)
        assert status == 400 and body["error"]["code"] == code, (path, body)
    assert call(server.url, "/health")[0] == 200


@pytest.mark.parametrize(
    "path, payload",
    [
        ("/v1/embeddings", {"input": "a", "dimension": 32}),
        ("/v1/rerank", {"query": "a", "documents": ["b"], "topn": 1}),
        ("/v1/tokenize", {"input": "a", "prompts": "query"}),
        ("/v1/search", {"query": "a", "limit": 3}),
    ],
)
def test_unknown_fields_are_refused_everywhere(server, path, payload):
    status, body = call(server.url, path, payload)
    assert status == 400, body
    assert body["error"]["code"] == "unknown_parameter" and body["error"]["param"] in payload


def test_search_paths_are_absolute_wherever_serve_started(server, tmp_path):
    """The server runs in the notes' parent: paths used to come relative to it."""
    status, hits = call(server.url, "/v1/search", {"query": "tomato", "k": 3})
    assert status == 200 and hits
    notes = (server.base / "notes").resolve()
    assert all(os.path.isabs(h["path"]) and h["path"].startswith(str(notes)) for h in hits)
    proc = ServeProcess(
        tmp_path / "state", "--db", str(server.base / "index.db"), "--relative-to", str(notes)
    )
    try:
        status, rel = call(proc.url, "/v1/search", {"query": "tomato", "k": 3})
        assert [h["path"] for h in rel] == [os.path.relpath(h["path"], notes) for h in hits]
    finally:
        proc.stop()


# --- the CLI and a busy server ------------------------------------------------------------


def record_for(srv, state_dir=None):
    from jinaloc.records import ServerRecord, write_server

    e = srv.worker.served.embedder
    record = ServerRecord(
        url=srv.url, pid=os.getpid(), model=e.name, model_path=str(e.spec.path),
        backend=e.backend.name, quant=e.quant, quant_asked="F32", hidden_size=e.hidden_size,
        max_tokens=e.max_tokens, db="", token="", max_body=2**21, max_inputs=2048,
    )  # fmt: skip
    if state_dir is not None:
        write_server(record, srv.port)
    return record


@pytest.fixture
def busy(worker):
    """A server whose one queue slot is taken and whose model is busy until released."""
    srv = ThreadServer(worker(queue_size=1))
    release = threading.Event()
    running = threading.Event()
    srv.worker.submit(lambda s: (running.set(), release.wait(60)))
    running.wait(10)
    srv.worker.submit(lambda s: None)  # the one queue slot
    srv.release = release
    try:
        yield srv
    finally:
        release.set()
        srv.stop()


def test_remote_embedder_retries_a_busy_server(busy, monkeypatch):
    from jinaloc.registry import resolve
    from jinaloc.server import client

    monkeypatch.setattr(client, "BUSY_WAIT", 20.0)
    remote = client.RemoteEmbedder(resolve(MODEL_ARGS[1]), record_for(busy))
    threading.Timer(1.0, busy.release.set).start()
    started = time.monotonic()
    vectors = remote.embed(TEXTS)
    assert 0.9 < time.monotonic() - started < 10 and remote.local is None
    local = nano_embedder()
    try:
        np.testing.assert_array_equal(vectors, local.embed(TEXTS))
    finally:
        local.close()


def test_remote_embedder_falls_back_to_the_local_model(busy, monkeypatch, caplog):
    from jinaloc.errors import JinalocError
    from jinaloc.registry import resolve
    from jinaloc.server import client

    monkeypatch.setattr(client, "BUSY_WAIT", 1.0)
    record = record_for(busy)
    stuck = client.RemoteEmbedder(resolve(MODEL_ARGS[1]), record)
    with pytest.raises(JinalocError, match="stayed busy for 1 s .*pass --no-server"):
        stuck.embed(TEXTS)
    remote = client.RemoteEmbedder(resolve(MODEL_ARGS[1]), record, fallback=nano_embedder)
    with caplog.at_level(logging.WARNING, "jinaloc"):
        vectors = remote.embed(TEXTS, dim=32)
        counts = remote.count_tokens(TEXTS)
    notes = [r.getMessage() for r in caplog.records if "loading the model here" in r.getMessage()]
    assert len(notes) == 1 and "stayed busy" in notes[0]
    local = nano_embedder()
    try:
        np.testing.assert_array_equal(vectors, local.embed(TEXTS, dim=32))
        assert counts == local.count_tokens(TEXTS)
    finally:
        local.close()
        remote.close()

    def broken():
        raise JinalocError("model not found")

    failing = client.RemoteEmbedder(resolve(MODEL_ARGS[1]), record, fallback=broken)
    with pytest.raises(JinalocError, match="stayed busy .* loading the model here failed"):
        failing.embed(TEXTS)


def test_cli_embed_against_a_busy_server(busy, monkeypatch, tmp_path):
    from jinaloc.server import client

    monkeypatch.setenv("JINALOC_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setattr(client, "BUSY_WAIT", 1.0)
    record_for(busy, tmp_path / "state")
    through = CliRunner().invoke(app, ["embed", *MODEL_ARGS, "--dim", "32", *TEXTS])
    assert through.exit_code == 0, through.stderr
    assert "stayed busy" in through.stderr and "loading the model here" in through.stderr
    assert len(through.stderr.strip().splitlines()) == 1
    local = CliRunner().invoke(app, ["embed", *MODEL_ARGS, "--no-server", "--dim", "32", *TEXTS])
    assert through.stdout == local.stdout and local.stdout
