"""The errors jinaloc raises for its users: a message and, where there is one, a fix.

Library code says what is wrong and names the fix in its own terms (`hint`); the CLI turns
each type into one line with its own commands (cli/errors.py) and exit code 2."""

from __future__ import annotations

from pathlib import Path


class JinalocError(Exception):
    """A user-facing error: the message is shown as is, without a traceback."""

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message}: {self.hint}" if self.hint else self.message


class IndexNotFound(JinalocError):
    """No index file where one was expected."""

    def __init__(self, path: Path):
        super().__init__(f"no index at {path}", "build one first")
        self.path = path


class IndexEmpty(JinalocError):
    """An index file that holds no vectors yet."""

    def __init__(self, path: Path):
        super().__init__(f"{path} is empty", "build it first")
        self.path = path


class IndexBusy(JinalocError):
    """Another process is updating the index."""

    def __init__(self, path: Path):
        super().__init__(f"{path} is being updated by another process", "wait for it")
        self.path = path


class IndexCorrupt(JinalocError):
    """SQLite found the index file damaged."""

    def __init__(self, path: Path | None, detail: str):
        detail = " ".join(detail.replace("*", "").split())[:160]  # SQLite's, on one line
        super().__init__(f"{path or 'the index'} is damaged ({detail})", "check and repair it")
        self.path = path


class IndexUnrepairable(JinalocError):
    """A damaged index whose record of what its vectors mean (meta) cannot be read: its
    rows cannot be trusted to any model, so the repair replaced nothing."""

    def __init__(self, path: Path, missing):
        super().__init__(
            f"cannot repair {path}: what its vectors mean (meta: {', '.join(missing)}) is"
            " unreadable, so nothing was changed",
            "rebuild it with the model it was built with",
        )
        self.path, self.missing = path, list(missing)


class SchemaTooNew(JinalocError):
    def __init__(self, path: Path, version: int, supported: int):
        super().__init__(
            f"{path} has schema version {version}, newer than this jinaloc ({supported})",
            "upgrade jinaloc",
        )
        self.path, self.version, self.supported = path, version, supported


class IndexMismatch(JinalocError):
    """A request the index cannot serve as built: another model, dim, chunking or format.

    `setting` is what differs ("model", "dim", "chunk_tokens", "chunk_format"); `have` is the
    index's own value; `model_ref` how to load the index's model again."""

    def __init__(self, path: Path, setting: str, have, wanted, model_ref: str | None = None):
        what = {
            "model": f"was indexed with model {have}, not {wanted}",
            "dim": f"was indexed at dim {have}, not {wanted}",
            "chunk_tokens": f"was chunked at {have} tokens, not {wanted}",
            "chunk_format": "was written by another jinaloc version",
        }[setting]
        super().__init__(f"{path} {what}", "re-index it, or use another index file")
        self.path, self.setting, self.have, self.wanted = path, setting, have, wanted
        self.model_ref = model_ref


class ModelNotDownloaded(JinalocError):
    """Model files that are not on this machine while downloads are off. `what` names the
    files (format, task, quant), `pull_args` what to pull them with."""

    def __init__(self, model: str, what: str, pull_args: str = "", offline: bool = True):
        why = " and offline mode is on" if offline else ""
        super().__init__(f"{model} ({what}) is not downloaded{why}", "download it")
        self.model, self.what, self.pull_args, self.offline = model, what, pull_args, offline


class EmbedFailed(JinalocError):
    """Texts an embeddings server did not embed, after its retries. `transient`: the server
    was unreachable or kept failing (429, 5xx, timeouts), so later requests would fail too;
    otherwise it refused these inputs (a 4xx) and others may still go through."""

    def __init__(self, message: str, failed: int, total: int, transient: bool):
        super().__init__(message, "run again to retry")
        self.failed, self.total, self.transient = failed, total, transient


def check_choice(what: str, value: str, choices) -> str:
    """`value` if it is one of `choices`, else a one-line error listing them."""
    if value not in choices:
        raise JinalocError(f"unknown {what} {value!r}: choose one of {', '.join(choices)}")
    return value
