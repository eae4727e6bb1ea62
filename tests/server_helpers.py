"""Starting real servers for tests: `jinaloc serve` as a subprocess, or the app on uvicorn
in a thread (for limits the command line does not set), both on free loopback ports."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

from conftest import ROOT, model_dir

MODEL_ARGS = ["--model", str(model_dir("nano")), "--backend", "gguf", "--quant", "F32"]
OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def subprocess_env(state: Path) -> dict:
    env = dict(os.environ)
    base = state.parent
    env.update(
        PYTHONPATH=str(ROOT),
        JINALOC_STATE_DIR=str(state),
        JINALOC_CONFIG_DIR=str(base / "config"),
        JINALOC_DATA_DIR=str(base / "data"),
        JINALOC_CACHE_DIR=str(base / "cache"),
        HF_HOME=str(base / "hf"),
        HF_HUB_OFFLINE="1",
    )
    env.pop("JINALOC_DB", None)
    return env


class ServeProcess:
    """`python -m jinaloc serve --port 0 ...`; `record` is what it wrote to the state dir."""

    def __init__(self, state: Path, *args: str, cwd: Path | None = None, port: int = 0):
        self.state = state
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "jinaloc", "serve", "--port", str(port), *args],
            env=subprocess_env(state),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=cwd,
        )
        deadline = time.monotonic() + 120
        while True:
            files = list((state / "servers").glob("server-*.json"))
            if files:
                self.record = json.loads(files[0].read_text())
                break
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"serve did not start: {self.proc.stderr.read()}")
            time.sleep(0.05)
        self.url = self.record["url"]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


class ThreadServer:
    """The app for `worker` on uvicorn in a thread (the model loads in the worker's), with
    `jinaloc serve`'s settings (`connections`: guard.ConnectionLimits)."""

    def __init__(self, worker, limits=None, token=None, connections=None):
        import uvicorn

        from jinaloc.server import bind, uvicorn_config
        from jinaloc.server.app import Limits, create_app

        worker.start()
        self.worker = worker
        self.sock = bind("127.0.0.1", 0)
        self.port = self.sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        app = create_app(worker, limits or Limits(), token)
        self.server = uvicorn.Server(uvicorn_config(app, connections))
        self.thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True
        )
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("thread server did not start")
            time.sleep(0.02)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(20)
        self.sock.close()
        self.worker.stop()


def call(url: str, path: str, payload=None, *, raw: bytes | None = None, headers=None, timeout=60):
    """(status, JSON body) of a GET (no payload) or POST."""
    data = raw if raw is not None else (None if payload is None else json.dumps(payload).encode())
    request = urllib.request.Request(
        url + path,
        data,
        {"Content-Type": "application/json", **(headers or {})},
        method="GET" if data is None else "POST",
    )
    try:
        with OPENER.open(request, timeout=timeout) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"null")
