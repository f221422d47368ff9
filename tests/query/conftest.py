"""Every engine test runs once per scan kernel (tests/kernels.py)."""

from __future__ import annotations

from collections.abc import Iterator
from types import ModuleType

import pytest

from ..kernels import PATHS, use_kernels


@pytest.fixture(autouse=True, params=[k for _, k in PATHS], ids=[name for name, _ in PATHS])
def scan_kernels(request: pytest.FixtureRequest) -> Iterator[ModuleType | None]:
    with use_kernels(request.param):
        yield request.param
