"""The optional C kernels: `_rows` (row dicts -> columns), `_kernels` (fused scan), `_jsonl`
(JSON lines -> columns, for bulk import) and `_sketch` (identity hashing and the union of
distinct-count sketches).

Imports nothing of gumshoe. The extensions are plain C over the buffer protocol, built by
`pip install` when a C compiler is present (pyproject.toml marks them optional). Every caller
keeps its numpy path: when an extension is missing, or `GUMSHOE_NATIVE=0` is set, the numpy
path runs, and the tests compare the two.
"""

from __future__ import annotations

import importlib
import os
from types import ModuleType


_missing: dict[str, str] = {}


def _load(name: str) -> ModuleType | None:
    if os.environ.get("GUMSHOE_NATIVE", "1") == "0":
        _missing[name] = "GUMSHOE_NATIVE=0"
        return None
    try:
        return importlib.import_module(f"gumshoe.{name}")
    except ImportError as e:
        _missing[name] = str(e)
        return None


def why_missing() -> str:
    """Why an extension did not load ("" when both did)."""
    return "; ".join(f"gumshoe.{k}: {v}" for k, v in _missing.items())


kernels = _load("_kernels")
rows = _load("_rows")
jsonl = _load("_jsonl")
sketch = _load("_sketch")
