"""The CLI's wording of the library's errors: one line, with the command that fixes it."""

from __future__ import annotations

from ..errors import (
    IndexCorrupt,
    IndexEmpty,
    IndexMismatch,
    IndexNotFound,
    IndexUnrepairable,
    JinalocError,
    ModelNotDownloaded,
)


def reindex_hint(db) -> str:
    return (
        f"re-index with `jinaloc index --reindex --db {db} [--model M] [--dim N]`,"
        " or use a new --db"
    )


def error_line(e: JinalocError) -> str:
    """The one line shown for an error: its message and the CLI's way to fix it."""
    if isinstance(e, (IndexNotFound, IndexEmpty)):
        verb = "build one" if isinstance(e, IndexNotFound) else "build it"
        return f"{e.message}: {verb} with `jinaloc index PATH`"
    if isinstance(e, IndexMismatch):
        if e.setting == "model" and e.model_ref:
            return (
                f"{e.message}: search it with --model {e.model_ref} (or no --model),"
                f" or {reindex_hint(e.path)}"
            )
        if e.setting in ("dim", "chunk_tokens"):
            flag = "--dim" if e.setting == "dim" else "--chunk-tokens"
            return f"{e.message}: leave {flag} out, or {reindex_hint(e.path)}"
        return f"{e.message}: {reindex_hint(e.path)}"
    if isinstance(e, IndexCorrupt):  # SQLite found the damage: a repair is what fits
        db = f" --db {e.path}" if e.path else ""
        return f"{e.message}: run `jinaloc check{db} --repair`"
    if isinstance(e, IndexUnrepairable):
        return (
            f"{e.message}: move it aside (`mv {e.path} {e.path}.corrupt`) and build it again"
            f" with `jinaloc index --db {e.path} --model MODEL FOLDER...`"
        )
    if isinstance(e, ModelNotDownloaded):
        command = f"`jinaloc models pull {e.model}{e.pull_args}`"
        return f"{e.message}: run {command}" + (" while online" if e.offline else "")
    return str(e)
