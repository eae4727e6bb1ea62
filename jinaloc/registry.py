"""The model registry: the packaged models.toml plus the user's own entries."""

from __future__ import annotations

import json
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

from .errors import JinalocError
from .paths import user_models_toml

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

TASKS = ("retrieval", "text-matching", "clustering", "classification")
KINDS = ("embedding", "reranker")
RERANK_TASK = "rerank"  # a reranker's one "task": its GGUF file
DEFAULT_PROMPTS = {"query": "Query: ", "document": "Document: "}


@dataclass
class ModelSpec:
    """What jinaloc knows about a model before loading any weights."""

    name: str
    kind: str = "embedding"  # "embedding" | "reranker" (a cross-encoder GGUF)
    architecture: str | None = None  # "eurobert" | "qwen3"; read from files for local folders
    dims: int | None = None
    matryoshka_dims: list[int] = field(default_factory=list)
    max_tokens: int | None = None
    tasks: list[str] = field(default_factory=lambda: list(TASKS))
    prompts: dict[str, str] = field(default_factory=lambda: dict(DEFAULT_PROMPTS))
    license: str | None = None
    license_url: str | None = None
    description: str = ""
    hf_repo: str | None = None
    gguf_repo: str | None = None
    gguf_file: str | None = None
    gguf_quants: list[str] = field(default_factory=list)
    default_quant: str = "Q8_0"
    path: Path | None = None  # a local folder in the canonical layout (reranker: a .gguf)

    def __post_init__(self):
        if self.kind not in KINDS:
            raise JinalocError(f"model {self.name!r}: kind must be one of {', '.join(KINDS)}")
        if self.kind == "reranker":  # one GGUF file, its own prompt (jinaloc/reranker.py)
            if list(self.tasks) == list(TASKS):
                self.tasks = [RERANK_TASK]
            if self.prompts == DEFAULT_PROMPTS:
                self.prompts = {}

    def allowed_dims(self) -> list[int] | None:
        """Trained Matryoshka dims, or None when any dim up to `dims` is allowed."""
        return self.matryoshka_dims or None

    def gguf_repo_for(self, task: str) -> str:
        if not self.gguf_repo:
            raise JinalocError(f"model {self.name!r} has no GGUF repo in the registry")
        return self.gguf_repo.format(task=task)

    def gguf_filename(self, task: str, quant: str) -> str:
        pattern = self.gguf_file or "{family}-{task}-{quant}.gguf"
        return pattern.format(task=task, quant=quant, family=self.name)


def _packaged_toml() -> Path:
    here = Path(__file__).resolve().parent
    # Installed wheels carry it inside the package; a source checkout has it at the root.
    for candidate in (here / "models.toml", here.parent / "models.toml"):
        if candidate.is_file():
            return candidate
    raise JinalocError("models.toml is missing from the installation")


def _read_toml(path: Path) -> dict:
    try:
        with path.open("rb") as f:
            return tomllib.load(f)
    except tomllib.TOMLDecodeError as e:
        raise JinalocError(f"{path}: invalid TOML: {e}") from None


def _spec_from_entry(name: str, entry: dict, base: Path) -> ModelSpec:
    known = set(ModelSpec.__dataclass_fields__)
    unknown = set(entry) - known
    if unknown:
        raise JinalocError(f"models.toml entry {name!r}: unknown keys {sorted(unknown)}")
    values = {k: v for k, v in entry.items() if k != "name"}
    if values.get("path") is not None:
        values["path"] = (base / Path(values["path"]).expanduser()).resolve()
    return ModelSpec(name=name, **values)


@dataclass
class Registry:
    models: dict[str, ModelSpec]
    default: str
    default_reranker: str | None = None

    def names(self) -> list[str]:
        return list(self.models)

    def get(self, name: str) -> ModelSpec:
        try:
            return self.models[name]
        except KeyError:
            raise JinalocError(
                f"unknown model {name!r}: known models are {', '.join(self.models)}"
                " (or pass a local folder)"
            ) from None


def load_registry(user_toml: Path | None = None) -> Registry:
    packaged = _packaged_toml()
    data = _read_toml(packaged)
    models = {n: _spec_from_entry(n, e, packaged.parent) for n, e in data["models"].items()}
    default = data.get("default", next(iter(models)))
    default_reranker = data.get("default_reranker")
    user_toml = user_toml or user_models_toml()
    if user_toml.is_file():
        user = _read_toml(user_toml)
        for n, e in user.get("models", {}).items():
            merged = {**models[n].__dict__, **e} if n in models else e
            models[n] = _spec_from_entry(n, merged, user_toml.parent)
        default = user.get("default", default)
        default_reranker = user.get("default_reranker", default_reranker)
    return Registry(models=models, default=default, default_reranker=default_reranker)


def add_user_model(path: Path, name: str | None = None, user_toml: Path | None = None) -> ModelSpec:
    """Register a model already on this machine (for machines that never reach a hub): a
    folder in the canonical layout (and/or its gguf/ files), or a reranker's .gguf file.
    Appended to the user's models.toml; the files stay where they are."""
    path = path.expanduser().resolve()
    user_toml = user_toml or user_models_toml()
    if path.is_file():
        if path.suffix != ".gguf":
            raise JinalocError(f"{path}: not a model folder or a .gguf file")
        spec = ModelSpec(name=name or path.stem, path=path, kind="reranker")
    else:
        spec = spec_from_folder(path, name)
        if spec.architecture is None and not any(path.glob("**/*.gguf")):
            raise JinalocError(f"{path}: no config.json and no .gguf files: not a model folder")
        if spec.architecture is not None:
            architectures = json.loads((path / "config.json").read_text()).get("architectures")
            # A causal LM with its head (Qwen3ForCausalLM) is a reranker's safetensors; the
            # embedding models' backbones have none.
            if any(str(a).endswith("ForCausalLM") for a in architectures or []):
                spec = ModelSpec(name=spec.name, path=path, kind="reranker")
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", spec.name):
        raise JinalocError(f"invalid model name {spec.name!r}: use letters, digits, . _ -")
    if spec.name in load_registry(user_toml).models:
        raise JinalocError(f"a model named {spec.name!r} is known already: pass --name")
    entry = f"\n[models.{spec.name}]\npath = {json.dumps(str(path))}\n"
    if spec.kind != "embedding":
        entry += f'kind = "{spec.kind}"\n'
    user_toml.parent.mkdir(parents=True, exist_ok=True)
    with user_toml.open("a", encoding="utf-8") as f:
        f.write(entry)
    return load_registry(user_toml).get(spec.name)


def spec_from_folder(path: Path, name: str | None = None) -> ModelSpec:
    """A spec for a local folder in the canonical layout; its own files decide."""
    path = path.expanduser().resolve()
    if not path.is_dir():
        raise JinalocError(f"model folder not found: {path}")
    spec = ModelSpec(name=name or path.name, path=path)
    config_file = path / "config.json"
    if config_file.is_file():
        config = json.loads(config_file.read_text())
        spec.dims = config.get("hidden_size")
        spec.max_tokens = config.get("max_position_embeddings")
        spec.tasks = list(config.get("task_names") or TASKS)
        spec.architecture = detect_architecture(config)
    st_config = path / "config_sentence_transformers.json"
    if st_config.is_file():
        prompts = json.loads(st_config.read_text()).get("prompts")
        if prompts:
            spec.prompts = {**DEFAULT_PROMPTS, **prompts}
    return spec


def detect_architecture(config: dict) -> str:
    """EuroBERT (nano) or Qwen3 (small), from config.json fields."""
    model_type = config.get("model_type", "")
    if model_type in ("eurobert", "qwen3"):
        return model_type
    if config.get("is_decoder") is False:
        return "eurobert"
    if "head_dim" in config or "layer_types" in config or "max_window_layers" in config:
        return "qwen3"
    raise JinalocError("cannot tell the architecture from config.json (expected EuroBERT or Qwen3)")


def resolve(model: str | None, registry: Registry | None = None) -> ModelSpec:
    """A registry name, a local folder, or None for the default model."""
    registry = registry or load_registry()
    if model is None:
        return registry.get(registry.default)
    if model in registry.models:
        spec = registry.models[model]
        if spec.path is not None:
            folder = spec_from_folder(spec.path, name=spec.name)
            # Registry values (trained dims, license, repos) win over what a folder can tell.
            for key, value in spec.__dict__.items():
                if value not in (None, [], {}):
                    setattr(folder, key, value)
            return folder
        return spec
    candidate = Path(model).expanduser()
    if candidate.exists() or "/" in model or model.startswith("."):
        if not candidate.is_dir():
            raise JinalocError(f"model folder not found: {model}")
        return spec_from_folder(candidate)
    return registry.get(model)
