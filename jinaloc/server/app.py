"""The ASGI app: routes, bearer auth, bounded bodies, timeouts; the model work goes to the
worker's queue.

Every failure is an OpenAI-shaped error with a 4xx/5xx status; nothing a client sends can
stop the server."""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import os
import time
from dataclasses import dataclass

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from .. import __version__
from ..errors import JinalocError
from ..net import is_loopback
from ..output import json_dumps
from . import api
from .worker import Busy, ModelWorker, Served

log = logging.getLogger("jinaloc.server")


@dataclass(frozen=True)
class Limits:
    max_body: int = 2 * 1024 * 1024  # bytes per request body
    max_inputs: int = 2048  # texts per embeddings request, documents per rerank
    # Seconds a request may wait for the model (queue + work): CLI blocks of long texts on a
    # CPU take minutes, and the in-process path has no limit at all.
    timeout: float = 600.0
    read_timeout: float = 10.0  # seconds to receive a body (slow clients)
    max_k: int = 1000  # search results per request


def loopback_host(host: str) -> bool:
    """A Host header naming this machine's loopback (with or without a port)."""
    name = host.rsplit(":", 1)[0] if host.count(":") == 1 or host.startswith("[") else host
    return is_loopback(name)


def loopback_origin(origin: str | None) -> bool:
    """No Origin (not a browser), or a page served from this machine's loopback."""
    if origin is None:
        return True
    scheme, _, rest = origin.partition("://")
    return scheme in ("http", "https") and "/" not in rest and loopback_host(rest)


class SafeJSONResponse(JSONResponse):
    """JSON that is valid UTF-8 even when a path holds a name's undecodable bytes (as a
    `\\udcff` escape, which `os.fsencode(json.loads(...))` turns back into the bytes)."""

    def render(self, content) -> bytes:
        return json_dumps(content).encode("utf-8")


def _error(e: api.ApiError) -> JSONResponse:
    headers = {"Retry-After": "1"} if e.status in (429, 503) else None
    return JSONResponse(e.to_json(), status_code=e.status, headers=headers)


def create_app(
    worker: ModelWorker,
    limits: Limits = Limits(),
    token: str | None = None,
    relative_to: str | None = None,
):
    """The app for a started worker. With `token`, every request needs
    `Authorization: Bearer <token>`. Search paths are absolute, or relative to
    `relative_to` (an absolute directory) when inside it."""
    served: Served = worker.served
    embedder = served.embedder
    started = time.time()
    search_options = api.search_options()
    served_jobs = 0  # model jobs done, for /health

    async def read_json(request: Request) -> dict:
        length = request.headers.get("content-length")
        if length and length.isdigit() and int(length) > limits.max_body:
            raise api.ApiError(413, f"request body over {limits.max_body} bytes", code="too_large")
        body = bytearray()

        async def receive() -> None:
            async for chunk in request.stream():
                body.extend(chunk)
                if len(body) > limits.max_body:
                    raise api.ApiError(
                        413, f"request body over {limits.max_body} bytes", code="too_large"
                    )

        try:
            await asyncio.wait_for(receive(), limits.read_timeout)
        except asyncio.TimeoutError:
            raise api.ApiError(408, "request body not received in time", code="timeout") from None
        try:
            data = json.loads(body)
        except (ValueError, UnicodeDecodeError) as e:
            raise api.bad(f"invalid JSON: {e}", code="invalid_json") from None
        except RecursionError:
            raise api.bad(
                f"JSON nested deeper than {api.MAX_JSON_DEPTH} levels", code="invalid_json"
            ) from None
        if not isinstance(data, dict):
            raise api.bad("the request body must be a JSON object", code="invalid_json")
        api.check_json(data)
        return data

    async def run(job):
        """`job(served)` on the model worker, within the request timeout."""
        try:
            future = worker.submit(job)
        except Busy:
            raise api.ApiError(
                429, "the model is busy: too many queued requests, retry shortly", code="busy"
            ) from None
        nonlocal served_jobs
        try:
            result = await asyncio.wait_for(asyncio.wrap_future(future), limits.timeout)
            served_jobs += 1
            return result
        except asyncio.TimeoutError:
            future.cancel()  # skipped if still queued
            raise api.ApiError(504, "the model did not answer in time", code="timeout") from None
        except JinalocError as e:
            raise api.bad(str(e)) from None

    def handler(fn):
        async def endpoint(request: Request):
            if token is not None:
                given = request.headers.get("authorization", "")
                if not hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
                    return _error(api.ApiError(401, "missing or wrong bearer token", code="auth"))
            elif not loopback_host(request.headers.get("host", "")):
                # Without a token only this machine may call: a web page that rebinds its
                # own name to 127.0.0.1 still sends that name as Host.
                return _error(api.ApiError(403, "Host must be a loopback address", code="host"))
            if not loopback_origin(request.headers.get("origin")):
                # A browser names the page that sent a request; CLI clients send no Origin.
                # Other sites' pages may not use the server (a text/plain POST needs no
                # preflight, so CORS alone would not stop it from running).
                return _error(
                    api.ApiError(
                        403, "requests from web pages of other sites are refused", code="origin"
                    )
                )
            try:
                return SafeJSONResponse(await fn(request))
            except api.ApiError as e:
                return _error(e)
            except Exception:
                log.exception("request failed")
                return _error(api.ApiError(500, "internal error (see the server's log)"))

        return endpoint

    async def embeddings(request: Request):
        req = api.parse_embeddings(await read_json(request), embedder, limits.max_inputs)

        def job(s: Served):
            e = s.embedder
            full = e.count_tokens(req.texts, req.prompt)
            if not req.truncate and (error := api.too_long(full, e.max_tokens)):
                raise error
            if req.normalized:
                result = e.embed_with_counts(
                    req.texts, req.task, req.prompt, req.dim, req.batch_size
                )
                return result.vectors, result.token_counts, full
            pooled, counts = e.embed_raw(req.texts, req.task, req.prompt, req.batch_size)
            return pooled[:, : req.dim], counts, full

        vectors, counts, full = await run(job)
        return api.embeddings_response(req, embedder.name, vectors, counts, full)

    async def tokenize(request: Request):
        """jinaloc's own: token counts per input (prompt and special tokens included), for
        clients that chunk texts to the model's context."""
        body = await read_json(request)
        api.check_fields(body, api.TOKENIZE_FIELDS)
        texts = api.input_texts(body.get("input"), "input", limits.max_inputs)
        prompt = body.get("prompt", "document")
        if prompt not in ("query", "document"):
            raise api.bad("'prompt' must be query or document", "prompt")
        counts = await run(lambda s: s.embedder.count_tokens(texts, prompt))
        return {"model": embedder.name, "tokens": counts, "max_tokens": embedder.max_tokens}

    async def rerank(request: Request):
        req = api.parse_rerank(await read_json(request), embedder, limits.max_inputs)

        def job(s: Served):
            from ..pipelines.rerank import cut_to_tokens
            from ..pipelines.rerank import rerank as by_embeddings

            docs = req.documents
            if req.reranker is not None:
                cross = s.reranker(req.reranker)
                if req.max_doc_length:
                    docs = [
                        cut_to_tokens(
                            d, req.max_doc_length, lambda t: len(cross.backend.tokenize(t))
                        )
                        for d in docs
                    ]
                scores = cross.score(req.query, docs)
                order = sorted(range(len(scores)), key=lambda i: (-scores[i], i))
                ranked = [(i, float(scores[i])) for i in order[: req.top_n or len(order)]]
                ids = cross.prompt_ids(req.query, docs)
                return ranked, sum(map(len, ids))
            e = s.embedder
            if req.max_doc_length:
                bare = e.count_tokens([""])[0]  # the prompt's and special tokens
                docs = [
                    cut_to_tokens(d, req.max_doc_length, lambda t: e.count_tokens([t])[0] - bare)
                    for d in docs
                ]
            ranked = by_embeddings(e, req.query, docs, req.top_n)
            tokens = sum(e.count_tokens([req.query], "query")) + sum(e.count_tokens(docs))
            return ranked, tokens

        ranked, tokens = await run(job)
        return api.rerank_response(req, req.reranker or embedder.name, ranked, tokens)

    async def search(request: Request):
        if served.index is None:
            raise api.ApiError(404, "this server has no index: start it with --db", code="no_index")
        body = await read_json(request)
        caller = api.parse_caller(body)
        query, k, options = api.parse_search(body, search_options, limits.max_k)
        if options.path_glob and caller.cwd not in (None, os.getcwd()):
            # The glob also matches paths as shown from the working directory: this one's.
            raise api.ApiError(
                409,
                "path globs are matched from the server's working directory",
                "cwd",
                "other_cwd",
            )

        def job(s: Served):
            if caller.local is not None and not s.searches_as(**caller.local):
                raise api.ApiError(
                    409, "a search with these model options would not use the served model",
                    "local", "other_model",
                )  # fmt: skip
            return s.index.search(query, k, options)

        hits = await run(job)
        base = caller.cwd or relative_to
        return [api.hit_json(hit, base, caller.explain) for hit in hits]

    async def models(request: Request):
        return {
            "object": "list",
            "data": [
                {
                    "id": embedder.name,
                    "object": "model",
                    "created": int(started),
                    "owned_by": "jinaloc",
                    "dimensions": embedder.hidden_size,
                    "max_tokens": embedder.max_tokens,
                    "tasks": list(api.TASKS),
                    "backend": embedder.backend_name,
                    "quant": embedder.quant,
                }
            ],
        }

    async def health(request: Request):
        watcher = served.watcher.health() if served.watcher is not None else None
        return {
            # A `--watch` server whose watcher died serves a stale index.
            "status": "degraded" if watcher and watcher["error"] else "ok",
            "watcher": watcher,
            "pid": os.getpid(),
            "model": embedder.name,
            "backend": embedder.backend_name,
            "quant": embedder.quant,
            "db": str(served.index.path) if served.index else None,
            "queued": worker.pending,
            "served": served_jobs,
            "version": __version__,
        }

    async def http_error(request: Request, exc: HTTPException):
        return _error(api.ApiError(exc.status_code, exc.detail, code="not_found"))

    routes = [
        Route("/v1/embeddings", handler(embeddings), methods=["POST"]),
        Route("/v1/rerank", handler(rerank), methods=["POST"]),
        Route("/v1/search", handler(search), methods=["POST"]),
        Route("/v1/tokenize", handler(tokenize), methods=["POST"]),
        Route("/v1/models", handler(models), methods=["GET"]),
        Route("/health", handler(health), methods=["GET"]),
    ]
    return Starlette(routes=routes, exception_handlers={HTTPException: http_error})
