"""The public Python API: what `import jinaloc` offers, and the README example run for real."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest
from conftest import ROOT, model_dir
from index_helpers import have_gguf

import jinaloc


def test_exports_resolve_and_import_is_light():
    for name in jinaloc.__all__:
        assert getattr(jinaloc, name) is not None
    # `import jinaloc` alone pulls in neither numpy nor the store (the CLI's start-up).
    code = (
        "import sys, jinaloc; print('numpy' in sys.modules, 'jinaloc.index.store' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]


def readme_example() -> str:
    text = (ROOT / "README.md").read_text()
    block = re.search(r"<!-- api-example.*?-->\n```python\n(.*?)```", text, re.DOTALL)
    assert block, "the README lost its API example"
    return block.group(1)


@pytest.mark.skipif(not have_gguf(), reason="llama-cpp-python not installed")
def test_readme_example_runs_on_the_fixture(tmp_path):
    code = readme_example()
    setting = 'MODEL, DIM, NOTES = "v5-nano", 256, "~/notes"'
    assert setting in code
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "a.md").write_text("# Keys\n\nRotate the api keys every month.\n")
    (notes / "b.md").write_text("# Bread\n\nFlour, water, salt and time.\n")
    fixture = f"MODEL, DIM, NOTES = {str(model_dir('nano'))!r}, 32, {str(notes)!r}"
    code = code.replace(setting, fixture)
    env = {**os.environ, "JINALOC_CACHE_DIR": str(tmp_path / "cache"), "HF_HUB_OFFLINE": "1"}
    run = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=tmp_path
    )
    assert run.returncode == 0, run.stderr
    lines = run.stdout.splitlines()
    assert lines[0] == "2 added, 0 unchanged"
    assert len(lines) == 3 and all(str(notes) in line for line in lines[1:])
    assert (tmp_path / "notes.db").is_file()
