"""Text that came from outside (a query, an input line, a file or file name) made safe for
what must be valid Unicode: a tokenizer, SQLite, a JSON document, a terminal.

Python strs may hold lone surrogates: `os.fsdecode` turns a file name's undecodable bytes
into U+DC80..U+DCFF, a command-line argument gets the same treatment, and JSON's `"\\ud800"`
decodes to one. Text to embed, search or store as text has them replaced by U+FFFD
(`clean`), the same everywhere, so a query never fails for them; names keep them (the store
keeps their bytes) and show them escaped (`output.shown`)."""

from __future__ import annotations

import re

SURROGATE = re.compile("[\ud800-\udfff]")
REPLACEMENT = "\ufffd"


def has_surrogates(text: str) -> bool:
    """Whether `text` holds a lone surrogate (it cannot be encoded as UTF-8)."""
    return not text.isascii() and SURROGATE.search(text) is not None


def clean(text: str) -> str:
    """`text` with each lone surrogate replaced by U+FFFD (cheap when there is none)."""
    return SURROGATE.sub(REPLACEMENT, text) if has_surrogates(text) else text
