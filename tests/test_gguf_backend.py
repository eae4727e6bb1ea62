"""GGUF backend (llama.cpp) against golden.json, through the Embedder, F32 and Q8_0."""

from __future__ import annotations

import logging
from collections import defaultdict

import numpy as np
import pytest
from conftest import FAMILIES, golden, model_dir

pytest.importorskip("llama_cpp")

from jinaloc.backends.gguf import GGUFBackend, default_threads  # noqa: E402
from jinaloc.embedder import Embedder  # noqa: E402
from jinaloc.errors import JinalocError  # noqa: E402
from jinaloc.hub import find_local_gguf  # noqa: E402
from jinaloc.registry import spec_from_folder  # noqa: E402

QUANTS = ("F32", "Q8_0")
DIMS = {"full": None, "32": 32, "16": 16}
MIN_COS = {"F32": 0.9999, "Q8_0": 0.999}


def make_embedder(family: str, quant: str = "F32", **kw) -> Embedder:
    folder = model_dir(family)
    spec = spec_from_folder(folder)
    # One thread: the tiny models gain nothing from more, and llama.cpp's spinning thread
    # barriers make them crawl on a busy machine.
    backend = GGUFBackend(lambda task: find_local_gguf(folder, task, quant), spec, threads=1, **kw)
    return Embedder(spec, backend)


@pytest.fixture(
    scope="module", params=[(f, q) for f in FAMILIES for q in QUANTS], ids=lambda p: "-".join(p)
)
def loaded(request):
    emb = make_embedder(*request.param)
    yield request.param, emb
    emb.close()


def raw_texts(family: str) -> dict[str, str]:
    return {t["id"]: t["text"] for t in golden(family)["texts"]}


def test_golden(loaded):
    (family, quant), emb = loaded
    texts = raw_texts(family)
    groups = defaultdict(list)
    for case in golden(family)["cases"]:
        groups[(case["task"], case["prompt_name"] or "document")].append(case)
    worst = 1.0
    for (task, prompt), cases in groups.items():
        raw = [texts[c["text_id"]] for c in cases]
        ids, _ = emb.tokenize(raw, prompt)
        for case, text, got_ids in zip(cases, raw, ids, strict=True):
            assert emb.prefix(prompt) + text == case["input"]
            assert got_ids == case["token_ids"], case["text_id"]
        for key, dim in DIMS.items():
            got = emb.embed(raw, task, prompt, dim)
            want = np.array([c["embedding"][key] for c in cases], np.float32)
            cos = (got * want).sum(1) / np.linalg.norm(got, axis=1) / np.linalg.norm(want, axis=1)
            worst = min(worst, float(cos.min()))
            assert cos.min() >= MIN_COS[quant], (task, prompt, key, cos.min())
            if quant == "F32":
                np.testing.assert_allclose(got, want, atol=1e-3)
    print(f"\n{family} {quant}: worst golden cosine {worst:.7f}")


def test_batched_equals_one_at_a_time(loaded):
    (family, _), emb = loaded
    texts = list(raw_texts(family).values())
    for prompt in ("query", "document"):
        batched = emb.embed(texts, "retrieval", prompt)
        single = np.vstack([emb.embed([t], "retrieval", prompt) for t in texts])
        np.testing.assert_allclose(batched, single, atol=1e-5)
    lengths = [len(x) for x in emb.tokenize(texts)[0]]
    assert len(emb.backend._packs(lengths)) < len(texts)  # several per decode


@pytest.mark.parametrize("family", FAMILIES)
def test_long_inputs_use_flash_attention(family):
    """Inputs over the pack budget run alone with flash attention: F16-rounded K/V, so the
    golden tolerance is looser than the exact path's, but still the F32 one."""
    emb = make_embedder(family, long_tokens=16)
    texts = raw_texts(family)
    cases = [c for c in golden(family)["cases"] if c["task"] == "clustering"]
    got = np.vstack(
        [emb.embed([texts[c["text_id"]]], "clustering", c["prompt_name"]) for c in cases]
    )
    want = np.array([c["embedding"]["full"] for c in cases], np.float32)
    assert emb.backend.context_tokens("clustering")["long"] > 16
    assert (got * want).sum(1).min() >= 0.9999
    np.testing.assert_allclose(got, want, atol=1e-3)
    emb.close()


def _text_of(emb: Embedder, family: str, n_tokens: int) -> str:
    """The golden long text's words, cycled until the input has at least n_tokens tokens."""
    words = raw_texts(family)["long_en"].split()
    text, i = words[0], 1
    while emb.count_tokens([text])[0] < n_tokens:
        text += " " + words[i % len(words)]
        i += 1
    return text


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("kind", ["short", "long"])
def test_context_grows_without_abort(family, kind):
    long_tokens = 512 if kind == "short" else 8
    emb = make_embedder(family, long_tokens=long_tokens)
    backend = emb.backend
    emb.embed([_text_of(emb, family, 9)], "retrieval")
    first = backend.context_tokens("retrieval")[kind]
    text = _text_of(emb, family, first + 1)
    n = emb.count_tokens([text])[0]
    assert 0 < first < n <= backend.max_tokens
    grown = emb.embed([text], "retrieval")
    assert backend.context_tokens("retrieval")[kind] >= n
    fresh = make_embedder(family, long_tokens=long_tokens)  # sized for it from the start
    np.testing.assert_allclose(fresh.embed([text], "retrieval"), grown, atol=1e-5)
    assert np.isfinite(grown).all()
    emb.close()
    fresh.close()


@pytest.mark.parametrize("family", FAMILIES)
def test_truncation_keeps_special_tokens(family, caplog):
    emb = make_embedder(family)
    max_tokens = emb.max_tokens
    cases = [c["token_ids"] for c in golden(family)["cases"]]
    # Specials the tokenizer adds at the end: the suffix every golden case shares (nano: EOS).
    tail = []
    while all(len(c) > len(tail) for c in cases) and len({c[-len(tail) - 1] for c in cases}) == 1:
        tail.insert(0, cases[0][-len(tail) - 1])
    text = _text_of(emb, family, 2 * max_tokens)
    (ids,), (full,) = emb.tokenize([text])
    assert full > max_tokens
    assert len(ids) == max_tokens
    assert ids[len(ids) - len(tail) :] == tail
    head = emb.tokenize([_text_of(emb, family, 200)])[0][0]
    assert ids[:100] == head[:100]
    jlog = logging.getLogger("jinaloc")
    jlog.addHandler(caplog.handler)  # works even if the CLI turned propagation off
    try:
        with caplog.at_level(logging.WARNING, logger="jinaloc"):
            result = emb.embed_with_counts([text], "retrieval")
    finally:
        jlog.removeHandler(caplog.handler)
    assert "truncated" in caplog.text
    assert result.token_counts == [max_tokens]
    assert np.isfinite(result.vectors).all()
    emb.close()


def test_task_switch_keeps_models():
    emb = make_embedder("nano", "Q8_0")
    backend = emb.backend
    first = emb.embed(["hello world"], "retrieval")
    other = emb.embed(["hello world"], "clustering")
    model = backend._models["retrieval"]
    again = emb.embed(["hello world"], "retrieval")
    assert backend.loaded_tasks == ["retrieval", "clustering"]
    assert backend._models["retrieval"] is model
    np.testing.assert_array_equal(first, again)
    assert (first @ other.T).item() < 0.999  # adapters differ
    emb.close()


def test_quiet_stderr(capfd):
    emb = make_embedder("small")
    emb.embed(["hello"], "text-matching")
    emb.close()
    assert capfd.readouterr().err == ""


def test_gguf_without_pooling_type(tmp_path, capfd):
    """Jina's converted GGUFs may lack pooling_type: LAST is passed anyway, quietly."""
    src = model_dir("nano") / "gguf" / "v5-nano-retrieval-F32.gguf"
    data = src.read_bytes()
    assert data.count(b"eurobert.pooling_type") == 1
    path = tmp_path / "v5-nano-retrieval-F32.gguf"
    path.write_bytes(data.replace(b"eurobert.pooling_type", b"eurobert.pooling_xxxx"))
    spec = spec_from_folder(model_dir("nano"))
    emb = Embedder(spec, GGUFBackend(lambda task: path, spec, threads=1))
    case = golden("nano")["cases"][0]
    got = emb.embed([raw_texts("nano")[case["text_id"]]], case["task"], case["prompt_name"])
    np.testing.assert_allclose(got[0], case["embedding"]["full"], atol=1e-5)
    emb.close()
    assert capfd.readouterr().err == ""


def _backend_for(path) -> GGUFBackend:
    spec = spec_from_folder(model_dir("nano"))
    return GGUFBackend(lambda task: path, spec, threads=1)


@pytest.mark.parametrize("ids", [[[]], [[5, 10**6]], [[-1, 5]]])
def test_bad_token_ids(loaded, ids):
    with pytest.raises(JinalocError):
        loaded[1].backend.embed_tokens(ids, "retrieval")


def test_missing_file(tmp_path):
    with pytest.raises(JinalocError, match="not found"):
        _ = _backend_for(tmp_path / "nope.gguf").hidden_size


@pytest.mark.parametrize("kind", ["garbage", "truncated_header", "truncated_data"])
def test_corrupt_file(tmp_path, kind):
    data = (model_dir("nano") / "gguf" / "v5-nano-retrieval-F32.gguf").read_bytes()
    bad = {
        "garbage": b"not a gguf at all" * 10,
        "truncated_header": data[:200],
        "truncated_data": data[: len(data) // 2],
    }[kind]
    path = tmp_path / "bad.gguf"
    path.write_bytes(bad)
    backend = _backend_for(path)
    with pytest.raises(JinalocError, match="corrupt|not a GGUF") as err:
        backend.embed_tokens([[1, 2, 3]], "retrieval")
    assert "\n" not in str(err.value)


@pytest.mark.parametrize(
    "family, arch, other",
    [("small", b"qwen3", b"qwen2"), ("nano", b"eurobert", b"eurobxrt")],  # known, unknown
)
def test_wrong_architecture(tmp_path, family, arch, other):
    data = (model_dir(family) / "gguf" / f"v5-{family}-retrieval-F32.gguf").read_bytes()
    path = tmp_path / "other.gguf"
    path.write_bytes(data.replace(arch, other))
    with pytest.raises(JinalocError, match=f"'{other.decode()}' is not a Jina v5 model"):
        _ = _backend_for(path).hidden_size


def test_threads(monkeypatch):
    monkeypatch.setenv("JINALOC_THREADS", "3")
    assert default_threads() == 3
    monkeypatch.setenv("JINALOC_THREADS", "zero")
    with pytest.raises(JinalocError):
        default_threads()
    monkeypatch.delenv("JINALOC_THREADS")
    assert default_threads() >= 1


def test_first_task_file_gives_the_tokenizer(nano_dir):
    """A caller that names its task never opens another task's file (no extra download)."""
    opened = []

    def path_for(task):
        opened.append(task)
        return find_local_gguf(nano_dir, task, "F32")

    backend = GGUFBackend(path_for, spec_from_folder(nano_dir), threads=1, task="clustering")
    ids, _ = backend.tokenize(["Hello"])
    backend.embed_tokens(ids, "clustering")
    assert backend.hidden_size == 64
    assert set(opened) == {"clustering"}
    backend.close()
