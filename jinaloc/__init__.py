"""jinaloc: local embeddings and offline semantic search with Jina's v5 models.

    import jinaloc

    model = jinaloc.load_embedder("v5-nano")
    vectors = model.embed(["some text"], task="retrieval", prompt="document", dim=256)

    with jinaloc.Index.open("notes.db", create=True) as index:
        index.use_model("v5-nano").update(["~/notes"])
        for hit in index.search("how do I rotate the api keys", k=5):
            print(hit.path, hit.start_line, hit.score)

README.md ("From Python") has more. Names load on first use, so `import jinaloc` (and the
CLI's start-up) stays cheap."""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_EXPORTS = {
    "Embedder": "embedder",
    "load_embedder": "load",
    "APISettings": "backends.api",
    "Index": "index",
    "IndexMeta": "index",
    "WalkOptions": "walk",
    "Plan": "index",
    "Report": "index",
    "Progress": "index",
    "Watcher": "watch",
    "Hit": "index",
    "SearchOptions": "index",
    "JinalocError": "errors",
    "IndexNotFound": "errors",
    "IndexEmpty": "errors",
    "IndexMismatch": "errors",
    "ModelNotDownloaded": "errors",
    "EmbedFailed": "errors",
    "SchemaTooNew": "errors",
}
__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'jinaloc' has no attribute {name!r}")
    return getattr(importlib.import_module(f".{module}", __name__), name)


def __dir__() -> list[str]:
    return sorted(__all__)
