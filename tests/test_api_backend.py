"""`--backend api`: embedding through an embeddings server.

Faults come from a small fake OpenAI-compatible server in a thread (429 with Retry-After,
500, dropped connections, hangs); the real servers are `jinaloc serve` and llama.cpp's own
(`llama_cpp.server`) on the fixture models, whose vectors must equal the local backend's."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest
from conftest import model_dir
from index_helpers import cli, have_gguf, make_notes
from typer.testing import CliRunner

from jinaloc.backends.api import (
    APISettings,
    _named_task,
    _retry_after,
    endpoint_url,
    open_api,
    shown_url,
)
from jinaloc.cli import app
from jinaloc.errors import EmbedFailed, JinalocError
from jinaloc.registry import resolve

NANO = model_dir("nano")
KEY = "sk-test-SECRET-4242"
TEXTS = ["the cat sat on the mat", "Steuererklärung bis Ende Mai", "how do I rotate api keys"]


@pytest.fixture(autouse=True)
def _no_api_env(monkeypatch):
    for name in ("URL", "KEY", "KIND", "MODEL", "JOBS", "BATCH_TOKENS", "TIMEOUT", "RETRIES"):
        monkeypatch.delenv(f"JINALOC_API_{name}", raising=False)
    monkeypatch.delenv("JINA_API_KEY", raising=False)


def cos(a, b) -> np.ndarray:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return (a * b).sum(-1) / np.linalg.norm(a, axis=-1) / np.linalg.norm(b, axis=-1)


def rounded(x, places: int = 3):
    """JSON with its floats rounded (vectors through a server agree to about 1e-5)."""
    if isinstance(x, float):
        return round(x, places)
    if isinstance(x, list):
        return [rounded(v, places) for v in x]
    if isinstance(x, dict):
        return {k: rounded(v, places) for k, v in x.items()}
    return x


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --- a fake OpenAI-compatible server ---


def fake_vector(text: str, dim: int = 64) -> np.ndarray:
    seed = int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little")
    return np.random.default_rng(seed).standard_normal(dim).astype(np.float32)


class FakeServer:
    """OpenAI-shaped /v1/embeddings with a vector per text; `faults` maps a request's
    number (1-based) to 429, 500, "drop" or "hang". `answered` counts each text in the
    answers actually sent (200s), `requests` every embeddings request."""

    def __init__(self, faults: dict | None = None, dim: int = 64, fail_from: int | None = None):
        self.faults = dict(faults or {})
        self.fail_from = fail_from  # every request from this one on: 500
        self.health: dict | None = None  # what GET /health answers (else 404)
        self.redirect: str | None = None  # POSTs answered with a 302 to here
        self.dim = dim
        self.answered: Counter = Counter()
        self.requests = 0
        self.bodies: list[dict] = []
        self.headers: list[dict] = []
        self.lock = threading.Lock()
        self.release = threading.Event()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def _json(self, status, body, headers=()):
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for k, v in headers:
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):
                with outer.lock:
                    outer.headers.append(dict(self.headers))
                if self.path == "/health" and outer.health:
                    self._json(200, outer.health)
                elif self.path == "/v1/models":
                    self._json(200, {"object": "list", "data": [{"id": "fake", "owned_by": "me"}]})
                else:
                    self._json(404, {"error": {"message": "no such route"}})

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                if outer.redirect:
                    self.send_response(302)
                    self.send_header("Location", outer.redirect)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                with outer.lock:
                    outer.requests += 1
                    n = outer.requests
                    outer.bodies.append(body)
                    outer.headers.append(dict(self.headers))
                fault = outer.faults.get(n)
                if outer.fail_from is not None and n >= outer.fail_from:
                    fault = 500
                if fault == 429:
                    return self._json(
                        429, {"error": {"message": "slow down"}}, [("Retry-After", "1")]
                    )
                if fault == 413:
                    return self._json(413, {"error": {"message": "too large"}})
                if fault == 400:
                    return self._json(400, {"error": {"message": "bad input"}})
                if fault == 500:
                    return self._json(500, {"error": {"message": "boom"}})
                if fault == "drop":
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                if fault == "hang":
                    outer.release.wait(30)
                    self.close_connection = True
                    return
                texts = body["input"]
                data = [
                    {
                        "object": "embedding",
                        "index": i,
                        "embedding": fake_vector(t, outer.dim).tolist(),
                    }
                    for i, t in enumerate(texts)
                ]
                with outer.lock:  # before the answer: the client may look as soon as it has it
                    outer.answered.update(texts)
                self._json(200, {"object": "list", "data": data, "model": body.get("model")})

        class Server(ThreadingHTTPServer):
            daemon_threads = True

            def handle_error(self, request, client_address):
                pass  # the dropped connections are on purpose

        self.httpd = Server(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def stop(self):
        self.release.set()
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def fake():
    servers = []

    def start(**kw):
        servers.append(FakeServer(**kw))
        return servers[-1]

    yield start
    for s in servers:
        s.stop()


def settings(url, **kw) -> APISettings:
    kw.setdefault("kind", "openai")
    kw.setdefault("models", ("fake",))
    kw.setdefault("timeout", 2.0)
    return APISettings(url=url, **kw)


# --- settings and small pieces ---


def test_endpoint_urls():
    assert endpoint_url("http://gpu:8000") == "http://gpu:8000/v1/embeddings"
    assert endpoint_url("http://gpu:8000/v1/") == "http://gpu:8000/v1/embeddings"
    assert endpoint_url("http://h:7997/embeddings") == "http://h:7997/embeddings"
    assert endpoint_url("https://api.jina.ai/v1") == "https://api.jina.ai/v1/embeddings"
    with pytest.raises(JinalocError):
        endpoint_url("gpu:8000")


def test_shown_urls_never_carry_credentials():
    assert shown_url("http://user:pw@h:1/v1/embeddings?key=x") == "http://h:1/v1/embeddings"


def test_served_model_names_tell_their_task():
    assert _named_task("v5-nano-retrieval-Q8_0.gguf") == "retrieval"
    assert _named_task("jinaai/jina-embeddings-v5-text-small-text_matching") == "text-matching"
    assert _named_task("jina-v5-nano") is None


def test_retry_after_seconds_and_dates():
    assert _retry_after("3") == 3.0
    assert _retry_after(None) is None
    assert _retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0


def test_settings_from_the_environment(monkeypatch):
    monkeypatch.setenv("JINALOC_API_URL", "http://h:1")
    monkeypatch.setenv("JINALOC_API_MODEL", "retrieval=a, clustering=b")
    monkeypatch.setenv("JINALOC_API_JOBS", "8")
    s = APISettings.from_env(kind="jina")
    assert (s.url, s.kind, s.models, s.jobs) == (
        "http://h:1",
        "jina",
        ("retrieval=a", "clustering=b"),
        8,
    )
    assert APISettings.from_env(url="http://other").url == "http://other"
    monkeypatch.setenv("JINALOC_API_JOBS", "many")
    with pytest.raises(JinalocError, match="JINALOC_API_JOBS"):
        APISettings.from_env()


def test_never_a_default():
    from jinaloc.load import default_backend

    assert default_backend() != "api"
    with pytest.raises(JinalocError, match="--api-url"):
        open_api(resolve(str(NANO)), APISettings())


def test_the_tokenizer_is_read_here(tmp_path):
    from jinaloc.errors import ModelNotDownloaded

    api = APISettings(url="http://127.0.0.1:9")
    with pytest.raises(ModelNotDownloaded, match="tokenizer"):  # HF_HUB_OFFLINE=1, empty cache
        open_api(resolve("v5-nano"), api)
    (tmp_path / "config.json").write_text((NANO / "config.json").read_text())
    with pytest.raises(JinalocError, match="tokenizer.json"):
        open_api(resolve(str(tmp_path)), api)


def test_api_options_need_backend_api():
    result = cli("embed", "--model", NANO, "--api-url", "http://h:1", "hi", ok=(2,))
    assert "goes with --backend api" in result.stderr


def test_jina_cloud_needs_its_key_and_only_it_gets_jina_key(monkeypatch, fake):
    spec = resolve(str(NANO))
    with pytest.raises(JinalocError, match="JINA_API_KEY"):
        open_api(spec, APISettings(url="https://api.jina.ai/v1"))
    monkeypatch.setenv("JINA_API_KEY", KEY)
    server = fake()
    e = open_api(spec, settings(server.url))
    e.embed(["x"])
    assert "Authorization" not in server.headers[0]  # Jina's key is for Jina's API only
    e.close()


# --- the fake server: batching, prompts, models per task, faults ---


def test_prefixes_models_per_task_and_vectors(fake):
    server = fake()
    e = open_api(
        resolve(str(NANO)),
        settings(server.url, models=("retrieval=ret", "clustering=clu")),
    )
    got = e.embed(TEXTS, "retrieval", "query", dim=32)
    want = np.stack([fake_vector("Query: " + t)[:32] for t in TEXTS])
    want /= np.linalg.norm(want, axis=1, keepdims=True)
    np.testing.assert_allclose(got, want, atol=1e-6)
    e.embed(TEXTS, "clustering", "document")
    assert [b["model"] for b in server.bodies] == ["ret", "clu"]
    assert server.bodies[1]["input"][0].startswith("Document: ")
    with pytest.raises(JinalocError, match="text-matching=NAME"):
        e.embed(TEXTS, "text-matching")
    e.close()


def test_kind_is_told_by_the_server(fake):
    server = fake()
    spec = resolve(str(NANO))
    assert open_api(spec, APISettings(url=server.url)).client.kind == "openai"
    server.health = {"status": "ok", "model": "m", "backend": "gguf", "version": "0.1.0"}
    assert open_api(spec, APISettings(url=server.url)).client.kind == "jina"  # jinaloc serve
    with pytest.raises(JinalocError, match="cannot reach"):
        open_api(spec, APISettings(url=f"http://127.0.0.1:{free_port()}", retries=0))


def test_a_served_adapter_is_not_used_for_another_task(fake):
    server = fake()
    e = open_api(resolve(str(NANO)), settings(server.url, models=("v5-nano-retrieval-F32",)))
    e.embed(["a"], "retrieval")
    with pytest.raises(JinalocError, match="retrieval adapter"):
        e.embed(["a"], "clustering")
    e.close()


def test_batches_by_inputs_and_tokens(fake):
    server = fake()
    texts = [f"{i} " + "word " * (1 + i % 40) for i in range(100)]
    e = open_api(resolve(str(NANO)), settings(server.url, batch_tokens=200))
    e.embed(texts, batch_size=16)
    assert sorted(Counter(server.answered).values()) == [1] * 100
    for body in server.bodies:
        counts = e.tokenizer.tokenize(body["input"])[1]  # prefixed already
        assert len(body["input"]) <= 16
        assert len(body["input"]) == 1 or max(counts) * len(body["input"]) <= 200
    e.close()


def test_other_dims_from_the_server_are_refused(fake):
    server = fake(dim=32)
    e = open_api(resolve(str(NANO)), settings(server.url, retries=0))
    with pytest.raises(EmbedFailed, match="32-dim vectors"):
        e.embed(["a"])
    e.close()


@pytest.mark.parametrize("fault", [429, 500, "drop", "hang"])
def test_a_fault_is_retried_and_nothing_is_embedded_twice(fake, fault):
    server = fake(faults={2: fault, 3: fault})
    texts = [f"text number {i}" for i in range(64)]
    e = open_api(resolve(str(NANO)), settings(server.url, timeout=1.0, jobs=3))
    start = time.monotonic()
    got = e.embed(texts, batch_size=8)
    assert time.monotonic() - start < 20
    want = np.stack([fake_vector("Document: " + t) for t in texts])
    assert cos(got, want).min() > 0.99999
    assert set(server.answered.values()) == {1} and len(server.answered) == 64
    assert e.client.stats.retries >= 2
    if fault == 429:  # Retry-After: 1 was waited for
        assert time.monotonic() - start >= 1.0
    e.close()


def test_a_request_too_large_is_halved(fake):
    server = fake(faults={1: 413})
    texts = [f"text {i}" for i in range(8)]
    e = open_api(resolve(str(NANO)), settings(server.url, jobs=1))
    got = e.embed(texts, batch_size=8)
    assert cos(got, np.stack([fake_vector("Document: " + t) for t in texts])).min() > 0.99999
    assert [len(b["input"]) for b in server.bodies] == [8, 4, 4]
    assert set(server.answered.values()) == {1} and len(server.answered) == 8
    e.close()


def test_a_refused_request_fails_without_retries(fake):
    server = fake(faults={1: 400})
    e = open_api(resolve(str(NANO)), settings(server.url, retries=3))
    with pytest.raises(EmbedFailed, match="HTTP 400: bad input") as info:
        e.embed(["a"])
    assert not info.value.transient and server.requests == 1
    e.close()


def test_a_server_that_keeps_failing_gives_a_count(fake):
    server = fake(fail_from=1)
    e = open_api(resolve(str(NANO)), settings(server.url, retries=1))
    with pytest.raises(EmbedFailed) as info:
        e.embed([f"t{i}" for i in range(40)], batch_size=8)
    assert info.value.failed == 40 and info.value.transient
    assert "40 of 40 texts" in str(info.value) and "HTTP 500" in str(info.value)
    e.close()


def test_index_resumes_after_a_failed_run_and_embeds_nothing_twice(fake, tmp_path):
    notes = tmp_path / "notes"
    make_notes(notes, 200, paragraphs=2, words=12)  # a chunk each: 7 requests of 32
    db = tmp_path / "i.db"
    common = ["--db", db, "--model", NANO, "--backend", "api", "--api-kind", "openai"]
    common += ["--api-model", "fake", "--api-jobs", "2"]
    server = fake(fail_from=4)
    env = {"JINALOC_API_RETRIES": "1", "JINALOC_API_TIMEOUT": "2"}
    result = CliRunner(env=env).invoke(
        app, ["index", str(notes), *map(str, common), "--api-url", server.url, "--json"]
    )
    assert result.exit_code == 2, result.stderr
    report = json.loads(result.stdout)
    assert report["failed"] > 0 and report["added"] > 0
    assert report["added"] + report["failed"] == 200
    assert "files not indexed" in result.stderr and "run the same command again" in result.stderr
    first = Counter(server.answered)
    # Healthy again: only the files not written are embedded.
    server2 = fake()
    result = cli("index", notes, *common, "--api-url", server2.url, "--json")
    again = json.loads(result.stdout)
    assert again["added"] == report["failed"] and again["failed"] == 0
    both = first + server2.answered
    assert both and set(both.values()) == {1}
    # Every chunk's vector is the server's.
    from jinaloc.index import Index

    with Index.open(db) as idx:
        assert idx.meta.backend == "api" and idx.meta.model == "tiny-v5-nano"
        assert idx.store.counts()["chunks"] >= len(both)


def test_redirects_are_not_followed_with_the_key(fake, monkeypatch):
    monkeypatch.setenv("JINALOC_API_KEY", KEY)
    elsewhere, server = fake(), fake()
    server.redirect = elsewhere.url + "/embeddings"
    e = open_api(resolve(str(NANO)), settings(server.url))
    with pytest.raises(EmbedFailed, match="HTTP 302"):
        e.embed(["a"])
    assert elsewhere.headers == []
    e.close()


def test_the_key_is_sent_but_never_stored_or_shown(fake, tmp_path, monkeypatch):
    monkeypatch.setenv("JINALOC_API_KEY", KEY)
    notes = tmp_path / "notes"
    make_notes(notes, 5)
    db = tmp_path / "k.db"
    server = fake()
    api = ["--model", NANO, "--backend", "api", "--api-url", server.url, "--api-kind", "openai"]
    result = cli("index", notes, "--db", db, *api, "--api-model", "fake", "--json")
    assert server.headers[0]["Authorization"] == f"Bearer {KEY}"
    assert KEY not in result.stdout + result.stderr
    for path in tmp_path.glob("k.db*"):
        assert KEY.encode() not in path.read_bytes()
    assert server.url.encode() not in db.read_bytes()  # nor where the vectors came from
    server.fail_from = 1
    monkeypatch.setenv("JINALOC_API_RETRIES", "0")
    result = cli("embed", *api, "--api-model", "fake", *TEXTS, ok=(2,))
    assert "3 of 3 texts were not embedded" in result.stderr and "HTTP 500" in result.stderr
    assert KEY not in result.stdout + result.stderr


def test_ctrl_c_with_a_hung_server_keeps_finished_files(fake, tmp_path):
    from jinaloc.index import Index
    from jinaloc.index.write import Progress

    notes = tmp_path / "notes"
    make_notes(notes, 200, paragraphs=2, words=12)  # a chunk each: 7 requests of 32
    server = fake(faults={n: "hang" for n in range(3, 100)})
    api = settings(server.url, timeout=30.0, jobs=2)

    class StopSoon(Progress):
        def __init__(self):
            self.files = 0

        def file_done(self, chunks):
            self.files += 1

        def embedded(self, texts, tokens):
            pass

    progress = StopSoon()

    def loader(model, backend, quant, offline, task):
        return open_api(resolve(str(NANO)), api)

    done = threading.Event()

    def interrupt_later():  # Ctrl-C once requests hang
        while server.requests < 4:
            time.sleep(0.05)
        time.sleep(0.3)
        if not done.is_set():
            os.kill(os.getpid(), signal.SIGINT)

    with Index.open(tmp_path / "i.db", create=True, loader=loader) as idx:
        idx.use_model(str(NANO), "api")
        threading.Thread(target=interrupt_later, daemon=True).start()
        start = time.monotonic()
        try:
            with pytest.raises(KeyboardInterrupt):
                idx.update([notes], progress=progress)
        finally:
            done.set()
        assert time.monotonic() - start < 10  # not the 30 s timeout
        written = idx.store.counts()["files"]
    assert written == progress.files > 0


# --- real servers ---

needs_gguf = pytest.mark.skipif(not have_gguf(), reason="needs llama-cpp-python")


@pytest.fixture(scope="module")
def local_nano():
    from jinaloc.load import load_embedder

    e = load_embedder(str(NANO), backend="gguf", quant="F32", offline=True)
    yield e
    e.close()


@pytest.fixture(scope="module")
def jinaloc_server(tmp_path_factory):
    pytest.importorskip("uvicorn")
    pytest.importorskip("starlette")
    from server_helpers import MODEL_ARGS, ServeProcess

    proc = ServeProcess(tmp_path_factory.mktemp("apiserve") / "state", *MODEL_ARGS, "--token", KEY)
    yield proc
    proc.stop()


CASES = [
    ("retrieval", "query"),
    ("retrieval", "document"),
    ("text-matching", "document"),
    ("clustering", "document"),
    ("classification", "document"),
]


@needs_gguf
def test_jinaloc_serve_vectors_equal_local(jinaloc_server, local_nano, monkeypatch):
    monkeypatch.setenv("JINALOC_API_KEY", KEY)
    e = open_api(resolve(str(NANO)), APISettings(url=jinaloc_server.url))
    assert e.client.kind == "jina"  # told by its /v1/models
    for task, prompt in CASES:
        for dim in (None, 32):
            want = local_nano.embed(TEXTS, task, prompt, dim)
            got = e.embed(TEXTS, task, prompt, dim)
            assert cos(got, want).min() >= 0.9999, (task, prompt, dim)
    e.close()


@needs_gguf
def test_jinaloc_serve_needs_the_key(jinaloc_server):
    e = open_api(resolve(str(NANO)), APISettings(url=jinaloc_server.url, kind="jina"))
    with pytest.raises(EmbedFailed, match="HTTP 401") as info:
        e.embed(["a"])
    assert KEY not in str(info.value)
    e.close()


@needs_gguf
def test_index_through_a_server_is_searched_offline_locally(jinaloc_server, tmp_path, monkeypatch):
    monkeypatch.setenv("JINALOC_API_KEY", KEY)
    notes = tmp_path / "notes"
    make_notes(notes, 12, paragraphs=2, words=12)
    db = tmp_path / "api.db"
    out = cli(
        "index", notes, "--db", db, "--model", NANO, "--backend", "api", "--api-url",
        jinaloc_server.url, "--json",
    ).stdout  # fmt: skip
    assert json.loads(out)["added"] == 12
    local_db = tmp_path / "local.db"
    cli("index", notes, "--db", local_db, "--model", NANO, "--backend", "gguf", "--quant", "F32",
        "--no-server", "-q")  # fmt: skip
    # similar on a note the index does not hold, and eval, through the server too.
    new = tmp_path / "new.md"
    new.write_text("# Garden\n\ntomato plants compost watering\n")
    through = ["--backend", "api", "--api-url", jinaloc_server.url]
    hits = json.loads(cli("similar", new, "--db", db, *through, "--json").stdout)
    assert hits and all(h["path"] != str(new) for h in hits)
    queries = tmp_path / "q.tsv"
    queries.write_text("".join(f"{p.stem} words\t{p}\n" for p in sorted(notes.rglob("*.md"))[:4]))
    result = json.loads(cli("eval", "--db", db, *through, "--json", "--queries", queries).stdout)
    assert result["rows"]
    query = ["search", "tomato basil garlic", "--mode", "semantic", "--json", "--all-chunks"]
    remote = json.loads(cli(*query, "--db", db, *through).stdout)  # the query too
    monkeypatch.delenv("JINALOC_API_KEY")
    offline = ["--backend", "gguf", "--quant", "F32", "--offline", "--no-server"]
    served = json.loads(cli(*query, "--db", db, *offline).stdout)
    local = json.loads(cli(*query, "--db", local_db, *offline).stdout)
    assert [h["path"] for h in remote] == [h["path"] for h in served]
    assert [h["path"] for h in served] == [h["path"] for h in local]
    np.testing.assert_allclose([h["score"] for h in served], [h["score"] for h in local], atol=1e-4)
    # Searched with the default backend too: the index names its model, not the server.
    assert cli("search", "tomato", "--db", db, "--offline", "--no-server", "--json").stdout
    # Another model is refused.
    wrong = cli("search", "tomato", "--db", db, "--model", model_dir("small"), ok=(2,))
    assert "model" in wrong.stderr
    # The key is nowhere: not in the file, not in what was printed.
    for path in tmp_path.glob("api.db*"):
        assert KEY.encode() not in path.read_bytes()
    assert KEY not in out


@needs_gguf
def test_cli_commands_through_a_server(jinaloc_server, monkeypatch, tmp_path):
    monkeypatch.setenv("JINALOC_API_KEY", KEY)
    api = ["--model", NANO, "--backend", "api", "--api-url", jinaloc_server.url]
    local = ["--model", NANO, "--backend", "gguf", "--quant", "F32", "--no-server"]
    for args in (["--prompt", "query", "--dim", "32"], ["--task", "clustering"]):
        a = [
            json.loads(x)["embedding"]
            for x in cli("embed", *api, *args, *TEXTS).stdout.splitlines()
        ]
        b = [
            json.loads(x)["embedding"]
            for x in cli("embed", *local, *args, *TEXTS).stdout.splitlines()
        ]
        assert cos(a, b).min() >= 0.9999
    lines = "\n".join(TEXTS + ["the dog sat on the mat"]) + "\n"
    for command in (["rerank", "cat on a mat"], ["dedup"]):
        a = cli(*command, *api, "--json", input=lines).stdout
        b = cli(*command, *local, "--json", input=lines).stdout
        assert rounded(json.loads(a)) == rounded(json.loads(b)), command

    def groups(out: str):  # members within a cluster may tie: compare who is with whom
        return sorted(sorted(m["text"] for m in c["members"]) for c in json.loads(out)["clusters"])

    a = cli("cluster", "-k", "2", *api, "--json", input=lines).stdout
    assert groups(a) == groups(cli("cluster", "-k", "2", *local, "--json", input=lines).stdout)
    a = cli("classify", "--label", "cats", "--label", "taxes", *api, "--json", input=lines).stdout
    b = cli("classify", "--label", "cats", "--label", "taxes", *local, "--json", input=lines).stdout
    assert [r["label"] for r in json.loads(a)] == [r["label"] for r in json.loads(b)]
    assert KEY not in a


# llama.cpp's own OpenAI-compatible server (llama-cpp-python's `llama_cpp.server`).


def _have_llama_server() -> bool:
    try:
        import llama_cpp.server.app  # noqa: F401
    except Exception:
        return False
    return True


@pytest.fixture(scope="module")
def llama_server():
    if not (have_gguf() and _have_llama_server()):
        pytest.skip("needs llama-cpp-python[server]")
    port = free_port()
    gguf = NANO / "gguf" / "v5-nano-retrieval-F32.gguf"
    proc = subprocess.Popen(
        [sys.executable, "-m", "llama_cpp.server", "--model", str(gguf), "--embedding", "true",
         "--host", "127.0.0.1", "--port", str(port), "--n_ctx", "512", "--verbose", "false"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}/v1"
    deadline = time.monotonic() + 120
    import urllib.request

    while True:
        try:
            urllib.request.build_opener(urllib.request.ProxyHandler({})).open(
                url + "/models", timeout=2
            )
            break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                raise RuntimeError(
                    f"llama_cpp.server did not start: {proc.stderr.read()}"
                ) from None
            time.sleep(0.2)
    yield url
    proc.terminate()
    proc.wait(20)


def test_llama_cpp_server_vectors_equal_local(llama_server, local_nano):
    e = open_api(resolve(str(NANO)), APISettings(url=llama_server))
    assert e.client.kind == "openai"
    assert e.client.model_for("retrieval").endswith("v5-nano-retrieval-F32.gguf")
    for prompt in ("query", "document"):
        for dim in (None, 32):
            want = local_nano.embed(TEXTS, "retrieval", prompt, dim)
            got = e.embed(TEXTS, "retrieval", prompt, dim)
            assert cos(got, want).min() >= 0.9999, (prompt, dim)
    with pytest.raises(JinalocError, match="clustering=NAME"):
        e.embed(TEXTS, "clustering")  # it serves the retrieval adapter only
    e.close()


def test_index_through_llama_cpp_server_searched_locally(llama_server, tmp_path):
    notes = tmp_path / "notes"
    make_notes(notes, 10, paragraphs=2, words=12)
    db = tmp_path / "llama.db"
    cli(
        "index",
        notes,
        "--db",
        db,
        "--model",
        NANO,
        "--backend",
        "api",
        "--api-url",
        llama_server,
        "-q",
    )
    local_db = tmp_path / "local.db"
    cli("index", notes, "--db", local_db, "--model", NANO, "--backend", "gguf", "--quant", "F32",
        "--no-server", "-q")  # fmt: skip
    query = ["search", "train ticket airport", "--mode", "semantic", "--json", "--all-chunks"]
    offline = ["--backend", "gguf", "--quant", "F32", "--offline", "--no-server"]
    served = json.loads(cli(*query, "--db", db, *offline).stdout)
    local = json.loads(cli(*query, "--db", local_db, *offline).stdout)
    assert [h["path"] for h in served] == [h["path"] for h in local]
    np.testing.assert_allclose([h["score"] for h in served], [h["score"] for h in local], atol=1e-3)
