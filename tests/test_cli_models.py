"""`jinaloc models` and offline loading from a Hugging Face cache laid out by hand.

The cache is built from the fixtures in HF's own layout (blobs + snapshot symlinks), so the
real hub code paths (snapshot_download / hf_hub_download with local_files_only) are used."""

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import golden, model_dir

COMMIT = "0123456789abcdef0123456789abcdef01234567"


def add_repo(cache: Path, repo_id: str, files: dict[str, Path]) -> Path:
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    snapshot = repo / "snapshots" / COMMIT
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "main").write_text(COMMIT)
    for name, src in files.items():
        data = src.read_bytes()
        blob = repo / "blobs" / hashlib.sha256(data).hexdigest()
        blob.parent.mkdir(parents=True, exist_ok=True)
        blob.write_bytes(data)
        link = snapshot / name
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(blob, link.parent))
    return snapshot


@pytest.fixture
def hf_cache(tmp_path):
    """v5-nano's canonical repo and its retrieval GGUF (as F32) from the tiny fixture."""
    cache = tmp_path / "hub"
    src = model_dir("nano")
    files = {
        str(p.relative_to(src)): p
        for p in src.rglob("*")
        if p.is_file() and "gguf" not in p.parts and p.name != "golden.json"
    }
    add_repo(cache, "jinaai/jina-embeddings-v5-text-nano", files)
    add_repo(
        cache,
        "jinaai/jina-embeddings-v5-text-nano-retrieval-GGUF",
        {"v5-nano-retrieval-F32.gguf": src / "gguf" / "v5-nano-retrieval-F32.gguf"},
    )
    return cache


def jinaloc(*args, cache: Path, tmp_path: Path, offline=True, input=None):
    env = {
        **os.environ,
        "HF_HUB_CACHE": str(cache),
        "HF_HOME": str(tmp_path / "hf"),
        "JINALOC_CONFIG_DIR": str(tmp_path / "config"),
        "JINALOC_CACHE_DIR": str(tmp_path / "cache"),
        "HF_HUB_OFFLINE": "1" if offline else "0",
    }
    return subprocess.run(
        [sys.executable, "-m", "jinaloc", *map(str, args)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        input=input,
    )


def golden_hello():
    case = next(
        c
        for c in golden("nano")["cases"]
        if (c["text_id"], c["task"], c["prompt_name"]) == ("single_word", "retrieval", "query")
    )
    return np.array(case["embedding"]["full"])


def test_list_info_path_from_cache(hf_cache, tmp_path):
    r = jinaloc("models", "list", "--json", cache=hf_cache, tmp_path=tmp_path)
    assert r.returncode == 0, r.stderr
    models = {m["name"]: m for m in json.loads(r.stdout)}
    nano = models["v5-nano"]["downloaded"]
    assert nano["safetensors"] is True and nano["gguf"] == {"retrieval": ["F32"]}
    assert nano["mlx"] is True  # the old name, kept for scripts
    assert nano["size"] > 1_000_000
    assert models["v5-small"]["downloaded"]["safetensors"] is False
    assert models["v5-nano"]["license"] == "CC BY-NC 4.0"

    r = jinaloc("models", "list", cache=hf_cache, tmp_path=tmp_path)
    assert "v5-nano (default)" in r.stdout and "safetensors; gguf F32 (1 tasks)" in r.stdout

    r = jinaloc("models", "path", "v5-nano", "--format", "safetensors", cache=hf_cache,
                tmp_path=tmp_path)  # fmt: skip
    assert (Path(r.stdout.strip()) / "adapters" / "retrieval" / "adapter_config.json").is_file()
    # "mlx", the old name of the format, still works.
    old = jinaloc("models", "path", "v5-nano", "--format", "mlx", cache=hf_cache, tmp_path=tmp_path)
    assert old.returncode == 0 and old.stdout == r.stdout
    r = jinaloc(
        "models", "path", "v5-nano", "--format", "gguf", "--quant", "F32",
        cache=hf_cache, tmp_path=tmp_path,
    )  # fmt: skip
    assert r.stdout.strip().endswith("v5-nano-retrieval-F32.gguf")

    r = jinaloc("models", "info", "v5-small", "--json", cache=hf_cache, tmp_path=tmp_path)
    info = json.loads(r.stdout)
    assert info["gguf_repos"]["clustering"] == (
        "jinaai/jina-embeddings-v5-text-small-clustering-GGUF"
    )


@pytest.mark.parametrize("backend", ["mlx", "gguf"])
def test_embed_registry_model_offline_from_cache(hf_cache, tmp_path, backend):
    quant = ["--quant", "F32"] if backend == "gguf" else []
    r = jinaloc(
        "embed", "--model", "v5-nano", "--backend", backend, *quant, "--prompt", "query",
        "Hello", cache=hf_cache, tmp_path=tmp_path,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    vec = np.array(json.loads(r.stdout)["embedding"])
    ref = golden_hello()
    assert vec @ ref / np.linalg.norm(ref) >= 0.9999


def test_offline_errors_say_what_to_run(hf_cache, tmp_path):
    r = jinaloc("embed", "--model", "v5-small", "--backend", "mlx", "hi", cache=hf_cache,
                tmp_path=tmp_path)  # fmt: skip
    assert r.returncode == 2
    assert r.stderr.strip().splitlines() == [
        "error: v5-small (safetensors) is not downloaded and offline mode is on: run "
        "`jinaloc models pull v5-small --format safetensors` while online"
    ]
    r = jinaloc("models", "pull", "v5-nano", "--format", "gguf", cache=hf_cache, tmp_path=tmp_path)
    assert r.returncode == 2 and "offline" in r.stderr and "Traceback" not in r.stderr
    r = jinaloc("models", "path", "v5-nano", "--format", "gguf", "--task", "clustering",
                cache=hf_cache, tmp_path=tmp_path)  # fmt: skip
    assert r.returncode == 2
    assert "--task clustering --quant Q8_0" in r.stderr
    # Online, `models path` (which never downloads) does not claim offline mode.
    r = jinaloc("models", "path", "v5-nano", "--format", "gguf", cache=hf_cache,
                tmp_path=tmp_path, offline=False)  # fmt: skip
    assert r.returncode == 2 and "is not downloaded: run" in r.stderr
    assert "offline" not in r.stderr and "task retrieval, quant Q8_0" in r.stderr


def test_rm_deletes_from_cache(hf_cache, tmp_path):
    r = jinaloc("models", "rm", "v5-nano", cache=hf_cache, tmp_path=tmp_path)
    assert r.returncode == 2 and "--yes" in r.stderr  # no terminal to confirm on
    r = jinaloc("models", "rm", "v5-nano", "--yes", cache=hf_cache, tmp_path=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "removed v5-nano" in r.stderr
    assert not (hf_cache / "models--jinaai--jina-embeddings-v5-text-nano").exists()
    r = jinaloc("models", "rm", "v5-nano", "--yes", cache=hf_cache, tmp_path=tmp_path)
    assert r.returncode == 1


def test_unknown_model_and_bad_format(hf_cache, tmp_path):
    r = jinaloc("models", "info", "v7", cache=hf_cache, tmp_path=tmp_path)
    assert r.returncode == 2 and "known models are v5-nano, v5-small" in r.stderr
    r = jinaloc("models", "pull", "v5-nano", "--format", "onnx", cache=hf_cache, tmp_path=tmp_path)
    assert r.returncode == 2
    assert "unknown --format 'onnx': choose one of safetensors, gguf" in r.stderr


def test_the_onnx_user_is_told_to_pull_safetensors(hf_cache, tmp_path):
    """ONNX reads the canonical safetensors: the offline error names them, by that name."""
    pytest.importorskip("onnxruntime")
    r = jinaloc("embed", "--model", "v5-small", "--backend", "onnx", "hi", cache=hf_cache,
                tmp_path=tmp_path)  # fmt: skip
    assert r.returncode == 2
    assert "`jinaloc models pull v5-small --format safetensors`" in r.stderr
    assert "mlx" not in r.stderr
