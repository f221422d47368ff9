"""Run a test over both scan kernels: the fused C kernel (`gumshoe._kernels`, when built) and
the numpy kernels that run without it."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from types import ModuleType

from gumshoe import native

BUILT = native.kernels
# ("native", module) first when the extension is built; ("numpy", None) always.
PATHS: list[tuple[str, ModuleType | None]] = ([("native", BUILT)] if BUILT is not None
                                               else []) + [("numpy", None)]


@contextlib.contextmanager
def use_kernels(kernels: ModuleType | None) -> Iterator[None]:
    """Plans made inside the block use `kernels` (None: the numpy path)."""
    saved = native.kernels
    native.kernels = kernels
    try:
        yield
    finally:
        native.kernels = saved
