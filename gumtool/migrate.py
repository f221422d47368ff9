"""`gumtool migrate`: rewrite a database under a new schema (columns matched by name).

Imports gumshoe bulk and gumtool's rewrite engine. Added dimensions are nil and added metrics 0
in every stored row; dropped dimensions roll up the rows that become identical; types may be
widened, and narrowed only when every stored value fits (else an error names the column and a
value). String columns keep their values. The old database is only read. Dropping a column
loses data, so it must be asked for: a column of the old database that the new config lacks
(e.g. because the config omits `dimension_columns` and gets the defaults) is refused unless
it is named with --drop.
"""

from __future__ import annotations

import argparse

from gumshoe.bulk import BulkError, StoredDB
from gumshoe.schema import Schema

from .common import (
    add_list,
    add_parallelism,
    add_quiet,
    destination,
    note,
    progress_factory,
    same_path,
    say,
    split_list,
)
from .rewrite import describe_changes, rewrite_to_new

HELP = "migrate a GumshoeDB database to a new database with a different schema"
DESCRIPTION = """\
Rewrite the database at --old-db-path under the schema of --new-db-config, into that config's
database_dir (which must not exist yet, or be an empty directory). Columns are matched by name:
new dimensions are nil and new metrics 0 in every stored row; dropped dimensions roll up rows
that become identical; types may be widened, and narrowed only when every stored value fits
(metrics: every stored sum). A column of the old database that the new config does not list is
dropped only when named with --drop (otherwise migrate refuses and names it): keys the new
config omits take the defaults, which may not be the old database's columns. A new
interval_duration moves each stored interval to the new interval holding its start; the new
config's retention_days applies. The old database is only read and must not be in use by a
running server. The new one appears only when complete."""
EXAMPLE = "gumtool migrate --old-db-path db --new-db-config new.toml --drop age"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--old-db-path", required=True, metavar="DIR",
                   help="the database directory to read")
    p.add_argument("--new-db-config", required=True, metavar="CONFIG",
                   help="config (TOML) of the new database: its schema and database_dir")
    add_list(p, "--drop", "a column of the old database to drop (its data is lost), "
             "comma-separated (repeatable)", "COLUMN,...")
    add_parallelism(p)
    add_quiet(p)


def run(args: argparse.Namespace) -> int:
    config, schema, dest = destination(args.new_db_config)
    if same_path(dest, args.old_db_path):
        raise BulkError(f"the new config's database_dir {str(dest)!r} is the old database; "
                        "migrate writes a new database beside the old one")
    with StoredDB(args.old_db_path) as src:
        changes = describe_changes(src.schema, schema)
        check_drops(src.schema, schema, split_list(args.drop), args.new_db_config)
        for line in changes:
            if not args.quiet:
                note(f"migrate: {line}")
        s, dropped = rewrite_to_new([src], dest, schema, config, args.parallelism,
                                    progress_factory(args.quiet))
    intervals, rows, input_rows = s.outputs[0]
    say(f"migrated {args.old_db_path} -> {dest}: {s.intervals_in} intervals, "
        f"{s.input_rows_in} input rows read; wrote {intervals} intervals, {rows} rows "
        f"({input_rows} input rows) in {s.seconds:.1f}s")
    say(*dropped, "done")
    return 0


def check_drops(old: Schema, new: Schema, drop: list[str], config_path: str) -> None:
    """Every column of `old` that `new` lacks must be listed in `drop`, and `drop` lists only
    such columns; otherwise BulkError naming them."""
    columns = [c.name for c in (*old.dimensions, *old.metrics)]
    going = [name for name in columns if new.column(name) is None]
    for name in drop:
        if name not in columns:
            raise BulkError(f"--drop {name}: the old database has no column {name!r} to drop "
                            f"(its columns: {', '.join(columns)})")
        if new.column(name) is not None:
            raise BulkError(f"--drop {name}: the new config {config_path} keeps column "
                            f"{name!r}; remove it from the config or from --drop")
    unasked = [name for name in going if name not in drop]
    if unasked:
        cols = ", ".join(f"{c.role} {c.name}" for n in unasked if (c := old.column(n)))
        flags = " ".join(f"--drop {n}" for n in unasked)
        raise BulkError(f"the new config {config_path} lacks column(s) of the old database: "
                        f"{cols}; migrate would drop them and their data. Add them to the "
                        "config's dimension_columns/metric_columns (a config without those "
                        f"keys gets the defaults), or drop them on purpose with {flags}")
