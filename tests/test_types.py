"""mypy, strict (pyproject.toml [tool.mypy]), over gumshoe and gumtool: typing is checked on
every run of the test suite, not left to a separate step that can be forgotten."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def test_mypy_strict_passes() -> None:
    pytest.importorskip("mypy", reason="mypy is in the test extra: pip install -e '.[test]'")
    cache = ROOT / ".mypy_cache"
    result = subprocess.run([sys.executable, "-m", "mypy", "--cache-dir", str(cache)],
                            cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
    assert "Success" in result.stdout
