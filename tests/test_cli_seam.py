"""The CLI on a pure-numpy test embedder (the `Settings.load` seam): whole commands run
end to end without a native runtime, and nothing of the settings leaks between commands."""

import json
import os

from index_helpers import FakeEmbedder, cli, make_notes


def test_index_search_and_status_run_on_the_test_embedder(tmp_path):
    notes, db = tmp_path / "notes", tmp_path / "i.db"
    make_notes(notes, 20)
    fake = FakeEmbedder()
    cli("index", notes, "--db", db, "--json", embedder=fake)
    assert fake.calls and all(task == "retrieval" for task, _, _ in fake.calls)
    before = len(fake.calls)
    hits = json.loads(
        cli("search", "tomato basil oven", "--db", db, "--json", embedder=fake).stdout
    )
    assert fake.calls[before:] == [("retrieval", "query", ["tomato basil oven"])]
    assert hits and "cooking" in hits[0]["path"]
    status = json.loads(cli("status", "--db", db, "--json", embedder=fake).stdout)
    assert status["files"] == 20 and status["backend"] == "fake"


def test_settings_live_on_the_command_not_the_module(tmp_path, monkeypatch):
    """--threads applies while the model loads, then JINALOC_THREADS is as it was; a
    --no-server of one command does not carry over to the next."""
    from jinaloc.cli import common

    monkeypatch.delenv("JINALOC_THREADS", raising=False)
    seen = []

    def load(*args, **kwargs):
        seen.append((os.environ.get("JINALOC_THREADS"), common.settings().use_server))
        return FakeEmbedder()

    from typer.testing import CliRunner

    from jinaloc.cli import app

    args = ["embed", "hello", "--threads", "3", "--no-server"]
    result = CliRunner().invoke(app, args, obj=common.Settings(load=load))
    assert result.exit_code == 0, result.stderr
    result = CliRunner().invoke(app, ["embed", "hello"], obj=common.Settings(load=load))
    assert result.exit_code == 0, result.stderr
    assert seen == [("3", False), (None, True)]
    assert "JINALOC_THREADS" not in os.environ
