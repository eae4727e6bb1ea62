"""The CLI's thin search path: a whole `jinaloc search` run by a recorded `jinaloc serve` of
the same index, which embeds the query, searches and sends the rows `--json` prints. The
calling process loads neither numpy, the index nor the model. Stdlib only.

The server answers only when its answer is the caller's own (`api.SearchCaller`): same
index file, the model the caller would use, paths shown from the caller's working
directory. Anything else (no such server, busy, another model, an option it does not
serve) gives None, and the CLI searches in-process as it always did."""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
from pathlib import Path

from ..records import OPENER, auth_headers, healthy, no_server_env, recorded_servers

# Seconds to wait for the rows: as long as an in-process search would wait for the
# server's query embedding (client.REQUEST_TIMEOUT); a full queue answers at once (429).
REQUEST_TIMEOUT = 900


def search_rows(
    db: Path,
    query: str,
    k: int,
    options: dict,
    local: dict,
    explain: bool = False,
) -> list[dict] | None:
    """The hits of `Index.search(query, k, **options)` on `db`, as `Hit.to_json(explain)`
    rows with paths shown from here, from a running server of `db`; None when no server
    can answer exactly as this process would. `local`: this process's model, backend and
    quant options."""
    if no_server_env():
        return None
    try:
        cwd = os.getcwd()
        servers = [r for r in recorded_servers() if r.db and os.path.samefile(r.db, db)]
    except OSError:  # no working directory, no index file: the in-process path says why
        return None
    model = local.get("model")
    if model and Path(model).expanduser().is_dir():  # a folder: the server's cwd is not ours
        local = {**local, "model": str(Path(model).expanduser().absolute())}
    body = {
        "query": query,
        "k": k,
        **options,
        "explain": explain,
        "cwd": cwd,
        "local": local,
    }
    data = json.dumps(body).encode()
    for record in servers:
        if not healthy(record):
            continue
        headers = {"Content-Type": "application/json", **auth_headers(record)}
        request = urllib.request.Request(record.url + "/v1/search", data, headers, method="POST")
        try:
            with OPENER.open(request, timeout=REQUEST_TIMEOUT) as response:
                rows = json.loads(response.read())
        except (OSError, ValueError):  # refused (409: another model...), busy, or gone
            continue
        if isinstance(rows, list):
            return rows
    return None
