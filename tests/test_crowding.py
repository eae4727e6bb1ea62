"""Files that crowd an index (translation tables, long link lists): the index summary names
them and points at .jinalocignore; notes of ordinary sizes give no such line."""

from __future__ import annotations

from index_helpers import FakeEmbedder, cli, make_notes

from jinaloc.index import Index
from jinaloc.index.write import CROWD_MIN_FILES, Report


def translation_table(path, n=1500):
    """Shaped like the Obsidian help's zh/headings.txt: one heading's translation a block."""
    path.write_text(
        "".join(
            f"[heading.plugins/Topic {i}]\noriginal=Topic {i} settings\n"
            f"translation=主题 {i} 设置\n\n"
            for i in range(n)
        )
    )


def index(notes, db):
    with Index.open(db, create=True, loader=lambda *a, **k: FakeEmbedder()) as idx:
        return idx.update([notes])


def test_a_translation_table_is_named_and_ignoring_it_clears_the_warning(tmp_path):
    notes = tmp_path / "notes"
    make_notes(notes, 80)
    table = notes / "headings.txt"
    translation_table(table)
    report = index(notes, tmp_path / "a.db")
    assert [p for p, _ in report.crowding()] == [str(table)]
    (row,) = report.to_json()["crowding_files"]
    assert row["path"] == str(table) and row["chunks"] * 4 >= sum(report.file_chunks.values())
    # Ignored, it leaves the index on the next run.
    (notes / ".jinalocignore").write_text("headings.txt\n")
    report = index(notes, tmp_path / "a.db")
    assert report.removed == 1 and report.crowding() == []
    report = index(notes, tmp_path / "b.db")
    assert report.added == 80 and report.crowding() == []


def test_ordinary_notes_and_small_runs_are_not_flagged():
    even = Report(file_chunks={f"n{i}.md": 1 + i % 9 for i in range(300)})
    assert even.crowding() == []
    few = Report(file_chunks={f"n{i}.md": 1 for i in range(CROWD_MIN_FILES - 2)})
    few.file_chunks["big.txt"] = 1000
    assert few.crowding() == []  # an edit of one big file among a few is not crowding
    heavy = Report(file_chunks={f"n{i}.md": 2 for i in range(297)})
    heavy.file_chunks.update({"links.md": 150, "table.txt": 120, "n-long.md": 3})
    # The top 1% of 300 files: 3, holding 273 of 867 chunks (31%).
    assert heavy.crowding() == [("links.md", 150), ("table.txt", 120), ("n-long.md", 3)]


def test_the_index_summary_points_at_jinalocignore(tmp_path, monkeypatch):
    notes = tmp_path / "notes"
    make_notes(notes, 60)
    translation_table(notes / "headings.txt")
    result = cli("index", notes, "--db", tmp_path / "i.db", embedder=FakeEmbedder())
    assert "crowding: 1 of 61 files hold" in result.stderr
    assert ".jinalocignore" in result.stderr
    assert f"{notes / 'headings.txt'}: " in result.stderr
