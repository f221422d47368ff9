"""The committed tracker build: small enough, holds the settings placeholder once, and is the
terser build of tracker.js (checked when `npm ci` has installed the pinned terser)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from gumshoe.collect import script

STATIC = Path(script.__file__).parent / "static"


def test_minified_tracker_is_small_and_has_one_placeholder() -> None:
    text = script.minified()
    assert text.count(script.PLACEHOLDER) == 1
    assert script.gzipped_size(text.encode()) <= script.MAX_GZIPPED


def test_minified_tracker_is_the_build_of_the_source(tmp_path: Path) -> None:
    terser = STATIC / "node_modules" / ".bin" / "terser"
    if not terser.exists() or shutil.which("node") is None:
        pytest.skip("terser is not installed (cd gumshoe/collect/static && npm ci)")
    out = tmp_path / "tracker.min.js"
    subprocess.run([str(terser), str(STATIC / "tracker.js"), "--compress", "passes=2",
                    "--mangle", "--comments", "false", "--output", str(out)], check=True,
                   timeout=60)
    assert out.read_text() == (STATIC / "tracker.min.js").read_text(), (
        "tracker.min.js is stale: run `npm run build` in gumshoe/collect/static")
