"""Writing results to stdout: JSON, JSON lines, plain lines. Data only, never logs."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable
from typing import Any

FORMATS = ("json", "jsonl")


def _dumps(obj: Any) -> str:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"))


def write_json(obj: Any, out=None) -> None:
    out = out or sys.stdout
    out.write(_dumps(obj) + "\n")
    out.flush()


def write_jsonl(rows: Iterable[Any], out=None) -> None:
    """One object per line, flushed as it goes so pipelines see results early."""
    out = out or sys.stdout
    for row in rows:
        out.write(_dumps(row) + "\n")
    out.flush()


def write_lines(lines: Iterable[str], out=None) -> None:
    out = out or sys.stdout
    for line in lines:
        out.write(line + "\n")
    out.flush()
