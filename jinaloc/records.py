"""The records running processes leave in the state dir: each `jinaloc serve` (so the CLI
finds it and embeds through it) and each `jinaloc watch` (so `status` can say an index is
kept fresh, and a second watcher of the same index is refused).

Server records: one JSON file per server (by port). A record whose process is gone, or
whose /health does not answer, is stale: it is ignored, and removed when its process is
gone. Watcher records: one JSON file per index file, replaced atomically as the watcher
runs; one whose process is gone is ignored. Stdlib only: the CLI reads these on every
command that may embed."""

from __future__ import annotations

import hashlib
import http.client
import json
import os
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from urllib.parse import urlsplit

from .paths import state_dir

# Seconds the CLI waits for a recorded server's /health before ignoring it.
HEALTH_TIMEOUT = 0.5


@dataclass(frozen=True)
class ServerRecord:
    url: str  # http://host:port
    pid: int
    model: str  # registry name of the served model
    model_path: str  # its folder (absolute) for a local model, else ""
    backend: str
    quant: str  # the loaded quant
    quant_asked: str  # the --quant it was started with ("" for the default)
    hidden_size: int
    max_tokens: int
    db: str  # the served index, "" for none
    token: str  # "" without --token; the file is private to the user
    max_body: int
    max_inputs: int
    version: str = ""

    @classmethod
    def from_json(cls, data: dict) -> ServerRecord:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


def no_server_env() -> bool:
    """JINALOC_NO_SERVER: the CLI never uses a server (as --no-server)."""
    return os.environ.get("JINALOC_NO_SERVER", "").strip() not in ("", "0")


def servers_dir() -> Path:
    return state_dir() / "servers"


def server_path(port: int) -> Path:
    return servers_dir() / f"server-{port}.json"


def write_server(record: ServerRecord, port: int) -> Path:
    path = server_path(port)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    # Private: the record may hold the bearer token.
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(asdict(record), f)
    tmp.replace(path)
    return path


def remove_server(path: Path, pid: int) -> None:
    """Remove a record if it is still this process's (a restarted server may own it now)."""
    try:
        if json.loads(path.read_text()).get("pid") == pid:
            path.unlink()
    except (OSError, ValueError):
        pass


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


def recorded_servers() -> list[ServerRecord]:
    """Records whose process is alive (records of dead processes are removed)."""
    found = []
    for path in sorted(servers_dir().glob("server-*.json")):
        try:
            record = ServerRecord.from_json(json.loads(path.read_text()))
        except (OSError, ValueError, TypeError):
            continue
        if pid_alive(record.pid):
            found.append(record)
        else:
            path.unlink(missing_ok=True)
    return found


def healthy(record: ServerRecord, timeout: float = HEALTH_TIMEOUT) -> bool:
    """The server answers /health as the process recorded (not another one on its port)."""
    try:
        status, answer = call(record, "GET", "/health", timeout=timeout)
        body = json.loads(answer)
    except (OSError, ValueError, http.client.HTTPException):
        return False
    if status != 200 or not isinstance(body, dict):
        return False
    # "degraded": its watcher died; it still embeds.
    return body.get("status") in ("ok", "degraded") and body.get("pid") == record.pid


def auth_headers(record: ServerRecord) -> dict[str, str]:
    return {"Authorization": f"Bearer {record.token}"} if record.token else {}


def watcher_path(db: Path | str) -> Path:
    """Where a watcher of `db` keeps its record (one per index file)."""
    key = hashlib.sha256(str(Path(db).expanduser().resolve()).encode()).hexdigest()[:16]
    return state_dir() / "watchers" / f"{key}.json"


def write_watcher(db: Path | str, data: dict) -> None:
    """Replace the record of the watcher of `db` (atomically: readers never see half)."""
    path = watcher_path(db)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    tmp.write_text(json.dumps(data) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def read_watcher(db: Path | str) -> dict | None:
    """The record of the watcher running for `db`, or None (none, or its process is gone:
    killed before it could remove its record)."""
    try:
        data = json.loads(watcher_path(db).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data.get("pid"), int) and pid_alive(data["pid"]) else None


def call(
    record: ServerRecord, method: str, path: str, body: bytes | None = None, timeout: float = 60
) -> tuple[int, bytes]:
    """(status, body) of one request to a recorded server: plain http.client, never through
    an http(s)_proxy from the environment (the server is this machine's), and light to
    import for the CLI's thin search path. Raises OSError or http.client.HTTPException."""
    url = urlsplit(record.url)
    connection = http.client.HTTPConnection(url.hostname, url.port, timeout=timeout)
    headers = auth_headers(record)
    if body is not None:
        headers["Content-Type"] = "application/json"
    try:
        connection.request(method, path, body, headers)
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()
