"""`jinaloc serve`: a local embeddings server (OpenAI- and Jina-shaped) that keeps one model
warm, and the record that lets the CLI find it.

`app` is the ASGI app, `worker` the model thread, `api` the request and response shapes,
`records` the state-dir record, `client` the CLI's side, `mcp_app` the MCP server."""

from __future__ import annotations

import os
import signal
import socket
from pathlib import Path

from ..errors import JinalocError
from ..net import is_loopback

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8089


def check_bind(host: str, token: str | None) -> None:
    """Loopback is open to this machine's users only; anything wider needs a token."""
    if not is_loopback(host) and not token:
        raise JinalocError(
            f"refusing to listen on {host} without --token: other machines could use the"
            " server (bind 127.0.0.1, or pass --token SECRET)"
        )


def bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as e:
        sock.close()
        raise JinalocError(f"cannot listen on {host}:{port}: {e.strerror}") from None
    sock.listen(128)
    return sock


def _stop(signum, frame) -> None:
    raise KeyboardInterrupt


def survive_clients() -> None:
    """A server outlives its clients: one that goes away fails its own write (EPIPE)
    instead of killing the process by SIGPIPE (the CLI takes SIGPIPE's default action, like
    grep, for `| head`)."""
    if hasattr(signal, "SIGPIPE"):
        signal.signal(signal.SIGPIPE, signal.SIG_IGN)


def uvicorn_config(app, connections=None):
    """uvicorn's settings for `app`: the guarded h11 protocol (header deadline, connection
    caps; see guard.py) and a short keep-alive."""
    import uvicorn

    from .guard import ConnectionLimits, guarded_protocol

    return uvicorn.Config(
        app,
        http=guarded_protocol(connections or ConnectionLimits()),
        ws="none",
        log_level="warning",
        timeout_keep_alive=5,
        limit_concurrency=256,  # requests in flight at most; beyond: 503 at once
        h11_max_incomplete_event_size=64 * 1024,  # headers
    )


def serve(
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    *,
    model: str | None = None,
    backend: str = "auto",
    quant: str | None = None,
    offline: bool = False,
    db: Path | None = None,
    db_required: bool = True,
    token: str | None = None,
    queue_size: int = 64,
    limits=None,
    connections=None,
    relative_to: Path | None = None,
    ready=None,
    watch: bool = False,
    on_batch=None,
) -> None:
    """Load the model, listen, record the server, serve until interrupted. `ready(record)`
    is called once it listens. `watch`: a Watcher keeps the served index fresh, with the
    model the server holds (`on_batch(batch)` hears of each applied batch). `connections`:
    guard.ConnectionLimits; `relative_to`: search paths relative to it, else absolute."""
    import uvicorn

    from .. import __version__
    from ..records import ServerRecord, remove_server, write_server
    from .app import Limits, create_app
    from .worker import ModelWorker, open_served

    check_bind(host, token)
    survive_clients()  # before the socket: a client may call while the model loads
    # SIGTERM and SIGHUP (the terminal closed) stop it as Ctrl-C does: as an exception, so
    # the record is removed on the way out (uvicorn shuts down on SIGTERM, then raises it
    # again, which lands here).
    signal.signal(signal.SIGTERM, _stop)
    if hasattr(signal, "SIGHUP"):
        signal.signal(signal.SIGHUP, _stop)
    limits = limits or Limits()
    sock = bind(host, port)
    setup = lambda: open_served(model, backend, quant, offline, db, db_required)  # noqa: E731
    worker = ModelWorker(setup, queue_size)
    record_file = None
    watching = None
    try:
        served = worker.start()
        e = served.embedder
        port = sock.getsockname()[1]
        url_host = f"[{host}]" if ":" in host else host
        record = ServerRecord(
            url=f"http://{url_host}:{port}",
            pid=os.getpid(),
            model=e.name,
            model_path=str(e.spec.path or ""),
            backend=e.backend_name,
            quant=e.quant,
            quant_asked=served.quant_asked,
            hidden_size=e.hidden_size,
            max_tokens=e.max_tokens,
            db=str(served.index.path) if served.index else "",
            token=token or "",
            max_body=limits.max_body,
            max_inputs=limits.max_inputs,
            version=__version__,
        )
        base = str(Path(relative_to).absolute()) if relative_to is not None else None
        app = create_app(worker, limits, token, base)
        server = uvicorn.Server(uvicorn_config(app, connections))
        if hasattr(signal, "SIGHUP"):  # uvicorn handles SIGINT and SIGTERM, not this one
            signal.signal(signal.SIGHUP, lambda *_: setattr(server, "should_exit", True))
        record_file = write_server(record, port)
        if watch:
            watching = _start_watcher(worker, on_batch)
        if ready is not None:
            ready(record)
        server.run(sockets=[sock])
    finally:
        if watching is not None:
            watching()
        if record_file is not None:
            remove_server(record_file, os.getpid())
        worker.stop()
        sock.close()


def _start_watcher(worker, on_batch):
    """A Watcher thread on its own session of the served index, embedding through the
    worker; returns the function that stops it (between two files)."""
    import threading

    from ..errors import JinalocError
    from ..watch import Watcher
    from .worker import WorkerEmbedder

    index = worker.served.index
    if index is None:
        raise JinalocError("--watch needs an index to serve: give --db FILE")
    session = index.session(lambda *a, **k: WorkerEmbedder(worker))
    stop = threading.Event()
    watcher = worker.served.watcher = Watcher(session, on_batch=on_batch)
    thread = threading.Thread(target=watcher.run, args=(stop,), name="jinaloc-watch")
    thread.start()

    def finish() -> None:
        stop.set()
        thread.join(60)
        session.close()

    return finish
