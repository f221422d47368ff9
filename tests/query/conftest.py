"""Every engine test runs once per scan kernel (tests/kernels.py). Modules that test the C
extension itself override `scan_kernels` and ask for `kernels`."""

from __future__ import annotations

from collections.abc import Iterator
from types import ModuleType

import pytest

from ..kernels import BUILT, PATHS, use_kernels


@pytest.fixture(autouse=True, params=[k for _, k in PATHS], ids=[name for name, _ in PATHS])
def scan_kernels(request: pytest.FixtureRequest) -> Iterator[ModuleType | None]:
    with use_kernels(request.param):
        yield request.param


@pytest.fixture(scope="module")
def kernels() -> ModuleType:
    """The built `gumshoe._kernels` (the test is skipped when it is not built)."""
    if BUILT is None:
        pytest.skip("gumshoe._kernels is not built (or GUMSHOE_NATIVE=0)")
    return BUILT
