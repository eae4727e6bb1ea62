"""A long-lived `Index` session (serve, mcp, watch) stays right when another process changes
what the vectors mean under it: a re-dim by `jinaloc index --dim N` elsewhere."""

from __future__ import annotations

import pytest
from index_helpers import FakeEmbedder, make_notes

from jinaloc.index import Index


def loader(*args, **kwargs):
    return FakeEmbedder()


@pytest.mark.parametrize("mode", ["hybrid", "semantic", "lexical"])
def test_a_session_searches_right_after_another_session_redims(tmp_path, mode):
    make_notes(tmp_path / "notes", 40)
    db = tmp_path / "index.db"
    with Index.open(db, create=True, loader=loader) as idx:
        idx.update([tmp_path / "notes"])
    with Index.open(db, loader=loader) as live:
        assert live.search("tomato basil", 3, mode=mode)  # the model is loaded, the dim read
        with Index.open(db, loader=loader) as other:
            other.redim(16)
        got = [(h.path, h.start_line) for h in live.search("tomato basil", 3, mode=mode)]
        assert live.meta.dim == 16
    with Index.open(db, loader=loader) as fresh:
        want = [(h.path, h.start_line) for h in fresh.search("tomato basil", 3, mode=mode)]
    assert got == want


def test_a_failed_vector_stage_waits_for_the_lexical_thread(tmp_path, monkeypatch):
    """The hybrid lexical query runs in a thread on the store's second connection; an error
    in the vector stage must not return (and let the caller close the store) under it."""
    import time

    from jinaloc.index import search
    from jinaloc.index.store import Store

    make_notes(tmp_path / "notes", 10)
    db = tmp_path / "index.db"
    with Index.open(db, create=True, loader=loader) as idx:
        idx.update([tmp_path / "notes"])
    finished = []
    real = Store.lexical

    def slow_lexical(self, *args, **kwargs):
        time.sleep(0.3)
        rows = real(self, *args, **kwargs)
        finished.append(True)
        return rows

    def broken(*args, **kwargs):
        raise RuntimeError("vector stage failed")

    monkeypatch.setattr(Store, "lexical", slow_lexical)
    monkeypatch.setattr(search, "_vector_rows", broken)
    with Index.open(db, loader=loader) as idx, pytest.raises(RuntimeError):
        idx.search("tomato basil", 3, mode="hybrid")
    assert finished  # the thread was done before the error reached the caller
