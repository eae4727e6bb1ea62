"""Cold start: running a cached ONNX graph never imports the graph builder (`onnx`, 0.8 s of
a cold search when it was imported eagerly), checked in fresh processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from conftest import model_dir  # noqa: E402

EMBED = """
import json, sys
from pathlib import Path
from jinaloc.backends import open_backend
from jinaloc.embedder import Embedder
from jinaloc.registry import spec_from_folder
folder = Path(sys.argv[1])
spec = spec_from_folder(folder)
embedder = Embedder(spec, open_backend(spec, "onnx", "qint8"))  # as the CLI opens it
vector = embedder.embed(["a cold query"], "retrieval", "query")
print(json.dumps({"onnx": "onnx" in sys.modules, "first": float(vector[0][0])}))
"""


def embed_in_fresh_process(tmp_path) -> dict:
    env = {**os.environ, "JINALOC_CACHE_DIR": str(tmp_path / "cache")}
    proc = subprocess.run(
        [sys.executable, "-c", EMBED, str(model_dir("nano"))],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout.splitlines()[-1])


def test_a_cached_graph_runs_without_importing_onnx(tmp_path):
    built = embed_in_fresh_process(tmp_path)
    assert built["onnx"]  # the first run builds the graph: the builder was needed then
    cached = embed_in_fresh_process(tmp_path)
    assert not cached["onnx"]
    assert cached["first"] == built["first"]
