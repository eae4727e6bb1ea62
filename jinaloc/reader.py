"""Reading a file safely: its bytes (a regular file only, never blocking, under a size
limit), its text (binary, encoding and empty checks), and the text of documents: PDF (its
text layer, page by page: pypdf) and Word, PowerPoint and Excel files (python-docx,
python-pptx, openpyxl), from the optional `docs` extra.

Only text is read. Nothing a document carries is run or followed (scripts, macros, form
actions, links, embedded files); spreadsheet cells give their cached values, not formulas.
Office files are zip archives: one that would unpack to more than MAX_UNPACKED bytes is
refused. Headings (Word heading styles, slide titles, sheet names) become Markdown `#`
lines, so the chunker cuts along them; PDF pages and slides are pages: each page's first
line is kept, and a chunk is located by the page it starts on."""

from __future__ import annotations

import bisect
import errno
import io
import logging
import os
import stat
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePath

from .errors import JinalocError

DEFAULT_MAX_SIZE = 1024 * 1024
# Files a user names one by one (`embed --file`, pipes) may be bigger than notes; the model
# truncates them anyway.
INPUT_MAX_SIZE = 50_000_000
# Documents are mostly layout, fonts and images: their text is a small part of their bytes.
DOCUMENT_MAX_SIZE = 32 * 1024 * 1024
DOCUMENTS = {".pdf", ".docx", ".pptx", ".xlsx"}
# Bytes inspected for the binary test: enough for any header, cheap for huge files.
SNIFF_BYTES = 8192
# Control characters other than whitespace and escape: text almost never has them.
_CONTROL = bytes(set(range(32)) - {8, 9, 10, 12, 13, 27})


class Unreadable(Exception):
    """A candidate that cannot be indexed; the message is the reason."""


@dataclass
class Extracted:
    """The text of a file; `pages`: the 1-based line each page starts on (PDF, slides)."""

    text: str
    pages: list[int] | None = None

    def page_of(self, line: int) -> int | None:
        return bisect.bisect_right(self.pages, line) if self.pages else None


def special_kind(mode: int) -> str | None:
    """What a file that is neither a regular file nor a folder is, for a skip reason."""
    for test, name in (
        (stat.S_ISFIFO, "named pipe (FIFO)"),
        (stat.S_ISSOCK, "socket"),
        (stat.S_ISCHR, "character device"),
        (stat.S_ISBLK, "block device"),
    ):
        if test(mode):
            return name
    return None if stat.S_ISREG(mode) or stat.S_ISDIR(mode) else "special file"


def os_reason(e: OSError, symlink: bool = False) -> str:
    if e.errno == errno.ELOOP:
        return "symlink loop"
    if e.errno == errno.ENOENT:
        return "broken symlink" if symlink else "no such file"
    if e.errno == errno.EISDIR:
        return "is a directory"
    if e.errno in (errno.EACCES, errno.EPERM):
        return "permission denied"
    return e.strerror or str(e)


def decode_text(data: bytes) -> str:
    """The text of a file's bytes, or Unreadable('binary file' / 'not valid UTF-8' / 'empty')."""
    head = data[:SNIFF_BYTES]
    if b"\0" in head or len(head.translate(None, _CONTROL)) < len(head) * 0.9:
        raise Unreadable("binary file")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise Unreadable(f"not valid UTF-8 (byte {e.start})") from None
    if not text.strip():
        raise Unreadable("empty")
    return text


# Opening never waits (a FIFO without a writer) nor takes a terminal; regular files ignore
# O_NONBLOCK.
_OPEN_FLAGS = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0)


def read_bytes(path: Path, max_size: int = DEFAULT_MAX_SIZE) -> bytes:
    """A candidate's bytes, with the size limit checked again (files grow). Only a regular
    file is read: a FIFO, socket or device (a file swapped for one since it was walked) is
    Unreadable, checked before opening and again on the open file."""
    try:
        kind = special_kind(os.stat(path).st_mode)
        if kind is None:
            fd = os.open(path, _OPEN_FLAGS)
            with open(fd, "rb") as f:
                kind = special_kind(os.fstat(fd).st_mode)
                data = b"" if kind else f.read(max_size + 1)
    except OSError as e:
        raise Unreadable(os_reason(e)) from None
    if kind:
        raise Unreadable(f"{kind}, not a file")
    if len(data) > max_size:
        raise Unreadable(f"too large (> {max_size} bytes)")
    return data


def extract_text(data: bytes, name: str, probe: bool = False) -> Extracted:
    """The text of a file's bytes by its type: a document's (below), else the bytes
    as text. `probe`: only check that there is text (cheaper for a long PDF)."""
    suffix = PurePath(name.lower()).suffix
    if suffix in DOCUMENTS:
        return extract_document(data, suffix, probe)
    return Extracted(decode_text(data))


def read_input(path: Path, max_size: int = INPUT_MAX_SIZE) -> str:
    """A file named by the user (`embed --file`, pipes): its text (a document's too), or a
    one-line error."""
    path = Path(path).expanduser()
    try:
        return extract_text(read_bytes(path, max_size), path.name).text
    except Unreadable as e:
        raise JinalocError(f"{path}: {e}") from None


# A zip that unpacks to more than this is not a document worth reading (a zip bomb).
MAX_UNPACKED = 256 * 1024 * 1024
_MODULES = {".pdf": "pypdf", ".docx": "docx", ".pptx": "pptx", ".xlsx": "openpyxl"}
_NO_TEXT = "no text layer (a scanned or image-only PDF)"

# pypdf logs a warning for every quirk of a malformed PDF; a run reports one skip instead.
logging.getLogger("pypdf").setLevel(logging.ERROR)


def extract_document(data: bytes, suffix: str, probe: bool = False) -> Extracted:
    """A document's text, or Unreadable with the reason. `probe`: only find out whether
    there is text (a PDF stops at its first page with text)."""
    try:
        __import__(_MODULES[suffix])
    except ImportError:
        raise Unreadable(f"reading {suffix} files needs: pip install 'jinaloc[docs]'") from None
    if suffix != ".pdf":
        _check_zip(data, suffix)
    try:
        pages = {".pdf": _pdf, ".docx": _docx, ".pptx": _pptx, ".xlsx": _xlsx}[suffix](data, probe)
    except Unreadable:
        raise
    except Exception as e:  # each library has its own errors for a damaged file
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise Unreadable(f"unreadable {suffix[1:].upper()} ({reason[:120]})") from None
    if not any(p.strip() for p in pages):
        raise Unreadable(_NO_TEXT if suffix == ".pdf" else "empty")
    return _joined(pages, paged=suffix in (".pdf", ".pptx"))


def _joined(pages: list[str], paged: bool) -> Extracted:
    """One text from pages, a blank line between them (no block spans two pages)."""
    lines: list[str] = []
    starts: list[int] = []
    for page in pages:
        starts.append(len(lines) + 1)
        lines += [line.rstrip() for line in page.splitlines()]
        lines.append("")
    return Extracted("\n".join(lines).rstrip() + "\n", starts if paged else None)


def _check_zip(data: bytes, suffix: str) -> None:
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as z:
            unpacked = sum(info.file_size for info in z.infolist())
    except zipfile.BadZipFile:
        raise Unreadable(f"not a {suffix[1:].upper()} file (not a zip archive)") from None
    if unpacked > MAX_UNPACKED:
        raise Unreadable(f"unpacks to {unpacked} bytes (> {MAX_UNPACKED})")


def _pdf(data: bytes, probe: bool) -> list[str]:
    from pypdf import PdfReader

    reader = PdfReader(io.BytesIO(data))
    if reader.is_encrypted and not reader.decrypt(""):
        raise Unreadable("encrypted PDF")
    pages = []
    for page in reader.pages:
        pages.append(page.extract_text() or "")
        if probe and pages[-1].strip():
            break
    return pages


def _docx(data: bytes, probe: bool) -> list[str]:
    import docx
    from docx.table import Table

    paragraphs = []
    for block in docx.Document(io.BytesIO(data)).iter_inner_content():
        if isinstance(block, Table):
            paragraphs.append("\n".join(_row(c.text for c in row.cells) for row in block.rows))
            continue
        text = block.text.strip()
        style = block.style.name if block.style is not None else ""
        if text and (style == "Title" or style.startswith("Heading ")):
            level = int(style[8:]) if style[8:].isdigit() else 1
            text = "#" * min(level, 6) + " " + text
        paragraphs.append(text)
    return ["\n\n".join(p for p in paragraphs if p)]


def _pptx(data: bytes, probe: bool) -> list[str]:
    from pptx import Presentation

    slides = []
    for n, slide in enumerate(Presentation(io.BytesIO(data)).slides, 1):
        title = slide.shapes.title
        parts = [f"# {title.text_frame.text.strip() if title is not None else ''}".rstrip()]
        if parts[0] == "#":
            parts[0] = f"# Slide {n}"
        for shape in slide.shapes:
            if shape.has_text_frame and shape != title and shape.text_frame.text.strip():
                parts.append(shape.text_frame.text.strip())
            elif getattr(shape, "has_table", False) and shape.has_table:
                parts.append("\n".join(_row(c.text for c in r.cells) for r in shape.table.rows))
        if slide.has_notes_slide:
            notes = slide.notes_slide.notes_text_frame
            if notes is not None and notes.text.strip():
                parts.append(notes.text.strip())
        slides.append("\n\n".join(parts))
    return slides


def _xlsx(data: bytes, probe: bool) -> list[str]:
    from openpyxl import load_workbook

    book = load_workbook(io.BytesIO(data), read_only=True, data_only=True)
    try:
        sheets = []
        for sheet in book.worksheets:
            rows = [_row(v for v in r if v is not None) for r in sheet.iter_rows(values_only=True)]
            if any(rows):
                sheets.append("\n".join([f"# {sheet.title}", "", *(r for r in rows if r)]))
        return ["\n\n".join(sheets)]
    finally:
        book.close()


def _row(cells) -> str:
    return " | ".join(t for t in (str(c).strip() for c in cells) if t)
