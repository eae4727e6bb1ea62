"""`jinaloc models`: list, inspect, download, locate and remove models."""

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from ..errors import JinalocError, check_choice
from ..output import write_json, write_lines
from .common import JsonOpt, OfflineOpt, err_console, out_console
from .core import app

if TYPE_CHECKING:  # the registry and hub load when a command runs, not for --help
    from ..hub import CachedRepo
    from ..registry import ModelSpec, Registry

models_app = typer.Typer(
    help="List, inspect, download, locate and remove models.",
    no_args_is_help=True,
)
app.add_typer(models_app, name="models")

FormatOpt = Annotated[
    str | None,
    typer.Option(
        "--format",
        help="safetensors (the canonical files, for the onnx and mlx backends; alias mlx) or"
        " gguf (default: what this machine's backend reads).",
    ),
]
TasksOpt = Annotated[
    list[str] | None, typer.Option("--task", "-t", help="GGUF task(s) (repeatable; default all).")
]
QuantOpt = Annotated[str | None, typer.Option("--quant", help="GGUF quant (default per model).")]


def _human(size: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1000 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return str(size)


def _status(spec: "ModelSpec", cached: "dict[str, CachedRepo]") -> dict:
    """What is on disk for a model: the safetensors repo and the GGUF quants per task
    ("mlx": the old name of "safetensors", kept for scripts)."""
    if spec.path is not None:
        return {
            "local_path": str(spec.path), "safetensors": None, "mlx": None, "gguf": {},
            "size": None,
        }  # fmt: skip
    mlx = cached.get(spec.hf_repo) if spec.hf_repo else None
    gguf: dict[str, list[str]] = {}
    size = mlx.size if mlx else 0
    for task in spec.tasks if spec.gguf_repo else []:
        repo = cached.get(spec.gguf_repo_for(task))
        if repo:
            size += repo.size
            if spec.kind == "reranker":  # file names need not carry a task
                quants = [q for q in spec.gguf_quants if spec.gguf_filename(task, q) in repo.files]
            else:
                suffix = f"-{task}-"
                quants = [f.split(suffix, 1)[1][:-5] for f in repo.files if f.endswith(".gguf")]
            gguf[task] = sorted(q for q in quants if q)
    has = bool(mlx and "model.safetensors" in mlx.files) if spec.hf_repo else None
    return {"local_path": None, "safetensors": has, "mlx": has, "gguf": gguf, "size": size}


def _info(spec: "ModelSpec", registry: "Registry", cached) -> dict:
    default = registry.default if spec.kind == "embedding" else registry.default_reranker
    return {
        "name": spec.name,
        "kind": spec.kind,
        "default": spec.name == default,
        "description": spec.description,
        "architecture": spec.architecture,
        "dims": spec.dims,
        "matryoshka_dims": spec.matryoshka_dims,
        "max_tokens": spec.max_tokens,
        "tasks": spec.tasks,
        "prompts": spec.prompts,
        "license": spec.license,
        "license_url": spec.license_url,
        "hf_repo": spec.hf_repo,
        "gguf_repos": {t: spec.gguf_repo_for(t) for t in spec.tasks} if spec.gguf_repo else {},
        "gguf_quants": spec.gguf_quants,
        "default_quant": spec.default_quant,
        "downloaded": _status(spec, cached),
    }


@models_app.command("list", epilog="[b]Example[/b]\n\n  jinaloc models list --json | jq .")
def list_models(as_json: JsonOpt = False) -> None:
    """Known models, what is downloaded (MLX repo, GGUF quants per task), sizes, license."""
    from rich.table import Table

    from .. import hub
    from ..registry import load_registry

    registry = load_registry()
    cached = hub.cached_repos()
    infos = [_info(s, registry, cached) for s in registry.models.values()]
    if as_json:
        write_json(infos)
        return
    rows = []
    for info in infos:
        d = info["downloaded"]
        if d["local_path"]:
            have = f"local: {d['local_path']}"
        else:
            parts = ["safetensors"] if d["safetensors"] else []
            quants = sorted({q for qs in d["gguf"].values() for q in qs})
            if quants and info["kind"] == "reranker":
                parts.append(f"gguf {','.join(quants)}")
            elif quants:
                parts.append(f"gguf {','.join(quants)} ({len(d['gguf'])} tasks)")
            have = "; ".join(parts) or "-"
        name = info["name"] + (" (default)" if info["default"] else "")
        size = _human(d["size"]) if d["size"] else "-"
        arch, dims, max_tokens = info["architecture"], info["dims"], info["max_tokens"]
        dims = "reranker" if info["kind"] == "reranker" else dims
        rows.append([name, arch or "?", str(dims or "?"), str(max_tokens or "?"), have, size,
                     info["license"] or "?"])  # fmt: skip
    if not out_console.is_terminal:
        write_lines("\t".join(row) for row in rows)
        return
    table = Table(box=None, pad_edge=False)
    for col in ("name", "arch", "dims", "max tokens", "downloaded", "size", "license"):
        table.add_column(col)
    for row in rows:
        table.add_row(*row)
    out_console.print(table)


@models_app.command("info", epilog="[b]Example[/b]\n\n  jinaloc models info v5-small")
def info(name: str, as_json: JsonOpt = False) -> None:
    """Everything the registry knows about a model, and what is downloaded."""
    from .. import hub
    from ..registry import load_registry

    registry = load_registry()
    data = _info(registry.get(name), registry, hub.cached_repos())
    if as_json:
        write_json(data)
        return
    for key, value in data.items():
        out_console.print(f"[b]{key}[/b]: {value}", highlight=False, soft_wrap=True)


def _format(fmt: str | None) -> str:
    from .. import hub
    from ..load import default_backend

    # The ONNX and MLX backends read the canonical safetensors; GGUF its own files.
    default = "gguf" if default_backend() == "gguf" else "safetensors"
    fmt = hub.FORMAT_ALIASES.get(fmt, fmt) if fmt else default
    return check_choice("--format", fmt, hub.FORMATS)


def _tasks(spec: "ModelSpec", tasks: list[str] | None) -> list[str]:
    from ..embedder import check_task

    return [check_task(t, spec.tasks) for t in tasks] if tasks else list(spec.tasks)


PULL_EXAMPLES = """
[b]Examples[/b]

  jinaloc models pull v5-nano                          [dim]# this machine's default format[/]
  jinaloc models pull v5-small --format safetensors    [dim]# for --backend onnx or mlx[/]
  jinaloc models pull v5-nano --format gguf --task retrieval --quant Q4_K_M
  jinaloc models pull qwen3-reranker-0.6b              [dim]# the cross-encoder[/]
  jinaloc models pull qwen3-reranker-0.6b --format gguf
"""


@models_app.command("pull", epilog=PULL_EXAMPLES)
def pull(
    name: str,
    fmt: FormatOpt = None,
    task: TasksOpt = None,
    quant: QuantOpt = None,
    offline: OfflineOpt = False,
) -> None:
    """Download only the files a format needs (safetensors: base + adapters, which the ONNX
    and MLX backends read; GGUF: per task/quant)."""
    from .. import hub
    from ..registry import load_registry

    spec = load_registry().get(name)
    fmt = _format(fmt)
    if spec.path is not None:
        raise JinalocError(f"{name} is a local folder ({spec.path}): nothing to download")
    if hub.is_offline(offline):
        raise JinalocError("cannot download in offline mode (unset HF_HUB_OFFLINE / --offline)")
    if spec.kind == "reranker" and task:
        raise JinalocError(f"{name} is a reranker: it has no tasks")
    if fmt == "safetensors":
        if task or quant:
            raise JinalocError(
                "--task/--quant apply to GGUF; safetensors get all adapters (small), and the"
                " ONNX int8 model is built from them on this machine"
            )
        paths = [hub.mlx_dir(spec)]
    elif spec.kind == "reranker":
        paths = [hub.reranker_file(spec, quant)]
    else:
        q = quant or spec.default_quant
        paths = [hub.gguf_file(spec, t, q) for t in _tasks(spec, task)]
    for p in paths:
        print(p)


ADD_EXAMPLES = """
[b]Examples[/b]

  jinaloc models add /media/usb/jina-embeddings-v5-text-nano      [dim]# copied from elsewhere[/]
  jinaloc models add ./qwen3-reranker-0.6b-Q8_0.gguf --name my-reranker
  jinaloc index ~/notes --model jina-embeddings-v5-text-nano --offline
"""


@models_app.command("add", epilog=ADD_EXAMPLES)
def add(
    path: Annotated[
        Path, typer.Argument(help="A model folder (or a reranker's), or a reranker .gguf file.")
    ],
    name: Annotated[
        str | None, typer.Option("--name", help="Its name (default: file name).")
    ] = None,
) -> None:
    """Register a model already on this machine, for machines that never reach a hub.

    A folder in the canonical layout (config.json, model.safetensors, tokenizer.json,
    adapters/, and/or GGUF files in it or in gguf/), a reranker's folder (its config.json
    names a ...ForCausalLM), or a reranker's .gguf. The files stay where they are; the entry
    goes to the user's models.toml."""
    from ..registry import add_user_model

    spec = add_user_model(path, name)
    err_console.print(f"added {spec.name} ({spec.kind}): {spec.path}", highlight=False)
    print(spec.name)


@models_app.command("path", epilog="[b]Example[/b]\n\n  jinaloc models path v5-nano --format gguf")
def path(
    name: str,
    fmt: FormatOpt = None,
    task: Annotated[str, typer.Option("--task", "-t", help="GGUF task.")] = "retrieval",
    quant: QuantOpt = None,
) -> None:
    """Where a downloaded model is on disk (never downloads)."""
    from .. import hub
    from ..registry import load_registry

    spec = load_registry().get(name)
    fmt = _format(fmt)
    if spec.kind == "reranker" and spec.path is not None and spec.path.is_file():
        print(spec.path)  # a local .gguf: its one file, whatever the format
    elif fmt == "safetensors":
        print(hub.mlx_dir(spec, download=False))
    elif spec.kind == "reranker":
        print(hub.reranker_file(spec, quant, download=False))
    else:
        from ..backends.quants import pick_gguf_quant
        from ..embedder import check_task

        check_task(task, spec.tasks)
        print(hub.gguf_file(spec, task, pick_gguf_quant(spec, task, quant), download=False))


@models_app.command("rm", epilog="[b]Example[/b]\n\n  jinaloc models rm v5-small --yes")
def rm(
    name: str,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask.")] = False,
) -> None:
    """Delete a model's downloaded files (all formats) from the Hugging Face cache."""
    from .. import hub
    from ..registry import load_registry

    spec = load_registry().get(name)
    if spec.path is not None:
        raise JinalocError(f"{name} is a local folder ({spec.path}): jinaloc does not delete it")
    cached = hub.cached_repos()
    present = [cached[r] for r in hub.repos_of(spec) if r in cached]
    if not present:
        err_console.print(f"{name}: nothing downloaded")
        raise typer.Exit(1)
    total = sum(r.size for r in present)
    if not yes:
        if not sys.stdin.isatty():
            raise JinalocError("refusing to delete without confirmation: pass --yes")
        typer.confirm(f"Delete {len(present)} repo(s), {_human(total)}?", abort=True)
    hub.remove_cached(spec)
    err_console.print(f"removed {name}: {_human(total)} freed", highlight=False)
