"""Splitting a text file into chunks that fit a token budget, along its structure.

A file is cut into blocks: headings, paragraphs, lists and fenced code (Markdown; Org and
AsciiDoc headings too; other files are paragraphs only). Blocks are packed into chunks in
order up to the budget; a heading of the same or a higher level than the chunk's own starts
a new chunk, so a chunk stays within one section and its subsections. A block bigger than
the budget is split by lines (then words, then characters) with some overlap between the
pieces. Each chunk keeps its 1-based line range and heading path.

What gets embedded is `embed_text(title, heading, text, aliases, name)`:

    <title> (<alias>, <alias>) > <heading> > <subheading>
    (blank line)
    <chunk text>, as a reader sees it in Markdown (notes.readable)

The title is the front matter `title:`, else the first level-1 heading, else the file name;
a first heading equal to the title is not repeated. The prefix line is cut at PREFIX_CHARS.
Markdown front matter (notes.py) is never part of a chunk: its title and aliases go in the
prefix, its tags and date into the Document."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import PurePath

from . import notes

# Raw token counts of texts (no prompt, no special tokens), in order.
TokenCounter = Callable[[Sequence[str]], list[int]]

MARKDOWN = {".md", ".markdown", ".mdx", ".mdown", ".mkd", ".mkdn"}
# Note formats: indexed by default (files.py) and titled by their stem.
NOTE_SUFFIXES = MARKDOWN | {
    ".txt", ".text", ".rst", ".org", ".adoc", ".asciidoc", ".tex", ".latex", ".html", ".htm",
    ".xhtml",
}  # fmt: skip
_HEADINGS = {
    "md": re.compile(r"^ {0,3}(#{1,6})(?:[ \t]+(.*?))?(?:[ \t]+#+)?[ \t]*$"),
    "org": re.compile(r"^(\*+)[ \t]+(.*?)[ \t]*$"),
    "adoc": re.compile(r"^(={1,6})[ \t]+(.*?)[ \t]*$"),
}
# Office documents are read as Markdown-style headings and paragraphs (documents.py).
_HEADINGS["doc"] = _HEADINGS["md"]
OFFICE = {".docx", ".pptx", ".xlsx"}
_FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})")
_LIST_ITEM = re.compile(r"^[ \t]*(?:[-*+]|\d{1,9}[.)])(?:[ \t]|$)")
_ORG_TITLE = re.compile(r"^#\+title:[ \t]*(.+?)[ \t]*$", re.IGNORECASE)
PATH_SEP = " > "
_RULE = re.compile(r"\s*(?:(?:[-*_]\s*){3,})?")  # a thematic break (`---`, `***`), or blank
_TABLE_RULE = re.compile(r"\s*\|?\s*:?-{3,}:?\s*(?:\|\s*:?-{3,}:?\s*)*\|?\s*")
# The title/heading line of an embedded chunk is cut here: a heading is a line, not the text.
PREFIX_CHARS = 300


@dataclass
class Chunk:
    text: str
    start_line: int  # 1-based, inclusive
    end_line: int
    heading: tuple[str, ...]  # heading path, outermost first
    tokens: int  # raw tokens of `text` as counted while packing
    page: int | None = None  # the page it starts on, in a paged document
    # Embedded before the text, not stored: a split table's header rows for its later pieces.
    context: str = ""


@dataclass
class Document:
    title: str
    chunks: list[Chunk]
    name: str = ""  # the file's name: its syntax decides how chunks read when embedded
    aliases: list[str] = field(default_factory=list)
    tags: list[str] = field(default_factory=list)  # front matter tags, then inline #tags
    date: str | None = None  # front matter date (YYYY-MM-DD)

    def embed_texts(self) -> list[str]:
        """What gets embedded for each chunk: title and heading path first."""
        return [
            embed_text(self.title, c.heading, join_context(c), self.aliases, self.name)
            for c in self.chunks
        ]


@dataclass
class _Block:
    text: str
    start: int  # 1-based line numbers, inclusive
    end: int
    heading: tuple[str, ...]
    level: int = 0  # > 0 for a heading line
    depth: int = 0  # level of the innermost heading in effect (its own for a heading)
    tokens: int = 0


def embed_text(
    title: str, heading: Sequence[str], text: str, aliases: Sequence[str] = (), name: str = ""
) -> str:
    """The text that gets embedded for a chunk: its title (and aliases) and heading path,
    then the chunk (Markdown, when `name` is a Markdown file's, as a reader sees it)."""
    if syntax_of(name) == "md":
        text = notes.readable(text)
    return join_prefix(prefix_of(title, heading, aliases), text)


def prefix_of(title: str, heading: Sequence[str], aliases: Sequence[str] = ()) -> str:
    path = list(heading[1:] if heading and heading[0] == title else heading)
    if title and aliases:
        title = f"{title} ({', '.join(aliases)})"
    prefix = PATH_SEP.join(p for p in [title, *path] if p)
    return prefix if len(prefix) <= PREFIX_CHARS else prefix[: PREFIX_CHARS - 1] + "…"


def join_context(chunk: Chunk) -> str:
    return f"{chunk.context}\n{chunk.text}" if chunk.context else chunk.text


def join_prefix(prefix: str, text: str) -> str:
    return f"{prefix}\n\n{text}" if prefix else text


def syntax_of(name: str) -> str:
    suffix = PurePath(name).suffix.lower()
    if suffix in MARKDOWN:
        return "md"
    if suffix == ".org":
        return "org"
    if suffix in (".adoc", ".asciidoc"):
        return "adoc"
    if suffix in OFFICE:
        return "doc"
    return "plain"


def is_heading(line: str, name: str) -> bool:
    """Whether `line` is a heading in the file `name`'s syntax (never in plain text or code)."""
    pattern = _HEADINGS.get(syntax_of(name))
    return bool(pattern and pattern.match(line))


def chunk_text(
    text: str,
    name: str,
    count: TokenCounter,
    budget: int,
    overlap: int | None = None,
    room: int | None = None,
    breaks: Sequence[int] = (),
) -> Document:
    """Chunks of `text` (the file `name`) of at most about `budget` raw tokens each; with
    `room`, also at most `room` tokens with the title/heading prefix embedded with them.
    A chunk never spans one of the `breaks` (line numbers that start a page)."""
    if budget < 8:
        raise ValueError("chunk budget must be at least 8 tokens")
    overlap = budget // 8 if overlap is None else overlap
    title, meta, blocks = _parse(text, name)
    for block, n in zip(blocks, count([b.text for b in blocks]), strict=True):
        block.tokens = n
    doc = Document(title, [], name, meta.aliases, meta.tags, meta.date)
    if room is not None:  # the longest title/heading line counts against the model's limit
        prefixes = {prefix_of(title, b.heading, meta.aliases) for b in blocks}
        longest = max(count([join_prefix(p, "") for p in prefixes if p]), default=0)
        budget = max(8, min(budget, room - longest))
    # A chunk of nothing but rules (`---`) says nothing: it is not indexed.
    doc.chunks = [
        c
        for c in _pack(blocks, count, budget, overlap, set(breaks))
        if not all(_RULE.fullmatch(line) for line in c.text.splitlines())
    ]
    return doc


def title_of(text: str, name: str) -> str:
    """The one title rule: front matter `title:` (Org `#+title:`), else the first level-1
    heading, else the file name (without a note suffix)."""
    return _parse(text, name)[0]


def meta_of(text: str, name: str) -> notes.FrontMatter:
    """What a file says about itself (Markdown: front matter and inline tags), as
    `chunk_text` puts it in its Document."""
    return _parse(text, name)[1]


def _parse(text: str, name: str) -> tuple[str, notes.FrontMatter, list[_Block]]:
    syntax = syntax_of(name)
    lines = text.splitlines()
    meta = notes.front_matter(lines) if syntax == "md" else notes.FrontMatter()
    blocks = _blocks(lines, meta.body_start, syntax)
    if syntax == "md":
        meta.tags = notes.unique([*meta.tags, *notes.inline_tags(lines[meta.body_start :])])
    title = meta.title or _first_title(blocks, lines, syntax) or _file_title(name)
    return title, meta, blocks


def _file_title(name: str) -> str:
    path = PurePath(name)
    return path.stem if path.suffix.lower() in NOTE_SUFFIXES else path.name


def _first_title(blocks: list[_Block], lines: list[str], syntax: str) -> str | None:
    if syntax == "org":
        for line in lines[:50]:
            m = _ORG_TITLE.match(line)
            if m:
                return m.group(1)
    return next((b.heading[-1] for b in blocks if b.level == 1 and b.heading[-1]), None)


def _blocks(lines: list[str], start: int, syntax: str) -> list[_Block]:
    """Headings, fenced code, lists and paragraphs, with the heading path of each."""
    heading_re = _HEADINGS.get(syntax)
    path: list[tuple[int, str]] = []  # (level, title) of the headings in effect
    blocks: list[_Block] = []
    current: list[str] = []
    first = 0  # line number of current[0]
    fence: str | None = None

    def close() -> None:
        while current and not current[-1].strip():  # blank lines kept inside a list
            current.pop()
        if current:
            heading = tuple(t for _, t in path)
            depth = path[-1][0] if path else 0
            blocks.append(
                _Block("\n".join(current), first, first + len(current) - 1, heading, 0, depth)
            )
        current.clear()

    for i in range(start, len(lines)):
        line = lines[i]
        if fence is not None:
            current.append(line)
            if line.strip().startswith(fence) and not line.strip().strip(fence[0]):
                fence = None
                close()
            continue
        m = _FENCE.match(line) if syntax == "md" else None
        if m:
            close()
            fence, first = m.group(1), i + 1
            current.append(line)
            continue
        m = heading_re.match(line) if heading_re else None
        if m:
            close()
            level = len(m.group(1))
            while path and path[-1][0] >= level:
                path.pop()
            path.append((level, (m.group(2) or "").strip()))
            heading = tuple(t for _, t in path)
            blocks.append(_Block(line, i + 1, i + 1, heading, level, level))
            continue
        if not line.strip():
            if current and _list_continues(current[0], lines, i):
                current.append(line)
            else:
                close()
            continue
        if not current:
            first = i + 1
        current.append(line)
    close()
    return blocks


def _list_continues(first_line: str, lines: list[str], i: int) -> bool:
    """A blank line inside a list: the list goes on if the next text is an item or indented."""
    if not _LIST_ITEM.match(first_line):
        return False
    nxt = next((x for x in lines[i + 1 :] if x.strip()), None)
    return nxt is not None and (bool(_LIST_ITEM.match(nxt)) or nxt[:1] in (" ", "\t"))


def _cost(blocks: list[_Block]) -> int:
    """Tokens of blocks joined by blank lines (one token per separator)."""
    return sum(b.tokens for b in blocks) + max(len(blocks) - 1, 0)


def _chunk(blocks: list[_Block]) -> Chunk:
    text = "\n\n".join(b.text for b in blocks)
    return Chunk(text, blocks[0].start, blocks[-1].end, blocks[0].heading, _cost(blocks))


def _pack(
    blocks: list[_Block], count: TokenCounter, budget: int, overlap: int, breaks: set[int]
) -> list[Chunk]:
    chunks: list[Chunk] = []
    current: list[_Block] = []

    def flush(keep_heading: bool = False) -> None:
        nonlocal current
        # A heading at the end of a full chunk goes with its text into the next one.
        carry = [current.pop()] if keep_heading and current and current[-1].level else []
        if current:
            chunks.append(_chunk(current))
        current = carry

    for block in blocks:
        # A sibling or parent section starts a new chunk (subsections may join the current
        # one), and so does a new page.
        section = block.level and (
            not current or not current[0].depth or block.level <= current[0].depth
        )
        if current and (section or block.start in breaks):
            flush()
        if block.tokens > budget:
            flush(keep_heading=True)
            lead, current = current, []
            pieces = _split(block, count, budget - _cost(lead) - 1 if lead else budget, overlap)
            first = len(chunks)
            if lead:
                chunks.append(_chunk([*lead, pieces.pop(0)]))
            chunks.extend(_chunk([p]) for p in pieces)
            header = _table_header(block.text)
            for chunk in chunks[first + 1 :]:  # later pieces of a table: its header again
                if header and not chunk.text.startswith(header):
                    chunk.context = header
            continue
        if current and _cost(current) + 1 + block.tokens > budget:
            flush(keep_heading=True)
        current.append(block)
    flush()
    return chunks


def _table_header(text: str) -> str:
    """A Markdown table's header and delimiter rows, when `text` starts with a table."""
    lines = text.split("\n", 2)
    if len(lines) >= 2 and lines[0].lstrip().startswith("|") and _TABLE_RULE.fullmatch(lines[1]):
        return f"{lines[0]}\n{lines[1]}"
    return ""


def table_headers(text: str) -> list[str]:
    """Every Markdown table header (with its delimiter row) in `text`: what a later piece
    of a split table was embedded after (health.py checks stored chunks with it)."""
    lines = text.split("\n")
    return [
        f"{a}\n{b}"
        for a, b in zip(lines, lines[1:], strict=False)
        if a.lstrip().startswith("|") and _TABLE_RULE.fullmatch(b)
    ]


def _split(block: _Block, count: TokenCounter, budget: int, overlap: int) -> list[_Block]:
    """Pieces of one oversized block, with about `overlap` tokens repeated between pieces.

    Cut between lines; an overlong line between words; an overlong word between characters."""
    budget = max(budget, 8)
    units = _units(block, count, budget)
    pieces: list[_Block] = []
    group: list[tuple[str, str, int, int]] = []
    for unit in units:
        if group and sum(u[3] for u in group) + unit[3] > budget:
            pieces.append(_piece(group, block))
            group = _tail(group, overlap, budget - unit[3])
        group.append(unit)
    if group:
        pieces.append(_piece(group, block))
    return pieces


def _units(block: _Block, count: TokenCounter, budget: int) -> list[tuple[str, str, int, int]]:
    """(separator, text, line number, cost) pieces of a block, none over the budget."""
    lines = block.text.split("\n")
    units = []
    for offset, (line, n) in enumerate(zip(lines, count(lines), strict=True)):
        sep = "\n" if offset else ""
        lineno = block.start + offset
        if n <= budget:
            units.append((sep, line, lineno, n + 1))
            continue
        words = line.split(" ")
        for j, (word, m) in enumerate(zip(words, count(words), strict=True)):
            wsep = sep if j == 0 else " "
            if m <= budget:
                units.append((wsep, word, lineno, m))
                continue
            # Characters per token of this word, with a margin: the fragments are counted again.
            step = max(1, int(len(word) * budget / m * 0.8))
            frags = [word[k : k + step] for k in range(0, len(word), step)]
            for k, (frag, f) in enumerate(zip(frags, count(frags), strict=True)):
                units.append((wsep if k == 0 else "", frag, lineno, f))
    return units


def _tail(group: list, overlap: int, room: int) -> list:
    """The last units of `group` worth at most `overlap` tokens (and fitting in `room`)."""
    tail: list = []
    used = 0
    for unit in reversed(group):
        if used + unit[3] > min(overlap, room):
            break
        tail.insert(0, unit)
        used += unit[3]
    return tail


def _piece(group: list[tuple[str, str, int, int]], block: _Block) -> _Block:
    text = group[0][1] + "".join(sep + text for sep, text, _, _ in group[1:])
    tokens = sum(u[3] for u in group)
    return _Block(text, group[0][2], group[-1][2], block.heading, 0, block.depth, tokens)
