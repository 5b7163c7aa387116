"""Build hook: record the git commit the package is built from (``pip install .``, a wheel).

A package install has no ``.git`` beside it, so ``benchsvc.records.git_commit`` could not name the code a run
measured with. ``build_py`` writes ``benchsvc/_build_info.py`` (``GIT_COMMIT``: the commit, or None when the
source is not a git checkout, e.g. an sdist) into the built package; everything else is in pyproject.toml.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py


def _source_commit() -> str | None:
    here = Path(__file__).resolve().parent
    if not (here / ".git").exists():
        return None
    try:
        out = subprocess.run(
            ["git", "-C", str(here), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10, check=True
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


class BuildPyWithCommit(build_py):
    def run(self) -> None:
        super().run()
        if getattr(self, "editable_mode", False):  # an editable install runs from the checkout: git answers directly
            return
        target = Path(self.build_lib) / "benchsvc" / "_build_info.py"
        target.write_text(
            '"""Written by setup.py when this package was built: the git commit of its source."""\n\n'
            f"GIT_COMMIT: str | None = {_source_commit()!r}\n"
        )


setup(cmdclass={"build_py": BuildPyWithCommit})
