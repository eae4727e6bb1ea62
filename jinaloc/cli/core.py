"""The `jinaloc` app: its root group (one-line errors, exit codes, plain metavars) and
logging. Feature modules register their commands on `app`."""

from __future__ import annotations

import logging
import sys
from typing import Annotated

import typer
from rich.markup import escape
from typer.core import TyperGroup

from ..errors import JinalocError
from . import coerce
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
        except Exception as e:
            if type(e).__module__.split(".")[0] not in ("sqlite3", "pysqlite3"):
                raise
            from ..index import open_error

            # Seen as soon as a damaged page is read, or a write finds the disk full.
            err_console.print(
                f"[red]error:[/] {escape(error_line(open_error(None, e)))}",
                highlight=False,
                soft_wrap=True,
            )
            raise typer.Exit(2) from None

    def main(self, *args, **kwargs):
        """Usage errors as one line when stderr is not a terminal (scripts, pipes)."""
        _plain_metavars(self)
        coerce.install()  # no pydantic for plain option values
        if err_console.is_terminal:
            return super().main(*args, **kwargs)
        # Typer carries its own copy of click: its exceptions are the ones raised.
        from typer._click import exceptions as click

        try:
            code = super().main(*args, standalone_mode=False, **kwargs)
        except click.NoArgsIsHelpError:
            # `jinaloc` or a group alone: the help is printed already; exit 2 as Typer does.
            sys.exit(2)
        except click.UsageError as e:
            hint = f" (see `{e.ctx.command_path} --help`)" if e.ctx else ""
            err_console.print(f"error: {escape(e.format_message())}{hint}", soft_wrap=True)
            sys.exit(2)
        except typer.Abort:
            sys.exit(130)
        # Outside standalone mode click returns the code of an Exit instead of exiting.
        sys.exit(code if isinstance(code, int) else 0)


_METAVARS = {"int": "N", "float": "X", "Path": "PATH", "str": "TEXT"}


def _plain_metavars(group) -> None:
    """Help shows FILE, N or TEXT as click does, not Python types like <list[Path]>, and
    nothing after a flag."""
    for command in group.commands.values():
        if hasattr(command, "commands"):
            _plain_metavars(command)
        for param in command.params:
            if param.param_type_name == "argument":
                param.display_type_rich = lambda ctx: None  # its name says enough
                continue
            if param.metavar is not None:
                continue
            if getattr(param, "is_flag", False):
                param.metavar = ""
                continue
            bare = param.bare_type() if hasattr(param, "bare_type") else ""
            inner = bare.removeprefix("list[").removesuffix("]")
            name = "FILE" if param.name == "db" else _METAVARS.get(inner, "TEXT")
            param.metavar = name


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


def _version(value: bool) -> None:
    if value:
        from .. import __version__

        print(f"jinaloc {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option(
            "--version", help="Print the version and exit.", callback=_version, is_eager=True
        ),
    ] = False,
) -> None:
    _setup_logging()
