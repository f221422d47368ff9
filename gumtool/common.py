"""Helpers shared by the gumtool commands: list flags, the destination config, output.

Imports gumshoe config and schema, and gumtool.progress.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from pathlib import Path

from gumshoe.bulk import BulkError
from gumshoe.config import Config, load_config
from gumshoe.schema import Schema

from .progress import Progress

DEFAULT_PARALLELISM = 4


def add_list(parser: argparse.ArgumentParser, flag: str, help: str, metavar: str) -> None:
    """A list flag like the original's: each occurrence is split on commas, empty items are
    dropped, occurrences accumulate (`--db-paths a,b --db-paths c`)."""
    parser.add_argument(flag, action="append", default=[], metavar=metavar, help=help)


def split_list(values: list[str]) -> list[str]:
    return [item for v in values for item in v.split(",") if item]


def add_parallelism(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--parallelism", type=positive_int, default=DEFAULT_PARALLELISM,
                        metavar="N", help="intervals processed at once, on threads "
                        f"(default {DEFAULT_PARALLELISM})")


def add_quiet(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-q", "--quiet", action="store_true",
                        help="no progress or notes on stderr (errors are still printed)")


def positive_int(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if n < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return n


def destination(config_path: str) -> tuple[Config, Schema, Path]:
    """The config of a database to create, its schema and its directory."""
    config = load_config(config_path)
    if config.in_memory:
        raise BulkError(f"{config_path}: database_dir is \"MEMORY\"; gumtool writes databases "
                        "to disk, set database_dir to a new directory")
    return config, Schema.from_config(config.schema), Path(config.database_dir)


def same_path(a: str | os.PathLike[str], b: str | os.PathLike[str]) -> bool:
    return os.path.realpath(a) == os.path.realpath(b)


def progress_factory(quiet: bool) -> Callable[[str, int], Progress]:
    def make(label: str, total: int) -> Progress:
        return Progress(label, total, sys.stderr, quiet=quiet)
    return make


def say(*lines: str) -> None:
    for line in lines:
        print(line, flush=True)


def note(*lines: str) -> None:
    for line in lines:
        print(line, file=sys.stderr, flush=True)
