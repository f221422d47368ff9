"""`gumtool balance`: re-shard a set of shard databases onto a new set of shards.

Imports gumshoe bulk, config and schema, and gumtool's rewrite engine and transports. Every
interval of every source is read, rolled up across the sources, and each rolled-up row goes to
the shard `gumshoe.sharding.shard_of` gives it among the destinations (in --dest-db-configs
order, which must be the router's --shards order), so a router over the new shards answers as
before and keeps routing new rows of a key to the shard that holds it. Sources and
destinations are local paths or `host:/path` (fetched and uploaded with the system rsync over
ssh, staged in --workdir).

All or nothing: every destination is checked before any work (its parent directory exists, it
does not), every source is resolved (the same database listed twice, however spelled, is
refused) and inspected (not in use, metadata readable, columns matching) -- --dry-run stops
there. The new shards are built in hidden directories (local: beside the destination; remote:
uploaded to a hidden partial beside it) and renamed into place only when every one of them is
complete; if anything fails or the run is interrupted (Ctrl-C, SIGTERM) the partials, and any
shard already renamed into place by this run, are removed again.
"""

from __future__ import annotations

import argparse
import contextlib
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import cast

from gumshoe.bulk import BulkError, NewDB, StoredDB
from gumshoe.config import Config, load_config
from gumshoe.layout import Meta
from gumshoe.schema import Schema

from .common import add_list, add_parallelism, add_quiet, note, progress_factory, say, split_list
from .rewrite import last_updated, retention_cutoff, rewrite, same_columns
from .transport import LocalTransport, Place, SshTransport, Transport, parse_location

HELP = "balance intervals amongst a set of GumshoeDB shards"
DESCRIPTION = """\
Re-shard the databases in --source-db-dirs onto new databases, one per config in
--dest-db-configs (each created at its config's database_dir, which must not exist yet while
its parent directory must). Each rolled-up row goes to the destination the router's shard
function picks, so list the destination configs in the order the router's --shards will list
the new shards. The sources must share their columns and interval duration, and so must the
destination configs; sources are only read and must not be in use by a running server. Paths
are local, or host:/path on another machine: remote sources are copied with rsync over ssh
(while flock'ed there) into --workdir, remote destinations are built there and uploaded. Every
check runs before any work (--dry-run runs only the checks); the new shards appear only when
all of them are complete (a failure or Ctrl-C removes them all)."""
EXAMPLE = "gumtool balance --source-db-dirs s0,s1 --dest-db-configs n0.toml,n1.toml,n2.toml"


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
                   help="check sources and destinations (remote ones too) and print the "
                   "plan; write nothing")
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


def _check(args: argparse.Namespace, sources: list[tuple[str | None, str]],
           dests: list[tuple[str | None, str]], transport: Callable[[str | None], Transport],
           workdir: Path) -> tuple[list[Config], list[Schema], list[Meta]]:
    """Every check that needs no copy: destinations (configs, new, parent exists, distinct),
    sources (exist, distinct, not a destination, not in use, metadata, columns)."""
    configs, schemas = [], []
    places: dict[Place, str] = {}
    for k, (host, path) in enumerate(dests):
        t = transport(host)
        config = load_config(t.config(path, workdir / f"dest{k}" / "config.toml"))
        where = t.describe(config.database_dir)
        if config.in_memory:
            raise BulkError(f"{t.describe(path)}: database_dir is \"MEMORY\"; balance writes "
                            "databases to disk")
        place = t.check_new(config.database_dir)
        if place in places:
            raise BulkError(f"--dest-db-configs: two configs share the database_dir {where} "
                            f"(also {places[place]})")
        places[place] = where
        configs.append(config)
        schemas.append(Schema.from_config(config.schema))
    seen: dict[Place, str] = {}
    for host, path in sources:
        t = transport(host)
        place = t.identify(path)
        if place in seen:
            raise BulkError(f"--source-db-dirs lists one database twice: {t.describe(path)} is "
                            f"{seen[place]} (each source is read once)")
        if place in places:
            raise BulkError(f"{t.describe(path)} is both a source and a destination")
        seen[place] = t.describe(path)
    metas = [transport(host).inspect(path) for host, path in sources]
    first = transport(sources[0][0]).describe(sources[0][1])
    for (host, path), meta in zip(sources, metas):
        same_columns(meta.schema, metas[0].schema,
                     f"source {transport(host).describe(path)} vs source {first}")
    for (host, path), schema in zip(dests, schemas):
        same_columns(metas[0].schema, schema,
                     f"sources vs destination config {transport(host).describe(path)}")
    return configs, schemas, metas


def _balance(args: argparse.Namespace, sources: list[tuple[str | None, str]],
             dests: list[tuple[str | None, str]], transport: Callable[[str | None], Transport],
             workdir: Path) -> int:
    configs, schemas, metas = _check(args, sources, dests, transport, workdir)
    if args.dry_run:
        say(f"balance plan: {len(sources)} source(s) -> {len(dests)} destination(s)")
        for (host, path), meta in zip(sources, metas):
            say(f"  source {transport(host).describe(path)}: {len(meta.intervals)} flushed "
                "interval(s), not in use")
        for k, ((host, path), config) in enumerate(zip(dests, configs)):
            say(f"  shard {k}: {transport(host).describe(config.database_dir)} "
                f"(config {transport(host).describe(path)})")
        say("dry run: nothing written")
        return 0
    with contextlib.ExitStack() as stack:
        stored = []
        for i, (host, path) in enumerate(sources):
            local = transport(host).source(path, workdir / f"source{i}")
            stored.append(stack.enter_context(StoredDB(local)))
        for (host, path), db in zip(sources, stored):  # the copies, as inspected
            same_columns(db.schema, schemas[0], f"source {transport(host).describe(path)} vs "
                         "the destination configs")
        outputs = []
        for k, ((host, _), config, schema) in enumerate(zip(dests, configs, schemas)):
            build = transport(host).destination(config.database_dir, workdir / f"dest{k}")
            outputs.append(stack.enter_context(NewDB(build, schema)))
            outputs[-1].last_updated = last_updated(stored)
        summary = rewrite(stored, outputs, [retention_cutoff(c) for c in configs],
                          args.parallelism, progress_factory(args.quiet))
        _publish(args, dests, configs, outputs, transport)
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


def _publish(args: argparse.Namespace, dests: list[tuple[str | None, str]],
             configs: list[Config], outputs: list[NewDB],
             transport: Callable[[str | None], Transport]) -> None:
    """Finish every shard, upload the remote ones to hidden partials, then rename them all
    into place; on any failure or interrupt, remove the partials and what was renamed."""
    partials: dict[int, str] = {}
    published: list[int] = []
    try:
        for out in outputs:
            out.finish()
        for k, (host, _) in enumerate(dests):
            if host is not None:
                if not args.quiet:
                    note(f"balance: uploading shard {k} to "
                         f"{transport(host).describe(configs[k].database_dir)}")
                t = cast(SshTransport, transport(host))
                partials[k] = t.upload(outputs[k].tmp, configs[k].database_dir)
        for k, (host, _) in enumerate(dests):  # every shard is complete: rename them in
            if host is None:
                outputs[k].publish()
            else:
                cast(SshTransport, transport(host)).publish(partials[k],
                                                            configs[k].database_dir)
            published.append(k)
    except BaseException:
        left = []
        for k in published:
            host, _ = dests[k]
            where = configs[k].database_dir
            if host is None:
                shutil.rmtree(where, ignore_errors=True)
                if Path(where).exists():
                    left.append(where)
            elif not cast(SshTransport, transport(host)).remove(where):
                left.append(transport(host).describe(where))
        for k, tmp in partials.items():
            host, _ = dests[k]
            if k not in published and not cast(SshTransport, transport(host)).remove(tmp):
                left.append(transport(host).describe(tmp))
        placed = set(partials) | set(published)
        if placed:
            note(f"balance: removing the {len(placed)} shard(s) this run had uploaded or "
                 "renamed into place: no new database is left behind")
        if left:
            note("balance: could not remove (delete by hand): " + ", ".join(left))
        raise
