"""The index core: one SQLite file of chunks, their vectors and their words, and the one
session (`Index`) through which everything outside reads and writes it.

This module is the package's only door: code outside `jinaloc.index` imports from here and
never from its modules (`tests/test_imports.py` checks). Names load on first use, so a
command that never searches never imports numpy through here.

    session.py     Index: the open session (plan, update, search, status, roots, counts)
    meta.py        IndexMeta and every compatibility rule (Meta: the one reader of `meta`)
    options.py     SearchOptions: how a search ranks and filters, from CLI, server and MCP
    store.py       the SQLite file: connections, locks, one transaction per file, queries
    migrations.py  the schema's named migrations (m001_... as llm keeps them)
    blocks.py      vectors and sign bits packed 1024 chunks a row; the numpy scans
    lexical.py     FTS5: folding, CJK bigrams, stems, MATCH expressions, bm25
    plan.py        Plan: what an update would do (no model, no writes)
    write.py       Writer: applies a plan (read once, chunk, embed, write); Report, Progress
    search.py      semantic, lexical and hybrid search over the store; Hit
    health.py      check, repair, vacuum
    salvage.py     rows of a damaged file read page by page
    eval.py        `jinaloc eval`: search configurations scored over the stored vectors
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

_EXPORTS = {
    "Index": "session",
    "IndexMeta": "meta",
    "SearchOptions": "options",
    "MODES": "options",
    "COARSE_MIN_DIM": "search",
    "Hit": "search",
    "Plan": "plan",
    "Scope": "plan",
    "Report": "write",
    "Progress": "write",
    "Problem": "health",
    "Repair": "health",
    "repair": "health",
    "SCHEMA_VERSION": "store",
    "MAX_K": "store",
    "open_error": "store",
    "claim_new": "store",
    "remove_if_unused": "store",
    "Recommendation": "eval",
    "Result": "eval",
    "TOLERANCE": "eval",
}
__all__ = [
    "Index",
    "IndexMeta",
    "SearchOptions",
    "MODES",
    "COARSE_MIN_DIM",
    "Hit",
    "Plan",
    "Scope",
    "Report",
    "Progress",
    "Problem",
    "Repair",
    "repair",
    "SCHEMA_VERSION",
    "MAX_K",
    "open_error",
    "claim_new",
    "remove_if_unused",
    "Recommendation",
    "Result",
    "TOLERANCE",
]

if TYPE_CHECKING:
    from .eval import TOLERANCE, Recommendation, Result
    from .health import Problem, Repair, repair
    from .meta import IndexMeta
    from .options import MODES, SearchOptions
    from .plan import Plan, Scope
    from .search import COARSE_MIN_DIM, Hit
    from .session import Index
    from .store import MAX_K, SCHEMA_VERSION, claim_new, open_error, remove_if_unused
    from .write import Progress, Report


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'jinaloc.index' has no attribute {name!r}")
    return getattr(importlib.import_module(f".{module}", __name__), name)


def __dir__() -> list[str]:
    return sorted(__all__)
