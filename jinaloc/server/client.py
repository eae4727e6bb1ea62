"""The CLI's side of `jinaloc serve`: find a recorded server for the wanted model and embed
through it with an `Embedder` whose raw vectors come over HTTP.

Only the raw pooled vectors travel (float32, base64: exact); the task checks, Matryoshka
slicing and normalization stay `Embedder`'s own, so the output is the in-process one. A
block of texts goes as one request when it fits, so batches (and their float rounding) are
the same as in-process. Stdlib HTTP only: the client path imports little."""

from __future__ import annotations

import base64
import json
import logging
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence

import numpy as np

from ..embedder import BaseEmbedder, Embedder, ProgressFn, check_task, note_truncated
from ..errors import JinalocError, check_choice
from ..load import BACKENDS, default_backend
from ..records import (
    ServerRecord,
    auth_headers,
    healthy,
    no_server_env,
    recorded_servers,
)
from ..registry import ModelSpec, resolve

# Seconds to wait for an answer: past the server's own limit (600 s, queue + work), which
# comes first and says why.
REQUEST_TIMEOUT = 900
# Seconds the CLI keeps retrying a busy server (429/503: its queue is full) before it
# loads the model itself; the waits between tries grow from BUSY_FIRST_WAIT to
# BUSY_MAX_WAIT, or follow the server's Retry-After.
BUSY_WAIT = 30.0
BUSY_FIRST_WAIT = 0.25
BUSY_MAX_WAIT = 4.0
# Share of the server's body limit a request may fill (JSON escapes are estimated).
BODY_SHARE = 0.8
# Loopback servers: never through an http(s)_proxy from the environment.
OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


log = logging.getLogger("jinaloc")


class ServerBusy(JinalocError):
    """The server stayed busy for BUSY_WAIT seconds."""


class RemoteEmbedder(BaseEmbedder):
    """An embedder on a model loaded by `jinaloc serve` (its sizes as the server recorded
    them). When the server stays busy, `fallback()` loads the same model here and the rest
    of the work is done with it."""

    def __init__(
        self,
        spec: ModelSpec,
        record: ServerRecord,
        fallback: Callable[[], Embedder] | None = None,
    ):
        super().__init__(spec)
        self.hidden_size = record.hidden_size
        self.max_tokens = record.max_tokens
        self.quant = record.quant
        self.backend_name = record.backend
        self.record = record
        self.fallback = fallback
        self.local: Embedder | None = None  # the fallback, once loaded

    @property
    def url(self) -> str:
        return self.record.url

    def _post(self, path: str, payload: dict) -> dict:
        """The server's answer; a busy server (429, 503) is retried for BUSY_WAIT seconds,
        after which ServerBusy."""
        data = json.dumps(payload).encode()
        headers = {"Content-Type": "application/json", **auth_headers(self.record)}
        deadline = time.monotonic() + BUSY_WAIT
        wait = BUSY_FIRST_WAIT
        while True:
            request = urllib.request.Request(self.url + path, data, headers, method="POST")
            try:
                with OPENER.open(request, timeout=REQUEST_TIMEOUT) as response:
                    return json.loads(response.read())
            except urllib.error.HTTPError as e:
                try:
                    message = json.loads(e.read())["error"]["message"]
                except (ValueError, KeyError, TypeError):
                    message = e.reason
                if e.code not in (429, 503):
                    raise JinalocError(
                        f"the server at {self.url} refused the request: {message}"
                    ) from None
                left = deadline - time.monotonic()
                if left <= 0:
                    raise ServerBusy(
                        f"the server at {self.url} stayed busy for {BUSY_WAIT:g} s ({message})"
                    ) from None
                time.sleep(min(_retry_after(e.headers.get("Retry-After"), wait), left))
                wait = min(wait * 2, BUSY_MAX_WAIT)
            except OSError as e:
                raise JinalocError(
                    f"the server at {self.url} stopped answering ({e}): run again,"
                    " or pass --no-server"
                ) from None

    def _local(self, busy: ServerBusy) -> Embedder:
        """The model loaded here, once the server stayed busy (a note says so once)."""
        if self.local is None:
            if self.fallback is None:
                raise JinalocError(f"{busy}: run again later, or pass --no-server")
            log.warning("%s: loading the model here instead", busy)
            try:
                self.local = self.fallback()
            except JinalocError as e:
                raise JinalocError(f"{busy}, and loading the model here failed: {e}") from None
        return self.local

    def count_tokens(self, texts: Sequence[str], prompt: str = "document") -> list[int]:
        counts: list[int] = []
        for part in self._requests(list(texts)):
            local = self.local
            if local is None:
                try:
                    counts += self._post("/v1/tokenize", {"input": part, "prompt": prompt})[
                        "tokens"
                    ]
                    continue
                except ServerBusy as busy:
                    local = self._local(busy)
            counts += local.count_tokens(part, prompt)
        return counts

    def close(self) -> None:
        if self.local is not None:
            self.local.close()

    def embed_raw(
        self,
        texts: Sequence[str],
        task: str,
        prompt: str,
        batch_size: int = 32,
        progress: ProgressFn | None = None,
        truncated: list | None = None,
    ) -> tuple[np.ndarray, list[int]]:
        texts = list(texts)
        if not texts:
            return np.zeros((0, self.hidden_size), np.float32), []
        rows: list[np.ndarray] = []
        counts: list[int] = []
        full: list[int] = []
        for part in self._requests(texts):
            local = self.local
            if local is None:
                try:
                    got = self._embed_part(part, task, prompt, batch_size)
                except ServerBusy as busy:
                    local = self._local(busy)
            if local is not None:
                # The same part in the same batches: what the server would have sent.
                cut: list = []
                pooled, part_counts = local.embed_raw(part, task, prompt, batch_size, truncated=cut)
                before = dict(cut)
                got = (
                    list(pooled),
                    part_counts,
                    [before.get(i, n) for i, n in enumerate(part_counts)],
                )
            rows += got[0]
            counts += got[1]
            full += got[2]
            if progress:
                progress(len(part), sum(counts[-len(part) :]))
        note_truncated(full, self.max_tokens, truncated)
        return np.stack(rows).astype(np.float32), counts

    def _embed_part(self, part: list[str], task: str, prompt: str, batch_size: int):
        """(raw vectors, token counts, counts before truncation) of one request."""
        answer = self._post(
            "/v1/embeddings",
            {
                "model": self.name,
                "input": part,
                "task": task,
                "prompt": prompt,
                "embedding_type": "base64",
                "normalized": False,
                "truncate": True,
                "batch_size": batch_size,
            },
        )
        data = sorted(answer["data"], key=lambda item: item["index"])
        if len(data) != len(part):
            raise JinalocError(f"the server at {self.url} sent {len(data)} of {len(part)}")
        rows = [np.frombuffer(base64.b64decode(item["embedding"]), dtype="<f4") for item in data]
        counts = [item["tokens"] for item in data]
        return rows, counts, [item.get("input_tokens", item["tokens"]) for item in data]

    def _requests(self, texts: list[str]) -> list[list[str]]:
        """`texts` in as few requests as the server's limits allow (usually one)."""
        budget = int(self.record.max_body * BODY_SHARE)
        parts: list[list[str]] = [[]]
        size = 0
        for i, text in enumerate(texts):
            n = len(json.dumps(text)) + 2
            if n > budget:
                raise JinalocError(
                    f"input {i} is larger than the server's request limit: pass --no-server"
                )
            if parts[-1] and (size + n > budget or len(parts[-1]) >= self.record.max_inputs):
                parts.append([])
                size = 0
            parts[-1].append(text)
            size += n
        return parts


def _retry_after(value: str | None, default: float) -> float:
    """Seconds a Retry-After header asks for (its date form is not used by jinaloc)."""
    try:
        return max(0.0, float(value)) if value else default
    except ValueError:
        return default


def find_server(
    model: str | None,
    backend: str = "auto",
    quant: str | None = None,
    task: str | None = None,
    fallback: Callable[[], Embedder] | None = None,
) -> RemoteEmbedder | None:
    """An embedder on a running server that loaded exactly what an in-process load of
    (model, backend, quant) would, or None (also when JINALOC_NO_SERVER is set).
    `fallback` loads that model here, for when the server stays busy."""
    if no_server_env():
        return None
    records = recorded_servers()
    if not records:
        return None
    spec = resolve(model)
    check_choice("backend", backend, BACKENDS)
    if task is not None:
        check_task(task, spec.tasks)
    for record in records:
        if loads_same(record, spec, backend, quant) and healthy(record):
            return RemoteEmbedder(spec, record, fallback)
    return None


def loads_same(loaded, spec: ModelSpec, backend: str, quant: str | None) -> bool:
    """Whether a server that loaded `loaded` (a ServerRecord, or anything with its model,
    model_path, backend, quant and quant_asked) holds what an in-process load of (spec,
    backend, quant) would: the same model, backend and quant, so the same vectors."""
    wanted = default_backend() if backend == "auto" else backend
    same_quant = quant == loaded.quant if quant else loaded.quant_asked == ""
    return (
        loaded.model == spec.name
        and loaded.model_path == str(spec.path or "")
        and loaded.backend == wanted
        and same_quant
    )
