"""Shared test fixtures: the tiny random-weight models in tests/fixtures (or $JINALOC_FIXTURES)."""

from __future__ import annotations

import importlib.util
import json
import os
import re
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

# The one line jinaloc gives when a backend's extra is missing (backends.open_backend,
# reranker.load_reranker), and the import error behind it; by the module of each extra.
EXTRA_MODULES = {"gguf": "llama_cpp", "mlx": "mlx", "onnx": "onnxruntime"}
MISSING_EXTRA = re.compile(
    r"pip install 'jinaloc\[(gguf|mlx|onnx)\]'|No module named '(llama_cpp|mlx|onnxruntime)"
)


MISSING_SEEN = pytest.StashKey[list]()


@pytest.fixture(autouse=True)
def _note_missing_extras(request, monkeypatch):
    """Records the missing-extra errors a test's code raised (a CLI test may only see exit
    code 2), for pytest_runtest_makereport."""
    from jinaloc.errors import JinalocError

    seen: list[str] = []
    request.node.stash[MISSING_SEEN] = seen
    real = JinalocError.__init__

    def init(self, message, hint=None):
        if MISSING_EXTRA.search(message):
            seen.append(message)
        real(self, message, hint)

    monkeypatch.setattr(JinalocError, "__init__", init)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """A test that runs a backend whose extra is not installed (e.g. the gguf extra, which
    compiles llama.cpp, left out of `pip install -e '.[dev]'`) is skipped, not failed: only
    when that extra's module really cannot be imported, so a wrong error still fails."""
    outcome = yield
    report = outcome.get_result()
    if not report.failed or call.excinfo is None:
        return
    seen = item.stash.get(MISSING_SEEN, [])
    found = MISSING_EXTRA.search("\n".join([str(report.longrepr), *seen]))
    if found is None:
        return
    extra = found.group(1) or {v: k for k, v in EXTRA_MODULES.items()}[found.group(2)]
    if importlib.util.find_spec(EXTRA_MODULES[extra]) is None:
        report.outcome = "skipped"
        report.longrepr = (str(item.path), item.location[1] or 0, f"needs the {extra} extra")


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
