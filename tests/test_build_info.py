"""A package install (``pip install .``, a wheel) records the git commit it was built from, so that a run
measured with it names its code (``benchsvc/_build_info.py``, written by setup.py's build hook)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _head() -> str | None:
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        return None
    out = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True)
    return out.stdout.strip() or None


@pytest.mark.slow
def test_a_built_package_names_the_commit_it_was_built_from(tmp_path: Path) -> None:
    head = _head()
    if head is None:
        pytest.skip("not a git checkout: there is no commit to record")
    wheels = tmp_path / "wheels"
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(wheels), str(ROOT)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    if built.returncode != 0 and "No matching distribution" in built.stderr:
        pytest.skip(f"the build backend cannot be installed here: {built.stderr.strip()[-200:]}")
    assert built.returncode == 0, built.stderr
    (wheel,) = wheels.glob("benchsvc-*.whl")
    target = tmp_path / "site"
    installed = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target), str(wheel)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert installed.returncode == 0, installed.stderr
    assert not (target / ".git").exists()
    code = "import benchsvc.records as r; print(r.__file__); print(r.git_commit())"
    env = {**os.environ, "PYTHONPATH": str(target)}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, env=env, timeout=120
    )
    assert out.returncode == 0, out.stderr
    where, commit = out.stdout.split()
    assert Path(where).is_relative_to(target)  # the installed copy, not this checkout
    assert commit == head
