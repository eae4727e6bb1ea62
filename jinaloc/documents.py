"""The text of documents: PDF (its text layer, page by page: pypdf) and Word, PowerPoint and
Excel files (python-docx, python-pptx, openpyxl), from the optional `docs` extra.

Only text is read. Nothing a document carries is run or followed (scripts, macros, form
actions, links, embedded files); spreadsheet cells give their cached values, not formulas.
Office files are zip archives: one that would unpack to more than MAX_UNPACKED bytes is
refused. Headings (Word heading styles, slide titles, sheet names) become Markdown `#`
lines, so the chunker cuts along them; PDF pages and slides are pages: each page's first
line is kept, and a chunk is located by the page it starts on."""

from __future__ import annotations

import io
import logging
import zipfile

from .files import Extracted, Unreadable

# A zip that unpacks to more than this is not a document worth reading (a zip bomb).
MAX_UNPACKED = 256 * 1024 * 1024
_MODULES = {".pdf": "pypdf", ".docx": "docx", ".pptx": "pptx", ".xlsx": "openpyxl"}
_NO_TEXT = "no text layer (a scanned or image-only PDF)"

# pypdf logs a warning for every quirk of a malformed PDF; a run reports one skip instead.
logging.getLogger("pypdf").setLevel(logging.ERROR)


def extract(data: bytes, suffix: str, probe: bool = False) -> Extracted:
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
