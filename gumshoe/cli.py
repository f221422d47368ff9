"""The `gumshoe` command: `gumshoe serve [--config PATH] [--listen HOST:PORT] [--db DIR]` and
`gumshoe router --config PATH --shards HOST:PORT,... [--listen HOST:PORT]`.

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

from .config import Config, load_config
from .errors import ConfigError, GumshoeError

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
    if not sep or not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
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


def serve(args: argparse.Namespace) -> int:
    from .db import DB  # imported here: `gumshoe --help` stays fast
    from .server import create_app, run

    try:
        config = load_serve_config(args)
        host, port = parse_listen(config.listen_addr)
        raise_open_file_limit(config.open_file_limit)
        sock = bind(host, port)
    except (ConfigError, StartupError) as e:
        return fail(str(e))
    try:
        db = DB(config, auto_flush=False)
    except (GumshoeError, OSError) as e:
        sock.close()
        return fail(str(e))
    try:
        app = create_app(db, config, insert_workers=args.insert_workers)
        bound_host, bound_port = sock.getsockname()[:2]
        log.info("gumshoe serving %s on http://%s:%d", config.database_dir, bound_host,
                 bound_port)
        with _quiet_signals():
            started = run(app, sock)
    finally:
        db.close()  # idempotent: the app's shutdown normally did it already
        sock.close()
    if db.failed:
        log.error("stopped after a storage failure: %s", db.failed)
        return 1
    if not started:
        return fail("the server failed to start (see the log above)", status=1)
    return 0


def route(args: argparse.Namespace) -> int:
    from .router import create_router_app
    from .server import run

    try:
        config = load_config(args.config)
        shards = [s.strip() for s in args.shards.split(",")]
        for s in shards:
            parse_listen(s)
        host, port = parse_listen(args.listen)
        app = create_router_app(config, shards, timeout=args.timeout)
        sock = bind(host, port)
    except (ConfigError, StartupError) as e:
        return fail(str(e))
    try:
        log.info("gumshoe router on http://%s:%d over %d shards: %s", *sock.getsockname()[:2],
                 len(shards), ", ".join(shards))
        with _quiet_signals():
            started = run(app, sock)
    finally:
        sock.close()
    return 0 if started else fail("the router failed to start (see the log above)", status=1)


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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gumshoe", description="gumshoe: a columnar roll-up analytics database server.")
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
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    logging.basicConfig(level=args.log_level.upper(), format=LOG_FORMAT, stream=sys.stderr)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
