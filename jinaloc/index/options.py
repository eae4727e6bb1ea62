"""How a search ranks and filters: one frozen `SearchOptions` that the CLI, the server and
MCP build and that goes unchanged down to the scans."""

from __future__ import annotations

from dataclasses import dataclass, fields, replace

from ..defaults import DEFAULT_OVERSAMPLE
from ..errors import JinalocError, check_choice

MODES = ("hybrid", "semantic", "lexical")
# Options a server does not take from its clients: a reranker is the server's choice.
NOT_SERVED = ("rerank_top", "instruction")


@dataclass(frozen=True)
class SearchOptions:
    """`mode`: hybrid (both lists fused by reciprocal rank), semantic or lexical (FTS5 bm25;
    no model). `exact`: score every chunk instead of the coarse sign-bit stage; `oversample`:
    coarse candidates per result. `path_glob` (gitignore-style, on the path relative to its
    root, with or without the root's name), `tags` (every one; a nested tag `a/b` counts as
    `a`), `since` and `before` (ISO dates or spans back from today: 7d, 2w, 3m, 1y) restrict
    the files before ranking. `min_score`: on the cosine (semantic, hybrid) or the bm25
    score (lexical). `all_chunks`: every chunk, not the best per file. With a reranker:
    `rerank_top` first-stage chunks (default: k) reordered, with `instruction`."""

    mode: str = "hybrid"
    exact: bool = False
    oversample: int = DEFAULT_OVERSAMPLE
    path_glob: str | None = None
    min_score: float | None = None
    all_chunks: bool = False
    tags: tuple[str, ...] = ()
    since: str | None = None
    before: str | None = None
    rerank_top: int | None = None
    instruction: str | None = None

    def __post_init__(self) -> None:
        check_choice("mode", self.mode, MODES)
        if self.oversample < 1:
            raise JinalocError("oversample must be at least 1")
        if self.rerank_top is not None and self.rerank_top < 1:
            raise JinalocError("the number of candidates to rerank must be at least 1")
        object.__setattr__(self, "tags", tuple(self.tags))

    @classmethod
    def served(cls) -> dict[str, str]:
        """The options a server takes from a request, with their annotations (as text)."""
        return {f.name: str(f.type) for f in fields(cls) if f.name not in NOT_SERVED}


DEFAULTS = SearchOptions()


def given(options: SearchOptions | None, fields: dict) -> SearchOptions:
    """`options` (default: DEFAULTS) with the `fields` a caller gave by name."""
    options = options or DEFAULTS
    return replace(options, **fields) if fields else options
