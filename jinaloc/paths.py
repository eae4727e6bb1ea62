"""XDG locations for config, data (default index), caches and state (running watchers
and servers)."""

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
    """Where running watchers and servers record themselves."""
    return Path(os.environ.get("JINALOC_STATE_DIR") or platformdirs.user_state_dir(APP))


def user_models_toml() -> Path:
    return config_dir() / "models.toml"


def default_db() -> Path:
    return Path(os.environ.get("JINALOC_DB") or data_dir() / "index.db")


def display_path(path: str) -> str:
    """A path as results show it: relative to the working directory when inside it (like
    grep), else absolute."""
    try:
        return os.path.relpath(path) if Path(path).is_relative_to(Path.cwd()) else path
    except ValueError:  # another drive on Windows
        return path
