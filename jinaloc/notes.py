"""What a Markdown note says about itself, and its text as a reader sees it.

Front matter: YAML between `---` lines (or TOML between `+++` lines) at the very top, read
with yaml.safe_load / tomllib: `title`, `aliases` (`alias`), `tags` (`tag`) and a date
(`date`, else `created`, else `updated`). A block that does not parse gives no metadata (a
`title:` line still gives the title) and is still left out of the body. Inline `#tags`
are tags too, as Obsidian reads them (inline_tags).

For embedding only (the stored text stays as written), Obsidian syntax is reduced to its
visible text: `[[Note|label]]` -> label, `[[Note#Part]]` -> Note > Part, `![[Other note]]`
-> Other note, `![[image.png]]` -> nothing; callout markers `> [!tip] Title` -> `> Title`;
HTML comments and Obsidian `%% comments %%` dropped."""

from __future__ import annotations

import datetime as dt
import re
import sys
from dataclasses import dataclass, field
from pathlib import PurePath

# Front matter longer than this is taken for a document that happens to start with `---`.
FRONT_MATTER_LINES = 200
DATE_KEYS = ("date", "created", "updated")
_FENCES = {"---": ("---", "..."), "+++": ("+++",)}
_TITLE_LINE = re.compile(r"""^title[ \t]*[:=][ \t]*["']?(.*?)["']?[ \t]*$""", re.IGNORECASE)
# Obsidian (help.obsidian.md/tags): `#` then letters, digits, emoji, _ - /, at least one
# not a digit, at the start of a line or after a blank: so never inside a word, an URL
# (`play?#code`, `/#x`), an anchor (`](#x)`, `[[#x]]`) or an HTML entity (`&#39;`).
_TAG_CHAR = r"[\w/\-\u2600-\u27bf\U0001f300-\U0001faff\ufe0f\u200d]"
_TAG = re.compile(
    rf"(?<!\S)#({_TAG_CHAR}*(?:[^\W\d]|[\u2600-\u27bf\U0001f300-\U0001faff]){_TAG_CHAR}*)"
)
# Text where a `#` is not a tag: inline code, wikilinks and embeds, Markdown links and
# images (text and target), autolinks and bare URLs, HTML tags, comments.
_NOT_TAGS = re.compile(
    r"(`+)[^\n]+?\1|!?\[\[[^\n]*?\]\]|!?\[[^\]\n]*\]\([^)\n]*\)|<[^>\n]+>"
    r"|\b[a-zA-Z][\w+.-]*://\S+|\bwww\.\S+|<!--.*?-->|%%.*?%%",
    re.DOTALL,
)
# A code fence, in a callout or list too.
_CODE_FENCE = re.compile(r"^[ \t>]*(`{3,}|~{3,})")
_WIKILINK = re.compile(r"(!?)\[\[([^\[\]\n]+?)\]\]")
_CALLOUT = re.compile(r"^([ \t]*(?:>[ \t]*)+)\[!([\w-]+)\][+-]?[ \t]*(.*)$", re.MULTILINE)
_COMMENT = re.compile(r"<!--.*?-->|%%.*?%%", re.DOTALL)
_RELATIVE = re.compile(r"(\d+)\s*([dwmy])", re.IGNORECASE)
NOTE_LINK_SUFFIXES = {"", ".md", ".markdown", ".canvas"}


@dataclass
class FrontMatter:
    title: str | None = None
    aliases: list[str] = field(default_factory=list)
    tags: list[str] = field(default_factory=list)
    date: str | None = None  # ISO date, YYYY-MM-DD
    body_start: int = 0  # index of the first line after the block


def front_matter(lines: list[str]) -> FrontMatter:
    """The metadata of a front matter block at the top of a note's lines."""
    if not lines or lines[0].strip() not in _FENCES:
        return FrontMatter()
    ends = _FENCES[lines[0].strip()]
    for i in range(1, min(len(lines), FRONT_MATTER_LINES)):
        if lines[i].strip() in ends:
            block = lines[1:i]
            meta = _read(block, toml=lines[0].strip() == "+++")
            meta.body_start = i + 1
            if meta.title is None:
                titles = [m.group(1) for m in map(_TITLE_LINE.match, block) if m]
                meta.title = titles[0] if titles and titles[0] else None
            return meta
    return FrontMatter()


def _read(block: list[str], toml: bool) -> FrontMatter:
    text = "\n".join(block)
    try:
        if toml:  # imported here, as yaml is: `search` reads no front matter
            if sys.version_info >= (3, 11):
                import tomllib
            else:  # pragma: no cover
                import tomli as tomllib

            data = tomllib.loads(text)
        else:
            import yaml

            data = yaml.safe_load(text)
    except Exception:  # yaml.YAMLError, TOMLDecodeError, RecursionError: all "not metadata"
        return FrontMatter()
    if not isinstance(data, dict):
        return FrontMatter()
    data = {str(k).lower(): v for k, v in data.items()}
    title = data.get("title")
    date = next((d for d in map(as_date, (data.get(k) for k in DATE_KEYS)) if d), None)
    return FrontMatter(
        title=str(title).strip() or None if isinstance(title, (str, int, float)) else None,
        aliases=_strings(data.get("aliases", data.get("alias"))),
        tags=unique(t.lstrip("#") for t in _strings(data.get("tags", data.get("tag")), True)),
        date=date,
    )


def _strings(value, split_words: bool = False) -> list[str]:
    """A list of strings from a YAML value: a list, or one string ("a, b"; tags "a b")."""
    if isinstance(value, str):
        items = re.split(r"[,\s]+" if split_words else r",", value)
    elif isinstance(value, list):
        items = [v for v in value if isinstance(v, (str, int, float))]
    else:
        return []
    return [s for s in (str(v).strip() for v in items) if s]


def unique(tags) -> list[str]:
    """Tags in order, without repeats (compared case-insensitively)."""
    seen: dict[str, str] = {}
    for tag in tags:
        if tag:
            seen.setdefault(tag.lower(), tag)
    return list(seen.values())


def as_date(value) -> str | None:
    """YYYY-MM-DD from a front matter value (a YAML/TOML date or datetime, or an ISO
    string), else None."""
    if isinstance(value, dt.datetime):
        return value.date().isoformat()
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, str):
        try:
            return (
                dt.datetime.fromisoformat(value.strip().replace("Z", "+00:00")).date().isoformat()
            )
        except ValueError:
            return None
    return None


def mtime_date(mtime_ns: int) -> str:
    """The local calendar date of a modification time."""
    return dt.datetime.fromtimestamp(mtime_ns / 1e9).date().isoformat()


def date_arg(text: str, today: dt.date | None = None) -> str:
    """A --since/--before value: an ISO date (2024-03-01, 2024-03, 2024) or a span back from
    today (7d, 2w, 3m, 1y). ValueError with the reason otherwise."""
    text = text.strip()
    today = today or dt.date.today()
    m = _RELATIVE.fullmatch(text)
    if m:
        n, unit = int(m.group(1)), m.group(2).lower()
        if unit in "dw":
            return (today - dt.timedelta(days=n * (7 if unit == "w" else 1))).isoformat()
        months = today.year * 12 + today.month - 1 - n * (12 if unit == "y" else 1)
        year, month = divmod(months, 12)
        day = min(today.day, 28)  # every month has a 28th
        return dt.date(year, month + 1, day).isoformat()
    for fmt in ("%Y-%m-%d", "%Y-%m", "%Y"):
        try:
            return dt.datetime.strptime(text, fmt).date().isoformat()
        except ValueError:
            continue
    raise ValueError(f"invalid date {text!r}: use YYYY-MM-DD (or YYYY-MM, YYYY) or 7d, 2w, 3m, 1y")


def inline_tags(lines: list[str]) -> list[str]:
    """`#tags` in the body, as Obsidian reads them: not in code, links, URLs or comments."""
    kept: list[str] = []
    fence: str | None = None
    for line in lines:
        m = _CODE_FENCE.match(line)
        if fence is not None:
            if m and m.group(1).startswith(fence):
                fence = None
            continue
        if m:
            fence = m.group(1)[:3]
            continue
        kept.append(line)
    text = "\n".join(kept)
    if "#" not in text:
        return []
    tags = _TAG.findall(_NOT_TAGS.sub(" ", text))
    return unique(t.rstrip("/") for t in tags)


def readable(text: str) -> str:
    """A Markdown chunk as a reader sees it (for embedding): links, embeds, callouts and
    comments reduced to their visible text."""
    text = _COMMENT.sub("", text)
    text = _WIKILINK.sub(_link_text, text)
    return _CALLOUT.sub(_callout_text, text)


def _link_text(m: re.Match) -> str:
    target, _, label = m.group(2).partition("|")
    target = target.strip()
    if m.group(1):  # an embed: a note's text shows (its name stands for it), a file's does not
        name = target.split("#", 1)[0]
        if PurePath(name).suffix.lower() not in NOTE_LINK_SUFFIXES:
            return ""
    if label.strip():
        return label.strip()
    note, _, part = target.partition("#")
    if part.startswith("^"):  # a block id is not text
        part = ""
    return " > ".join(p for p in (note.strip(), *part.split("#")) if p.strip())


def _callout_text(m: re.Match) -> str:
    title = m.group(3).strip() or m.group(2).replace("-", " ").capitalize()
    return m.group(1) + title
