"""`gumtool balance`: re-shard a set of shard databases onto a new set of shards.

Imports gumshoe bulk and config, and gumtool's rewrite engine and transports. Every interval of
every source is read, rolled up across the sources, and each rolled-up row goes to the shard
`gumshoe.sharding.shard_of` gives it among the destinations (in --dest-db-configs order, which
must be the router's --shards order), so a router over the new shards answers as before and
keeps routing new rows of a key to the shard that holds it. Sources and destinations are local
paths or `host:/path` (fetched and uploaded with the system rsync over ssh, staged in
--workdir).
"""

from __future__ import annotations

import argparse
import contextlib
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

from gumshoe.bulk import BulkError, NewDB, StoredDB
from gumshoe.config import load_config
from gumshoe.schema import Schema

from .common import add_list, add_parallelism, add_quiet, note, progress_factory, say, split_list
from .rewrite import retention_cutoff, rewrite, same_columns
from .transport import LocalTransport, SshTransport, Transport, parse_location

HELP = "balance intervals amongst a set of GumshoeDB shards"
DESCRIPTION = """\
Re-shard the databases in --source-db-dirs onto new databases, one per config in
--dest-db-configs (each created at its config's database_dir, which must not exist yet). Each
rolled-up row goes to the destination the router's shard function picks, so list the
destination configs in the order the router's --shards will list the new shards. The sources
must share their columns and interval duration, and so must the destination configs; sources
are only read and must not be in use by a running server. Paths are local, or host:/path on
another machine: remote sources are copied with rsync over ssh (while flock'ed there) into
--workdir, remote destinations are built there and uploaded, then renamed into place."""
EXAMPLE = ("gumtool balance --source-db-dirs s0/db,s1/db "
           "--dest-db-configs n0.toml,n1.toml,n2.toml")


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_list(p, "--source-db-dirs", "source database directories: DIR or host:/DIR, "
             "comma-separated (repeatable)", "DIR,...")
    add_list(p, "--dest-db-configs", "configs of the new shards, in the router's shard order: "
             "FILE or host:/FILE, comma-separated (repeatable)", "CONFIG,...")
    p.add_argument("--workdir", metavar="DIR",
                   help="local staging directory for remote sources and destinations; must "
                   "not exist (default: a new temporary directory); removed at the end")
    p.add_argument("--username", metavar="USER", help="ssh user for host:/path locations")
    p.add_argument("--ssh-option", action="append", default=[], metavar="OPT",
                   help="an ssh -o option for host:/path locations, e.g. Port=2222 "
                   "(repeatable)")
    p.add_argument("--dry-run", action="store_true",
                   help="check sources and destinations and print the plan; write nothing")
    add_parallelism(p)
    add_quiet(p)


def make_transport(host: str | None, args: argparse.Namespace) -> Transport:
    if host is None:
        return LocalTransport()
    opts = [x for o in args.ssh_option for x in ("-o", o)]
    return SshTransport(host, username=args.username, ssh_options=opts)


def run(args: argparse.Namespace) -> int:
    sources = [parse_location(x) for x in split_list(args.source_db_dirs)]
    dests = [parse_location(x) for x in split_list(args.dest_db_configs)]
    if not sources:
        raise BulkError("need at least one dir in --source-db-dirs")
    if not dests:
        raise BulkError("need at least one config in --dest-db-configs")
    if len(set(sources)) != len(sources):
        raise BulkError("--source-db-dirs lists a database twice")
    transports: dict[str | None, Transport] = {}

    def transport(host: str | None) -> Transport:
        if host not in transports:
            transports[host] = make_transport(host, args)
        return transports[host]

    remote = any(h is not None for h, _ in sources + dests)
    if args.workdir:
        workdir = Path(args.workdir)
        if workdir.exists():
            raise BulkError(f"--workdir {str(workdir)!r} must not exist yet")
    else:
        workdir = Path(tempfile.mkdtemp(prefix="gumtool-balance-")) if remote else Path("")
    if remote:
        workdir.mkdir(parents=True, exist_ok=True)
    try:
        return _balance(args, sources, dests, transport, workdir)
    finally:
        if remote:
            shutil.rmtree(workdir, ignore_errors=True)


def _balance(args: argparse.Namespace, sources: list[tuple[str | None, str]],
             dests: list[tuple[str | None, str]], transport: Callable[[str | None], Transport],
             workdir: Path) -> int:
    # Destinations first: cheap checks before any copying.
    configs, schemas, places = [], [], []
    for k, (host, path) in enumerate(dests):
        t = transport(host)
        config = load_config(t.config(path, workdir / f"dest{k}" / "config.toml"))
        if config.in_memory:
            raise BulkError(f"{t.describe(path)}: database_dir is \"MEMORY\"; balance writes "
                            "databases to disk")
        place = (host, config.database_dir)
        if place in places:
            raise BulkError(f"--dest-db-configs: two configs share the database_dir "
                            f"{t.describe(config.database_dir)}")
        t.check_new(config.database_dir)
        configs.append(config)
        schemas.append(Schema.from_config(config.schema))
        places.append(place)
    for host, path in sources:
        for dhost, ddir in places:
            if host == dhost and Path(path).resolve() == Path(ddir).resolve():
                raise BulkError(f"{transport(host).describe(path)} is both a source and a "
                                "destination")
    if args.dry_run:
        say(f"balance plan: {len(sources)} source(s) -> {len(dests)} destination(s)")
        for host, path in sources:
            say(f"  source {transport(host).describe(path)}")
        for k, ((host, path), config) in enumerate(zip(dests, configs)):
            say(f"  shard {k}: {transport(host).describe(config.database_dir)} "
                f"(config {transport(host).describe(path)})")
    with contextlib.ExitStack() as stack:
        stored = []
        for i, (host, path) in enumerate(sources):
            t = transport(host)
            if args.dry_run and host is not None:
                say(f"  would copy {t.describe(path)} into {workdir / f'source{i}'}")
                continue
            local = t.source(path, workdir / f"source{i}")
            stored.append(stack.enter_context(StoredDB(local)))
        if stored:
            first = stored[0].schema
            for (host, path), db in zip(sources, stored):
                same_columns(db.schema, first, f"source {transport(host).describe(path)} vs "
                             f"source {transport(sources[0][0]).describe(sources[0][1])}")
            for (host, path), schema in zip(dests, schemas):
                same_columns(first, schema, f"sources vs destination config "
                             f"{transport(host).describe(path)}")
        if args.dry_run:
            say("dry run: nothing written")
            return 0
        outputs = []
        for k, ((host, _), config, schema) in enumerate(zip(dests, configs, schemas)):
            build = transport(host).destination(config.database_dir, workdir / f"dest{k}")
            outputs.append(stack.enter_context(NewDB(build, schema)))
        summary = rewrite(stored, outputs, [retention_cutoff(c) for c in configs],
                          args.parallelism, progress_factory(args.quiet))
        # Remote uploads first (the slow, failure-prone part), local renames last.
        order = sorted(range(len(dests)), key=lambda k: dests[k][0] is None)
        for k in order:
            host, _ = dests[k]
            outputs[k].commit()
            if host is not None:
                if not args.quiet:
                    note(f"balance: uploading shard {k} to "
                         f"{transport(host).describe(configs[k].database_dir)}")
                transport(host).upload(outputs[k].dest, configs[k].database_dir)
    say(f"balanced {len(sources)} source(s) ({summary.intervals_in} intervals, "
        f"{summary.input_rows_in} input rows) onto {len(dests)} shard(s) in "
        f"{summary.seconds:.1f}s:")
    for k, (iv, rows, inputs) in enumerate(summary.outputs):
        host, _ = dests[k]
        say(f"  shard {k}: {transport(host).describe(configs[k].database_dir)}: {iv} intervals, "
            f"{rows} rows ({inputs} input rows)")
    if summary.dropped_intervals or summary.dropped_input_rows:
        say(f"dropped {summary.dropped_intervals} intervals and {summary.dropped_input_rows} "
            "input rows outside the destinations' retention")
    say("done")
    return 0
