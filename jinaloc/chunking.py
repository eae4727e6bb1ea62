"""Splitting a text file into chunks that fit a token budget, along its structure.

A file is cut into blocks: headings, paragraphs, lists and fenced code (Markdown; Org and
AsciiDoc headings too; other files are paragraphs only). Blocks are packed into chunks in
order up to the budget; a heading of the same or a higher level than the chunk's own starts
a new chunk, so a chunk stays within one section and its subsections. Only what cannot fit
degrades: a block bigger than its chunk's budget is split by lines (then words, then
characters) with some overlap between the pieces, and the rest of the file packs as before;
a chunk too small to stand alone (under 1/MIN_SHARE of its budget) takes the first piece of
the paragraph, list, code or table after it; it is left that small only before a heading,
a page break or the end of the file. A split table's later
pieces are embedded after its header rows when those are short. Each chunk keeps its
1-based line range and heading path.

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
from typing import TYPE_CHECKING

from . import notes

if TYPE_CHECKING:
    from .embedder import Embeds

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
# A chunk under 1/MIN_SHARE of its budget only before a heading, a page break or the end of
# the file: when the next element does not fit such a chunk, it is split to fill it.
MIN_SHARE = 8
# A split table's header and delimiter rows go before each later piece when they take at
# most 1/HEADER_SHARE of the budget: a wide padded header would crowd out the rows.
HEADER_SHARE = 8
# Times a file is packed again when counts of joined pieces come out over the room.
FIT_ROUNDS = 6
# Joins between blocks counted to learn what a blank line costs with this tokenizer.
JOIN_SAMPLE = 16
# A wikilink is kept whole when a line is cut between words, up to this length.
LINK_CHARS = 200


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
    context: str = ""  # a table piece's header rows, embedded before it
    extra: int = 0  # their tokens and separator


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
    `room`, also at most `room` tokens as embedded (title/heading line and a split table's
    header included). A chunk never spans one of the `breaks` (line numbers that start a
    page).

    What cannot fit degrades locally: an element bigger than its chunk is split, and only
    it; a chunk under 1/MIN_SHARE of its budget comes only before a heading, a page break or
    the end of the file."""
    if budget < 8:
        raise ValueError("chunk budget must be at least 8 tokens")
    overlap = budget // 8 if overlap is None else overlap
    title, meta, blocks = _parse(text, name)
    for block, n in zip(blocks, count([b.text for b in blocks]), strict=True):
        block.tokens = n
    join = _join_cost(blocks, count)
    for block in blocks:  # a block's share of the blank line before it, past one token
        block.tokens += join - 1
    doc = Document(title, [], name, meta.aliases, meta.tags, meta.date)
    caps = {b.heading: budget for b in blocks}
    if room is not None:  # each chunk's title/heading line counts against the model's limit
        prefixes = {h: join_prefix(prefix_of(title, h, meta.aliases), "") for h in caps}
        for h, n in zip(prefixes, count(list(prefixes.values())), strict=True):
            caps[h] = max(8, min(budget, room - n - join + 1))
    packer = _Packer(count, caps, overlap, set(breaks), join)
    for _ in range(FIT_ROUNDS):
        groups = packer.pack(blocks)
        # A chunk of nothing but rules (`---`) says nothing: it is not indexed.
        kept = [
            (i, _chunk(g))
            for i, g in enumerate(groups)
            if not all(_RULE.fullmatch(line) for b in g for line in b.text.splitlines())
        ]
        doc.chunks = [c for _, c in kept]
        over = _over(doc, count, room) if room is not None else {}
        if not over:
            break
        # Counts of pieces need not add up to the count of their join: only the chunks that
        # came out over the room are packed again, tighter.
        for j, n in over.items():
            i = kept[j][0]
            packer.limits[i] = min(packer.limits.get(i, budget), _cost(groups[i]) - n)
    return doc


def _join_cost(blocks: list[_Block], count: TokenCounter) -> int:
    """Tokens a blank line between two blocks adds, as this tokenizer counts (a text counted
    alone may merge its first token with what precedes it, so a join can cost more than
    one): the most of the first JOIN_SAMPLE joins, at least 1."""
    pairs = list(zip(blocks, blocks[1:], strict=False))[:JOIN_SAMPLE]
    joined = count([f"{a.text}\n\n{b.text}" for a, b in pairs])
    return max([1, *(n - a.tokens - b.tokens for (a, b), n in zip(pairs, joined, strict=True))])


def _over(doc: Document, count: TokenCounter, room: int) -> dict[int, int]:
    """{chunk index: tokens over the room} of the chunks as embedded. Both models'
    tokenizers are byte-level BPE (a token holds at least one byte), so only a text of more
    bytes than the room is counted: with 512-token chunks and an 8k model, none is."""
    texts = doc.embed_texts()
    near = [i for i, t in enumerate(texts) if len(t.encode()) > room]
    counts = count([texts[i] for i in near])
    return {i: n - room for i, n in zip(near, counts, strict=True) if n > room}


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
    """Tokens of blocks joined by blank lines (one token per separator here, what a join
    costs past that is in each block's count), with the header embedded before a table
    piece."""
    return sum(b.tokens for b in blocks) + max(len(blocks) - 1, 0) + blocks[0].extra


def _text_cost(blocks: list[_Block]) -> int:
    """Tokens of the blocks without their last headings (those go on with what follows)."""
    end = len(blocks)
    while end and blocks[end - 1].level:
        end -= 1
    return _cost(blocks[:end]) if end else 0


def _chunk(blocks: list[_Block]) -> Chunk:
    text = "\n\n".join(b.text for b in blocks)
    tokens = _cost(blocks) - blocks[0].extra
    first = blocks[0]
    return Chunk(text, first.start, blocks[-1].end, first.heading, tokens, context=first.context)


class _Packer:
    """Blocks into chunks, in order, each within the budget of its heading path (`caps`),
    and within `limits` by chunk number (set for chunks that came out over the room)."""

    def __init__(
        self, count: TokenCounter, caps: dict, overlap: int, breaks: set[int], join: int = 1
    ):
        self.count = count
        self.join = join  # tokens of a line break between a piece's lines
        self.caps = caps
        self.overlap = overlap
        self.breaks = breaks
        self.limits: dict[int, int] = {}

    def pack(self, blocks: list[_Block]) -> list[list[_Block]]:
        self.groups: list[list[_Block]] = []
        self.current: list[_Block] = []
        for block in blocks:
            current = self.current
            # A sibling or parent section starts a new chunk (subsections may join the
            # current one), and so does a new page.
            section = block.level and (
                not current or not current[0].depth or block.level <= current[0].depth
            )
            if current and (section or block.start in self.breaks):
                self.flush()
            self.add(block)
        self.flush()
        return self.groups

    def cap(self, first: _Block) -> int:
        """The budget of the next chunk, which starts with `first`."""
        return max(8, min(self.caps[first.heading], self.limits.get(len(self.groups), 1 << 30)))

    def small(self, blocks: list[_Block]) -> bool:
        """Too little text to stand as a chunk: under 1/MIN_SHARE of its budget (before any
        tightening for the room)."""
        return _text_cost(blocks) * MIN_SHARE < self.caps[blocks[0].heading]

    def flush(self, keep_heading: bool = False) -> None:
        # Headings at the end of a full chunk go with their text into the next one.
        carry: list[_Block] = []
        while keep_heading and self.current and self.current[-1].level:
            carry.insert(0, self.current.pop())
        if self.current:
            self.groups.append(self.current)
        self.current = carry

    def add(self, block: _Block) -> None:
        while True:
            current = self.current
            if not current:
                if block.tokens <= self.cap(block):
                    self.current = [block]
                    return
                break
            limit = self.cap(current[0])
            if _cost(current) + 1 + block.tokens <= limit:
                current.append(block)
                return
            # A chunk with enough text goes as it is (its last headings go on with the
            # block), and so does one before a heading (a heading is cut only when it alone
            # is over); one too small to stand alone is filled with the block's first piece.
            if self.small(current) and not block.level:
                break
            if not _text_cost(current):  # headings alone: the heading is cut
                break
            self.flush(keep_heading=True)
        self.split(block)

    def split(self, block: _Block) -> None:
        """Cut a block into pieces: the first fills the current chunk, each next one is a
        chunk (with about `overlap` tokens of the one before), and the last stays open for
        what follows. Cut between lines; an overlong line between words; an overlong word
        between characters."""
        cap = max(8, min(self.caps[block.heading], *self.limits.values(), 1 << 30))
        header = _table_header(block.text)
        extra = self.count([header])[0] + self.join if header else 0
        if extra * HEADER_SHARE > cap:  # a wide header repeated would crowd out the rows
            header, extra = "", 0
        # A unit fits next to a chunk under 1/MIN_SHARE of its budget.
        units = _units(
            block, self.count, max(1, cap - extra - cap // MIN_SHARE - 1 - self.join), self.join
        )
        pos = 0
        while pos < len(units):
            lead = self.current
            more = extra if pos and not lead else 0
            limit = self.cap(lead[0] if lead else block)
            room = limit - more - (_cost(lead) + 1 if lead else 0)
            end, used = pos, 0
            while end < len(units) and used + units[end][3] <= room:
                used += units[end][3]
                end += 1
            if end == pos:
                if lead and not self.small(lead):
                    self.flush(keep_heading=True)
                    continue
                # Cut finer what does not fit after headings or little text.
                sep, text, line, _ = units[pos]
                finer = _units(_Block(text, line, line, ()), self.count, room - self.join)
                if len(finer) > 1:
                    units[pos : pos + 1] = [(sep, *finer[0][1:]), *finer[1:]]
                    continue
                if lead and _text_cost(lead):
                    self.flush(keep_heading=True)
                    continue
                end += 1  # one token over a budget cut to 8: the embedder truncates it
            piece = _piece(units[pos:end], block)
            if more:
                piece.context, piece.extra = header, extra
            self.current = [*lead, piece]
            if end == len(units):
                return
            self.flush()
            pos = max(pos + 1, self._back(units, pos, end, limit - more))

    def _back(self, units: list, pos: int, end: int, room: int) -> int:
        """Where the next piece starts: `overlap` tokens back, leaving it room for more."""
        start, used = end, 0
        limit = min(self.overlap, room - units[end][3])
        while start - 1 > pos and used + units[start - 1][3] <= limit:
            start -= 1
            used += units[start][3]
        return start


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


def _units(
    block: _Block, count: TokenCounter, budget: int, join: int = 1
) -> list[tuple[str, str, int, int]]:
    """(separator, text, line number, cost) pieces of a block, none over the budget; a line
    costs `join` for its line break."""
    budget = max(budget, 1)
    lines = block.text.split("\n")
    units = []
    for offset, (line, n) in enumerate(zip(lines, count(lines), strict=True)):
        sep = "\n" if offset else ""
        lineno = block.start + offset
        if n <= budget:
            units.append((sep, line, lineno, n + join))
            continue
        words = _whole_links(line.split(" "))
        for j, (word, m) in enumerate(zip(words, count(words), strict=True)):
            wsep = sep if j == 0 else " "
            if m < budget:  # the separator counted as a token, as a line's newline is
                units.append((wsep, word, lineno, m + 1))
                continue
            # Characters per token of this word, with a margin; counted again, and cut finer
            # while a fragment is still over (tokens are not spread evenly in a word).
            step = max(1, int(len(word) * budget / m * 0.8))
            while True:
                frags = [word[k : k + step] for k in range(0, len(word), step)]
                sizes = count(frags)
                if max(sizes) <= budget or step == 1:
                    break
                step = max(1, min(step - 1, int(step * budget / max(sizes) * 0.8)))
            for k, (frag, f) in enumerate(zip(frags, sizes, strict=True)):
                units.append((wsep if k == 0 else "", frag, lineno, f))
    return units


def _whole_links(words: list[str]) -> list[str]:
    """Words with a wikilink's words kept together (`[[Obsidian Sync]]`, up to LINK_CHARS),
    so a line cut between words does not cut a link in two."""
    out: list[str] = []
    for word in words:
        last = out[-1] if out else ""
        if last.count("[[") > last.count("]]") and len(last) < LINK_CHARS:
            out[-1] = f"{last} {word}"
        else:
            out.append(word)
    return out


def _piece(group: list[tuple[str, str, int, int]], block: _Block) -> _Block:
    text = group[0][1] + "".join(sep + text for sep, text, _, _ in group[1:])
    tokens = sum(u[3] for u in group)
    return _Block(text, group[0][2], group[-1][2], block.heading, 0, block.depth, tokens)


class DocumentChunker:
    """Chunks texts as the index embeds them: the model's tokenizer counts, and every
    embedded chunk (title/heading prefix included) fits the model's limit."""

    def __init__(self, embedder: Embeds, chunk_tokens: int):
        self.embedder = embedder
        self.overhead = embedder.count_tokens([""], "document")[0]
        # Raw tokens an embedded chunk may have: the limit less the prompt and special tokens.
        self.room = embedder.max_tokens - self.overhead
        self.budget = max(8, min(chunk_tokens, self.room))

    def count(self, texts) -> list[int]:
        """Raw token counts (without the prompt and special tokens)."""
        if not texts:
            return []
        counts = self.embedder.count_tokens(list(texts), "document")
        return [max(n - self.overhead, 0) for n in counts]

    def chunk(self, text: str, name: str, breaks: Sequence[int] = ()) -> Document:
        """`text` in chunks; none spans one of the `breaks` (the lines pages start on)."""
        return chunk_text(text, name, self.count, self.budget, room=self.room, breaks=breaks)
