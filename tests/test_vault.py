"""A generated Obsidian-like vault end to end on the tiny nano GGUF fixture: file selection
and its summary, front matter and tags, --tag/--since/--before in every mode and output."""

from __future__ import annotations

import json
import os
import time

import pytest
from conftest import model_dir
from index_helpers import cli, docx_bytes, have_gguf, pdf_bytes
from typer.testing import CliRunner

from jinaloc.cli import app

pytestmark = pytest.mark.skipif(not have_gguf(), reason="needs llama-cpp-python")

MODEL = ["--model", str(model_dir("nano")), "--backend", "gguf", "--quant", "F32"]
OLD = time.mktime((2022, 6, 1, 12, 0, 0, 0, 0, -1))  # the mtime of every file

NOTES = {
    "travel/trip.md": (
        "---\ntitle: Trip plan\naliases: [Japan trip]\ntags: [travel, plans/2024]\n"
        "date: 2024-03-05\n---\n# Kyoto\n\nTrain from [[Tokyo|the capital]] to Kyoto, see"
        " ![[map.png]].\n\n> [!tip] Rail pass\n> Buy the rail pass before the trip.\n"
    ),
    "cooking/pasta.md": (
        '+++\ntitle = "Fresh pasta"\ntags = ["cooking"]\ndate = 2023-01-10\n+++\n'
        "Flour, eggs and salt make the pasta dough. #Italian\n"
    ),
    "cooking/broken.md": (
        "---\ntitle: Sauce: tomato: basil\ntags: [unclosed\n---\n"
        "Tomato sauce with basil and garlic. #cooking/sauces <!-- secret draft note -->\n"
    ),
    "inbox/plain.txt": "Budget and taxes for the year, receipts in a folder.\n",
    "icons/a.svg": '<svg xmlns="http://www.w3.org/2000/svg"><path d="M0 0h24v24H0z"/></svg>\n',
    "icons/b.svg": '<svg xmlns="http://www.w3.org/2000/svg"><circle r="4"/></svg>\n',
    ".obsidian/app.json": '{"theme": "dark"}\n',  # hidden: never walked
    "theme.css": "body { color: red; }\n",
    "plugin/main.js": "console.log('pasta dough');\n",
    "data.json": '{"pasta": "dough"}\n',
}


def documents() -> dict[str, bytes]:
    return {
        "docs/bread.pdf": pdf_bytes(
            ["Sourdough starter: feed it flour and water daily.", "Bake the loaf with steam."]
        ),
        "docs/scan.pdf": pdf_bytes(["", ""], image_only=True),
        "docs/letter.docx": docx_bytes(
            [("Heading 1", "Tenancy"), ("Normal", "The rent rises by five percent in May.")]
        ),
    }


def make_vault(root, docs: bool = True):
    files = {rel: text.encode() for rel, text in NOTES.items()}
    if docs and have_docs():
        files.update(documents())
    for rel, data in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        os.utime(path, (OLD, OLD))


def have_docs() -> bool:
    try:
        import docx  # noqa: F401
        import fpdf  # noqa: F401
        import pypdf  # noqa: F401
    except ImportError:
        return False
    return True


@pytest.fixture(scope="module")
def vault(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("vault")
    root = tmp / "vault"
    make_vault(root, docs=False)
    db = tmp / "index.db"
    result = cli("index", root, "--db", db, *MODEL)
    report = json.loads(cli("index", root, "--db", db, "--json", "-q", *MODEL).stdout)
    return root, db, result.stderr, report


def test_assets_are_left_out_by_type_and_counted(vault):
    root, db, summary, report = vault
    assert "left out by type: 2 .svg, 1 .css, 1 .js, 1 .json" in summary
    assert "indexed: 4 added" in summary
    assert report["left_out_by_type"] == {".svg": 2, ".css": 1, ".js": 1, ".json": 1}
    assert (report["left_out"], report["unchanged"], report["added"]) == (5, 4, 0)
    info = json.loads(cli("status", "--db", db, "--json").stdout)
    assert info["files"] == 4 and sum(info["changed"].values()) == 0
    assert info["roots"][0]["types"] == "notes"
    assert info["left_out_by_type"] == report["left_out_by_type"]


def search(db, query, *args):
    return json.loads(cli("search", query, "--db", db, "--json", *args, *MODEL).stdout)


def names(rows):
    return sorted(os.path.basename(r["path"]) for r in rows)


def test_front_matter_tags_and_dates_in_results(vault):
    _, db, _, _ = vault
    rows = {os.path.basename(r["path"]): r for r in search(db, "pasta", "-k", "10")}
    trip, pasta, broken, plain = (
        rows[n] for n in ("trip.md", "pasta.md", "broken.md", "plain.txt")
    )
    assert (trip["title"], trip["tags"], trip["date"]) == (
        "Trip plan",
        ["travel", "plans/2024"],
        "2024-03-05",
    )
    assert (pasta["title"], pasta["tags"], pasta["date"]) == (
        "Fresh pasta",
        ["cooking", "Italian"],
        "2023-01-10",
    )
    # Broken YAML: no front matter tags or date; the inline tag and the mtime still count.
    assert (broken["title"], broken["tags"], broken["date"]) == (
        "Sauce: tomato: basil",
        ["cooking/sauces"],
        "2022-06-01",
    )
    assert (plain["tags"], plain["date"], plain["page"]) == ([], "2022-06-01", None)
    # The stored chunk is the file as it is (front matter left out, lines as in the file).
    assert trip["start_line"] == 7 and "[[Tokyo|the capital]]" in trip["text"]


@pytest.mark.parametrize("mode", ["hybrid", "semantic", "lexical"])
def test_tag_and_date_filters_in_every_mode(vault, mode):
    _, db, _, _ = vault
    m = ["--mode", mode, "-k", "10"]
    # Lexical mode needs a word of each note to find them all.
    query = "pasta" if mode != "lexical" else "pasta kyoto sauce budget"
    everything = names(search(db, query, *m))
    assert everything == ["broken.md", "pasta.md", "plain.txt", "trip.md"]
    assert names(search(db, query, *m, "--tag", "cooking")) == sorted(
        {"pasta.md", "broken.md"} & set(everything)
    )
    # Nested tags count as their parents; case does not matter; every tag must match.
    assert names(search(db, query, *m, "--tag", "PLANS")) == sorted({"trip.md"} & set(everything))
    both = search(db, query, *m, "--tag", "cooking", "--tag", "italian")
    assert names(both) == sorted({"pasta.md"} & set(everything))
    assert names(search(db, query, *m, "--since", "2024-01-01")) == sorted(
        {"trip.md"} & set(everything)
    )
    assert names(search(db, query, *m, "--since", "2023-01", "--before", "2024-01-01")) == (
        sorted({"pasta.md"} & set(everything))
    )
    assert names(search(db, query, *m, "--before", "2023")) == sorted(
        {"broken.md", "plain.txt"} & set(everything)
    )
    # With --path too, and in the other output formats.
    assert names(search(db, query, *m, "--tag", "cooking", "--path", "cooking/pasta*")) == sorted(
        {"pasta.md"} & set(everything)
    )
    files = cli("search", query, "--db", db, *m, "--tag", "travel", "--files", *MODEL, ok=(0, 1))
    assert [os.path.basename(p) for p in files.stdout.split()] == sorted(
        {"trip.md"} & set(everything)
    )
    jsonl = cli("search", query, "--db", db, *m, "--since", "1d", "--jsonl", *MODEL, ok=(1,))
    assert jsonl.stdout == ""  # nothing is dated in the last day


def test_a_filter_never_starves_the_results(vault):
    # k=1: the one tagged note comes back however many notes outrank it without the filter.
    _, db, _, _ = vault
    for mode in ("hybrid", "semantic"):
        rows = search(db, "flour eggs salt dough", "--mode", mode, "-k", "1", "--tag", "travel")
        assert names(rows) == ["trip.md"]


def test_bad_dates_are_one_line_errors(vault):
    _, db, _, _ = vault
    r = CliRunner().invoke(app, ["search", "x", "--db", str(db), "--since", "last week"])
    assert r.exit_code == 2 and "invalid date 'last week'" in r.stderr
    assert "Traceback" not in r.stderr


def test_code_is_opt_in_and_saved_with_the_root(tmp_path):
    root = tmp_path / "vault"
    make_vault(root, docs=False)
    (root / "tool.py").write_text("def pasta_dough():\n    return 'flour and eggs'\n")
    db = tmp_path / "index.db"
    report = json.loads(cli("index", root, "--db", db, "--json", "-q", "--code", *MODEL).stdout)
    assert report["added"] == 6 and report["left_out_by_type"] == {".svg": 2, ".css": 1, ".json": 1}
    again = json.loads(cli("index", "--db", db, "--json", "-q", *MODEL).stdout)
    assert (again["unchanged"], again["removed"], again["added"]) == (6, 0, 0)
    info = json.loads(cli("status", "--db", db, "--json").stdout)
    assert info["roots"][0]["types"] == "code" and sum(info["changed"].values()) == 0
    # Indexed again without --code: the code leaves the index, and the summary says so.
    notes_only = json.loads(cli("index", root, "--db", db, "--json", "-q", *MODEL).stdout)
    assert notes_only["removed"] == 2 and notes_only["left_out_by_type"][".py"] == 1


@pytest.mark.skipif(not have_docs(), reason="needs the docs extra and fpdf2")
def test_pdf_and_docx_are_searchable_with_page_locations(tmp_path):
    root = tmp_path / "vault"
    make_vault(root)
    db = tmp_path / "index.db"
    result = cli("index", root, "--db", db, *MODEL)
    assert "indexed: 6 added" in result.stderr and "1 skipped" in result.stderr
    assert "scan.pdf: no text layer (a scanned or image-only PDF)" in result.stderr
    rows = search(db, "bake the loaf with steam", "--mode", "lexical")
    assert (os.path.basename(rows[0]["path"]), rows[0]["page"]) == ("bread.pdf", 2)
    assert rows[0]["title"] == "bread.pdf" and rows[0]["date"] == "2022-06-01"
    line = cli("search", "bake the loaf with steam", "--db", db, "--mode", "lexical", *MODEL)
    assert line.stdout.split("\t")[0].endswith("docs/bread.pdf#page=2")
    rows = search(db, "sourdough starter", "--mode", "lexical", "--all-chunks")
    assert [r["page"] for r in rows if r["path"].endswith("bread.pdf")] == [1]
    rows = search(db, "rent rises", "--mode", "lexical")
    assert os.path.basename(rows[0]["path"]) == "letter.docx"
    assert (rows[0]["title"], rows[0]["page"]) == ("Tenancy", None)
    # Unchanged documents are not read again; the image-only PDF stays skipped.
    again = json.loads(cli("index", "--db", db, "--json", "-q", *MODEL).stdout)
    assert (again["unchanged"], again["skipped"], again["chunks_embedded"]) == (6, 1, 0)
