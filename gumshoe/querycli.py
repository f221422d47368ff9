"""`gumshoe query`: run a JSON or SQL query against a server and print the rows.

    gumshoe query [--url URL] [--key KEY] [--format table|csv|json|ndjson] [QUERY | -]

Above client.py (the only gumshoe module it imports): a command-line face of gumshoe.client.
QUERY is the JSON query language when it starts with `{`, else SQL (`EXPLAIN ...` prints the
JSON query a statement maps to); `-` or no QUERY with a pipe reads standard input. `table`
aligns columns for a terminal; csv, json and ndjson are for programs (csv and ndjson are read
from the server's stream, row by row). A server error is printed on stderr with exit status 1;
a bad command line exits 2. cli.py wires `add_parser` and `run` into `gumshoe`; `python -m
gumshoe.querycli` runs it alone.
"""

from __future__ import annotations

import argparse
import csv
import itertools
import json
import os
import sys
import unicodedata
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, TextIO

from .client import Client, GumshoeClientError, GumshoeHTTPError

FORMATS = ("table", "csv", "json", "ndjson")
DEFAULT_URL = "http://127.0.0.1:9000"
EXIT_ERROR = 1  # the server refused the query, or could not be reached
EXIT_USAGE = 2  # a bad command line or unreadable query (argparse uses 2 as well)
ROW_COUNT = "rowCount"


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument("query", nargs="?", metavar="QUERY",
                        help="a JSON query ({...}) or SQL (SELECT ... FROM events); '-' or "
                             "none reads standard input")
    parser.add_argument("--url", default=os.environ.get("GUMSHOE_URL", DEFAULT_URL),
                        help="the server or router (default: $GUMSHOE_URL or %(default)s)")
    parser.add_argument("--key", default=os.environ.get("GUMSHOE_KEY"),
                        help="API key, sent as a bearer token (default: $GUMSHOE_KEY)")
    parser.add_argument("--format", choices=FORMATS, default="table",
                        help="table (aligned, for a terminal; the default), csv, json or ndjson")
    parser.add_argument("--timeout", type=float, default=30.0, metavar="SECONDS",
                        help="per request (default: %(default)s)")
    return parser


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]
               ) -> argparse.ArgumentParser:
    """Add the `query` command to `gumshoe`'s subparsers; `args.func` is `run`."""
    parser = subparsers.add_parser(
        "query", help="run a JSON or SQL query against a server and print the rows",
        description=__doc__.split("\n\n")[0] if __doc__ else None,
        epilog="examples:\n  gumshoe query \"SELECT country, sum(clicks) FROM events GROUP BY "
               "1\"\n  gumshoe query --format csv '{\"groupings\": [\"country\"]}'\n"
               "  echo 'EXPLAIN SELECT count(*) FROM events' | gumshoe query -",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(parser)
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace, stdin: TextIO | None = None, stdout: TextIO | None = None,
        stderr: TextIO | None = None) -> int:
    """Run the query `args` describe; returns the exit status."""
    stdin, stdout, stderr = stdin or sys.stdin, stdout or sys.stdout, stderr or sys.stderr
    text = args.query
    if text is None or text == "-":
        if text is None and stdin.isatty():
            print("gumshoe query: give a QUERY, or - to read it from standard input",
                  file=stderr)
            return EXIT_USAGE
        text = stdin.read()
    query: dict[str, Any] | str = text
    if text.lstrip().startswith("{"):
        try:
            query = json.loads(text)
        except ValueError as e:
            print(f"gumshoe query: QUERY is not valid JSON: {e}", file=stderr)
            return EXIT_USAGE
    elif not text.strip():
        print("gumshoe query: the query is empty", file=stderr)
        return EXIT_USAGE
    client = Client(args.url, key=args.key, timeout=args.timeout, retries=2, backoff=0.2)
    try:
        if isinstance(query, str) and query.split(None, 1)[0].upper() == "EXPLAIN":
            stdout.write(json.dumps(client.explain(query), indent=2, ensure_ascii=False) + "\n")
        elif args.format == "table":
            rows = client.query(query)
            stdout.write(format_table(rows, _columns(rows, _shape(client, query))))
        else:
            stream = client.stream(query)
            first = next(stream, None)  # the query's own errors before the EXPLAIN's
            rows_iter = itertools.chain([first] if first is not None else [], stream)
            shape = _shape(client, query) if args.format == "csv" else query
            write_rows(rows_iter, shape, args.format, stdout)
    except GumshoeHTTPError as e:
        print(f"gumshoe query: error {e.status}: {e.message}", file=stderr)
        return EXIT_ERROR
    except GumshoeClientError as e:
        print(f"gumshoe query: {e}", file=stderr)
        return EXIT_ERROR
    except BrokenPipeError:  # `gumshoe query ... | head`
        _silence(stdout)
    return 0


def _shape(client: Client, query: dict[str, Any] | str) -> dict[str, Any]:
    """The JSON query that names the output columns in order: for SQL, the one EXPLAIN gives
    (one small request; the server's rows have sorted keys, not the select order)."""
    return client.explain(query) if isinstance(query, str) else query


def _silence(stdout: TextIO) -> None:
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, stdout.fileno())
    except (OSError, ValueError):
        pass


def _columns(rows: Iterable[dict[str, Any]], query: dict[str, Any] | str) -> list[str]:
    """Output columns: groupings, then aggregates and post-aggregations (in the JSON query's
    order when known, else the server's), then rowCount (always there for a JSON query)."""
    seen: dict[str, None] = {}
    if isinstance(query, dict):
        q = {k.lower(): v for k, v in query.items()}
        for g in q.get("groupings") or []:
            seen[g if isinstance(g, str) else _output_name(g)] = None
        for a in [*(q.get("aggregates") or []), *(q.get("postaggregations") or [])]:
            if isinstance(a, dict):
                seen[_output_name(a)] = None
    for row in rows:
        for key in row:
            seen.setdefault(key)
    names = [n for n in seen if n and n != ROW_COUNT]
    # every result row of a JSON query carries rowCount; of SQL, known only from the rows
    return [*names, ROW_COUNT] if ROW_COUNT in seen or isinstance(query, dict) else names


def _output_name(obj: Any) -> str:
    if not isinstance(obj, dict):
        return ""
    f = {k.lower(): v for k, v in obj.items()}
    return str(f.get("name") or f.get("column") or "")


def write_rows(rows: Iterator[dict[str, Any]], query: dict[str, Any] | str, fmt: str,
               out: TextIO) -> None:
    """Rows as csv (a header, then one line per row), json (an array) or ndjson."""
    if fmt == "ndjson":
        for row in rows:
            out.write(json.dumps(row, ensure_ascii=False) + "\n")
        return
    if fmt == "json":
        first = True
        out.write("[")
        for row in rows:
            out.write(("\n  " if first else ",\n  ") + json.dumps(row, ensure_ascii=False))
            first = False
        out.write("\n]\n" if not first else "]\n")
        return
    first_row = next(rows, None)
    columns = _columns([first_row] if first_row else [], query)
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(columns)
    if first_row is None:
        return
    for row in itertools.chain([first_row], rows):
        writer.writerow(["" if row.get(c) is None else _text(row.get(c)) for c in columns])


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)
    return str(value)


def _cell(value: Any) -> str:
    if value is None:
        return "null"
    text = _text(value)
    return text.replace("\\", "\\\\").replace("\n", "\\n").replace("\r", "\\r").replace(
        "\t", "\\t") if isinstance(value, str) else text


def _width(text: str) -> int:
    """Terminal columns `text` takes: wide East Asian characters take two."""
    return sum(2 if unicodedata.east_asian_width(c) in "WF" else
               0 if unicodedata.combining(c) else 1 for c in text)


def format_table(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> str:
    """An aligned table for a terminal: numbers right-aligned, strings left, nil as null,
    control characters escaped, then `(N rows)`."""
    count = f"({len(rows)} row{'' if len(rows) == 1 else 's'})\n"
    if not columns:
        return count
    cells = [[_cell(row.get(c)) for c in columns] for row in rows]
    numeric = [all(isinstance(row.get(c), (int, float)) and not isinstance(row.get(c), bool)
                   for row in rows if row.get(c) is not None) for c in columns]
    widths = [max([_width(c), *(_width(r[i]) for r in cells)]) for i, c in enumerate(columns)]

    def line(values: Sequence[str]) -> str:
        parts = []
        for i, v in enumerate(values):
            pad = " " * (widths[i] - _width(v))
            parts.append(pad + v if numeric[i] else v + pad)
        return " | ".join(parts).rstrip() + "\n"

    head = line(list(columns))
    rule = "-+-".join("-" * w for w in widths) + "\n"
    return head + rule + "".join(line(r) for r in cells) + count


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m gumshoe.querycli ...`: the same as `gumshoe query ...`."""
    parser = add_arguments(argparse.ArgumentParser(
        prog="gumshoe query", description=__doc__.split("\n\n")[0] if __doc__ else None))
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
