"""Model files: Hugging Face downloads into the HF cache, local folders, offline mode."""

from __future__ import annotations

import logging
import os
import shutil
import socket
from dataclasses import dataclass
from pathlib import Path

from .errors import JinalocError, ModelNotDownloaded
from .registry import RERANK_TASK, ModelSpec

log = logging.getLogger("jinaloc")
# Seconds to wait for a connection to the hub before saying it cannot be reached.
REACH_TIMEOUT = 5.0

# Only what the MLX backend reads: never the repo's Python files (no remote code).
MLX_PATTERNS = [
    "config.json",
    "model.safetensors",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "config_sentence_transformers.json",
    "adapters/*/adapter_config.json",
    "adapters/*/adapter_model.safetensors",
]
MLX_REQUIRED = ["config.json", "model.safetensors", "tokenizer.json"]
# What `--backend api` reads here (chunking and batches by tokens): no weights.
TOKENIZER_PATTERNS = [p for p in MLX_PATTERNS if p.endswith(".json") and "/" not in p]
TOKENIZER_REQUIRED = ["config.json", "tokenizer.json"]
FORMATS = ("mlx", "gguf")


def is_offline(offline: bool = False) -> bool:
    flag = os.environ.get("HF_HUB_OFFLINE", "").strip().lower()
    return offline or flag in ("1", "true", "yes", "on")


_noted: set[str] = set()


def _note_license(spec: ModelSpec) -> None:
    """Once per model and process, where a download may start."""
    if spec.license and spec.name not in _noted:
        _noted.add(spec.name)
        url = f" ({spec.license_url})" if spec.license_url else ""
        terms = ": non-commercial use only" if "NC" in spec.license else ""
        log.warning("%s weights are licensed %s%s%s", spec.name, spec.license, terms, url)


def mlx_dir(spec: ModelSpec, offline: bool = False, download: bool = True) -> Path:
    """The folder holding the canonical layout, downloading what is missing."""
    if spec.path is not None:
        missing = [f for f in MLX_REQUIRED if not (spec.path / f).is_file()]
        if missing:
            raise JinalocError(f"{spec.path} is not a model folder: missing {', '.join(missing)}")
        return spec.path
    if not spec.hf_repo:
        raise JinalocError(f"model {spec.name!r} has no hf_repo or path in models.toml")
    local_only = is_offline(offline) or not download
    try:
        from huggingface_hub import snapshot_download

        folder = _cached(
            lambda: Path(
                snapshot_download(spec.hf_repo, allow_patterns=MLX_PATTERNS, local_files_only=True)
            )
        )
        if folder is None or any(not (folder / f).is_file() for f in MLX_REQUIRED):
            if local_only:
                raise LookupError
            _reachable()
            _note_license(spec)
            folder = Path(snapshot_download(spec.hf_repo, allow_patterns=MLX_PATTERNS))
    except JinalocError:
        raise
    except Exception as e:  # the hub raises many types; all mean "not available"
        if local_only:
            raise ModelNotDownloaded(
                spec.name, "mlx", " --format mlx", is_offline(offline)
            ) from None
        raise JinalocError(f"could not download {spec.hf_repo}: {_short(e)}") from None
    if any(not (folder / f).is_file() for f in MLX_REQUIRED):
        if local_only:
            raise ModelNotDownloaded(spec.name, "mlx", " --format mlx", is_offline(offline))
        raise JinalocError(f"{spec.hf_repo} is missing required files {MLX_REQUIRED}")
    return folder


def tokenizer_dir(spec: ModelSpec, offline: bool = False) -> Path:
    """A folder with the model's config and tokenizer (a few MB, no weights): the model's
    own folder, else the canonical repo's JSON files from the HF cache or the hub."""
    if spec.path is not None:
        missing = [f for f in TOKENIZER_REQUIRED if not (spec.path / f).is_file()]
        if missing:
            raise JinalocError(
                f"{spec.path} has no {' or '.join(missing)}: --backend api needs them"
            )
        return spec.path
    if not spec.hf_repo:
        raise JinalocError(f"model {spec.name!r} has no hf_repo or path in models.toml")

    def complete(folder: Path | None) -> bool:
        return folder is not None and all((folder / f).is_file() for f in TOKENIZER_REQUIRED)

    try:
        from huggingface_hub import snapshot_download

        def get(local: bool) -> Path:
            return Path(
                snapshot_download(
                    spec.hf_repo, allow_patterns=TOKENIZER_PATTERNS, local_files_only=local
                )
            )

        folder = _cached(lambda: get(True))
        if not complete(folder):
            if is_offline(offline):
                raise LookupError
            _reachable()
            folder = get(False)
    except JinalocError:
        raise
    except Exception as e:
        if is_offline(offline):
            raise ModelNotDownloaded(spec.name, "tokenizer", "", True) from None
        raise JinalocError(f"could not download {spec.hf_repo}'s tokenizer: {_short(e)}") from None
    if not complete(folder):
        raise JinalocError(f"{spec.hf_repo} is missing {TOKENIZER_REQUIRED}")
    return folder


def find_local_gguf(folder: Path, task: str, quant: str) -> Path | None:
    """`*-{task}-{quant}.gguf` in the folder or its gguf/ subfolder (official names)."""
    for where in (folder, folder / "gguf"):
        if where.is_dir():
            hits = sorted(where.glob(f"*-{task}-{quant}.gguf"))
            # "text-matching" must not match a "...-matching" of another task name.
            hits = [h for h in hits if h.name.endswith(f"-{task}-{quant}.gguf")]
            if hits:
                return hits[0]
    return None


def local_gguf_quants(folder: Path, task: str) -> list[str]:
    found = []
    for where in (folder, folder / "gguf"):
        if where.is_dir():
            for f in where.glob(f"*-{task}-*.gguf"):
                found.append(f.name[: -len(".gguf")].split(f"-{task}-", 1)[1])
    return sorted(set(found))


def gguf_file(
    spec: ModelSpec, task: str, quant: str, offline: bool = False, download: bool = True
) -> Path:
    if spec.path is not None:
        hit = find_local_gguf(spec.path, task, quant)
        if hit is None:
            have = local_gguf_quants(spec.path, task)
            hint = f" (found quants: {', '.join(have)})" if have else ""
            raise JinalocError(
                f"no GGUF for task {task!r} and quant {quant} in {spec.path}"
                f" or its gguf/ folder{hint}"
            )
        return hit
    what, flags = (
        f"gguf, task {task}, quant {quant}",
        f" --format gguf --task {task} --quant {quant}",
    )
    return _hub_gguf(spec, task, quant, offline, download, what, flags)


def _hub_gguf(
    spec: ModelSpec, task: str, quant: str, offline: bool, download: bool, what: str, flags: str
) -> Path:
    """The registry's GGUF file from the HF cache, downloaded unless offline."""
    repo, filename = spec.gguf_repo_for(task), spec.gguf_filename(task, quant)
    local_only = is_offline(offline) or not download
    try:
        from huggingface_hub import hf_hub_download

        hit = _cached(lambda: Path(hf_hub_download(repo, filename, local_files_only=True)))
        if hit is not None:
            return hit
        if local_only:
            raise LookupError
        _reachable()
        _note_license(spec)
        return Path(hf_hub_download(repo, filename))
    except JinalocError:
        raise
    except Exception as e:
        if local_only:
            raise ModelNotDownloaded(spec.name, what, flags, is_offline(offline)) from None
        raise JinalocError(f"could not download {repo}/{filename}: {_short(e)}") from None


def reranker_file(
    spec: ModelSpec, quant: str | None = None, offline: bool = False, download: bool = True
) -> Path:
    """A reranker's GGUF: its local `path` (a .gguf, or a folder holding `*{quant}.gguf`) or
    the registry's file for the quant."""
    quant = quant or spec.default_quant
    if spec.path is not None:
        if spec.path.is_file():
            return spec.path
        hits = sorted(spec.path.glob(f"*{quant}.gguf")) if spec.path.is_dir() else []
        if not hits:
            raise JinalocError(f"no reranker GGUF for quant {quant} in {spec.path}")
        return hits[0]
    if spec.gguf_quants and quant not in spec.gguf_quants:
        raise JinalocError(
            f"{spec.name} has no quant {quant!r}: choose {', '.join(spec.gguf_quants)}"
            " (or pass a .gguf file)"
        )
    return _hub_gguf(spec, RERANK_TASK, quant, offline, download, quant, f" --quant {quant}")


def _cached(find):
    """What the HF cache already holds (no network at all), or None."""
    try:
        return find()
    except Exception:  # not in the cache, whatever the hub's exception type
        return None


_hub_ok: bool | None = None


def _reachable(timeout: float = REACH_TIMEOUT) -> None:
    """Fail in seconds, in one line, when the hub cannot be reached: huggingface_hub would
    retry for half a minute and log every attempt."""
    global _hub_ok
    if _hub_ok:
        return
    from urllib.parse import urlparse

    from huggingface_hub import constants

    url = urlparse(constants.ENDPOINT)
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        socket.create_connection((url.hostname, port), timeout=timeout).close()
    except OSError as e:
        raise JinalocError(
            f"cannot reach the model hub at {url.hostname} ({e.strerror or e})",
            "connect to the network, or copy the model to this machine and add it with"
            " `jinaloc models add PATH` (then --offline)",
        ) from None
    _hub_ok = True


def _short(e: Exception) -> str:
    text = str(e).strip().splitlines()
    return text[0] if text else type(e).__name__


@dataclass
class CachedRepo:
    repo_id: str
    size: int
    files: list[str]
    path: Path


def cached_repos() -> dict[str, CachedRepo]:
    """Model repos in the HF cache, by repo id."""
    try:
        from huggingface_hub import scan_cache_dir

        info = scan_cache_dir()
    except Exception:
        return {}
    out = {}
    for repo in info.repos:
        if repo.repo_type != "model":
            continue
        files = sorted({f.file_name for rev in repo.revisions for f in rev.files})
        out[repo.repo_id] = CachedRepo(repo.repo_id, repo.size_on_disk, files, repo.repo_path)
    return out


def repos_of(spec: ModelSpec) -> list[str]:
    repos = [spec.hf_repo] if spec.hf_repo else []
    if spec.gguf_repo:
        repos += [spec.gguf_repo_for(t) for t in spec.tasks]
    return repos


def remove_cached(spec: ModelSpec) -> list[CachedRepo]:
    """Delete every cached repo of the model (all revisions) from the HF cache."""
    cached = cached_repos()
    gone = [cached[r] for r in repos_of(spec) if r in cached]
    for repo in gone:
        shutil.rmtree(repo.path)
    return gone
