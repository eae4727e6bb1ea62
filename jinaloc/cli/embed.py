"""`jinaloc embed`: texts in, vectors out (JSON, JSON lines or .npy)."""

import io
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from ..errors import JinalocError, check_choice
from ..output import write_json, write_jsonl
from .common import (
    ApiJobsOpt,
    ApiKindOpt,
    ApiModelOpt,
    ApiUrlOpt,
    BackendOpt,
    BatchOpt,
    InputOpt,
    ModelOpt,
    NoServerOpt,
    OfflineOpt,
    QuantOpt,
    QuietOpt,
    TaskOpt,
    ThreadsOpt,
    embed_progress,
    iter_stdin,
    load_embedder,
)
from .core import app

if TYPE_CHECKING:  # the model and numpy load when a command runs, not for --help
    import numpy as np

    from ..embedder import Embeds
    from ..inputs import Record

OUT_FORMATS = ("json", "jsonl", "npy")

EXAMPLES = """
[b]Examples[/b]

  jinaloc embed "hello world"
  jinaloc embed --prompt query --dim 256 "what is rag?"
  cat lines.txt | jinaloc embed --task text-matching > vectors.jsonl
  jq -c '{id, text: .body}' notes.jsonl | jinaloc embed   [dim](ids are echoed back)[/]
  jinaloc embed --file a.md --file b.md --format npy > vectors.npy
  jinaloc embed --type ubinary "sign bits, as api.jina.ai packs them"
  JINA_API_KEY=... jinaloc embed --backend api --api-url https://api.jina.ai/v1 "hi"
"""


@app.command(epilog=EXAMPLES)
def embed(
    texts: Annotated[list[str] | None, typer.Argument(help="Texts; else stdin lines.")] = None,
    file: Annotated[
        list[Path] | None, typer.Option("--file", "-f", help="Embed whole files (repeatable).")
    ] = None,
    model: ModelOpt = None,
    backend: BackendOpt = "auto",
    quant: QuantOpt = None,
    offline: OfflineOpt = False,
    threads: ThreadsOpt = None,
    api_url: ApiUrlOpt = None,
    api_kind: ApiKindOpt = None,
    api_model: ApiModelOpt = None,
    api_jobs: ApiJobsOpt = None,
    no_server: NoServerOpt = False,
    task: TaskOpt = "retrieval",
    prompt: Annotated[
        str, typer.Option("--prompt", "-p", help="query or document (the prefix to add).")
    ] = "document",
    dim: Annotated[int | None, typer.Option("--dim", help="Matryoshka dim (e.g. 256).")] = None,
    out_type: Annotated[
        str,
        typer.Option(
            "--type",
            help="float, binary (int8), ubinary (uint8) or base64; binary types are Jina's"
            " (sign bits MSB-first, binary = ubinary - 128).",
        ),
    ] = "float",
    out_format: Annotated[
        str, typer.Option("--format", help="jsonl (one object per input), json or npy.")
    ] = "jsonl",
    input_format: InputOpt = "auto",
    batch_size: BatchOpt = 32,
    quiet: QuietOpt = False,
) -> None:
    """Embed texts with a v5 model: arguments, --file paths, or one text per stdin line."""
    from ..embedder import check_prompt, check_task
    from ..inputs import INPUT_FORMATS, STREAM_BLOCK, Record, batched, records
    from ..reader import read_input
    from ..vectors import OUTPUT_TYPES

    check_task(task)
    check_prompt(prompt)
    check_choice("--type", out_type, OUTPUT_TYPES)
    check_choice("--format", out_format, OUT_FORMATS)
    check_choice("--input", input_format, INPUT_FORMATS)
    if out_format == "npy" and out_type == "base64":
        raise JinalocError("--format npy holds arrays: use --type float, binary or ubinary")
    if out_format == "npy" and sys.stdout.isatty():
        raise JinalocError("refusing to write .npy to a terminal: redirect stdout to a file")
    if texts and file:
        raise JinalocError("give texts or --file, not both")

    if texts:
        blocks = [[Record(text=t) for t in texts]]
        total = len(texts)
    elif file:
        blocks = [[Record(text=read_input(p), id=str(p), has_id=True) for p in file]]
        total = len(file)
    else:
        blocks = batched(records(iter_stdin(), input_format), STREAM_BLOCK)
        total = None

    embedder = load_embedder(model, backend, quant, offline, dim, task)
    dim = embedder.check_dim(dim)
    run = _Run(embedder, task, prompt, dim, batch_size, out_type, out_format)
    with embed_progress(total, quiet=quiet) as progress:
        for block in blocks:
            run.add(block, progress)
    if run.count == 0:
        raise JinalocError("no input: every line was empty")
    run.finish()


class _Run:
    """Embeds blocks of records and writes (jsonl) or collects (json, npy) the results."""

    def __init__(self, embedder: "Embeds", task, prompt, dim, batch_size, out_type, out_format):
        self.embedder, self.task, self.prompt, self.dim = embedder, task, prompt, dim
        self.batch_size, self.out_type, self.out_format = batch_size, out_type, out_format
        self.count = 0
        self.tokens = 0
        self.rows: list[dict] = []
        self.arrays: list[np.ndarray] = []

    def add(self, block: "list[Record]", progress) -> None:
        result = self.embedder.embed_with_counts(
            [r.text for r in block], self.task, self.prompt, self.dim, self.batch_size, progress
        )
        self.tokens += sum(result.token_counts)
        if self.out_format == "npy":
            self.arrays.append(result.vectors)
        else:
            from ..vectors import encode

            values = encode(result.vectors, self.out_type)
            rows = []
            for rec, value, n in zip(block, values, result.token_counts, strict=True):
                row = {"index": self.count, "embedding": value}
                if rec.has_id:
                    row = {"id": rec.id, **row}
                if self.out_format == "json":
                    row = {"object": "embedding", **row, "tokens": n}
                rows.append(row)
                self.count += 1
            if self.out_format == "jsonl":
                write_jsonl(rows)
            else:
                self.rows.extend(rows)
            return
        self.count += len(block)

    def finish(self) -> None:
        if self.out_format == "json":
            write_json(
                {
                    "object": "list",
                    "model": self.embedder.name,
                    "data": self.rows,
                    "usage": {"prompt_tokens": self.tokens, "total_tokens": self.tokens},
                }
            )
        elif self.out_format == "npy":
            import numpy as np

            from ..vectors import quantize

            buf = io.BytesIO()
            np.save(buf, quantize(np.concatenate(self.arrays), self.out_type))
            sys.stdout.buffer.write(buf.getvalue())
            sys.stdout.buffer.flush()
