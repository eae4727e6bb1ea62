"""Tiny random-weight Qwen3-Reranker test fixture, golden scores and GGUFs.

Writes tests/fixtures/tiny-qwen3-reranker/ in the layout of Qwen/Qwen3-Reranker-0.6B:
config.json (Qwen3ForCausalLM, tied embeddings), model.safetensors, tokenizer.json and
tokenizer_config.json (a tiny byte-level BPE trained here with the template's special tokens
and single tokens for "yes" and "no"), golden.json (scores by the model card's transformers
recipe) and gguf/ made by llama.cpp's own converter:

- tiny-qwen3-reranker-{F32,Q8_0}.gguf: the converter recognises the reranker and writes pooling
  type RANK with a 2-row `cls.output` head (rows "yes", "no"); llama.cpp applies a softmax, so
  the first output is P(yes) against "no".
- tiny-qwen3-lm-Q8_0.gguf: the same weights converted as a plain Qwen3 LM (no README, no
  reranker name): no cls head, the full lm_head logits, like community GGUFs made before
  llama.cpp's rerank support.

    python scripts/make_tiny_reranker.py [--out DIR] [--llama-cpp-src DIR]

Deterministic (seeded) and offline except for PyPI: needs torch==2.13.0, transformers and
tokenizers, and fetches the llama-cpp-python sdist for its converter when --llama-cpp-src is
not given (scripts/make_bench_models.py). Never needed at jinaloc run time.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import ROOT, log  # noqa: E402
from make_bench_models import CONVERT, converter_dir, linear_shapes  # noqa: E402

OUT = ROOT / "tests" / "fixtures" / "tiny-qwen3-reranker"
SEED = 3003

# The model card's prompt (Qwen/Qwen3-Reranker-0.6B).
PREFIX = (
    "<|im_start|>system\nJudge whether the Document meets the requirements based on the Query"
    ' and the Instruct provided. Note that the answer can only be "yes" or "no".<|im_end|>\n'
    "<|im_start|>user\n"
)
SUFFIX = "<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n"
CARD_INSTRUCTION = "Given a web search query, retrieve relevant passages that answer the query"
NOTES_INSTRUCTION = (
    "Given a search query, retrieve relevant passages from personal notes that answer the query"
)
# Special tokens as in the Qwen3 tokenizer: <think> and </think> are added but not "special".
SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
ADDED = ["<think>", "</think>"]

SHAPE = dict(
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    head_dim=8,
    intermediate_size=64,
    max_position_embeddings=512,
    rope_theta=1000000,
    rms_norm_eps=1e-6,
)
VOCAB_SIZE = 448  # > the tokenizer's size: padded rows, as in Qwen3
# Random weights this large make P(yes) spread over (0, 1) instead of sitting at 0.5.
INIT_STD = 0.25

QUERIES = [
    "how do I reset my router",
    "best pasta recipe with garlic",
    "what is a cross-encoder reranker?",
    "Japan trip in spring",
]
DOCUMENTS = [
    "Unplug the router for thirty seconds, then hold the reset button until the lights blink.",
    "Boil the pasta, fry garlic in olive oil, and toss everything with parmesan and parsley.",
    "A cross-encoder reads the query and the document together and outputs a relevance score.",
    "Cherry blossoms in Kyoto peak in early April; book the ryokan months ahead.",
    "Meeting notes: budget review moved to Thursday, ask Sam about the invoices.",
    "yes or no? The answer can only be one word.",
    "Zürich café: crème brûlée, naïve façade, 東京 and emoji 🎉 in one line.",
    "",
    "A long note. "
    + " ".join(f"Line {i}: the router firmware update fixed the wifi drops." for i in range(12)),
]
# None means the card's default instruction.
INSTRUCTIONS = [None, NOTES_INSTRUCTION, "Find recipes"]

CORPUS = (
    "\n".join(QUERIES + DOCUMENTS)
    + "\n"
    + PREFIX
    + SUFFIX
    + "\n<Instruct>: <Query>: <Document>: "
    + CARD_INSTRUCTION
    + "\n"
    + NOTES_INSTRUCTION
    + "\nyes\nno\nyes no yes no\n"
    + "The quick brown fox jumps over the lazy dog. Notes, lists, links, code and dates.\n"
)


def build_tokenizer(out: Path) -> None:
    from tokenizers import (
        AddedToken,
        Regex,
        Tokenizer,
        decoders,
        models,
        normalizers,
        pre_tokenizers,
        processors,
        trainers,
    )

    # Qwen2/3's pre-tokenizer: its split regex, then byte-level without a prefix space.
    split = (
        r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
        r"|\s*[\r\n]+|\s+(?!\S)|\s+"
    )
    tok = Tokenizer(models.BPE(unk_token=None, byte_fallback=False))
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(split), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=420,
        min_frequency=2,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator([CORPUS] * 4, trainer=trainer)
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in SPECIAL])
    tok.add_tokens([AddedToken(t, special=False, normalized=False) for t in ADDED])
    vocab = tok.get_vocab()
    for word in ("yes", "no"):
        if word not in vocab:
            raise SystemExit(f"the tiny BPE has no single token {word!r}: grow the corpus")
    tok.save(str(out / "tokenizer.json"))
    added = {
        str(tok.token_to_id(t)): {
            "content": t,
            "lstrip": False,
            "normalized": False,
            "rstrip": False,
            "single_word": False,
            "special": t in SPECIAL,
        }
        for t in SPECIAL + ADDED
    }
    config = {
        "add_bos_token": False,
        "add_prefix_space": False,
        "added_tokens_decoder": added,
        "additional_special_tokens": ["<|im_start|>", "<|im_end|>"],
        "bos_token": None,
        "clean_up_tokenization_spaces": False,
        "eos_token": "<|im_end|>",
        "errors": "replace",
        "model_max_length": SHAPE["max_position_embeddings"],
        "pad_token": "<|endoftext|>",
        "split_special_tokens": False,
        "tokenizer_class": "Qwen2Tokenizer",
        "unk_token": None,
    }
    (out / "tokenizer_config.json").write_text(json.dumps(config, indent=2) + "\n")
    log(f"tokenizer: {tok.get_vocab_size()} tokens, yes={vocab['yes']} no={vocab['no']}")


def build_model(out: Path) -> None:
    import torch
    from safetensors.torch import save_file
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(out / "tokenizer.json"))
    config = {
        "architectures": ["Qwen3ForCausalLM"],
        "attention_bias": False,
        "attention_dropout": 0.0,
        "bos_token_id": tok.token_to_id("<|endoftext|>"),
        "eos_token_id": tok.token_to_id("<|im_end|>"),
        "hidden_act": "silu",
        "initializer_range": 0.02,
        "max_window_layers": SHAPE["num_hidden_layers"],
        "model_type": "qwen3",
        "rope_scaling": None,
        "sliding_window": None,
        "tie_word_embeddings": True,
        "torch_dtype": "float32",
        "use_cache": True,
        "use_sliding_window": False,
        "vocab_size": VOCAB_SIZE,
        **SHAPE,
    }
    (out / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    g = torch.Generator().manual_seed(SEED)
    h, hd = SHAPE["hidden_size"], SHAPE["head_dim"]

    def randn(*shape):
        return torch.randn(*shape, generator=g) * INIT_STD

    def norm(n):  # near 1, not exactly: the norms' weights must reach the GGUF
        return 1 + 0.1 * torch.randn(n, generator=g)

    sd = {"model.embed_tokens.weight": randn(VOCAB_SIZE, h)}
    for i in range(SHAPE["num_hidden_layers"]):
        p = f"model.layers.{i}."
        for name, shape in linear_shapes(SHAPE).items():
            sd[p + name + ".weight"] = randn(*shape)
        sd[p + "input_layernorm.weight"] = norm(h)
        sd[p + "post_attention_layernorm.weight"] = norm(h)
        sd[p + "self_attn.q_norm.weight"] = norm(hd)
        sd[p + "self_attn.k_norm.weight"] = norm(hd)
    sd["model.norm.weight"] = norm(h)
    # Tied: lm_head is embed_tokens, so no lm_head.weight key (as in the real repo).
    sd = {k: v.contiguous() for k, v in sd.items()}
    save_file(sd, out / "model.safetensors", {"format": "pt"})
    (out / "README.md").write_text(
        "# Qwen3-Reranker tiny test fixture (random weights)\n\n"
        "Not Qwen's model: seeded random weights and a tiny BPE in the layout of\n"
        "Qwen/Qwen3-Reranker-0.6B. Made by scripts/make_tiny_reranker.py; do not edit.\n"
        "golden.json holds P(yes) by the model card's transformers recipe.\n"
    )
    log(f"model: {sum(v.numel() for v in sd.values())} params")


def golden(out: Path) -> dict:
    """Scores by the model card's recipe: left padding, prefix + content + suffix ids."""
    import tokenizers
    import torch
    import transformers

    tokenizer = transformers.AutoTokenizer.from_pretrained(out, padding_side="left")
    model = transformers.AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
    yes_id = tokenizer.convert_tokens_to_ids("yes")
    no_id = tokenizer.convert_tokens_to_ids("no")
    prefix_ids = tokenizer.encode(PREFIX, add_special_tokens=False)
    suffix_ids = tokenizer.encode(SUFFIX, add_special_tokens=False)
    max_length = SHAPE["max_position_embeddings"]

    def content(instruction, query, doc):
        instruction = instruction if instruction is not None else CARD_INSTRUCTION
        return f"<Instruct>: {instruction}\n<Query>: {query}\n<Document>: {doc}"

    cases = [
        (instruction, query, doc)
        for instruction in INSTRUCTIONS
        for query in QUERIES
        for doc in DOCUMENTS
    ]
    pairs = [content(*c) for c in cases]
    enc = tokenizer(
        pairs,
        padding=False,
        truncation="longest_first",
        return_attention_mask=False,
        max_length=max_length - len(prefix_ids) - len(suffix_ids),
    )
    ids = [prefix_ids + e + suffix_ids for e in enc["input_ids"]]

    @torch.no_grad()
    def scores(batch_ids):
        inputs = tokenizer.pad({"input_ids": batch_ids}, padding=True, return_tensors="pt")
        logits = model(**inputs).logits[:, -1, :]
        pair = torch.stack([logits[:, no_id], logits[:, yes_id]], dim=1)
        return torch.nn.functional.log_softmax(pair, dim=1)[:, 1].exp()

    batched = scores(ids)  # one padded batch, as the card does
    alone = torch.cat([scores([i]) for i in ids])
    diff = float((batched - alone).abs().max())
    log(f"golden: {len(ids)} pairs, batched vs one by one max diff {diff:.2e}")
    rows = [
        {
            "instruction": inst,
            "query": q,
            "document": d,
            "content": p,
            "token_ids": i,
            "n_tokens": len(i),
            "score": float(s),
        }
        for (inst, q, d), p, i, s in zip(cases, pairs, ids, alone.tolist(), strict=True)
    ]
    spread = [r["score"] for r in rows]
    log(f"golden: scores from {min(spread):.4f} to {max(spread):.4f}")
    return {
        "versions": {
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "tokenizers": tokenizers.__version__,
        },
        "recipe": "Qwen/Qwen3-Reranker-0.6B model card: softmax over [no, yes] logits at the"
        " last position, P(yes); prefix + tokenizer(content) + suffix, left padding",
        "prefix": PREFIX,
        "suffix": SUFFIX,
        "default_instruction": CARD_INSTRUCTION,
        "yes_id": yes_id,
        "no_id": no_id,
        "max_length": max_length,
        "batched_vs_alone_max_diff": diff,
        "cases": rows,
    }


def write_golden(path: Path, result: dict) -> None:
    """Indented, one case per line (token ids inline keep it small)."""
    cases = result.pop("cases")
    text = json.dumps(result, indent=1, ensure_ascii=False)[:-2]
    rows = ",\n".join(json.dumps(c, ensure_ascii=False) for c in cases)
    path.write_text(f'{text},\n "cases": [\n{rows}\n ]\n}}\n')


def convert(src: Path, hf_dir: Path, outfile: Path, outtype: str, name: str) -> None:
    log(f"converting to {outfile.name}")
    subprocess.run(
        [sys.executable, "-c", CONVERT, str(src), "qwen2", str(hf_dir)]
        + ["--outtype", outtype, "--outfile", str(outfile), "--model-name", name],
        check=True,
        stdout=subprocess.DEVNULL,
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=OUT)
    p.add_argument("--llama-cpp-src", type=Path, help="llama.cpp tree with convert_hf_to_gguf.py")
    args = p.parse_args()
    out: Path = args.out
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    build_tokenizer(out)
    build_model(out)
    result = golden(out)
    write_golden(out / "golden.json", result)
    src = converter_dir(args.llama_cpp_src)
    gdir = out / "gguf"
    gdir.mkdir()
    # The converter spots a reranker by the folder name or the README's "# Qwen3-Reranker".
    for outtype, quant in (("f32", "F32"), ("q8_0", "Q8_0")):
        name = "tiny-qwen3-reranker"
        convert(src, out, gdir / f"{name}-{quant}.gguf", outtype, name)
    with tempfile.TemporaryDirectory() as tmp:
        plain = Path(tmp) / "plain-lm"
        plain.mkdir()
        for name in ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"):
            shutil.copy(out / name, plain / name)
        convert(src, plain, gdir / "tiny-qwen3-lm-Q8_0.gguf", "q8_0", "tiny-qwen3-lm")
    for f in sorted(out.rglob("*")):
        if f.is_file():
            log(f"{f.stat().st_size / 1e3:8.1f} KB  {f.relative_to(out)}")


if __name__ == "__main__":
    main()
