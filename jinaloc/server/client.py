"""The CLI's side of `jinaloc serve`: find a recorded server for the wanted model and embed
through it with an `Embedder` whose raw vectors come over HTTP.

Only the raw pooled vectors travel (float32, base64: exact); the task checks, Matryoshka
slicing and normalization stay `Embedder`'s own, so the output is the in-process one. A
block of texts goes as one request when it fits, so batches (and their float rounding) are
the same as in-process. Stdlib HTTP only: the client path imports little."""

from __future__ import annotations

import base64
import json
import os
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..embedder import (
    BACKENDS,
    Embedder,
    ProgressFn,
    check_task,
    default_backend,
    note_truncated,
)
from ..errors import JinalocError, check_choice
from ..registry import ModelSpec, resolve
from .records import OPENER, ServerRecord, auth_headers, healthy, recorded_servers

# Seconds to wait for an answer: past the server's own limit (600 s, queue + work), which
# comes first and says why.
REQUEST_TIMEOUT = 900
# Share of the server's body limit a request may fill (JSON escapes are estimated).
BODY_SHARE = 0.8


def no_server_env() -> bool:
    return os.environ.get("JINALOC_NO_SERVER", "").strip() not in ("", "0")


@dataclass
class _ServerSide:
    """What `Embedder` reads of its backend, as the server recorded it."""

    name: str
    hidden_size: int
    max_tokens: int
    quant: str

    def close(self) -> None:
        pass


class RemoteEmbedder(Embedder):
    """An `Embedder` on a model loaded by `jinaloc serve`."""

    def __init__(self, spec: ModelSpec, record: ServerRecord):
        side = _ServerSide(record.backend, record.hidden_size, record.max_tokens, record.quant)
        super().__init__(spec, side)  # type: ignore[arg-type]
        self.record = record

    @property
    def url(self) -> str:
        return self.record.url

    def _post(self, path: str, payload: dict) -> dict:
        data = json.dumps(payload).encode()
        headers = {"Content-Type": "application/json", **auth_headers(self.record)}
        request = urllib.request.Request(self.url + path, data, headers, method="POST")
        try:
            with OPENER.open(request, timeout=REQUEST_TIMEOUT) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as e:
            try:
                message = json.loads(e.read())["error"]["message"]
            except (ValueError, KeyError, TypeError):
                message = e.reason
            raise JinalocError(f"the server at {self.url} refused the request: {message}") from None
        except OSError as e:
            raise JinalocError(
                f"the server at {self.url} stopped answering ({e}): run again, or pass --no-server"
            ) from None

    def tokenize(self, texts, prompt="document"):
        raise JinalocError("token ids are not sent by the server: pass --no-server")

    def count_tokens(self, texts: Sequence[str], prompt: str = "document") -> list[int]:
        counts: list[int] = []
        for part in self._requests(list(texts)):
            counts += self._post("/v1/tokenize", {"input": part, "prompt": prompt})["tokens"]
        return counts

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
            for item in data:
                rows.append(np.frombuffer(base64.b64decode(item["embedding"]), dtype="<f4"))
                counts.append(item["tokens"])
                full.append(item.get("input_tokens", item["tokens"]))
            if progress:
                progress(len(part), sum(counts[-len(part) :]))
        note_truncated(full, self.max_tokens, truncated)
        return np.stack(rows).astype(np.float32), counts

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


def find_server(
    model: str | None, backend: str = "auto", quant: str | None = None, task: str | None = None
) -> RemoteEmbedder | None:
    """An embedder on a running server that loaded exactly what an in-process load of
    (model, backend, quant) would, or None (also when JINALOC_NO_SERVER is set)."""
    if no_server_env():
        return None
    records = recorded_servers()
    if not records:
        return None
    spec = resolve(model)
    check_choice("backend", backend, BACKENDS)
    if task is not None:
        check_task(task, spec.tasks)
    wanted = default_backend() if backend == "auto" else backend
    for record in records:
        same_model = record.model == spec.name and record.model_path == str(spec.path or "")
        same_quant = quant == record.quant if quant else record.quant_asked == ""
        if same_model and record.backend == wanted and same_quant and healthy(record):
            return RemoteEmbedder(spec, record)
    return None
