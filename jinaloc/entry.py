"""The `jinaloc` command's entry point: Ctrl-C while the CLI's modules are still being
imported ends the process quietly (exit 130), as it does once the CLI runs."""

from __future__ import annotations

import sys


def main() -> None:
    try:
        from .cli import main as run
    except KeyboardInterrupt:
        sys.exit(130)
    run()
