"""`jinaloc embed` end to end on the fixtures, both backends."""

import io
import json

import numpy as np
import pytest
from typer.testing import CliRunner

from jinaloc.cli import app
from jinaloc.vectors import pack_bits
from tests.conftest import golden, model_dir

BACKENDS = {"mlx": [], "gguf": ["--quant", "F32"]}
runner = CliRunner()


def run(*args, input=None):
    return runner.invoke(app, list(map(str, args)), input=input)


def golden_case(family, text_id, task="retrieval", prompt="query"):
    g = golden(family)
    text = next(t["text"] for t in g["texts"] if t["id"] == text_id)
    case = next(
        c
        for c in g["cases"]
        if (c["text_id"], c["task"], c["prompt_name"]) == (text_id, task, prompt)
    )
    return text, case


def cos(a, b):
    a, b = np.asarray(a), np.asarray(b)
    return float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))


@pytest.mark.parametrize("family", ["nano", "small"])
@pytest.mark.parametrize("backend", list(BACKENDS))
def test_contract_jsonl_matches_golden(family, backend):
    text, case = golden_case(family, "single_word")
    r = run(
        "embed", "--model", model_dir(family), "--backend", backend, *BACKENDS[backend],
        "--task", "retrieval", "--prompt", "query", "--format", "jsonl", text,
    )  # fmt: skip
    assert r.exit_code == 0, r.stderr
    lines = r.stdout.splitlines()
    assert len(lines) == 1
    row = json.loads(lines[0])
    assert row["index"] == 0
    assert cos(row["embedding"], case["embedding"]["full"]) >= 0.9999


@pytest.mark.parametrize("backend", list(BACKENDS))
def test_json_is_openai_shaped_with_dim_and_task(backend):
    t1, c1 = golden_case("nano", "short_en", "clustering", "document")
    t2, c2 = golden_case("nano", "german", "clustering", "document")
    r = run(
        "embed", "--model", model_dir("nano"), "--backend", backend, *BACKENDS[backend],
        "--task", "clustering", "--dim", "32", "--format", "json", t1, t2,
    )  # fmt: skip
    assert r.exit_code == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["object"] == "list" and out["model"] == "tiny-v5-nano"
    assert [d["index"] for d in out["data"]] == [0, 1]
    assert out["usage"]["total_tokens"] == c1["n_tokens"] + c2["n_tokens"]
    for d, c in zip(out["data"], (c1, c2), strict=True):
        assert len(d["embedding"]) == 32
        assert cos(d["embedding"], c["embedding"]["32"]) >= 0.9999


def test_stdin_lines_and_jsonl_ids():
    r = run("embed", "--model", model_dir("nano"), "--backend", "mlx", input="alpha\n\nbeta\n")
    assert r.exit_code == 0, r.stderr
    assert [json.loads(x)["index"] for x in r.stdout.splitlines()] == [0, 1]
    r2 = run(
        "embed", "--model", model_dir("nano"), "--backend", "mlx",
        input='{"id": "a", "text": "alpha"}\n{"id": 2, "text": "beta"}\n',
    )  # fmt: skip
    rows = [json.loads(x) for x in r2.stdout.splitlines()]
    assert [row["id"] for row in rows] == ["a", 2]
    plain = [json.loads(x)["embedding"] for x in r.stdout.splitlines()]
    assert np.allclose([row["embedding"] for row in rows], plain, atol=1e-6)


def test_bad_json_line_is_one_clear_error():
    r = run(
        "embed", "--model", model_dir("nano"), "--backend", "mlx",
        input='{"text": "ok"}\n{"text": 3}\n',
    )  # fmt: skip
    assert r.exit_code == 2
    assert r.stderr.strip().splitlines() == [
        'error: stdin line 2: missing or non-string "text" field'
    ]


def test_npy_and_binary_types():
    args = ["embed", "--model", model_dir("nano"), "--backend", "mlx", "a", "b"]
    floats = np.load(
        io.BytesIO(runner.invoke(app, [*map(str, args), "--format", "npy"]).stdout_bytes)
    )
    assert floats.shape == (2, 64) and floats.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(floats, axis=1), 1, rtol=1e-5)
    ub = np.load(io.BytesIO(run(*args, "--format", "npy", "--type", "ubinary").stdout_bytes))
    # Jina's wire order (MSB-first), not the index's.
    np.testing.assert_array_equal(ub, np.packbits(floats > 0, axis=1))
    assert not np.array_equal(ub, pack_bits(floats))
    rows = [json.loads(x)["embedding"] for x in run(*args, "--type", "binary").stdout.splitlines()]
    np.testing.assert_array_equal(np.array(rows) + 128, ub)


def test_file_inputs(tmp_path):
    f = tmp_path / "note.md"
    f.write_text("Hello")
    r = run("embed", "--model", model_dir("nano"), "--backend", "mlx", "--file", f)
    row = json.loads(r.stdout)
    assert row["id"] == str(f)
    direct = json.loads(
        run("embed", "--model", model_dir("nano"), "--backend", "mlx", "Hello").stdout
    )
    assert np.allclose(row["embedding"], direct["embedding"], atol=1e-6)
    bad = tmp_path / "bin.dat"
    bad.write_bytes(b"\x00\x01binary")
    r = run("embed", "--model", model_dir("nano"), "--backend", "mlx", "--file", bad)
    assert r.exit_code == 2 and "binary file" in r.stderr


def test_truncation_warns_on_stderr():
    long_text = "word " * 2000
    r = run("embed", "--model", model_dir("nano"), "--backend", "mlx", long_text)
    assert r.exit_code == 0
    assert "truncated" in r.stderr
    assert len(json.loads(r.stdout)["embedding"]) == 64


@pytest.mark.parametrize(
    "args, message",
    [
        (["--task", "summarize"], "unknown task 'summarize'"),
        (["--prompt", "passage"], "unknown prompt 'passage'"),
        (["--dim", "65"], "dim must be between 1 and 64"),
        (["--type", "int4"], "unknown --type 'int4'"),
        (["--backend", "tflite"], "unknown backend 'tflite'"),
        (["--quant", "q3"], "unknown MLX quant 'q3'"),
    ],
)
def test_bad_arguments_one_line_exit_2(args, message):
    r = run("embed", "--model", model_dir("nano"), "--backend", "mlx", *args, "hi")
    assert r.exit_code == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], r.stderr


def test_registry_dim_not_allowed():
    # v5-nano's trained Matryoshka dims are checked before any download.
    r = run("embed", "--model", "v5-nano", "--dim", "100", "--offline", "hi")
    assert r.exit_code == 2
    assert r.stderr.strip().splitlines() == [
        "error: dim 100 is not one of the model's Matryoshka dims: 32, 64, 128, 256, 512, 768"
    ]


def test_missing_model_folder(tmp_path):
    r = run("embed", "--model", tmp_path / "nowhere", "hi")
    assert r.exit_code == 2
    assert r.stderr.strip().splitlines() == [
        f"error: model folder not found: {tmp_path / 'nowhere'}"
    ]


def test_offline_not_cached_says_what_to_run():
    r = run("embed", "--model", "v5-small", "--backend", "gguf", "--offline", "hi")
    assert r.exit_code == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1
    assert "jinaloc models pull v5-small --format gguf" in lines[0]
