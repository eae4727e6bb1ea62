"""Start-up cuts that must not show: option values coerced without pydantic (cli/coerce.py)
come out as Typer's own coercion gives them, every bad value fails with Typer's own
message; the root's help built without the commands' options reads as the full app's."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import typer.core
from test_cold_start import ROOT

from jinaloc.cli import coerce


def parsed(name: str, args: list[str], plain: bool):
    """The values the `jinaloc NAME` command gets for `args`, or the usage error's text."""
    from typer.main import get_command

    from jinaloc.cli import load_all

    original = typer.core.build_runtime_param
    typer.core.build_runtime_param = coerce._build if plain else coerce.typer_build
    try:
        group = get_command(load_all())
        command = group.commands[name]
        try:
            ctx = command.make_context(name, list(args), resilient_parsing=False)
        except Exception as e:  # Typer's usage errors
            return f"{type(e).__name__}: {e}"
        return {key: (type(value), value) for key, value in ctx.params.items()}
    finally:
        typer.core.build_runtime_param = original


CASES = [
    ("search", ["q"]),
    ("search", ["q", "-k", "5", "--min-score", "0.25", "--oversample", "3", "--tag", "a"]),
    ("search", ["q", "--tag", "a", "--tag", "b/c", "--db", "x.db", "--mode", "lexical"]),
    ("search", ["q", "-k", "007", "--min-score", "-1", "--threads", "2"]),
    ("search", ["q", "--min-score", "1e-3", "--since", "7d", "--path", "*.md"]),
    ("search", ["q", "-k", "+5"]),
    ("search", ["q", "-k", " 5"]),
    ("search", ["q", "-k", "1_000"]),
    ("search", ["q", "-k", "0"]),
    ("search", ["q", "-k", "-3"]),
    ("search", ["q", "-k", "x"]),
    ("search", ["q", "-k", "1.5"]),
    ("search", ["q", "--min-score", "abc"]),
    ("search", ["q", "--min-score", "inf"]),
    ("search", ["q", "--oversample", "0"]),
    ("search", ["q", "--db", ""]),
    ("index", ["notes", "other", "--dim", "256", "--chunk-tokens", "4"]),
    ("index", ["notes", "--max-file-size", "2M", "--include", "*.md", "--exclude", "a/"]),
    ("serve", ["--port", "0", "--timeout", "2.5", "--max-body", "100"]),
    ("serve", ["--port", "-1", "--relative-to", str(ROOT / "pyproject.toml")]),
    ("serve", ["--relative-to", str(ROOT)]),
    ("embed", ["a", "b", "--dim", "64", "--batch-size", "8"]),
]


@pytest.mark.parametrize(
    "name,args", CASES, ids=lambda c: " ".join(c) if isinstance(c, list) else c
)
def test_same_values_and_errors_as_typer(name, args):
    assert parsed(name, args, plain=True) == parsed(name, args, plain=False)


def test_a_run_needs_no_pydantic(tmp_path):
    """Parsing every kind of option a search takes imports no pydantic (the search itself
    stops at its missing index)."""
    probe = (
        "import sys; sys.argv = ['jinaloc', *sys.argv[1:]]\n"
        "from jinaloc.entry import main\n"
        "try:\n    main()\nexcept SystemExit:\n    pass\n"
        "print('\\nPYDANTIC', 'pydantic' in sys.modules, file=sys.stderr)"
    )
    args = ["search", "q", "-k", "3", "--min-score", "0.5", "--tag", "a", "--db", "none.db"]
    run = subprocess.run(
        [sys.executable, "-c", probe, *args],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(ROOT), "JINALOC_STATE_DIR": str(tmp_path)},
    )
    assert "no index" in run.stderr or "not found" in run.stderr, run.stderr
    assert "PYDANTIC False" in run.stderr, run.stderr


@pytest.mark.parametrize("args", [["--help"], [], ["--version"], ["--bogus"], ["-h"]])
def test_root_help_without_options_reads_as_the_full_apps(args, monkeypatch):
    from typer.testing import CliRunner

    from jinaloc.cli import listing, load_all

    monkeypatch.setenv("COLUMNS", "100")
    full = CliRunner().invoke(load_all(), args)
    lean = CliRunner().invoke(listing(), args)
    assert (lean.exit_code, lean.stdout, lean.stderr) == (full.exit_code, full.stdout, full.stderr)
    if args == ["--help"]:
        assert all(f" {name} " in lean.stdout for name in ("search", "serve", "models", "dedup"))
