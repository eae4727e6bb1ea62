from pathlib import Path

import pytest

from jinaloc.errors import JinalocError
from jinaloc.registry import detect_architecture, load_registry, resolve, spec_from_folder
from tests.conftest import model_dir


def test_packaged_registry_has_both_models():
    reg = load_registry()
    assert reg.default == "v5-nano"
    nano, small = reg.get("v5-nano"), reg.get("v5-small")
    assert (nano.architecture, nano.dims, nano.max_tokens) == ("eurobert", 768, 8192)
    assert (small.architecture, small.dims, small.max_tokens) == ("qwen3", 1024, 32768)
    assert nano.matryoshka_dims == [32, 64, 128, 256, 512, 768]
    assert small.matryoshka_dims[-1] == 1024
    assert nano.prompts == {"query": "Query: ", "document": "Document: "}
    assert nano.license == "CC BY-NC 4.0"
    assert nano.gguf_repo_for("text-matching") == (
        "jinaai/jina-embeddings-v5-text-nano-text-matching-GGUF"
    )
    assert small.gguf_filename("retrieval", "Q4_K_M") == "v5-small-retrieval-Q4_K_M.gguf"
    assert nano.default_quant in nano.gguf_quants


def test_unknown_model_lists_known():
    with pytest.raises(JinalocError, match="known models are v5-nano, v5-small"):
        resolve("v9-huge")


def test_folder_spec_reads_its_own_files():
    spec = spec_from_folder(model_dir("nano"))
    assert spec.architecture == "eurobert"
    assert spec.dims == 64 and spec.max_tokens == 512
    assert spec.prompts["query"] == "Query: "
    assert spec_from_folder(model_dir("small")).architecture == "qwen3"


def test_missing_folder_is_a_clear_error(tmp_path):
    with pytest.raises(JinalocError, match="model folder not found"):
        resolve(str(tmp_path / "nope"))


def test_detect_architecture_refuses_unknown():
    with pytest.raises(JinalocError, match="architecture"):
        detect_architecture({"model_type": "bert"})


def test_user_registry_adds_local_folder_and_overrides(tmp_path):
    user = tmp_path / "models.toml"
    user.write_text(
        f"""
default = "tiny"
[models.tiny]
path = "{model_dir("nano")}"
description = "tiny test model"
license = "test-only"

[models.v5-small]
default_quant = "Q4_K_M"
"""
    )
    reg = load_registry(user)
    assert reg.default == "tiny"
    assert reg.get("v5-small").default_quant == "Q4_K_M"
    assert reg.get("v5-small").hf_repo == "jinaai/jina-embeddings-v5-text-small"
    assert reg.get("v5-small").path is None
    spec = resolve("tiny", reg)
    # Resolved on both sides: $JINALOC_FIXTURES may be a symlink.
    assert spec.path == model_dir("nano").resolve() and spec.architecture == "eurobert"
    assert spec.license == "test-only" and spec.dims == 64


def test_user_registry_rejects_unknown_keys(tmp_path):
    user = tmp_path / "models.toml"
    user.write_text('[models.x]\npath = "."\ncolour = "red"\n')
    with pytest.raises(JinalocError, match="unknown keys"):
        load_registry(user)


def test_user_registry_relative_path(tmp_path):
    user = tmp_path / "models.toml"
    (tmp_path / "m").mkdir()
    user.write_text('[models.x]\npath = "m"\n')
    assert load_registry(user).get("x").path == Path(tmp_path / "m").resolve()
