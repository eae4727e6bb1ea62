"""Full-size nano and small shapes with random weights, for the speed benchmarks.

Writes, per family, a folder in the canonical layout (config.json, model.safetensors without a
"model." prefix, tokenizer files, four r=32 LoRA adapters) and merged-adapter GGUFs in F16,
Q8_0 and Q4_K_M made by llama.cpp's own converter (from the llama-cpp-python sdist, fetched
with `pip download` into a cache folder when missing). The cost per token is the real model's;
the tokenizer is the tiny fixture's (it only changes token ids), the vocab is padded.

    python scripts/make_bench_models.py [--out DIR] [--families nano small] [--tasks retrieval]

Needs the `bench` extra (torch, transformers) and llama-cpp-python for the K-quants; without
torch, `--skip-gguf` still writes the canonical folders (float32 numpy weights, other random
values), which the ONNX and MLX backends run. Never commit the output: it defaults to
$JINALOC_BENCH_MODELS or /work/bench-models.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import bench_models_dir, fixtures_dir, log  # noqa: E402

TASKS = ("retrieval", "text-matching", "clustering", "classification")
LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
LLAMA_CPP_VERSION = "0.3.36"

# The real models' shapes (REFERENCE.md); everything else comes from the fixture's config.
SHAPES = {
    "nano": dict(
        hidden_size=768,
        num_hidden_layers=12,
        num_attention_heads=12,
        num_key_value_heads=12,
        intermediate_size=3072,
        vocab_size=128256,
        max_position_embeddings=8192,
        rope_theta=1000000,
        rms_norm_eps=1e-5,
    ),
    "small": dict(
        hidden_size=1024,
        num_hidden_layers=28,
        num_attention_heads=16,
        num_key_value_heads=8,
        head_dim=128,
        intermediate_size=3072,
        vocab_size=151936,
        max_position_embeddings=32768,
        rope_theta=3500000,
        rms_norm_eps=1e-6,
    ),
}
MERGED_ARCH = {"nano": ("EuroBertModel", "eurobert"), "small": ("Qwen3Model", "qwen3")}
# The tiny fixture tokenizers cannot match the real tokenizers' pre-tokenizer hashes.
VOCAB_PRE = {"nano": "jina-v5-nano", "small": "qwen2"}
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.json",
    "merges.txt",
    "config_sentence_transformers.json",
    "modules.json",
)
QUANT_FTYPES = {"Q8_0": 7, "Q4_K_M": 15}  # llama_ftype values


def bench_config(family: str, template: Path, **overrides) -> dict:
    config = json.loads((template / "config.json").read_text())
    config.update(SHAPES[family], **overrides)
    if "layer_types" in config:
        config["layer_types"] = ["full_attention"] * config["num_hidden_layers"]
        config["max_window_layers"] = config["num_hidden_layers"]
    config["torch_dtype"] = "bfloat16"
    return config


def linear_shapes(config: dict) -> dict[str, tuple[int, int]]:
    """(out, in) of each projection of one layer."""
    h, f = config["hidden_size"], config["intermediate_size"]
    heads, kv = config["num_attention_heads"], config["num_key_value_heads"]
    hd = config.get("head_dim") or h // heads
    return {
        "self_attn.q_proj": (heads * hd, h),
        "self_attn.k_proj": (kv * hd, h),
        "self_attn.v_proj": (kv * hd, h),
        "self_attn.o_proj": (h, heads * hd),
        "mlp.gate_proj": (f, h),
        "mlp.up_proj": (f, h),
        "mlp.down_proj": (h, f),
    }


def _tensors(seed: int, dtype):
    """(randn(*shape, std), ones(n)) in torch, or in numpy (float32) when dtype is None: the
    canonical folders need no torch (the ONNX and MLX backends read them as they are)."""
    if dtype is None:
        rng = np.random.default_rng(seed)
        return (
            lambda *shape, std=0.02: rng.standard_normal(shape, np.float32) * std,
            lambda n: np.ones(n, np.float32),
        )
    import torch

    g = torch.Generator().manual_seed(seed)
    return (
        lambda *shape, std=0.02: (torch.randn(*shape, generator=g) * std).to(dtype),
        lambda n: torch.ones(n, dtype=dtype),
    )


def random_weights(config: dict, seed: int, dtype) -> dict:
    randn, ones = _tensors(seed, dtype)
    h = config["hidden_size"]
    sd = {"embed_tokens.weight": randn(config["vocab_size"], h)}
    qk_norm = "head_dim" in config  # Qwen3 has per-head q/k RMSNorm
    for i in range(config["num_hidden_layers"]):
        p = f"layers.{i}."
        for name, shape in linear_shapes(config).items():
            sd[p + name + ".weight"] = randn(*shape)
        sd[p + "input_layernorm.weight"] = ones(h)
        sd[p + "post_attention_layernorm.weight"] = ones(h)
        if qk_norm:
            sd[p + "self_attn.q_norm.weight"] = ones(config["head_dim"])
            sd[p + "self_attn.k_norm.weight"] = ones(config["head_dim"])
    sd["norm.weight"] = ones(h)
    return sd


def random_adapter(config: dict, seed: int, r: int, numpy_only: bool = False) -> dict:
    if numpy_only:
        randn, _ = _tensors(seed, None)
    else:
        import torch

        randn, _ = _tensors(seed, torch.float32)
    sd = {}
    for i in range(config["num_hidden_layers"]):
        for name, (out, inp) in linear_shapes(config).items():
            key = f"base_model.model.layers.{i}.{name}"
            sd[key + ".lora_A.weight"] = randn(r, inp)
            sd[key + ".lora_B.weight"] = randn(out, r)
    return sd


def adapter_config(template: Path, r: int, alpha: int, base: str) -> dict:
    cfg = json.loads((template / "adapters" / "retrieval" / "adapter_config.json").read_text())
    cfg.update(r=r, lora_alpha=alpha, base_model_name_or_path=base)
    return cfg


def merged_state_dict(folder: Path, task: str) -> dict:
    """Base weights with the task's LoRA merged in (W + alpha/r * B @ A), float32 torch tensors."""
    from safetensors.torch import load_file

    sd = {k: v.float() for k, v in load_file(folder / "model.safetensors").items()}
    adapter = folder / "adapters" / task
    cfg = json.loads((adapter / "adapter_config.json").read_text())
    scale = cfg["lora_alpha"] / cfg["r"]
    lora = load_file(adapter / "adapter_model.safetensors")
    for key, a in lora.items():
        if ".lora_A." not in key:
            continue
        b = lora[key.replace(".lora_A.", ".lora_B.")]
        name = key.removeprefix("base_model.model.").replace(".lora_A.weight", ".weight")
        sd[name] += scale * (b.float() @ a.float())
    return sd


def torch_model(folder: Path, task: str = "retrieval"):
    """The merged model as plain transformers EuroBertModel / Qwen3Model (fp32, eval mode)."""
    import transformers

    config = json.loads((folder / "config.json").read_text())
    family = "small" if "head_dim" in config else "nano"
    arch, model_type = MERGED_ARCH[family]
    fields = {k: v for k, v in config.items() if k not in ("architectures", "auto_map")}
    fields["rope_parameters"] = {"rope_type": "default", "rope_theta": float(config["rope_theta"])}
    cfg_cls = transformers.AutoConfig.for_model(model_type).__class__
    hf_config = cfg_cls(**{k: v for k, v in fields.items() if k != "model_type"})
    hf_config._attn_implementation = "sdpa"
    model = getattr(transformers, arch)(hf_config)
    missing, unexpected = model.load_state_dict(merged_state_dict(folder, task), strict=False)
    if unexpected or [k for k in missing if "rotary" not in k]:
        raise RuntimeError(f"weights do not fit {arch}: {missing=} {unexpected=}")
    return model.float().eval()


def write_canonical(family: str, out: Path, template: Path, seed: int, dtype_name: str) -> Path:
    try:
        import torch
        from safetensors.torch import save_file

        dtype = {"bf16": torch.bfloat16, "f32": torch.float32}[dtype_name]
    except ImportError:  # numpy float32 weights: enough for the ONNX and MLX backends
        if dtype_name != "f32":
            raise SystemExit("--dtype bf16 needs torch (the bench extra)") from None
        from safetensors.numpy import save_file

        dtype = None
    folder = out / f"bench-v5-{family}"
    folder.mkdir(parents=True, exist_ok=True)
    config = bench_config(family, template)
    config["torch_dtype"] = {"bf16": "bfloat16", "f32": "float32"}[dtype_name]
    (folder / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    for name in TOKENIZER_FILES:
        if (template / name).is_file():
            shutil.copy(template / name, folder / name)
    log(f"{family}: random weights")
    sd = random_weights(config, seed, dtype)
    save_file(sd, folder / "model.safetensors", metadata={"format": "pt"})
    n_params = sum(int(np.prod(v.shape)) for v in sd.values())
    del sd
    for i, task in enumerate(TASKS):
        adir = folder / "adapters" / task
        adir.mkdir(parents=True, exist_ok=True)
        cfg = adapter_config(template, r=32, alpha=32, base=f"bench-v5-{family}")
        (adir / "adapter_config.json").write_text(json.dumps(cfg, indent=2) + "\n")
        adapter = random_adapter(config, seed + 1 + i, r=32, numpy_only=dtype is None)
        save_file(adapter, adir / "adapter_model.safetensors")
    log(f"{family}: {n_params / 1e6:.0f}M base params in {folder}")
    return folder


def converter_dir(explicit: Path | None) -> Path:
    """llama.cpp's source tree from the llama-cpp-python sdist (downloaded with pip if missing)."""
    if explicit:
        return explicit
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "jinaloc-bench"
    src = cache / f"llama_cpp_python-{LLAMA_CPP_VERSION}" / "vendor" / "llama.cpp"
    if (src / "convert_hf_to_gguf.py").is_file():
        return src
    cache.mkdir(parents=True, exist_ok=True)
    log(f"downloading the llama-cpp-python {LLAMA_CPP_VERSION} sdist for its converter")
    subprocess.run(
        [sys.executable, "-m", "pip", "download", f"llama-cpp-python=={LLAMA_CPP_VERSION}"]
        + ["--no-deps", "--no-binary", ":all:", "-d", str(cache)],
        check=True,
    )
    shutil.unpack_archive(cache / f"llama_cpp_python-{LLAMA_CPP_VERSION}.tar.gz", cache)
    return src


# Runs the converter with the fixtures' one tweak: a fixed pre-tokenizer name.
CONVERT = """
import sys
src, pre = sys.argv[1], sys.argv[2]
sys.path[:0] = [src, src + "/gguf-py"]
from conversion import base
base.TextModel.get_vocab_base_pre = lambda self, tokenizer: pre
import convert_hf_to_gguf
sys.argv = ["convert_hf_to_gguf.py"] + sys.argv[3:]
convert_hf_to_gguf.main()
"""


def write_ggufs(family, folder: Path, task: str, src: Path, quants: list[str]) -> None:
    from safetensors.torch import save_file

    gdir = folder / "gguf"
    gdir.mkdir(exist_ok=True)
    f16 = gdir / f"v5-{family}-{task}-F16.gguf"
    with tempfile.TemporaryDirectory(dir=folder) as tmp:
        merged = Path(tmp)
        config = json.loads((folder / "config.json").read_text())
        # model_type stays jina_embeddings_v5: AutoConfig then fails and the converter reads
        # config.json as is (transformers 5's EuroBertConfig adds classifier_pooling="late").
        config.update(architectures=[MERGED_ARCH[family][0]], torch_dtype="float32")
        config.pop("auto_map", None)
        (merged / "config.json").write_text(json.dumps(config, indent=2))
        for name in TOKENIZER_FILES:
            if (folder / name).is_file():
                shutil.copy(folder / name, merged / name)
        modules = [{"idx": 1, "name": "1", "path": "1_Pooling", "type": "Pooling"}]
        (merged / "modules.json").write_text(json.dumps(modules))
        (merged / "1_Pooling").mkdir()
        (merged / "1_Pooling" / "config.json").write_text('{"pooling_mode_lasttoken": true}')
        log(f"{family}/{task}: merging the adapter")
        save_file(merged_state_dict(folder, task), merged / "model.safetensors")
        log(f"{family}/{task}: converting to {f16.name}")
        subprocess.run(
            [sys.executable, "-c", CONVERT, str(src), VOCAB_PRE[family], str(merged)]
            + ["--outtype", "f16", "--outfile", str(f16), "--model-name", f"bench-v5-{family}"],
            check=True,
        )
    for quant in quants:
        quantize(f16, gdir / f"v5-{family}-{task}-{quant}.gguf", QUANT_FTYPES[quant])


def quantize(src: Path, dst: Path, ftype: int) -> None:
    import llama_cpp

    log(f"quantizing {dst.name}")
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = ftype
    params.nthread = os.cpu_count() or 1
    rc = llama_cpp.llama_model_quantize(str(src).encode(), str(dst).encode(), params)
    if rc != 0:
        raise SystemExit(f"llama_model_quantize failed for {dst} ({rc})")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=bench_models_dir())
    p.add_argument("--families", nargs="+", default=["nano", "small"], choices=list(SHAPES))
    p.add_argument("--tasks", nargs="+", default=["retrieval"], choices=TASKS)
    p.add_argument("--quants", nargs="*", default=list(QUANT_FTYPES), choices=list(QUANT_FTYPES))
    p.add_argument("--dtype", default="f32", choices=["bf16", "f32"], help="base weights dtype")
    p.add_argument("--llama-cpp-src", type=Path, help="llama.cpp tree with convert_hf_to_gguf.py")
    p.add_argument("--fixtures", type=Path, default=fixtures_dir(), help="tokenizer templates")
    p.add_argument("--skip-gguf", action="store_true")
    args = p.parse_args()
    if args.fixtures is None:
        raise SystemExit("tiny fixtures not found: pass --fixtures or set JINALOC_FIXTURES")
    src = None if args.skip_gguf else converter_dir(args.llama_cpp_src)
    for seed, family in enumerate(args.families):
        template = args.fixtures / f"tiny-v5-{family}"
        folder = write_canonical(family, args.out, template, 1000 * (seed + 1), args.dtype)
        if src:
            for task in args.tasks:
                write_ggufs(family, folder, task, src, args.quants)
    for f in sorted(args.out.rglob("*")):
        if f.is_file() and f.suffix in (".gguf", ".safetensors") and "adapters" not in f.parts:
            log(f"{f.stat().st_size / 1e6:9.1f} MB  {f}")


if __name__ == "__main__":
    main()
