"""The `jinaloc` command: a thin Typer shell over the Python API.

Each feature's commands live in their own module and register on `app` (cli.core) on import.
A run imports only its command's module and hands Typer only that command; `--help` (and
`from jinaloc.cli import app`) gets all of them."""

from __future__ import annotations

import copy
import importlib
import signal
import sys

import typer

from . import core

# The module that registers each command, in the order --help lists them
# (tests/test_cold_start.py checks this against what the modules register).
COMMANDS = {
    "embed": "embed",
    "index": "index",
    "search": "index",
    "similar": "index",
    "status": "index",
    "eval": "eval",
    "check": "maintain",
    "vacuum": "maintain",
    "forget": "maintain",
    "rerank": "pipes",
    "classify": "pipes",
    "cluster": "pipes",
    "dedup": "pipes",
    "watch": "watch",
    "serve": "serve",
    "mcp": "serve",
    "models": "models",
}


def load_all() -> typer.Typer:
    """`app` with every command."""
    for module in dict.fromkeys(COMMANDS.values()):
        importlib.import_module(f".{module}", __name__)
    return core.app


def __getattr__(name: str):
    if name == "app":
        return load_all()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def listing() -> typer.Typer:
    """`app` for the root alone (`jinaloc --help`, `--version`): every command with its help,
    none with its options, which the root's help does not show and which Typer would build
    for all of them first (~40% of the time Typer takes to build the app for that help)."""
    return _without_options(load_all())


def _without_options(app: typer.Typer) -> typer.Typer:
    def shell(callback):
        def never() -> None:
            raise AssertionError("the root alone runs no command")

        never.__name__, never.__doc__ = callback.__name__, callback.__doc__
        return never

    one = copy.copy(app)
    one.registered_commands = [
        _with(c, callback=shell(c.callback)) for c in app.registered_commands
    ]
    one.registered_groups = [
        _with(g, typer_instance=_without_options(g.typer_instance)) for g in app.registered_groups
    ]
    return one


def _with(info, **changes):
    """A copy of a Typer CommandInfo or TyperInfo with `changes`."""
    new = copy.copy(info)
    vars(new).update(changes)
    return new


def only(name: str) -> typer.Typer:
    """`app` with only the command (or group) `name`, or with every command when there is no
    such command: Typer builds every command's options before it parses anything (~20 ms
    for all of them), and a run needs one."""
    from typer.main import get_command_name

    if name not in COMMANDS:
        return load_all()  # which says so, with suggestions
    importlib.import_module(f".{COMMANDS[name]}", __name__)
    app = core.app
    one = copy.copy(app)
    one.registered_commands = [
        c
        for c in app.registered_commands
        if (c.name or get_command_name(c.callback.__name__)) == name
    ]
    one.registered_groups = [g for g in app.registered_groups if g.name == name]
    return one


def main() -> None:
    # Like grep: a closed pipe (`| head -1`) ends the process quietly, by SIGPIPE.
    if hasattr(signal, "SIGPIPE"):
        signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    # The root takes no option but --help: a first argument that is not one names the command.
    first = sys.argv[1] if len(sys.argv) > 1 else "-"
    try:
        if signal.getsignal(signal.SIGINT) is not signal.SIG_IGN:
            signal.signal(signal.SIGINT, signal.default_int_handler)  # entry.py's until now
        (listing() if first.startswith("-") else only(first))()
    except KeyboardInterrupt:  # Ctrl-C while Python is still starting up
        sys.exit(130)
