"""`jinaloc --help` and each command's help start without the heavy modules: those load in
the command that uses them (docs/benchmarks.md "Cold start" has the times)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# What help must not import: numpy, sqlite and the modules built on them, the model code, the
# walker's gitignore matcher and the hub client.
HEAVY = (
    "numpy",
    "sqlite3",
    "pysqlite3",
    "sqlite_vec",
    "pathspec",
    "huggingface_hub",
    "jinaloc.index.store",
    "jinaloc.index.search",
    "jinaloc.index.session",
    "jinaloc.index.write",
    "jinaloc.embedder",
    "jinaloc.backends",
    "jinaloc.index.eval",
    "jinaloc.walk",
    "jinaloc.reader",
    "jinaloc.hub",
    "jinaloc.reranker",
    "jinaloc.pipelines.items",
    "jinaloc.watch",
)

# Runs the real entry point, then reports which of HEAVY it left in sys.modules.
PROBE = """
import json, sys
heavy = json.loads(sys.argv[1])
sys.argv = ["jinaloc", *sys.argv[2:]]
from jinaloc.entry import main
code = 0
try:
    main()
except SystemExit as e:
    code = e.code
sys.stderr.write("\\nLOADED " + json.dumps([m for m in heavy if m in sys.modules]) + "\\n")
sys.exit(code)
"""


def loaded_by(*args: str, cwd: Path = ROOT) -> tuple[subprocess.CompletedProcess, list[str]]:
    env = dict(os.environ, PYTHONPATH=str(ROOT), COLUMNS="100")
    proc = subprocess.run(
        [sys.executable, "-c", PROBE, json.dumps(HEAVY), *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
    )
    return proc, json.loads(proc.stderr.rsplit("LOADED ", 1)[1])


@pytest.mark.parametrize(
    "args",
    [
        ["--help"],
        ["search", "--help"],
        ["index", "--help"],
        ["embed", "--help"],
        ["eval", "--help"],
        ["check", "--help"],
        ["watch", "--help"],
        ["serve", "--help"],
        ["rerank", "--help"],
        ["cluster", "--help"],
        ["dedup", "--help"],
        ["models", "--help"],
        ["models", "list", "--help"],
    ],
    ids=" ".join,
)
def test_help_imports_nothing_heavy(args):
    proc, loaded = loaded_by(*args)
    assert proc.returncode == 0 and "Usage" in proc.stdout  # the help was really shown
    assert loaded == []


def test_a_command_that_runs_loads_what_it_uses(tmp_path):
    """The probe sees imports: `status` opens the index, so the session and the store load."""
    proc, loaded = loaded_by("status", "--db", str(tmp_path / "none.db"), cwd=tmp_path)
    assert proc.returncode == 2 and "error:" in proc.stderr
    assert {"jinaloc.index.session", "jinaloc.index.store"} <= set(loaded)


def test_a_lexical_search_loads_no_numpy_and_no_model(tmp_path):
    """A lexical search needs SQLite and FTS5 only: numpy, the block scans, the walker's
    matcher, sqlite-vec and the model code stay out (a cold start costs their imports)."""
    from index_helpers import FakeEmbedder, make_notes

    from jinaloc.index import Index

    make_notes(tmp_path / "notes", 10)
    db = tmp_path / "index.db"
    with Index.open(db, create=True, loader=lambda *a, **k: FakeEmbedder()) as idx:
        idx.update([tmp_path / "notes"])
    proc, loaded = loaded_by("search", "tomato", "--db", str(db), "--mode", "lexical", "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)  # it found something
    assert {"sqlite3", "jinaloc.index.search"} <= set(loaded)
    heavy = {"numpy", "sqlite_vec", "pathspec", "jinaloc.embedder", "jinaloc.backends"}
    assert heavy & set(loaded) == set()


@pytest.mark.parametrize("name", ["search", "eval", "models"])
def test_a_run_builds_only_its_command(name):
    """main() hands Typer only the command it runs; that command is the full app's."""
    import typer.main

    from jinaloc.cli import app, only

    full = typer.main.get_command(app).commands[name]
    group = typer.main.get_command(only(name))
    assert list(group.commands) == [name]
    one = group.commands[name]
    assert [p.opts for p in one.params] == [p.opts for p in full.params]
    assert list(getattr(one, "commands", {})) == list(getattr(full, "commands", {}))


def test_an_unknown_command_gets_the_full_app():
    from jinaloc.cli import app, only

    assert only("serach") is app


def test_commands_names_each_commands_module_in_help_order():
    """main() imports a command's module from COMMANDS: it must name them all, rightly."""
    import typer.main

    from jinaloc.cli import COMMANDS, app

    group = typer.main.get_command(app)
    assert list(group.commands) == list(COMMANDS)
    for name, command in group.commands.items():
        callbacks = [c.callback for c in getattr(command, "commands", {}).values()]
        for callback in callbacks or [command.callback]:
            assert callback.__module__ == f"jinaloc.cli.{COMMANDS[name]}", name
