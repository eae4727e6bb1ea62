"""The `jinaloc` command's entry point: Ctrl-C while the CLI's modules are still being
imported ends the process quietly (exit 130), as it does once the CLI runs."""

from __future__ import annotations

import os
import signal


def _quit(signum, frame) -> None:
    # Nothing is open yet; a KeyboardInterrupt raised inside the import machinery can
    # surface as "Exception ignored ... Traceback" however it is caught.
    os._exit(130)


def main() -> None:
    try:
        # Left alone when ignored (started in the background); cli.main puts Python's
        # KeyboardInterrupt back once it can catch it.
        if signal.getsignal(signal.SIGINT) is not signal.SIG_IGN:
            signal.signal(signal.SIGINT, _quit)
    except KeyboardInterrupt:  # the signal came first
        os._exit(130)
    from .cli import main as run

    run()
