"""XDG locations for config, data (default index), caches and state (running servers)."""

from __future__ import annotations

import os
from pathlib import Path

import platformdirs

APP = "jinaloc"


def config_dir() -> Path:
    return Path(os.environ.get("JINALOC_CONFIG_DIR") or platformdirs.user_config_dir(APP))


def data_dir() -> Path:
    return Path(os.environ.get("JINALOC_DATA_DIR") or platformdirs.user_data_dir(APP))


def cache_dir() -> Path:
    return Path(os.environ.get("JINALOC_CACHE_DIR") or platformdirs.user_cache_dir(APP))


def state_dir() -> Path:
    """Where running `jinaloc serve` processes record themselves."""
    return Path(os.environ.get("JINALOC_STATE_DIR") or platformdirs.user_state_dir(APP))


def user_models_toml() -> Path:
    return config_dir() / "models.toml"


def default_db() -> Path:
    return Path(os.environ.get("JINALOC_DB") or data_dir() / "index.db")
