"""Walking roots: ignore files, hidden paths, globs, size limit, symlinks; reading text."""

from __future__ import annotations

import os

import pytest

from jinaloc.errors import JinalocError
from jinaloc.reader import Unreadable, decode_text, read_bytes
from jinaloc.walk import Candidate, LeftOut, Skipped, Walker, outside_reason, parse_size


def walk(root, **kw):
    items = list(Walker(**kw).walk(root))
    found = sorted(i.rel for i in items if isinstance(i, Candidate))
    skipped = {
        str(i.path.relative_to(root.resolve())): i.reason for i in items if isinstance(i, Skipped)
    }
    return found, skipped


def write(root, rel, text="text\n"):
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_gitignore_jinalocignore_nested_and_negation(tmp_path):
    write(tmp_path, ".gitignore", "*.txt\nbuild/\n!keep.txt\n")
    write(tmp_path, ".jinalocignore", "private/\n")
    for rel in (
        "a.md",
        "x.txt",
        "keep.txt",
        "build/b.md",
        "private/p.md",
        "sub/c.md",
        "sub/d.tmp",
        "sub/deep/e.md",
        "sub/build/f.md",
    ):
        write(tmp_path, rel)
    write(tmp_path, "sub/.gitignore", "*.tmp\n/deep/\n")
    found, skipped = walk(tmp_path)
    assert found == ["a.md", "keep.txt", "sub/c.md"]
    assert skipped == {}


def test_hidden_files_and_folders_are_left_out(tmp_path):
    write(tmp_path, ".hidden/a.md")
    write(tmp_path, ".b.md")
    write(tmp_path, "ok/.git/config")
    write(tmp_path, "ok/c.md")
    assert walk(tmp_path)[0] == ["ok/c.md"]


def test_editor_swap_backup_and_temporary_files_are_left_out(tmp_path):
    for rel in ("a.md~", "a.swp", "a.swo", "b.tmp", "4913", "#a.md#", "x.tmp/c.md", "4913.md"):
        write(tmp_path, rel)
    assert walk(tmp_path)[0] == ["4913.md", "x.tmp/c.md"]


def test_a_hidden_root_itself_is_walked(tmp_path):
    root = tmp_path / ".notes"
    write(root, "a.md")
    assert walk(root)[0] == ["a.md"]


def test_include_and_exclude_globs(tmp_path):
    for rel in ("a.md", "b.txt", "drafts/c.md", "work/d.md", "work/e.py"):
        write(tmp_path, rel)
    assert walk(tmp_path, include=["*.md"])[0] == ["a.md", "drafts/c.md", "work/d.md"]
    assert walk(tmp_path, exclude=["drafts/", "*.py"])[0] == ["a.md", "b.txt", "work/d.md"]
    assert walk(tmp_path, include=["work/*"], exclude=["*.py"])[0] == ["work/d.md"]


VAULT = [
    "a.md", "b.markdown", "c.txt", "d.org", "e.rst", "f.adoc", "g.tex", "h.html", "README",
    "i.pdf", "j.docx", "k.pptx", "l.xlsx", "icons/x.svg", "icons/y.svg", "theme.css",
    "plugin/main.js", "plugin/main.js.map", "app.min.js", "data.json", "conf.yaml", "yarn.lock",
    "dump.csv", "t.tsv", "tool.py", "Makefile", "CMakeLists.txt", "img.png",
]  # fmt: skip


def test_notes_and_documents_by_default_the_rest_left_out_by_type(tmp_path):
    for rel in VAULT:
        write(tmp_path, rel)
    items = list(Walker().walk(tmp_path))
    found = sorted(i.rel for i in items if isinstance(i, Candidate))
    assert found == sorted(VAULT[:13])
    left = sorted((i.path.name, i.kind) for i in items if isinstance(i, LeftOut))
    assert left == sorted(
        [
            ("x.svg", ".svg"), ("y.svg", ".svg"), ("theme.css", ".css"), ("main.js", ".js"),
            ("main.js.map", ".map"), ("app.min.js", ".min.js"), ("data.json", ".json"),
            ("conf.yaml", ".yaml"), ("yarn.lock", ".lock"), ("dump.csv", ".csv"),
            ("t.tsv", ".tsv"), ("tool.py", ".py"), ("Makefile", "Makefile"),
            ("CMakeLists.txt", ".txt"), ("img.png", ".png"),
        ]
    )  # fmt: skip


def test_code_adds_source_but_never_assets_or_generated_files(tmp_path):
    for rel in VAULT:
        write(tmp_path, rel)
    found, _ = walk(tmp_path, types="code")
    extra = set(found) - set(VAULT[:13])
    assert extra == {"plugin/main.js", "tool.py", "Makefile", "CMakeLists.txt"}


def test_include_globs_choose_files_whatever_their_type(tmp_path):
    for rel in VAULT:
        write(tmp_path, rel)
    assert walk(tmp_path, include=["*.py", "*.css"])[0] == ["theme.css", "tool.py"]
    items = list(Walker(include=["*.py"]).walk(tmp_path))
    assert not [i for i in items if isinstance(i, LeftOut)]  # not chosen: not counted


def test_unknown_types_are_refused():
    with pytest.raises(JinalocError, match="unknown file types"):
        Walker(types="everything")


def test_documents_have_their_own_size_limit(tmp_path):
    write(tmp_path, "big.md", "x" * 2000)
    write(tmp_path, "big.pdf", "x" * 2000)
    found, skipped = walk(tmp_path, max_size=1000)
    assert found == ["big.pdf"] and list(skipped) == ["big.md"]


def test_size_limit_is_a_skip_reason(tmp_path):
    write(tmp_path, "small.md", "x" * 10)
    write(tmp_path, "big.md", "x" * 2000)
    found, skipped = walk(tmp_path, max_size=1000)
    assert found == ["small.md"]
    assert skipped["big.md"].startswith("too large (2000 bytes")


def test_symlink_loops_and_broken_links(tmp_path):
    write(tmp_path, "notes/a.md")
    os.symlink(tmp_path / "notes", tmp_path / "notes" / "again")  # folder loop
    os.symlink("self", tmp_path / "notes" / "self")  # a link to itself
    os.symlink(tmp_path / "missing", tmp_path / "notes" / "dangling")
    write(tmp_path, "other/b.md")
    os.symlink(tmp_path / "other", tmp_path / "notes" / "linked")  # outside: not followed
    found, skipped = walk(tmp_path / "notes")
    assert found == ["a.md"]
    assert skipped == {
        "again": "symlink loop",
        "self": "symlink loop",
        "dangling": "broken symlink",
        "linked": outside_reason(str((tmp_path / "other").resolve())),
    }
    found, skipped = walk(tmp_path / "notes", follow_outside=True)  # followed, not a loop
    assert found == ["a.md", "linked/b.md"] and "linked" not in skipped


def test_a_file_root_is_indexed_even_if_ignored(tmp_path):
    write(tmp_path, ".gitignore", "*.md\n")
    path = write(tmp_path, "a.md")
    items = list(Walker().walk(path))
    assert [(i.rel, i.root) for i in items] == [("a.md", tmp_path.resolve())]


def test_missing_root_is_an_error(tmp_path):
    with pytest.raises(JinalocError, match="no such file or folder"):
        list(Walker().walk(tmp_path / "nope"))


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any folder")
def test_unreadable_folder_is_skipped(tmp_path):
    write(tmp_path, "locked/a.md")
    write(tmp_path, "b.md")
    (tmp_path / "locked").chmod(0)
    try:
        found, skipped = walk(tmp_path)
    finally:
        (tmp_path / "locked").chmod(0o755)
    assert found == ["b.md"]
    assert skipped == {"locked": "permission denied"}


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR", "binary"),
        (bytes(range(1, 32)) * 20, "binary"),
        (b"caf\xe9 au lait", "not valid UTF-8 (byte 3)"),
        (b"", "empty"),
        (b"  \n\t\n", "empty"),
    ],
)
def test_decode_text_reasons(data, reason):
    with pytest.raises(Unreadable, match=reason.replace("(", r"\(").replace(")", r"\)")):
        decode_text(data)


def test_decode_text_accepts_utf8_with_bom_and_escapes():
    assert decode_text("\ufeffh\u00e9llo \x1b[1m".encode()) == "h\u00e9llo \x1b[1m"


def test_read_bytes_reasons(tmp_path):
    with pytest.raises(Unreadable, match="no such file"):
        read_bytes(tmp_path / "missing")
    path = write(tmp_path, "grew.md", "x" * 100)
    with pytest.raises(Unreadable, match="too large"):
        read_bytes(path, max_size=10)


def test_read_bytes_permission_denied(tmp_path, monkeypatch):
    # chmod 000 does not stop root, so the reason path is tested through the open itself.
    def deny(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    write(tmp_path, "x")
    monkeypatch.setattr(os, "open", deny)
    with pytest.raises(Unreadable, match="permission denied"):
        read_bytes(tmp_path / "x")


@pytest.mark.parametrize(
    ("text", "size"),
    [("100", 100), ("2K", 2048), ("1M", 1 << 20), ("1.5MB", 1572864), ("1GiB", 1 << 30)],
)
def test_parse_size(text, size):
    assert parse_size(text) == size


def test_parse_size_rejects_junk():
    with pytest.raises(JinalocError, match="invalid size"):
        parse_size("lots")
