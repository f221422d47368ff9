"""`gumtool readdims`: print the values of a string dimension, one per line, in code order.

Imports gumshoe bulk. Reads the database's dictionary for the column (including strings added
by rows still only in the write-ahead log); a dictionary file may also be given directly.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from gumshoe.bulk import BulkError, StoredDB

HELP = "read a dimension's dictionary and write its strings to stdout"
DESCRIPTION = """\
Print the strings of the string dimension --column of the database at --dir, one per line, in
dictionary (code) order. With --json, print them as one JSON array instead (for strings that
hold newlines). The database must not be in use by a running server. A dictionary file
(dictionary.<column>.generation<N>.json) may be given instead of --dir and --column."""
EXAMPLE = "gumtool readdims --dir db --column country"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dir", metavar="DIR", help="the database directory")
    p.add_argument("--column", metavar="NAME", help="a string dimension column")
    p.add_argument("--json", action="store_true", help="print one JSON array")
    p.add_argument("file", nargs="?", help="a dictionary file, instead of --dir/--column")


def run(args: argparse.Namespace) -> int:
    if args.file is not None:
        if args.dir or args.column:
            raise BulkError("give either a dictionary file or --dir and --column, not both")
        try:
            values = json.loads(Path(args.file).read_bytes())
        except (OSError, ValueError) as e:
            raise BulkError(f"could not read dimension values from {args.file}: {e}") from None
        if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
            raise BulkError(f"{args.file}: not a dictionary file (a JSON array of strings)")
    else:
        if not args.dir or not args.column:
            raise BulkError("--dir and --column must be provided")
        with StoredDB(args.dir, verify=False) as db:
            col = db.schema.column(args.column)
            if col is None or col.role != "dimension" or not col.is_string:
                names = ", ".join(d.name for d in db.schema.string_dimensions) or "none"
                what = "no such column" if col is None else f"a {col.type_name} {col.role}"
                raise BulkError(f"column {args.column!r} is not a string dimension ({what}); "
                                f"string dimensions: {names}")
            values = db.dictionaries[col.name]
    out = sys.stdout
    if args.json:
        out.write(json.dumps(values, ensure_ascii=False) + "\n")
    else:
        out.writelines(v + "\n" for v in values)
    out.flush()
    return 0
