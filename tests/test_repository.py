"""The repository stands alone: the tests find their fixtures in it (or $JINALOC_FIXTURES),
no tracked text file names a machine path, and the bare `jinaloc` shows its help."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests import conftest
from tests.conftest import ROOT


def test_fixtures_come_from_the_repository_unless_jinaloc_fixtures_says_otherwise(
    monkeypatch, tmp_path
):
    monkeypatch.delenv("JINALOC_FIXTURES", raising=False)
    assert conftest._fixtures_dir() == ROOT / "tests" / "fixtures"
    for name in ("tiny-v5-nano", "tiny-v5-small", "tiny-qwen3-reranker"):
        assert (ROOT / "tests" / "fixtures" / name / "golden.json").is_file()
    monkeypatch.setenv("JINALOC_FIXTURES", str(tmp_path))
    with pytest.raises(RuntimeError, match=f"test fixtures not found in {tmp_path}"):
        conftest._fixtures_dir()
    (tmp_path / "tiny-v5-nano").mkdir()
    (tmp_path / "tiny-v5-nano" / "golden.json").write_text("{}")
    assert conftest._fixtures_dir() == tmp_path


def test_a_clone_without_anything_beside_it_runs_the_suite_on_its_own_fixtures(tmp_path):
    """conftest imported from a copy of tests/ in a folder with no ../shared, and no
    $JINALOC_FIXTURES: it finds the copy's own fixtures."""
    code = (
        "import sys; sys.path.insert(0, sys.argv[1]); from tests import conftest;"
        " print(conftest.FIXTURES)"
    )
    clone = tmp_path / "clone"
    (clone / "tests").mkdir(parents=True)
    (clone / "tests" / "conftest.py").write_text((ROOT / "tests" / "conftest.py").read_text())
    (clone / "tests" / "fixtures").symlink_to(ROOT / "tests" / "fixtures")
    env = {k: v for k, v in os.environ.items() if k != "JINALOC_FIXTURES"}
    out = subprocess.run(
        [sys.executable, "-c", code, str(clone)], env=env, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == str(clone / "tests" / "fixtures")
    (clone / "tests" / "fixtures").unlink()
    out = subprocess.run(
        [sys.executable, "-c", code, str(clone)], env=env, capture_output=True, text=True
    )
    assert out.returncode != 0 and "test fixtures not found" in out.stderr


def _tracked_text_files() -> list:
    try:
        out = subprocess.run(
            ["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True
        )
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout")
    skip = (".db", ".gguf", ".safetensors", ".json")  # data; docs/results record runs
    return [ROOT / f for f in out.stdout.splitlines() if not f.endswith(skip)]


def test_no_file_points_outside_the_repository_for_the_test_models():
    offenders = []
    for path in _tracked_text_files():
        if not path.is_file() or path == Path(__file__).resolve():
            continue
        text = path.read_text(errors="ignore")
        if "shared/fixtures" in text or "/work/shared" in text:
            offenders.append(str(path.relative_to(ROOT)))
    assert offenders == []


@pytest.mark.parametrize("args", [[], ["models"]])
def test_bare_jinaloc_shows_the_help_without_an_error_line(args):
    """Typer's no_args_is_help convention: the help, exit code 2 (a usage error), and no
    `error:` line (stderr is a pipe here, where usage errors are one line)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run(
        [sys.executable, "-m", "jinaloc", *args], capture_output=True, text=True, env=env,
        timeout=60,
    )  # fmt: skip
    assert out.returncode == 2
    usage = " ".join(["jinaloc", *args, "[OPTIONS]", "COMMAND"])
    assert usage in " ".join(out.stdout.split())
    assert ("index" if not args else "pull") in out.stdout
    assert out.stderr == ""


def test_version():
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run(
        [sys.executable, "-m", "jinaloc", "--version"], capture_output=True, text=True, env=env
    )
    import jinaloc

    assert out.returncode == 0 and out.stdout == f"jinaloc {jinaloc.__version__}\n"


def test_the_default_install_needs_no_compiler_where_onnx_is_the_default():
    """llama-cpp-python (compiled from source) is a default dependency only where GGUF is the
    default backend; the ONNX backend is one on x86_64 Linux and Windows."""
    pytest.importorskip("packaging")
    from packaging.markers import Marker
    from packaging.requirements import Requirement

    if sys.version_info >= (3, 11):
        import tomllib
    else:
        import tomli as tomllib
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    reqs = [Requirement(d) for d in deps]

    def installed(platform: str, machine: str) -> set[str]:
        env = {"sys_platform": platform, "platform_machine": machine}
        return {r.name for r in reqs if r.marker is None or Marker(str(r.marker)).evaluate(env)}

    for platform, machine in (("linux", "x86_64"), ("win32", "AMD64")):
        got = installed(platform, machine)
        assert "onnxruntime" in got and "llama-cpp-python" not in got
    assert {"mlx", "mlx-lm"} <= installed("darwin", "arm64")
    assert "llama-cpp-python" not in installed("darwin", "arm64")
    for platform, machine in (("linux", "aarch64"), ("darwin", "x86_64"), ("win32", "ARM64")):
        assert "llama-cpp-python" in installed(platform, machine)
