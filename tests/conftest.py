"""Shared test fixtures: the tiny random-weight models in tests/fixtures (or $JINALOC_FIXTURES)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
IN_REPO = ROOT / "tests" / "fixtures"


def _fixtures_dir() -> Path:
    """$JINALOC_FIXTURES when set (another copy of the same fixtures), else the repo's own."""
    chosen = Path(os.environ.get("JINALOC_FIXTURES") or IN_REPO)
    if not (chosen / "tiny-v5-nano" / "golden.json").is_file():
        raise RuntimeError(f"test fixtures not found in {chosen} (tests/fixtures/README.md)")
    return chosen


FIXTURES = _fixtures_dir()
FAMILIES = ("nano", "small")


@pytest.fixture(autouse=True)
def _isolated_dirs(tmp_path_factory, monkeypatch):
    """No test reads or writes the user's config, data, cache or the network."""
    base = tmp_path_factory.mktemp("xdg")
    monkeypatch.setenv("JINALOC_CONFIG_DIR", str(base / "config"))
    monkeypatch.setenv("JINALOC_DATA_DIR", str(base / "data"))
    monkeypatch.setenv("JINALOC_CACHE_DIR", str(base / "cache"))
    monkeypatch.setenv("JINALOC_STATE_DIR", str(base / "state"))
    monkeypatch.delenv("JINALOC_NO_SERVER", raising=False)
    monkeypatch.setenv("HF_HOME", str(base / "hf"))
    monkeypatch.setenv("HF_HUB_CACHE", str(base / "hf" / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("JINALOC_DB", raising=False)


def model_dir(family: str) -> Path:
    return FIXTURES / f"tiny-v5-{family}"


def golden(family: str) -> dict:
    return json.loads((model_dir(family) / "golden.json").read_text())


@pytest.fixture(scope="session")
def nano_dir() -> Path:
    return model_dir("nano")


@pytest.fixture(scope="session")
def small_dir() -> Path:
    return model_dir("small")


def golden_agreement(emb, gold: dict, batch_size: int = 32) -> tuple[float, float]:
    """Worst cosine and largest abs difference over every case and dim of golden.json, each
    (task, prompt) group embedded as one call."""
    texts = {t["id"]: t["text"] for t in gold["texts"]}
    worst_cos, worst_diff = 1.0, 0.0
    groups: dict[tuple[str, str], list[dict]] = {}
    for case in gold["cases"]:
        groups.setdefault((case["task"], case["prompt_name"]), []).append(case)
    for (task, prompt), cases in groups.items():
        batch = [texts[c["text_id"]] for c in cases]
        for key, dim in gold["truncate_dims"].items():
            got = emb.embed(batch, task=task, prompt=prompt, dim=dim, batch_size=batch_size)
            want = np.array([c["embedding"][key] for c in cases], np.float32)
            cos = np.sum(got * want, axis=1) / np.linalg.norm(want, axis=1)
            worst_cos = min(worst_cos, float(cos.min()))
            worst_diff = max(worst_diff, float(np.abs(got - want).max()))
    return worst_cos, worst_diff


def short_texts(family: str) -> list[str]:
    """The golden texts minus the long one, for checks where length adds only CPU time."""
    return [t["text"] for t in golden(family)["texts"] if len(t["text"]) < 200]
