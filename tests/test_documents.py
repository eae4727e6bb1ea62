"""Documents: PDF text by page, Word/PowerPoint/Excel text, and the reasons they are skipped."""

from __future__ import annotations

import io
import sys
import zipfile

import pytest
from index_helpers import docx_bytes, pdf_bytes

from jinaloc.errors import JinalocError
from jinaloc.reader import Unreadable, extract_text, read_input
from jinaloc.reader import extract_document as extract

pytest.importorskip("pypdf")
pytest.importorskip("fpdf")


def test_pdf_text_by_page():
    data = pdf_bytes(["Sourdough starter feeding schedule.", "Oven at 250 degrees.\nSteam."])
    got = extract(data, ".pdf")
    lines = got.text.splitlines()
    assert "Sourdough starter" in lines[got.pages[0] - 1]
    assert "Oven at 250" in lines[got.pages[1] - 1]
    assert [got.page_of(n) for n in (1, got.pages[1] - 1, got.pages[1], len(lines))] == [1, 1, 2, 2]
    # Probing stops at the first page with text.
    assert "Oven" not in extract(data, ".pdf", probe=True).text


def test_a_pdf_without_text_is_skipped_with_that_reason():
    with pytest.raises(Unreadable, match="no text layer"):
        extract(pdf_bytes(["", ""], image_only=True), ".pdf")


def test_damaged_files_are_one_line_reasons():
    with pytest.raises(Unreadable, match=r"^unreadable PDF \(") as e:
        extract(b"%PDF-1.7\nnot really a pdf", ".pdf")
    assert "\n" not in str(e.value)
    with pytest.raises(Unreadable, match="not a DOCX file"):
        extract(b"PK but not a zip", ".docx")


def test_zip_bombs_are_refused(monkeypatch):
    monkeypatch.setattr("jinaloc.reader.MAX_UNPACKED", 1000)
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("word/document.xml", "x" * 5000)
    with pytest.raises(Unreadable, match="unpacks to 5000 bytes"):
        extract(out.getvalue(), ".docx")


def test_docx_headings_paragraphs_and_tables():
    data = docx_bytes(
        [("Title", "Annual report"), ("Heading 2", "Costs"), ("Normal", "Rent went up.")],
        [["item", "euros"], ["rent", "900"]],
    )
    got = extract(data, ".docx")
    assert got.text == "# Annual report\n\n## Costs\n\nRent went up.\n\nitem | euros\nrent | 900\n"
    assert got.pages is None


def test_pptx_slides_are_pages():
    pptx = pytest.importorskip("pptx")
    deck = pptx.Presentation()
    for title, body in (("Roadmap", "Ship the index"), ("", "Questions?")):
        slide = deck.slides.add_slide(deck.slide_layouts[1])
        if title:
            slide.shapes.title.text = title
        slide.placeholders[1].text = body
    out = io.BytesIO()
    deck.save(out)
    got = extract(out.getvalue(), ".pptx")
    lines = got.text.splitlines()
    assert [lines[p - 1] for p in got.pages] == ["# Roadmap", "# Slide 2"]
    assert "Questions?" in got.text


def test_xlsx_sheets_give_their_cached_values():
    openpyxl = pytest.importorskip("openpyxl")
    book = openpyxl.Workbook()
    book.active.title = "Budget"
    book.active.append(["rent", 900])
    book.active.append(["food", 300])
    book.create_sheet("Empty")
    out = io.BytesIO()
    book.save(out)
    assert extract(out.getvalue(), ".xlsx").text == "# Budget\n\nrent | 900\nfood | 300\n"


def test_a_missing_extra_is_a_skip_reason(monkeypatch):
    monkeypatch.setitem(sys.modules, "pypdf", None)  # import fails as if not installed
    with pytest.raises(Unreadable, match=r"needs: pip install 'jinaloc\[docs\]'"):
        extract_text(b"%PDF-1.7", "a.pdf")


def test_named_documents_are_read_by_the_one_reader(tmp_path):
    (tmp_path / "a.pdf").write_bytes(pdf_bytes(["Notes from the meeting."]))
    assert "meeting" in read_input(tmp_path / "a.pdf")
    (tmp_path / "scan.pdf").write_bytes(pdf_bytes([""], image_only=True))
    with pytest.raises(JinalocError, match="scan.pdf: no text layer"):
        read_input(tmp_path / "scan.pdf")
