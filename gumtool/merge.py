"""`gumtool merge`: combine databases (e.g. the shards of a router) into one new database.

Imports gumshoe bulk and gumtool's rewrite engine. Rows with the same roll-up key in several
sources are rolled up together (counts and metric sums add), so the result answers every query
as one server holding all the rows would. The sources are only read.
"""

from __future__ import annotations

import argparse
import contextlib
import os

from gumshoe.bulk import BulkError, StoredDB

from .common import (
    add_list,
    add_parallelism,
    add_quiet,
    destination,
    progress_factory,
    same_path,
    say,
    split_list,
)
from .rewrite import rewrite_to_new, same_columns

HELP = "merge the data from one or more GumshoeDB databases into a new database"
DESCRIPTION = """\
Merge the databases in --db-paths into a new database at the database_dir of --new-db-config
(which must not exist yet, or be an empty directory). Every source must have the config's
columns and interval duration (use `gumtool migrate` first otherwise); the segment size may
differ. Rows with the same roll-up key in several sources are rolled up together. The new
config's retention_days applies. The sources are only read and must not be in use by a running
server; the new database appears only when complete."""
EXAMPLE = "gumtool merge --new-db-config all.toml --db-paths s0,s1"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--new-db-config", required=True, metavar="CONFIG",
                   help="config (TOML) of the new database: its schema and database_dir")
    add_list(p, "--db-paths", "source database directories, comma-separated (repeatable)",
             "DIR,DIR,...")
    add_parallelism(p)
    add_quiet(p)


def run(args: argparse.Namespace) -> int:
    paths = split_list(args.db_paths)
    if not paths:
        raise BulkError(f"need at least one entry in --db-paths; got {len(paths)}")
    seen: dict[str, str] = {}
    for p in paths:
        real = os.path.realpath(p)
        if real in seen:
            raise BulkError(f"--db-paths lists the database {p!r} twice (as {seen[real]!r})")
        seen[real] = p
    config, schema, dest = destination(args.new_db_config)
    for p in paths:
        if same_path(p, dest):
            raise BulkError(f"the new config's database_dir {str(dest)!r} is one of the sources")
    with contextlib.ExitStack() as stack:
        sources = [stack.enter_context(StoredDB(p)) for p in paths]
        for p, src in zip(paths, sources):
            same_columns(src.schema, schema, f"database {p} vs config {args.new_db_config}")
        s, dropped = rewrite_to_new(sources, dest, schema, config, args.parallelism,
                                    progress_factory(args.quiet))
    intervals, rows, input_rows = s.outputs[0]
    say(f"merged {len(paths)} databases ({s.intervals_in} intervals, {s.rows_in} rows) -> "
        f"{dest}: {intervals} intervals, {rows} rows ({input_rows} input rows) in "
        f"{s.seconds:.1f}s")
    say(*dropped, "done")
    return 0
