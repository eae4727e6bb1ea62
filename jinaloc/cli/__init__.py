"""The `jinaloc` command: a thin Typer shell over the Python API.

Each feature's commands live in their own module and register on `app` on import."""

from __future__ import annotations

import logging

import typer
from rich.markup import escape
from typer.core import TyperGroup

from ..errors import JinalocError
from . import common
from .common import err_console
from .errors import error_line


class JinalocGroup(TyperGroup):
    """Turns a JinalocError into one line on stderr and exit code 2, never a traceback."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except JinalocError as e:
            err_console.print(
                f"[red]error:[/] {escape(error_line(e))}", highlight=False, soft_wrap=True
            )
            raise typer.Exit(2) from None
        except KeyboardInterrupt:
            err_console.print("interrupted", highlight=False)
            raise typer.Exit(130) from None


app = typer.Typer(
    name="jinaloc",
    cls=JinalocGroup,
    help="Local embeddings and offline semantic search with Jina's v5 models.",
    no_args_is_help=True,
    context_settings={"help_option_names": ["-h", "--help"]},
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
    add_completion=False,
)


class _StderrHandler(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        err_console.print(
            f"[yellow]warning:[/] {escape(record.getMessage())}", highlight=False, soft_wrap=True
        )


def _setup_logging() -> None:
    logger = logging.getLogger("jinaloc")
    if not any(isinstance(h, _StderrHandler) for h in logger.handlers):
        logger.addHandler(_StderrHandler())
        logger.setLevel(logging.WARNING)
        logger.propagate = False


@app.callback()
def _root() -> None:
    _setup_logging()
    common.use_server = True  # until a command's --no-server says otherwise


def main() -> None:
    app()


# Feature modules add their commands to `app` on import.
from . import embed as _embed  # noqa: E402,F401
from . import index as _index  # noqa: E402,F401
from . import models as _models  # noqa: E402,F401
from . import pipes as _pipes  # noqa: E402,F401
from . import serve as _serve  # noqa: E402,F401
