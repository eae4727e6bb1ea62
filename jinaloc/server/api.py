"""The HTTP API's shapes: checking requests and building responses for OpenAI's and Jina's
embeddings, Jina's rerank and jinaloc's search. The app runs these; the worker embeds.

Errors use OpenAI's shape, {"error": {"message", "type", "param", "code"}}, which Jina's
and OpenAI's clients both read."""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..errors import JinalocError
from ..vectors import OUTPUT_TYPES, encode

if TYPE_CHECKING:
    import numpy as np

    from ..embedder import Embeds
    from ..index import SearchOptions

# Jina's task names -> (jinaloc task, prompt). jinaloc's own names are accepted too; no
# task is a passage, as `jinaloc embed` defaults to.
TASKS = {
    "retrieval.query": ("retrieval", "query"),
    "retrieval.passage": ("retrieval", "document"),
    "retrieval": ("retrieval", "document"),
    "text-matching": ("text-matching", "document"),
    "clustering": ("clustering", "document"),
    "classification": ("classification", "document"),
}
# Jina API options these models do not have: accepted only when off. Jina's v5 model pages
# say "Late Chunking: No", and its API refuses `late_chunking: true` for them.
UNSUPPORTED = ("late_chunking", "return_multivector")
# Other names api.jina.ai accepts for its fields (OpenAI's, Gemini's and Voyage's spellings).
ALIASES = {
    "task_type": "task",
    "encoding_type": "embedding_type",
    "encoding_format": "embedding_type",
    "output_dimension": "dimensions",
    "truncation": "truncate",
}
EMBEDDING_FIELDS = {
    "model", "input", "dimensions", "user", "task", "embedding_type", "normalized",
    "truncate", "prompt", "batch_size", *UNSUPPORTED, *ALIASES,
}  # fmt: skip
RERANK_FIELDS = {
    "model", "query", "documents", "top_n", "top_k", "return_documents", "max_doc_length"
}  # fmt: skip
TOKENIZE_FIELDS = {"model", "input", "prompt"}
MAX_BATCH_SIZE = 1024
# Search options that are not the client's to set.
# Not served: the process-side reranker (its own endpoint, /v1/rerank) and its knobs.


class ApiError(Exception):
    def __init__(
        self, status: int, message: str, param: str | None = None, code: str | None = None
    ):
        super().__init__(message)
        self.status, self.message, self.param, self.code = status, message, param, code

    def to_json(self) -> dict:
        kind = {401: "authentication_error", 429: "rate_limit_error"}.get(
            self.status, "invalid_request_error" if self.status < 500 else "server_error"
        )
        return {
            "error": {"message": self.message, "type": kind, "param": self.param, "code": self.code}
        }


def bad(message: str, param: str | None = None, code: str = "invalid_value") -> ApiError:
    return ApiError(400, message, param, code)


# Containers inside containers a request may nest: the API's own shapes need 3.
MAX_JSON_DEPTH = 32
_SURROGATE = re.compile("[\ud800-\udfff]")


def check_json(data: Any) -> None:
    """A parsed body's nesting within MAX_JSON_DEPTH and its strings valid Unicode (JSON's
    \\ud800 escapes decode to lone surrogates, which no tokenizer can encode)."""
    stack = [(data, 1, None)]
    while stack:
        value, depth, field = stack.pop()
        if isinstance(value, str):
            if _SURROGATE.search(value):
                raise bad(
                    f"'{field}' holds a lone surrogate (\\ud800-\\udfff): not valid Unicode",
                    field,
                    "invalid_unicode",
                )
            continue
        if not isinstance(value, (dict, list)):
            continue
        if depth > MAX_JSON_DEPTH:
            raise bad(f"JSON nested deeper than {MAX_JSON_DEPTH} levels", field, "invalid_json")
        items = value.items() if isinstance(value, dict) else ((None, v) for v in value)
        for key, item in items:
            # A top-level field names the error; escaped, as it may hold a surrogate itself.
            name = (
                field
                if field is not None
                else key and key.encode("utf-8", "backslashreplace").decode()
            )
            if key is not None:
                stack.append((key, depth, name))
            stack.append((item, depth + 1, name))


def check_fields(body: dict, allowed) -> None:
    """Unknown fields are refused on every endpoint: a misspelt option ("dimension")
    would otherwise be ignored and change the answer silently."""
    unknown = sorted(set(body) - set(allowed))
    if unknown:
        raise bad(f"unknown field {unknown[0]!r}", unknown[0], "unknown_parameter")


def _typed(body: dict, key: str, kinds: tuple, what: str, default=None):
    value = body.get(key, default)
    # bool is an int to Python, never to a JSON client.
    if value is not None and (
        not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds)
    ):
        raise bad(f"'{key}' must be {what}", key, "invalid_type")
    return value


def model_names(embedder: Embeds) -> set[str]:
    """Names a request may give the served model by: its registry name, its folder, its
    Hugging Face repo and that repo's short name (as Jina's API calls it)."""
    spec = embedder.spec
    names = {spec.name}
    if spec.path is not None:
        names.add(str(spec.path))
    if spec.hf_repo:
        names |= {spec.hf_repo, spec.hf_repo.rsplit("/", 1)[-1]}
    return names


def check_model(body: dict, embedder: Embeds) -> None:
    model = _typed(body, "model", (str,), "a string")
    if model and model not in model_names(embedder):
        raise ApiError(
            400,
            f"model {model!r} is not served here: this server runs {embedder.name}",
            "model",
            "model_not_found",
        )


def input_texts(value: Any, key: str, max_inputs: int, extra_keys: bool = False) -> list[str]:
    """A string or a list of strings (or Jina's {"text": ...} objects; with `extra_keys`,
    objects may carry other fields too, as rerank documents do)."""
    if isinstance(value, str):
        return [value]
    if not isinstance(value, list) or not value:
        raise bad(f"'{key}' must be a string or a non-empty list of strings", key, "invalid_type")
    if len(value) > max_inputs:
        raise bad(f"'{key}' has {len(value)} items; at most {max_inputs} per request", key)
    texts = []
    for i, item in enumerate(value):
        if isinstance(item, dict) and "text" in item and (extra_keys or len(item) == 1):
            item = item["text"]
        if not isinstance(item, str):
            what = "token ids" if isinstance(item, (int, list)) else type(item).__name__
            raise bad(f"'{key}[{i}]' must be a string (not {what})", key, "invalid_type")
        texts.append(item)
    return texts


@dataclass
class EmbedRequest:
    texts: list[str]
    task: str
    prompt: str
    dim: int | None
    types: list[str]  # output types, as vectors.encode names them
    as_dict: bool  # embedding_type was a list: `embedding` is {type: value}
    normalized: bool
    truncate: bool
    batch_size: int


def canonical_fields(body: dict, aliases: dict[str, str]) -> dict:
    """The body with each alias renamed to Jina's own field name; an alias and its field
    both given must agree."""
    body = dict(body)
    for alias, name in aliases.items():
        if alias not in body:
            continue
        value = body.pop(alias)
        if name in body and body[name] != value:
            raise bad(f"'{alias}' and '{name}' name the same option: give one", alias)
        body[name] = value
    return body


def parse_embeddings(body: dict, embedder: Embeds, max_inputs: int) -> EmbedRequest:
    check_fields(body, EMBEDDING_FIELDS)
    body = canonical_fields(body, ALIASES)
    for key in UNSUPPORTED:
        if _typed(body, key, (bool,), "a boolean"):
            raise bad(f"'{key}' is not supported by {embedder.name}", key, "unsupported_parameter")
    check_model(body, embedder)
    if "input" not in body:
        raise bad("'input' is required", "input", "missing_parameter")
    texts = input_texts(body["input"], "input", max_inputs)
    task_name = _typed(body, "task", (str,), "a string", "retrieval.passage")
    if task_name not in TASKS:
        raise bad(f"unknown task {task_name!r}: choose one of {', '.join(TASKS)}", "task")
    task, prompt = TASKS[task_name]
    # jinaloc's own: another prompt than the task's (e.g. clustering with "Query: ").
    prompt = _typed(body, "prompt", (str,), "a string", prompt)
    if prompt not in ("query", "document"):
        raise bad("'prompt' must be query or document", "prompt")
    if task not in embedder.spec.tasks:
        raise bad(f"{embedder.name} has no {task} adapter", "task")
    dim = _typed(body, "dimensions", (int,), "an integer")
    if dim is not None:
        try:
            dim = embedder.check_dim(dim)
        except JinalocError as e:
            raise bad(e.message, "dimensions") from None
    types, as_dict = _output_types(body)
    batch_size = _typed(body, "batch_size", (int,), "an integer", 32)
    if not 1 <= batch_size <= MAX_BATCH_SIZE:
        raise bad(f"'batch_size' must be between 1 and {MAX_BATCH_SIZE}", "batch_size")
    return EmbedRequest(
        texts,
        task,
        prompt,
        dim,
        types,
        as_dict,
        normalized=_typed(body, "normalized", (bool,), "a boolean", True),
        truncate=_typed(body, "truncate", (bool,), "a boolean", False),
        batch_size=batch_size,
    )


def _output_types(body: dict) -> tuple[list[str], bool]:
    """Jina's embedding_type (OpenAI's encoding_format): one type, or a list of them, when
    each item's `embedding` is an object with one value per type, as Jina returns it."""
    kind = _typed(body, "embedding_type", (str, list), "a string or a list of strings", "float")
    kinds = kind if isinstance(kind, list) else [kind]
    if not kinds or any(k not in OUTPUT_TYPES for k in kinds):
        raise bad(f"'embedding_type' must be among {', '.join(OUTPUT_TYPES)}", "embedding_type")
    return list(dict.fromkeys(kinds)), isinstance(kind, list)


def too_long(full: Sequence[int], max_tokens: int) -> ApiError | None:
    """The error for inputs over the model's context when the request did not ask to truncate."""
    over = [(i, n) for i, n in enumerate(full) if n > max_tokens]
    if not over:
        return None
    i, n = over[0]
    return bad(
        f"input {i} has {n} tokens, more than the model's {max_tokens}"
        f"{f' ({len(over)} inputs are too long)' if len(over) > 1 else ''}:"
        ' shorten it, or pass "truncate": true',
        "input",
        "context_length_exceeded",
    )


def embeddings_response(
    req: EmbedRequest, model: str, vectors: np.ndarray, tokens: list[int], full: list[int]
) -> dict:
    """OpenAI's list of embeddings (Jina's too). Each item also says how many tokens it
    used ("tokens") and, when it was cut, how many it had ("input_tokens")."""
    encoded = {kind: encode(vectors, kind) for kind in req.types}
    data = []
    for i, (n, before) in enumerate(zip(tokens, full, strict=True)):
        value = (
            {kind: encoded[kind][i] for kind in req.types}
            if req.as_dict
            else encoded[req.types[0]][i]
        )
        item = {"object": "embedding", "index": i, "embedding": value, "tokens": n}
        if before > n:
            item["input_tokens"] = before
        data.append(item)
    total = sum(tokens)
    return {
        "object": "list",
        "model": model,
        "data": data,
        "usage": {"prompt_tokens": total, "total_tokens": total},
    }


# --- rerank -------------------------------------------------------------------------------


@dataclass
class RerankRequest:
    query: str
    documents: list[str]
    top_n: int | None
    return_documents: bool
    reranker: str | None = None  # a cross-encoder's registry name; None: by embeddings
    # Documents as sent, echoed in the results: objects keep all their fields.
    sent: list = field(default_factory=list)
    max_doc_length: int | None = None  # tokens of each document scored; None: all


def parse_rerank(body: dict, embedder: Embeds, max_inputs: int) -> RerankRequest:
    check_fields(body, RERANK_FIELDS)
    body = canonical_fields(body, {"top_k": "top_n"})
    model = _typed(body, "model", (str,), "a string")
    reranker = None
    if model and model not in model_names(embedder):
        from ..registry import load_registry

        spec = load_registry().models.get(model)
        if spec is None or spec.kind != "reranker":
            check_model(body, embedder)
        reranker = model  # a cross-encoder of the registry (loaded once, on first use)
    query = body.get("query")
    if isinstance(query, dict) and set(query) == {"text"}:  # Jina's TextDoc
        query = query["text"]
    if query is not None and not isinstance(query, str):
        raise bad("'query' must be a string or {\"text\": ...}", "query", "invalid_type")
    if not query:
        raise bad("'query' is required", "query", "missing_parameter")
    if "documents" not in body:
        raise bad("'documents' is required", "documents", "missing_parameter")
    documents = input_texts(body["documents"], "documents", max_inputs, extra_keys=True)
    sent = body["documents"] if isinstance(body["documents"], list) else documents
    top_n = _typed(body, "top_n", (int,), "an integer")
    if top_n is not None and top_n < 1:
        raise bad("'top_n' must be at least 1", "top_n")
    max_doc = _typed(body, "max_doc_length", (int,), "an integer")
    if max_doc is not None and max_doc < 1:
        raise bad("'max_doc_length' must be at least 1", "max_doc_length")
    return RerankRequest(
        query,
        documents,
        top_n,
        _typed(body, "return_documents", (bool,), "a boolean", True),
        reranker,
        sent,
        max_doc,
    )


def rerank_response(
    req: RerankRequest, model: str, ranked: list[tuple[int, float]], tokens: int
) -> dict:
    results = []
    for i, score in ranked:
        row: dict = {"index": i, "relevance_score": round(float(score), 6)}
        if req.return_documents:
            doc = req.sent[i] if req.sent else req.documents[i]
            row["document"] = doc if isinstance(doc, dict) else {"text": doc}
        results.append(row)
    return {"model": model, "usage": {"total_tokens": tokens}, "results": results}


# --- search -------------------------------------------------------------------------------

_JSON_TYPES = {
    "bool": (bool,),
    "int": (int,),
    "float": (int, float),
    "str": (str,),
    "tuple[str, ...]": (list,),  # checked item by item in parse_search
}


def search_options() -> dict[str, tuple]:
    """The `SearchOptions` fields a request may set, with the JSON types each accepts (an
    option of a type JSON cannot carry is not served)."""
    from ..index import SearchOptions

    options = {}
    for name, annotation in SearchOptions.served().items():
        names = [t.strip() for t in annotation.split("|")]
        kinds = tuple(k for t in names for k in _JSON_TYPES.get(t, ()))
        if kinds and all(t in _JSON_TYPES or t == "None" for t in names):
            options[name] = (kinds, "None" in names)
    return options


def parse_search(
    body: dict, allowed: dict[str, tuple], max_k: int
) -> tuple[str, int, SearchOptions]:
    """(query, k, the search's options)."""
    from ..index import SearchOptions

    query = _typed(body, "query", (str,), "a string")
    if not query or not query.strip():
        raise bad("'query' is required", "query", "missing_parameter")
    k = _typed(body, "k", (int,), "an integer", 10)
    if not 1 <= k <= max_k:
        raise bad(f"'k' must be between 1 and {max_k}", "k")
    options = {}
    for key, value in body.items():
        if key in ("query", "k", "model"):
            continue
        if key not in allowed:
            raise bad(
                f"unknown search option {key!r}: choose among {', '.join(sorted(allowed))}",
                key,
                "unknown_parameter",
            )
        kinds, nullable = allowed[key]
        if value is None and nullable:
            continue
        options[key] = _typed(body, key, kinds, f"of type {'/'.join(k.__name__ for k in kinds)}")
        if kinds == (list,) and not all(isinstance(item, str) for item in value):
            raise bad(f"'{key}' must be a list of strings", key, "invalid_type")
    if options.get("path_glob"):
        check_glob(options["path_glob"])
    try:
        return query.strip(), k, SearchOptions(**options)
    except JinalocError as e:  # a value out of range (an unknown mode, oversample 0)
        raise bad(str(e), next(iter(options), "query")) from None


def shown_path(path: str, relative_to: str | None = None) -> str:
    """A path as servers show it: absolute (a server's working directory means nothing to
    its clients), or relative to `relative_to` (absolute) when inside it."""
    if relative_to is not None and (path + os.sep).startswith(relative_to.rstrip(os.sep) + os.sep):
        return os.path.relpath(path, relative_to)
    return path


def hit_json(hit, relative_to: str | None = None, explain: bool = False) -> dict:
    """A search hit as the CLI's --json shows it, with its path as `shown_path` gives it."""
    return {**hit.to_json(explain), "path": shown_path(hit.path, relative_to)}


@dataclass(frozen=True)
class SearchCaller:
    """jinaloc's own /v1/search fields, for a client that shows the results as `jinaloc
    search` would in its place (the CLI's thin path, server/remote.py). `explain`: each hit
    carries its "explain" object. `cwd`: the caller's working directory (absolute): paths
    are shown relative to it when inside it, as the CLI shows them. `local`: the caller's
    {"model", "backend", "quant"}: answered only when a search with them in the caller's
    process would embed its query with the served model (else 409, "other_model")."""

    explain: bool = False
    cwd: str | None = None
    local: dict | None = None


def parse_caller(body: dict) -> SearchCaller:
    """SearchCaller's fields, taken out of a /v1/search body."""
    fields = {key: body.pop(key) for key in ("explain", "cwd", "local") if key in body}
    explain = _typed(fields, "explain", (bool,), "a boolean", False)
    cwd = _typed(fields, "cwd", (str,), "a string")
    if cwd is not None and not os.path.isabs(cwd):
        raise bad("'cwd' must be an absolute path", "cwd")
    local = _typed(fields, "local", (dict,), "an object")
    if local is not None:
        if set(local) != {"model", "backend", "quant"}:
            raise bad("'local' must hold model, backend and quant", "local")
        if not all(value is None or isinstance(value, str) for value in local.values()):
            raise bad("'local' values must be strings or null", "local", "invalid_type")
    return SearchCaller(explain, cwd, local)


GLOB_ESCAPES = "path globs may not contain '..'"


def glob_escapes(glob: str) -> bool:
    """A path glob may only narrow the index's own files: no '..' steps out of a root."""
    return ".." in glob.replace("\\", "/").split("/")


def check_glob(glob: str) -> None:
    if glob_escapes(glob):
        raise bad(GLOB_ESCAPES, "path_glob", "path_traversal")
