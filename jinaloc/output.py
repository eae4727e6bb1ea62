"""Writing results to stdout: data only, never logs.

Commands produce rows; a `Renderer` writes them in the format the user chose:
plain text (one function for a terminal, one for pipes), one JSON document, JSON lines
(streamed as rows come) or file paths.

Names are data, not terminal commands: text output shows a path's control characters,
newlines, ESC and bidi controls escaped (`shown`), and its undecodable bytes as `\xff`.
JSON holds every str as it is; a lone surrogate (an undecodable byte of a file name, as
`os.fsdecode` gives it) is written as its `\udcff` escape, from which Python's `json` and
`os.fsencode` give the exact bytes back. `--files` writes a name's exact bytes."""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Callable, Iterable
from typing import Any

from .errors import JinalocError
from .textsafe import SURROGATE, has_surrogates

FORMATS = ("text", "json", "jsonl", "files")

Row = Any


# Characters a terminal acts on (C0, DEL, C1) or that reorder what it shows (bidi controls).
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069\ud800-\udfff]")


def _escape(match: re.Match) -> str:
    code = ord(match.group())
    if 0xDC80 <= code <= 0xDCFF:  # an undecodable byte of a name
        return f"\\x{code - 0xDC00:02x}"
    return repr(match.group())[1:-1] if code < 0x100 else f"\\u{code:04x}"


def shown(text: str) -> str:
    """`text` safe to print on one line: control characters (newline, tab, ESC...), bidi
    controls and undecodable bytes escaped (`\\n`, `\\x1b`, `\\xff`)."""
    return _UNSAFE.sub(_escape, text)


def json_dumps(obj: Any) -> str:
    """Compact JSON text that is always valid UTF-8: a lone surrogate (a name's undecodable
    byte) as its `\\udcff` escape (what a server's responses need too)."""
    text = json.dumps(obj, ensure_ascii=False, separators=(",", ":"))
    # Lone surrogates occur only inside JSON strings: their escapes are valid JSON.
    if has_surrogates(text):
        text = SURROGATE.sub(lambda m: f"\\u{ord(m.group()):04x}", text)
    return text


def _write(out, text: str) -> None:
    """Text to a stream; a name's undecodable bytes (--files) as the bytes themselves."""
    try:
        out.write(text)
    except UnicodeEncodeError:
        buffer = getattr(out, "buffer", None)
        if buffer is None:
            out.write(shown(text))
            return
        out.flush()
        buffer.write(text.encode(out.encoding or "utf-8", "surrogateescape"))


def write_json(obj: Any, out=None) -> None:
    out = out or sys.stdout
    out.write(json_dumps(obj) + "\n")
    out.flush()


def write_jsonl(rows: Iterable[Any], out=None) -> None:
    """One object per line, flushed as it goes so pipelines see results early."""
    out = out or sys.stdout
    for row in rows:
        out.write(json_dumps(row) + "\n")
    out.flush()


def write_lines(lines: Iterable[str], out=None, end: str = "\n") -> None:
    out = out or sys.stdout
    for line in lines:
        _write(out, line + end)
    out.flush()


def output_format(json: bool = False, jsonl: bool = False, files: bool = False) -> str:
    """The one format asked for by --json / --jsonl / --files ("text" when none)."""
    chosen = [name for name, on in (("json", json), ("jsonl", jsonl), ("files", files)) if on]
    if len(chosen) > 1:
        flags = [f"--{name}" for name in chosen]
        raise JinalocError(f"{' and '.join(flags)} don't mix: choose one of {' / '.join(flags)}")
    return chosen[0] if chosen else "text"


class Renderer:
    """Writes rows in one format.

    `data(row)` is a row as JSON (default: the row itself); `line(row)` is it as plain text
    (tab-separated fields for pipes; it may hold several lines); `tty(row)` prints it for a
    terminal instead, when stdout is one; `path(row)` is its file for --files (each path
    once); `document(rows)` wraps all rows' JSON into the --json document (default: the
    list); `separator` goes between rows in text output."""

    def __init__(
        self,
        fmt: str,
        *,
        data: Callable[[Row], Any] | None = None,
        line: Callable[[Row], str] | None = None,
        tty: Callable[[Row], None] | None = None,
        path: Callable[[Row], str] | None = None,
        document: Callable[[list], Any] | None = None,
        separator: str | None = None,
        terminal: bool | None = None,
        null: bool = False,
    ):
        if fmt not in FORMATS:
            raise JinalocError(f"unknown output format {fmt!r}")
        if fmt == "files" and path is None:
            raise JinalocError("--files does not apply here")
        if null and fmt != "files":
            raise JinalocError("-0/--null goes with --files")
        self.fmt = fmt
        self.data = data or (lambda row: row)
        self.line = line or (lambda row: json_dumps(self.data(row)))
        self.tty = tty if (sys.stdout.isatty() if terminal is None else terminal) else None
        self.path = path
        self.document = document or list
        self.separator = separator
        # --files -0: paths end in NUL, as `find -print0` (names may hold newlines).
        self.end = "\0" if null else "\n"
        self.count = 0
        self._rows: list = []
        self._paths: set[str] = set()

    def add(self, rows: Iterable[Row]) -> None:
        rows = list(rows)
        if self.fmt == "json":
            self._rows.extend(map(self.data, rows))
        elif self.fmt == "jsonl":
            write_jsonl(map(self.data, rows))
        elif self.fmt == "files":
            new = [p for p in map(self.path, rows) if not (p in self._paths or self._paths.add(p))]
            write_lines(new, end=self.end)
        else:
            for n, row in enumerate(rows, self.count):
                if n and self.separator is not None:
                    write_lines([self.separator])
                if self.tty is not None:
                    self.tty(row)
                else:
                    write_lines([self.line(row)])
        self.count += len(rows)

    def close(self) -> int:
        """Finish the output (the --json document); returns how many rows there were."""
        if self.fmt == "json":
            write_json(self.document(self._rows))
        return self.count
