"""`gumtool import`: bulk-import JSON lines or CSV files (plain, .gz, .zst, stdin) into a
stopped database directory, or into a running server or router with `--url`.

Imports gumshoe config, schema and bulk (the directory lock), tqdm, and the gumtool import_*
modules: mapping (what a record means), sources and tasks (files -> chunks, resuming),
worker (parallel parsing), rows (columns, rules, roll-up), rules (km-db's ignore list,
whitelist and aliases), sinks (database or HTTP) and checkpoint (exactly-once re-runs).

The main process plans chunks, and applies the workers' results in input order; it moves the
checkpoint only once what it records is durable. With alias records (the kissmetrics preset),
a first pass reads every input once for them and resolves them before any row is imported:
reading the input twice is the price of re-mapping rows that come before their alias record.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

from tqdm import tqdm

from gumshoe.layout import DirLock
from gumshoe.config import load_config, parse_size
from gumshoe.schema import Schema

from .import_checkpoint import NAME, Checkpoint
from .import_mapping import (
    PRESETS,
    ImportFailed,
    Mapping,
    Plan,
    check_string_target,
    kissmetrics,
    load_mapping,
    resolve,
)
from .import_rows import REASONS
from .import_rules import Rules, make_rules, resolve_aliases
from .import_sinks import DBSink, HTTPSink
from .import_sources import FORMATS, Source, expand
from .import_tasks import Planner
from .import_worker import Pipeline, aliases, empty_result, keep_freed_memory, parse

HELP = "import JSON lines or CSV files (e.g. KISSmetrics exports) into a database"
DESCRIPTION = """\
Import events from FILES (JSON lines or CSV; plain, .gz or .zst; `-` for stdin; globs and
directories) into the database of --config, which must not be in use (the directory lock),
or with --url into a running server or router (PUT /insert). --mapping says which source
field fills which column (see the README); --preset kissmetrics reads KISSmetrics exports.
A bad line is reported as FILE:LINE and skipped (--strict stops there). An interrupted import
(Ctrl-C, kill -9, a crash) re-run with the same arguments imports each line exactly once: the
checkpoint (import.checkpoint.json in the database directory) records how far each file got,
and batch ids derived from file and offset cover the rest."""
EXAMPLE = "gumtool import --config config.toml --preset kissmetrics exports/*.json.gz"
SHOW_BAD = 100  # bad lines printed; the summary counts them all


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", required=True, metavar="CONFIG",
                   help="config (TOML): the schema, and the database_dir to import into")
    p.add_argument("files", nargs="+", metavar="FILES",
                   help="input files, globs, directories, or - for stdin")
    p.add_argument("--mapping", metavar="M.toml", help="source field -> column mapping")
    p.add_argument("--preset", choices=PRESETS, help="a built-in mapping")
    p.add_argument("--event-column", default="event", metavar="COLUMN",
                   help="kissmetrics: the string column for the event name _n (default event)")
    p.add_argument("--identity-column", metavar="COLUMN",
                   help="kissmetrics: a string column to store the (canonical) identity _p in")
    p.add_argument("--ignore-users", metavar="FILE",
                   help="identities (one a line) whose events are skipped")
    p.add_argument("--only-events", metavar="FILE",
                   help="event names (one a line) to keep; an empty file keeps every event")
    p.add_argument("--format", choices=FORMATS,
                   help="input format when the file names do not tell (stdin: jsonl)")
    p.add_argument("--url", metavar="http://HOST:PORT",
                   help="send to a running server or router instead of writing the database")
    p.add_argument("--key", metavar="KEY", help="API key for --url (Authorization: Bearer)")
    p.add_argument("--checkpoint", metavar="PATH",
                   help=f"the checkpoint file (default: {NAME} in the database directory; "
                        "with --url, .gumtool-import.HOST_PORT.json here)")
    p.add_argument("--parallelism", type=_positive, default=os.cpu_count() or 1, metavar="N",
                   help="worker processes parsing chunks (default: the number of cores)")
    p.add_argument("--chunk-size", default="16MB", metavar="SIZE",
                   help="bytes of input per chunk and batch (default 16MB; with --url 4MB)")
    p.add_argument("--flush-rows", type=_positive, default=10_000_000, metavar="N",
                   help="flush the database (and move the checkpoint) every N imported rows")
    p.add_argument("--strict", action="store_true", help="stop at the first bad line")
    p.add_argument("--json", action="store_true", help="print the summary as one JSON object")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress display")


def _positive(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if n < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return n


def build_plan(args: argparse.Namespace, schema: Schema) -> Plan:
    mapping = load_mapping(args.mapping) if args.mapping else Mapping()
    if args.preset == "kissmetrics":
        mapping = mapping.over(kissmetrics(args.event_column, args.identity_column))
    elif args.identity_column:
        raise ImportFailed("--identity-column is for --preset kissmetrics (a mapping names "
                           "the identity field in `identity` and maps it in [columns])")
    if args.preset == "kissmetrics":
        check_string_target(schema, args.event_column, "--event-column")
        if args.identity_column:
            check_string_target(schema, args.identity_column, "--identity-column")
    plan = resolve(mapping, schema, args.mapping or "mapping")
    if args.ignore_users and plan.identity is None:
        raise ImportFailed("--ignore-users needs an identity field: `identity = \"FIELD\"` in "
                           "the mapping, or --preset kissmetrics")
    if args.only_events and plan.event is None:
        raise ImportFailed("--only-events needs an event field: `event = \"FIELD\"` in the "
                           "mapping, or --preset kissmetrics")
    return plan


def check_header(plan: Plan, src: Source) -> None:
    """A CSV header must name the timestamp field, and (unknown = "error") nothing else
    than mapped, dropped or same-named fields."""
    header = src.header or []
    if plan.timestamp_field not in header:
        raise ImportFailed(f"{src.name}:1: no timestamp field {plan.timestamp_field!r} in the "
                           "CSV header")
    if plan.unknown == "error":
        known = set(plan.fields) | plan.drop
        for f in header:
            if f not in known:
                raise ImportFailed(f"{src.name}:1: unknown field {f!r} (not mapped, not "
                                   "dropped, and no column of that name; unknown = \"error\")")


def options_digest(plan: Plan, rules: Rules) -> str:
    h = hashlib.blake2b(plan.describe().encode(), digest_size=12)
    h.update(json.dumps([sorted(rules.aliases.items()), sorted(rules.ignored),
                         sorted(rules.only_events) if rules.only_events is not None else None]
                        ).encode())
    return h.hexdigest()


class Summary:
    def __init__(self) -> None:
        self.counts: dict[str, int] = {"lines": 0, "records": 0, "imported": 0,
                                       **dict.fromkeys(REASONS, 0), "outside retention": 0,
                                       "already imported": 0}
        self.files = 0
        self.chunks = 0
        self.t0 = time.monotonic()

    def to_json(self, planner: Planner) -> dict[str, Any]:
        seconds = time.monotonic() - self.t0
        c = self.counts
        return {"imported": c["imported"], "lines": c["lines"], "records": c["records"],
                "skipped": {k: c[k] for k in (*REASONS, "outside retention",
                                              "already imported")},
                "files": self.files, "files_already_imported": planner.skipped_files,
                "chunks": self.chunks, "seconds": round(seconds, 3),
                "rows_per_second": round(c["records"] / seconds) if seconds > 0 else 0}

    def lines(self, planner: Planner, retention: int | None) -> list[str]:
        j = self.to_json(planner)
        out = [(f"imported {j['imported']:,} rows from {self.files} files "
                f"({j['records']:,} records, {self.chunks} chunks) in {j['seconds']:.1f}s "
                f"({j['rows_per_second']:,} records/s)")]
        skipped = [f"{n:,} {k}" for k, n in j["skipped"].items() if n]
        out.append("skipped: " + (", ".join(skipped) if skipped else "none"))
        if j["skipped"]["outside retention"] and retention:
            out.append(f"(retention_days = {retention} in the config: set it to 0 to keep "
                       "old events)")
        if planner.skipped_files:
            out.append(f"{planner.skipped_files} files were imported before and are unchanged")
        return out


def run(args: argparse.Namespace) -> int:
    keep_freed_memory()
    config = load_config(args.config)
    schema = Schema.from_config(config.schema)
    plan = build_plan(args, schema)
    sources = expand(args.files, args.format)
    chunk_size = parse_size(args.chunk_size if args.chunk_size != "16MB" or not args.url
                            else "4MB", "--chunk-size")
    sink: DBSink | HTTPSink
    if args.url:
        sink = HTTPSink(args.url, args.key)
        ckpt_path = Path(args.checkpoint or
                         f".gumtool-import.{sink.host}_{sink.port or 80}.json")
    else:
        if config.in_memory:
            raise ImportFailed(f"{args.config}: database_dir is \"MEMORY\"; import writes a "
                               "database directory (or use --url)")
        sink = DBSink(config)
        if sink.directory.exists():  # fail fast (before a long first pass) when it is in use
            DirLock(sink.directory).release()
        ckpt_path = Path(args.checkpoint) if args.checkpoint else sink.directory / NAME
    checkpoint = Checkpoint(ckpt_path)
    planner = Planner(sources, checkpoint, chunk_size, "",
                      check_header=lambda src: check_header(plan, src))
    summary = Summary()
    tqdm.monitor_interval = 0  # no monitor thread: the workers are forked after this
    bar = tqdm(total=sum(s.size or 0 for s in sources) or None, unit="B", unit_scale=True,
               unit_divisor=1024, file=sys.stderr, disable=True if args.quiet else None,
               dynamic_ncols=True, mininterval=0.25, desc="import")
    try:
        found: dict[str, str] = {}
        if plan.alias is not None:
            found = _alias_pass(args, plan, planner, bar)
        rules = make_rules(found, args.ignore_users, args.only_events)
        planner.options = options_digest(plan, rules)
        planner.seq = 0
        return _import(args, plan, rules, planner, sink, checkpoint, summary, bar,
                       config.retention_days)
    finally:
        bar.close()


def _alias_pass(args: argparse.Namespace, plan: Plan, planner: Planner, bar: Any
                ) -> dict[str, str]:
    bar.set_description("aliases (pass 1 of 2)")
    left: list[str] = []
    right: list[str] = []
    pipe = Pipeline(args.parallelism, plan, None, "aliases")
    seen: dict[int, int] = {}
    try:
        for task, (a, b) in pipe.run(aliases, planner.alias_tasks()):
            left += a
            right += b
            bar.update(task.raw_done - seen.get(task.source, 0))
            seen[task.source] = task.raw_done
    finally:
        pipe.close()
    bar.reset()
    bar.set_description("import (pass 2 of 2)")
    return resolve_aliases(left, right)


def _import(args: argparse.Namespace, plan: Plan, rules: Rules, planner: Planner,
            sink: DBSink | HTTPSink, checkpoint: Checkpoint, summary: Summary, bar: Any,
            retention: int) -> int:
    pipe = Pipeline(args.parallelism, plan, rules, "http" if args.url else "db")
    sources = planner.sources
    shown = 0
    since_flush = 0
    lines_at: dict[int, int] = {}
    raw_seen: dict[int, int] = {}
    rows_per_s = 0.0
    interrupted = False
    c = summary.counts
    stop = Deferred()
    try:
        sink.open()  # after the workers are forked: none of them holds the directory lock
        for task, result in pipe.run(parse, planner.tasks(),
                                     lambda t: empty_result() if t.data == b"" else None):
            stop.check()  # Ctrl-C/SIGTERM take effect here, never half-way through a batch
            src = sources[task.source]
            if task.line < 0:
                task.line = lines_at[task.source]
            lines_at[task.source] = task.line + result.n_lines
            for idx, msg in result.bad:
                if shown < SHOW_BAD:
                    print(f"{src.name}:{task.line + idx + 1}: {msg}", file=sys.stderr)
                shown += 1
            if args.strict and result.counts[REASONS[0]]:
                idx, msg = result.bad[0] if result.bad else (0, "bad line")
                raise ImportFailed(
                    f"{src.name}:{task.line + idx + 1}: {msg}: stopped (--strict). The lines "
                    f"before line {task.line + 1} of this file are imported; fix the file and "
                    "re-run with the same arguments to go on from there")
            where = f"{src.name}:{task.line + 1}-{task.line + result.n_lines}"
            out = sink.apply(result.payload, task.batch_id, where,
                             result.imported)
            for k, v in (*result.counts.items(), *out.items()):
                c[k] += v
            c["lines"] += result.n_lines
            c["records"] += result.records
            summary.chunks += 1
            summary.files += task.last
            planner.record(task, result.n_lines)
            since_flush += result.imported
            if args.url or since_flush >= args.flush_rows:
                sink.durable()
                checkpoint.save()
                since_flush = 0
            bar.update(max(0, task.raw_done - raw_seen.get(task.source, 0)))
            raw_seen[task.source] = task.raw_done
            elapsed = time.monotonic() - summary.t0
            rows_per_s = c["records"] / elapsed if elapsed > 0 else 0.0
            bar.set_postfix_str(f"{c['imported']:,} rows, {rows_per_s:,.0f} rows/s",
                                refresh=False)
    except KeyboardInterrupt:
        interrupted = True
    except BaseException:
        pipe.close()
        try:
            _finish(sink, checkpoint)
        finally:
            stop.restore()
        raise
    pipe.close()
    try:
        if interrupted or stop.signalled:
            _finish(sink, checkpoint)
            bar.close()
            print(f"gumtool import: interrupted; {c['imported']:,} rows are imported and "
                  "recorded in the checkpoint: re-run with the same arguments to go on",
                  file=sys.stderr)
            return 130
        try:
            sink.durable()
            checkpoint.save(fsync=True)
        finally:
            sink.close()
    finally:
        stop.restore()
    bar.close()
    if shown > SHOW_BAD:
        print(f"... and {shown - SHOW_BAD} more bad lines", file=sys.stderr)
    for note in planner.notes:
        print(f"gumtool import: {note}", file=sys.stderr)
    if args.json:
        print(json.dumps(summary.to_json(planner)))
    else:
        for line in summary.lines(planner, retention):
            print(line)
    return 0


class Deferred:
    """SIGINT and SIGTERM set a flag that the import loop checks between batches (a batch is
    applied whole or not at all; an interrupt inside `DB.insert_batch` could leave it half
    applied with its batch id remembered). Restores the previous handlers."""

    def __init__(self) -> None:
        self.signalled = False
        self.old: dict[int, Any] = {}
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self.old[sig] = signal.signal(sig, self._handle)

    def _handle(self, signum: int, frame: object) -> None:
        self.signalled = True

    def check(self) -> None:
        if self.signalled:
            raise KeyboardInterrupt

    def restore(self) -> None:
        for sig, handler in self.old.items():
            signal.signal(sig, handler)
        self.old = {}


def _finish(sink: DBSink | HTTPSink, checkpoint: Checkpoint) -> None:
    """After an error or an interrupt: make what was applied durable and record it."""
    try:
        sink.durable()
        checkpoint.save(fsync=True)
    except Exception as e:  # noqa: BLE001 (the original error matters more; the checkpoint stays behind)
        print(f"gumtool import: could not record progress ({e}); a re-run repeats the "
              "unrecorded chunks, and their batch ids keep them from counting twice",
              file=sys.stderr)
    finally:
        sink.close()

