"""The CLI's thin search path: a whole `jinaloc search` run by a recorded `jinaloc serve` of
the same index, which embeds the query, searches and sends the rows `--json` prints. The
calling process loads neither numpy, the index nor the model. Stdlib only.

The server answers only when its answer is the caller's own (`api.SearchCaller`): same
index file, the model the caller would use, paths shown from the caller's working
directory. Anything else (no such server, busy, another model, an option it does not
serve) gives None, and the CLI searches in-process as it always did."""

from __future__ import annotations

import http.client
import json
import os
from pathlib import Path

from ..records import call, healthy, no_server_env, recorded_servers

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
        try:
            status, answer = call(record, "POST", "/v1/search", data, REQUEST_TIMEOUT)
            rows = json.loads(answer)
        except (OSError, ValueError, http.client.HTTPException):  # gone, or not a server
            continue
        if status == 200 and isinstance(rows, list):
            return rows
        # Refused (409: another model...), busy (429/503) or failed: searched here.
    return None
