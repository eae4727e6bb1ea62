"""`--backend api`: embed through a Jina- or OpenAI-compatible embeddings server (a GPU box
running vLLM, TEI or Infinity, llama.cpp's server, Ollama, LM Studio, `jinaloc serve`, or
api.jina.ai), with vectors that stay those of the local backends.

Texts are tokenized here with the model's own tokenizer, so chunks, batches by tokens and
truncation are the local ones; only texts go out and pooled vectors come back, and the
Matryoshka slice-then-normalize stays `Embedder`'s. Two kinds of server:

- `jina`: Jina's request (`task` picks the adapter and its prompt, `truncate`), as
  api.jina.ai and `jinaloc serve` take it;
- `openai`: a generic OpenAI-compatible `/v1/embeddings`: the `Query: `/`Document: ` prefix
  is added here, and each task goes to the served model of its adapter (vLLM, llama.cpp
  and the rest serve one merged adapter per model name).

Requests go N at a time (daemon threads: Ctrl-C never waits for a hung server), retried
with backoff on 429, 5xx, timeouts and dropped connections, honouring Retry-After. The key
comes from the environment only and is never stored, logged or shown. Stdlib HTTP only."""

from __future__ import annotations

import base64
import email.utils
import http.client
import json
import logging
import os
import queue
import random
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from urllib.parse import urlsplit, urlunsplit

import numpy as np

from .. import __version__
from ..embedder import BaseEmbedder, ProgressFn, length_sorted_batches, note_truncated
from ..errors import EmbedFailed, JinalocError, check_choice
from ..net import is_loopback
from ..registry import TASKS, ModelSpec

log = logging.getLogger("jinaloc")

KINDS = ("auto", "jina", "openai")
KEY_ENV = "JINALOC_API_KEY"
# Jina's own variable, sent to Jina's API only: never to another server.
JINA_KEY_ENV = "JINA_API_KEY"
JINA_HOST = "api.jina.ai"
# Defaults, each also an environment variable (JINALOC_API_<NAME>).
JOBS = 4  # requests in flight
BATCH_TOKENS = 16384  # padded tokens per request (longest input x inputs)
TIMEOUT = 120.0  # seconds without an answer before a request is retried
RETRIES = 6  # per request: 0.5 s backoff doubling to 30 s, about a minute in all
BACKOFF, MAX_BACKOFF = 0.5, 30.0
# A Retry-After longer than this (a daily quota) fails the run instead of sleeping.
MAX_RETRY_AFTER = 300.0
RETRY_STATUSES = {408, 409, 425, 429}  # and every 5xx


@dataclass(frozen=True)
class APISettings:
    """Where and how to embed; every field also reads from JINALOC_API_<FIELD>."""

    url: str | None = None
    kind: str = "auto"
    # Served model names: "NAME", or "TASK=NAME" for one task's adapter (openai kind).
    models: tuple[str, ...] = ()
    jobs: int = JOBS
    batch_tokens: int = BATCH_TOKENS
    timeout: float = TIMEOUT
    retries: int = RETRIES

    @classmethod
    def from_env(cls, **given) -> APISettings:
        """Settings from `given` (None: not given) and the environment."""
        env = os.environ
        values: dict = {}
        for name, kind in (
            ("url", str),
            ("kind", str),
            ("jobs", int),
            ("batch_tokens", int),
            ("timeout", float),
            ("retries", int),
        ):
            value = given.get(name)
            raw = env.get(f"JINALOC_API_{name.upper()}", "").strip()
            if value is None and raw:
                try:
                    value = kind(raw)
                except ValueError:
                    raise JinalocError(
                        f"JINALOC_API_{name.upper()}={raw!r} is not a {kind.__name__}"
                    ) from None
            if value is not None:
                values[name] = value
        models = given.get("models") or [
            m.strip() for m in env.get("JINALOC_API_MODEL", "").split(",") if m.strip()
        ]
        return cls(**values, models=tuple(models))


def endpoint_url(url: str) -> str:
    """The embeddings endpoint of `url`: as given when it ends in /embeddings, else under
    its path (`http://host:8000/v1`) or under /v1 (`http://host:8000`)."""
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise JinalocError(f"--api-url must be an http(s) URL, got {shown_url(url)!r}")
    path = parts.path.rstrip("/")
    if not path.endswith("/embeddings"):
        path = (path or "/v1") + "/embeddings"
    return urlunsplit((parts.scheme, parts.netloc, path, parts.query, ""))


def shown_url(url: str) -> str:
    """`url` without user info or query, as messages show it (either may hold a secret)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def _named_task(model_id: str) -> str | None:
    """The task a served model's name says it is the adapter of (`...-retrieval-Q8_0`)."""
    name = model_id.lower().replace("_", "-")
    hits = [t for t in TASKS if t in name]
    return hits[0] if len(hits) == 1 else None


def _retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header: a number, or an HTTP date."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, req, fp, code, msg, headers, newurl):
        return None  # the 3xx is then the answer: an error that names it


class _Retry(Exception):
    """A failure worth another try (429, 5xx, timeout, dropped connection)."""

    def __init__(self, message: str, after: float | None = None):
        super().__init__(message)
        self.after = after


class _Refused(Exception):
    """The server's final answer for this request (a 4xx): no retry."""

    def __init__(self, message: str, status: int, transient: bool = False):
        super().__init__(message)
        self.status, self.transient = status, transient


@dataclass
class Stats:
    """What a session sent: for the run's summary and the benchmarks."""

    requests: int = 0
    retries: int = 0
    texts: int = 0
    tokens: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, **counts: int) -> None:
        with self.lock:
            for name, n in counts.items():
                setattr(self, name, getattr(self, name) + n)


class _Pool:
    """Daemon worker threads: an interrupted run exits without waiting for a request."""

    def __init__(self, workers: int, name: str):
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._workers = workers
        for i in range(workers):
            threading.Thread(target=self._work, name=f"{name}-{i}", daemon=True).start()

    def submit(self, fn: Callable, *args) -> Future:
        future: Future = Future()
        self._queue.put((future, fn, args))
        return future

    def _work(self) -> None:
        while (item := self._queue.get()) is not None:
            future, fn, args = item
            if future.set_running_or_notify_cancel():
                try:
                    future.set_result(fn(*args))
                except BaseException as e:  # handed to the waiting caller
                    future.set_exception(e)

    def close(self) -> None:
        for _ in range(self._workers):
            self._queue.put(None)


class Client:
    """One embeddings server: its kind, served model names, and requests with retries."""

    def __init__(self, settings: APISettings, spec: ModelSpec, hidden_size: int):
        if not settings.url:
            raise JinalocError(
                "--backend api needs the server's URL: pass --api-url URL (or set JINALOC_API_URL)"
            )
        check_choice("--api-kind", settings.kind, KINDS)
        if settings.jobs < 1 or settings.batch_tokens < 1 or settings.retries < 0:
            raise JinalocError("--api-jobs, JINALOC_API_BATCH_TOKENS must be >= 1, retries >= 0")
        self.settings = settings
        self.spec = spec
        self.hidden_size = hidden_size
        self.endpoint = endpoint_url(settings.url)
        self.shown = shown_url(self.endpoint)
        host = urlsplit(self.endpoint).hostname or ""
        self.jina_cloud = host == JINA_HOST
        key = os.environ.get(KEY_ENV, "").strip()
        if not key and self.jina_cloud:
            key = os.environ.get(JINA_KEY_ENV, "").strip()
        if not key and self.jina_cloud:
            raise JinalocError(f"{JINA_HOST} needs an API key: set {JINA_KEY_ENV} or {KEY_ENV}")
        self._headers = {
            "Content-Type": "application/json",
            "Accept": "application/json",
            "User-Agent": f"jinaloc/{__version__}",
        }
        if key:
            self._headers["Authorization"] = f"Bearer {key}"
        # Loopback goes direct; elsewhere the environment's proxies apply, as for any client.
        # Redirects are not followed: urllib would send the key on to wherever they point.
        handlers = [_NoRedirect()]
        if is_loopback(host):
            handlers.append(urllib.request.ProxyHandler({}))
        self._opener = urllib.request.build_opener(*handlers)
        self.stats = Stats()
        self._served: list[dict] | None = None
        self.kind = settings.kind if settings.kind != "auto" else self._detect()

    # --- HTTP ---

    def _once(self, url: str, body: bytes | None):
        request = urllib.request.Request(url, body, self._headers, method="POST" if body else "GET")
        try:
            with self._opener.open(request, timeout=self.settings.timeout) as response:
                raw = response.read()
        except urllib.error.HTTPError as e:
            detail = _detail(e)
            if e.code in RETRY_STATUSES or e.code >= 500:
                after = _retry_after(e.headers.get("Retry-After"))
                raise _Retry(f"HTTP {e.code}{detail}", after) from None
            raise _Refused(f"HTTP {e.code}{detail}", e.code) from None
        except (OSError, http.client.HTTPException) as e:  # refused, reset, timed out, cut
            raise _Retry(_reason(e)) from None
        try:
            return json.loads(raw)
        except ValueError:
            raise _Retry("the answer is not JSON") from None

    def call(self, url: str, body: bytes | None = None, retries: int | None = None):
        """The JSON answer, with retries and backoff; `_Refused` when there is none."""
        retries = self.settings.retries if retries is None else retries
        for attempt in range(retries + 1):
            try:
                return self._once(url, body)
            except _Retry as e:
                if attempt == retries:
                    raise _Refused(f"{e} ({attempt + 1} attempts)", 0, transient=True) from None
                wait = e.after
                if wait is None:
                    wait = min(MAX_BACKOFF, BACKOFF * 2**attempt) * random.uniform(0.5, 1.0)
                elif wait > MAX_RETRY_AFTER:
                    raise _Refused(
                        f"{e}: it asks to wait {wait:.0f} s", 0, transient=True
                    ) from None
                self.stats.add(retries=1)
                log.debug("%s: %s; retrying in %.1f s", self.shown, e, wait)
                time.sleep(wait)
        raise AssertionError("unreachable")

    # --- the server's kind and models ---

    def served_models(self) -> list[dict]:
        """GET .../models (once): the served models, [] when the server has no such list."""
        if self._served is None:
            url = self.endpoint.rsplit("/embeddings", 1)[0] + "/models"
            try:
                answer = self.call(url, retries=1)
            except _Refused as e:
                if e.transient:
                    raise JinalocError(
                        f"cannot reach the embeddings server at {self.shown}: {e}"
                    ) from None
                answer = {}
            data = answer.get("data") if isinstance(answer, dict) else None
            self._served = [m for m in data or [] if isinstance(m, dict) and m.get("id")]
        return self._served

    def _detect(self) -> str:
        """jina for api.jina.ai and `jinaloc serve` (its /v1/models or /health says so),
        else openai."""
        if self.jina_cloud or any(m.get("owned_by") == "jinaloc" for m in self.served_models()):
            return "jina"
        parts = urlsplit(self.endpoint)
        try:
            health = self.call(
                urlunsplit((parts.scheme, parts.netloc, "/health", "", "")), retries=0
            )
        except _Refused:
            return "openai"
        jinaloc = isinstance(health, dict) and {"model", "backend", "version"} <= set(health)
        return "jina" if jinaloc else "openai"

    def model_for(self, task: str) -> str | None:
        """The served model name to ask for `task`."""
        named = {}
        plain = []
        for item in self.settings.models:
            name, sep, value = item.partition("=")
            if sep and name in TASKS:
                named[name] = value
            else:
                plain.append(item)
        if task in named:
            return named[task]
        if self.kind == "jina":  # the task field picks the adapter
            if plain:
                return plain[0]
            return self.spec.hf_repo.rsplit("/", 1)[-1] if self.spec.hf_repo else self.spec.name
        fits = [p for p in plain if _named_task(p) in (None, task)]
        if fits:
            return fits[0]
        hint = f"pass --api-model {task}=NAME (the served model of the {task} adapter)"
        if plain:
            raise JinalocError(
                f"the served model {plain[0]!r} is the {_named_task(plain[0])} adapter, not the"
                f" {task} one",
                hint,
            )
        if named:  # names were given, none for this task: no guessing
            raise JinalocError(f"no served model for task {task} among --api-model", hint)
        ids = [m["id"] for m in self.served_models()]
        fits = [i for i in ids if _named_task(i) == task] or (
            ids if len(ids) == 1 and _named_task(ids[0]) is None else []
        )
        if fits:
            return fits[0]
        listed = f" (it serves {', '.join(map(repr, ids))})" if ids else ""
        raise JinalocError(f"no model for task {task} on {self.shown}{listed}", hint)

    # --- embeddings ---

    def embed(self, inputs: list[str], task: str, prompt: str, model: str | None) -> np.ndarray:
        """Pooled vectors (float32, full dim) for one request's inputs."""
        if self.kind == "jina":
            payload: dict = {
                "input": inputs,
                "task": ("retrieval.query" if prompt == "query" else "retrieval.passage")
                if task == "retrieval"
                else task,
                "embedding_type": "base64",
                "normalized": True,
                "truncate": True,
            }
            if task != "retrieval" and prompt == "query":
                payload["prompt"] = "query"  # jinaloc serve's own; Jina's API has no such task
        else:  # prefixed here; floats, which every OpenAI-compatible server can send
            payload = {"input": inputs, "encoding_format": "float"}
        if model:
            payload["model"] = model
        answer = self.call(self.endpoint, json.dumps(payload).encode())
        self.stats.add(requests=1)
        return self._vectors(answer, len(inputs))

    def _vectors(self, answer, n: int) -> np.ndarray:
        data = answer.get("data") if isinstance(answer, dict) else None
        if not isinstance(data, list) or len(data) != n:
            got = len(data) if isinstance(data, list) else "no"
            raise _Refused(f"the answer holds {got} embeddings for {n} inputs", 0)
        out = np.empty((n, self.hidden_size), np.float32)
        try:
            rows = sorted(data, key=lambda item: item["index"])
            for i, item in enumerate(rows):
                value = item["embedding"]
                if isinstance(value, str):
                    row = np.frombuffer(base64.b64decode(value), dtype="<f4")
                else:
                    row = np.asarray(value, dtype=np.float32)
                if row.shape != (self.hidden_size,):
                    raise _Refused(
                        f"the server sent {row.size}-dim vectors; {self.spec.name} gives"
                        f" {self.hidden_size}: is it serving another model?",
                        0,
                    )
                out[i] = row
        except (KeyError, TypeError, ValueError) as e:
            raise _Refused(f"unexpected answer shape ({_reason(e)})", 0) from None
        if not np.isfinite(out).all():
            raise _Refused("the server sent vectors that are not finite", 0)
        return out


class APIEmbedder(BaseEmbedder):
    """An embedder whose vectors come from an embeddings server; the model's tokenizer
    (from its folder: no weights) counts and cuts texts here as a local model would."""

    backend_name = "api"
    quant = "default"

    def __init__(self, spec: ModelSpec, folder, settings: APISettings):
        from .canonical import HFTokenizer, max_tokens, read_json

        super().__init__(spec)
        config = read_json(folder / "config.json")
        self.hidden_size = int(config["hidden_size"])
        self.max_tokens = max_tokens(config, spec.max_tokens)
        self.tokenizer = HFTokenizer(folder, self.max_tokens)
        self.client = Client(settings, spec, self.hidden_size)
        self.in_flight = settings.jobs
        self._requests = _Pool(settings.jobs, "jinaloc-api")
        self._calls = _Pool(settings.jobs, "jinaloc-api-call")

    def embed_raw(
        self,
        texts: Sequence[str],
        task: str,
        prompt: str,
        batch_size: int = 32,
        progress: ProgressFn | None = None,
        truncated: list[tuple[int, int]] | None = None,
    ) -> tuple[np.ndarray, list[int]]:
        texts = list(texts)
        if not texts:
            return np.zeros((0, self.hidden_size), np.float32), []
        model = self.client.model_for(task)
        prefix = self.prefix(prompt)
        ids, full = self.tokenize(texts, prompt)
        note_truncated(full, self.max_tokens, truncated)
        counts = [len(x) for x in ids]
        if self.client.kind == "jina":  # the server adds the prompt, and truncates as here
            inputs = texts
        else:
            decode = self.tokenizer.plain.decode
            inputs = [
                prefix + t if n <= self.max_tokens else decode(ids[i], skip_special_tokens=True)
                for i, (t, n) in enumerate(zip(texts, full, strict=True))
            ]
        batches = length_sorted_batches(counts, batch_size, self.client.settings.batch_tokens)
        futures = [
            self._requests.submit(self._request, [inputs[i] for i in b], task, prompt, model)
            for b in batches
        ]
        out = np.zeros((len(texts), self.hidden_size), np.float32)
        failed, transient, first = 0, False, None
        try:
            for batch, future in zip(batches, futures, strict=True):
                try:
                    out[batch] = future.result()
                except _Refused as e:
                    failed += len(batch)
                    transient = transient or e.transient
                    first = first or e
                    continue
                tokens = sum(counts[i] for i in batch)
                self.client.stats.add(texts=len(batch), tokens=tokens)
                if progress:
                    progress(len(batch), tokens)
        except BaseException:
            for future in futures:
                future.cancel()
            raise
        if failed:
            raise EmbedFailed(
                f"{failed} of {len(texts)} texts were not embedded by {self.client.shown}: {first}",
                failed,
                len(texts),
                transient,
            )
        return out, counts

    def _request(self, inputs: list[str], task: str, prompt: str, model: str | None):
        """One request's vectors; halved and sent again when the server finds it too large."""
        try:
            return self.client.embed(inputs, task, prompt, model)
        except _Refused as e:
            if e.status != 413 or len(inputs) == 1:
                raise
            half = len(inputs) // 2
            return np.concatenate(
                [
                    self._request(inputs[:half], task, prompt, model),
                    self._request(inputs[half:], task, prompt, model),
                ]
            )

    def embed_later(
        self, texts, task="retrieval", prompt="document", dim=None, truncated=None, progress=None
    ):
        return self._calls.submit(
            lambda: self.embed_with_counts(
                texts, task, prompt, dim, progress=progress, truncated=truncated
            )
        )

    def _tokenize(self, texts: list[str]) -> tuple[list[list[int]], list[int]]:
        return self.tokenizer.tokenize(texts)  # cut as the local model would cut them

    def close(self) -> None:
        self._requests.close()
        self._calls.close()


def open_api(spec: ModelSpec, settings: APISettings | None, offline: bool = False) -> APIEmbedder:
    """The api backend for `spec`: its tokenizer from its folder or the HF cache (a few MB,
    downloaded unless offline), its vectors from `settings.url`."""
    from ..hub import tokenizer_dir

    settings = settings or APISettings.from_env()
    if not settings.url:  # before any download
        raise JinalocError(
            "--backend api needs the server's URL: pass --api-url URL (or set JINALOC_API_URL)"
        )
    return APIEmbedder(spec, tokenizer_dir(spec, offline), settings)


def _detail(e: urllib.error.HTTPError) -> str:
    """`: message` from an error body (OpenAI's, Jina's or FastAPI's shape), or ''."""
    try:
        body = json.loads(e.read() or b"null")
    except (ValueError, OSError):
        return ""
    if isinstance(body, dict):
        error = body.get("error")
        message = error.get("message") if isinstance(error, dict) else error or body.get("detail")
        if message:
            return f": {str(message)[:300]}"
    return ""


def _reason(e: BaseException) -> str:
    reason = getattr(e, "reason", None) or str(e) or type(e).__name__
    return str(reason)
