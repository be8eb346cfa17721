"""The code a maintainer inherits passes the project's own linter: ``ruff check .`` with the
rules in pyproject.toml, over the package, the tests, the benchmarks, the tools and the code
cells of every notebook."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_ruff_finds_nothing():
    done = subprocess.run([sys.executable, "-m", "ruff", "check", "--output-format", "concise", "."],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
