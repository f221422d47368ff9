"""The `gumshoe` command: `gumshoe serve [--config PATH] [--listen HOST:PORT] [--db DIR]` and
`gumshoe router --config PATH --shards HOST:PORT,... [--listen HOST:PORT]` and
`gumshoe funnel --config PATH --upstream URL,... [--listen HOST:PORT]`.

Imports config, db, errors and server (which owns uvicorn). The listening socket is bound and the
database opened (and locked) before uvicorn starts, so a port in use, a locked directory or a
bad config is a one-line error with exit status 2. SIGTERM/SIGINT stop the server: the app's
shutdown flushes and closes the database, and the process exits 0.
"""

from __future__ import annotations

import argparse
import logging
import os
import resource
import signal
import socket
import sys
from collections.abc import Callable
from types import FrameType

from .config import Config, format_duration, load_config
from .errors import ConfigError, GumshoeError
from .schema import Schema

log = logging.getLogger("gumshoe")

EXIT_USAGE = 2  # bad config, locked database, port in use (and argparse's usage errors)
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class StartupError(Exception):
    """A fatal start-up problem, reported as one line and exit status 2."""


def parse_listen(addr: str) -> tuple[str, int]:
    """Go-style "host:port": ":9000" and "" (port 80) mean every interface, "[::1]:9000" is
    IPv6. Raises ConfigError naming the address."""
    if addr == "":
        return "0.0.0.0", 80
    host, sep, port_text = addr.rpartition(":")
    if sep and port_text.isdigit() and int(port_text) > 65535:
        raise ConfigError(f"listen address {addr!r}: port {int(port_text)} out of range "
                          "(0-65535)")
    if not sep or not port_text.isdigit():
        raise ConfigError(f"listen address {addr!r}: expected HOST:PORT (e.g. 127.0.0.1:9000, "
                          "or :9000 for every interface)")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host or "0.0.0.0", int(port_text)


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket. Created with proto=IPPROTO_TCP so that asyncio sets TCP_NODELAY
    on accepted connections (it checks the proto; socket.create_server leaves it 0, and Nagle
    plus delayed ACKs then add ~40 ms to every response)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(2048)
    except OSError as e:
        sock.close()
        reason = os.strerror(e.errno) if e.errno else str(e)
        raise StartupError(f"cannot listen on {host}:{port}: {reason}") from None
    return sock


def raise_open_file_limit(limit: int) -> None:
    """The original's open_file_limit: raise the soft RLIMIT_NOFILE (failure only logged)."""
    if limit <= 0:
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = limit if hard == resource.RLIM_INFINITY else min(limit, hard)
    if target > soft:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (OSError, ValueError) as e:
            log.warning("could not raise RLIMIT_NOFILE to %d: %s", limit, e)


def load_serve_config(args: argparse.Namespace) -> Config:
    config = load_config(args.config)
    if args.listen is not None:
        config = config.replace(listen_addr=args.listen)
    if args.db is not None:
        config = config.replace(database_dir=args.db)
    return config


def check_database(config: Config) -> None:
    """Fail now, in one line, when the database directory is held by another process or its
    metadata is damaged or of another schema. The rest of opening (segments, dictionaries,
    the write-ahead log's replay) runs in the background once the server listens."""
    from .layout import DirLock, LayoutError, read_meta

    if config.in_memory or not os.path.isdir(config.database_dir):
        return  # in memory, or created at open
    try:
        with DirLock(config.database_dir) as lock:
            meta = read_meta(lock.path)
    except FileNotFoundError:
        return  # no db.json yet: a new database
    except LayoutError:
        return  # reported by the open itself
    meta.schema.check_same(Schema.from_config(config.schema),
                           hint=" (use `gumtool migrate` to change the schema)")


def banner(config: Config, what: str) -> None:
    """The start-up lines: version, native kernels, schema, durability, retention, keys."""
    from . import native

    log.info("gumshoe %s %s, Python %s", version(), what, sys.version.split()[0])
    if native.kernels is None or native.rows is None:
        log.warning("THE C KERNELS DID NOT LOAD (%s): queries run 3-5x slower and inserts "
                    "1.5-2x slower on the numpy paths; reinstall with a C compiler "
                    "(`pip install -e .`)", native.why_missing() or "GUMSHOE_NATIVE=0")
    else:
        log.info("C kernels loaded (scan, filter and insert paths)")
    schema = Schema.from_config(config.schema)
    log.info("schema: timestamp %s, dimensions %s, metrics %s, intervals of %s",
             schema.timestamp.name,
             ", ".join(f"{c.name}:{c.type_name}" for c in schema.dimensions) or "none",
             ", ".join(f"{c.name}:{c.type_name}" for c in schema.metrics),
             format_duration(schema.interval_duration))
    log.info("durability %s, retention %s, flush every %s", config.durability,
             f"{config.retention_days} days" if config.retention_days else "off (keep all)",
             format_duration(config.flush_interval))


def warn_if_open(config: Config, host: str) -> None:
    loopback = host in ("127.0.0.1", "::1", "localhost") or host.startswith("127.")
    if config.auth.enabled:
        log.info("API keys are on ([auth])")
    elif not loopback:
        log.warning("listening on %s without API keys: anyone who reaches the port can insert "
                    "and query; set [auth] keys (see README, API keys)", host)


def serve(args: argparse.Namespace) -> int:
    from .db import DB  # imported here: `gumshoe --help` stays fast
    from .collect import validate
    from .httpserve import run
    from .server import create_app

    try:
        config = load_serve_config(args)
        validate(config, Schema.from_config(config.schema))  # bad schema or [collect]
        host, port = parse_listen(config.listen_addr)
        raise_open_file_limit(config.open_file_limit)
        check_database(config)
        sock = bind(host, port)
    except (GumshoeError, StartupError) as e:
        return fail(str(e))
    banner(config, "serve")
    warn_if_open(config, host)
    # A thread that wants the GIL waits up to this long for a running one to give it up
    # (default 5 ms). An insert takes and drops the GIL dozens of times; while a heavy query
    # finishes its rows in Python, every re-take waited 5 ms. 0.5 ms keeps inserts fast.
    sys.setswitchinterval(float(os.environ.get("GUMSHOE_SWITCH_INTERVAL", "0.0005")))
    try:
        # The database opens in the background (write-ahead log replay can take a while);
        # meanwhile every route but GET / answers 503 "starting".
        app = create_app(None, config, insert_workers=args.insert_workers, listen_host=host,
                         open_db=lambda progress: DB(
                             config, replay_progress=lambda p: progress(p.describe())))
        bound_host, bound_port = sock.getsockname()[:2]
        log.info("serving %s on http://%s:%d", config.database_dir, bound_host, bound_port)
        with _quiet_signals():
            started = run(app, sock, config)
    finally:
        sock.close()
    server = app.state.server
    if server.startup_error is not None:
        return fail(server.startup_error)
    if server.db is not None and server.db.failed:
        log.error("stopped after a storage failure: %s", server.db.failed)
        return 1
    if not started:
        return fail("the server failed to start (see the log above)", status=1)
    return 0


def route(args: argparse.Namespace) -> int:
    from .httpserve import run
    from .router import create_router_app

    try:
        config = load_config(args.config)
        Schema.from_config(config.schema)
        shards = [s.strip() for s in args.shards.split(",")]
        for s in shards:
            parse_listen(s)
        host, port = parse_listen(args.listen)
        app = create_router_app(config, shards, timeout=args.timeout, listen_host=host)
        sock = bind(host, port)
    except (ConfigError, StartupError) as e:
        return fail(str(e))
    banner(config, "router")
    warn_if_open(config, host)
    try:
        log.info("router on http://%s:%d over %d shards: %s", *sock.getsockname()[:2],
                 len(shards), ", ".join(shards))
        with _quiet_signals():
            started = run(app, sock, config)
    finally:
        sock.close()
    return 0 if started else fail("the router failed to start (see the log above)", status=1)


def funnel(args: argparse.Namespace) -> int:
    from .funnel import create_funnel_app
    from .httpserve import run

    try:
        config = load_config(args.config)
        Schema.from_config(config.schema)
        host, port = parse_listen(args.listen)
        app = create_funnel_app(config, args.upstream.split(","), listen_host=host)
        sock = bind(host, port)
    except (ConfigError, StartupError, GumshoeError) as e:
        return fail(str(e))
    banner(config, "funnel")
    warn_if_open(config, host)
    try:
        f = app.state.funnel
        log.info("funnel %s on http://%s:%d, spool in %s, forwarding to %s", f.spool.funnel,
                 *sock.getsockname()[:2], f.spool.dir, ", ".join(u.url for u in f.upstreams))
        with _quiet_signals():
            started = run(app, sock, config)
    finally:
        sock.close()
    return 0 if started else fail("the funnel failed to start (see the log above)", status=1)


class _quiet_signals:
    """uvicorn handles SIGINT/SIGTERM (graceful shutdown) and then re-raises the signal with
    the previous handler in place; make that handler a no-op so a requested stop exits 0."""

    def __enter__(self) -> None:
        self.saved: dict[int, Callable[[int, FrameType | None], object] | int | None] = {}
        for sig in (signal.SIGINT, signal.SIGTERM):
            self.saved[sig] = signal.signal(sig, _ignore)

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self.saved.items():
            signal.signal(sig, handler if handler is not None else signal.SIG_DFL)


def _ignore(signum: int, frame: FrameType | None) -> None:
    log.info("received %s; stopped", signal.Signals(signum).name)


def fail(message: str, status: int = EXIT_USAGE) -> int:
    print(f"gumshoe: error: {message}", file=sys.stderr)
    return status


def version() -> str:
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as dist_version

    try:
        return dist_version("gumshoe")
    except PackageNotFoundError:
        return "unknown"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gumshoe", description="gumshoe: a columnar roll-up analytics database server.")
    parser.add_argument("--version", action="version", version=f"gumshoe {version()}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    p = commands.add_parser("serve", help="run one shard server in the foreground",
                            description="Run one shard server in the foreground. Flags "
                            "override the config file; SIGTERM/SIGINT flush and exit.")
    p.add_argument("--config", metavar="PATH",
                   help="config file (default: the embedded default config)")
    p.add_argument("--listen", metavar="HOST:PORT",
                   help="listen address (default from the config: 127.0.0.1:9000; "
                   ":PORT means every interface)")
    p.add_argument("--db", metavar="DIR", help="database directory, or MEMORY")
    p.add_argument("--insert-workers", metavar="N", type=int, default=None,
                   help="processes that decode large JSON insert bodies (default: one per "
                   "core, none on one core; 0: decode in the server process)")
    p.add_argument("--log-level", default="info",
                   choices=["debug", "info", "warning", "error"], help="default: info")
    p.set_defaults(func=serve)
    r = commands.add_parser("router", help="run a router in front of shard servers",
                            description="Run a router in the foreground: inserts are sharded "
                            "by roll-up key, queries fan out to every shard and are merged.")
    r.add_argument("--config", metavar="PATH", required=True,
                   help="config file (only its schema and limits are used)")
    r.add_argument("--shards", metavar="HOST:PORT,...", required=True,
                   help="comma-separated shard server addresses")
    r.add_argument("--listen", metavar="HOST:PORT", default="127.0.0.1:9090",
                   help="listen address (default 127.0.0.1:9090)")
    r.add_argument("--timeout", metavar="SECONDS", type=float, default=30.0,
                   help="per-request shard timeout (default 30)")
    r.add_argument("--log-level", default="info",
                   choices=["debug", "info", "warning", "error"], help="default: info")
    r.set_defaults(func=route)
    f = commands.add_parser("funnel", help="run a funnel: collect events, spool, forward",
                            description="Run a funnel in the foreground: it serves the collect "
                            "routes and PUT /insert, spools accepted events under the "
                            "config's database_dir and forwards them in batches upstream.")
    f.add_argument("--config", metavar="PATH", required=True,
                   help="config file (schema, [collect], [funnel], database_dir for the spool)")
    f.add_argument("--upstream", metavar="URL,...", required=True,
                   help="router or server URL(s); several are tried in turn (all must be "
                   "routers of the same shards, or the same server)")
    f.add_argument("--listen", metavar="HOST:PORT", default="127.0.0.1:9100",
                   help="listen address (default 127.0.0.1:9100)")
    f.add_argument("--log-level", default="info",
                   choices=["debug", "info", "warning", "error"], help="default: info")
    f.set_defaults(func=funnel)

    from . import querycli  # the client, standard library only: cheap to import

    querycli.add_parser(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    logging.basicConfig(level=getattr(args, "log_level", "warning").upper(), format=LOG_FORMAT,
                        stream=sys.stderr)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
