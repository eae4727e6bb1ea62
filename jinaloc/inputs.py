"""Inputs for the pipeline commands: plain lines or JSON lines with ids, streamed."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from .errors import JinalocError, check_choice

INPUT_FORMATS = ("auto", "lines", "jsonl")
# Inputs per embedding round: enough for length-sorted batching, small enough to stream.
STREAM_BLOCK = 512


@dataclass
class Record:
    text: str
    id: Any = None
    has_id: bool = False


def parse_jsonl_line(line: str, lineno: int) -> Record:
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as e:
        raise JinalocError(
            f"stdin line {lineno}: invalid JSON: {e.msg} (column {e.colno})"
        ) from None
    if not isinstance(obj, dict):
        raise JinalocError(f'stdin line {lineno}: expected a JSON object with a "text" field')
    text = obj.get("text")
    if not isinstance(text, str):
        raise JinalocError(f'stdin line {lineno}: missing or non-string "text" field')
    return Record(text=text, id=obj.get("id"), has_id="id" in obj)


def records(lines: Iterable[str], fmt: str = "auto") -> Iterator[Record]:
    """Non-empty lines as records. `auto` reads JSON lines when the first line is an object."""
    check_choice("input format", fmt, INPUT_FORMATS)
    for lineno, raw in enumerate(lines, 1):
        line = raw.rstrip("\r\n")
        if not line.strip():
            continue
        if fmt == "auto":
            fmt = "jsonl" if line.lstrip().startswith("{") else "lines"
        yield parse_jsonl_line(line, lineno) if fmt == "jsonl" else Record(text=line)


def batched(items: Iterable, size: int) -> Iterator[list]:
    block: list = []
    for item in items:
        block.append(item)
        if len(block) >= size:
            yield block
            block = []
    if block:
        yield block
