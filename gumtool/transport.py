"""Where `gumtool balance` reads and writes: local paths, or `host:/path` on another machine
through the system `ssh` and `rsync` (run with subprocess; no home-made transport).

Imports gumshoe bulk and layout. Both transports offer the same checks, so balance has one
flow: `identify` resolves an existing path to (host, real path) so one database listed twice is
seen as one; `inspect` refuses a database in use (its flock) and reads its metadata, without
copying it; `config` gives a local copy of a config file; `check_new` refuses a destination
that exists or whose parent directory does not, and resolves it; `source` gives a local
directory to read a source from (for ssh: an rsync copy made while holding the remote flock);
`destination` says where to build a new database locally. SshTransport then `upload`s a built
database to a hidden partial beside its destination (`layout.partial_path`), `publish`es it
(`mv -T` on the remote host, atomic there) and `remove`s partials or published copies when a
run fails. Every command is an argv list built by an `*_argv` method before it runs, so the
command lines can be checked as data.
"""

from __future__ import annotations

import os
import posixpath
import re
import shlex
import subprocess
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Protocol

from gumshoe.bulk import BulkError, check_destination, stored_meta
from gumshoe.layout import META, DirLock, Meta, locked_error, parse_meta, partial_path

Runner = Callable[[list[str]], "subprocess.CompletedProcess[str]"]
_REMOTE_RE = re.compile(r"(?P<host>[^/:]+):(?P<path>.+)")
LOCK_CONFLICT_EXIT = 75  # flock --conflict-exit-code: the remote database is in use
NO_PARENT_EXIT = 3  # check_new: the destination's parent directory does not exist
EXISTS_EXIT = 4  # check_new: the destination exists

# (host identity, resolved path): "" is this machine, else the ssh target (user@host).
Place = tuple[str, str]


class TransportError(BulkError):
    """A remote command failed."""


def parse_location(text: str) -> tuple[str | None, str]:
    """`host:/path` or `user@host:/path` -> (host, path); a local path -> (None, path). As with
    rsync and scp, a colon before the first slash means a host."""
    m = _REMOTE_RE.fullmatch(text)
    if m and not text.startswith(("/", ".")):
        return m.group("host"), m.group("path")
    return None, text


class Transport(Protocol):
    def identify(self, path: str) -> Place: ...
    def inspect(self, path: str) -> Meta: ...
    def config(self, path: str, staging: Path) -> Path: ...
    def check_new(self, path: str) -> Place: ...
    def source(self, path: str, staging: Path) -> Path: ...
    def destination(self, path: str, staging: Path) -> Path: ...
    def describe(self, path: str) -> str: ...


class LocalTransport:
    """Paths on this machine: read in place, built in place (NewDB renames atomically)."""

    def identify(self, path: str) -> Place:
        p = Path(path)
        if not p.is_dir():
            raise BulkError(f"{path}: " + ("not a directory" if p.exists() else
                                           "no such database directory"))
        return "", str(p.resolve())

    def inspect(self, path: str) -> Meta:
        with DirLock(path):
            return stored_meta(Path(path))

    def config(self, path: str, staging: Path) -> Path:
        return Path(path)

    def check_new(self, path: str) -> Place:
        p = Path(path)
        check_destination(p)
        return "", str(p.parent.resolve() / p.name)

    def source(self, path: str, staging: Path) -> Path:
        return Path(path)

    def destination(self, path: str, staging: Path) -> Path:
        return Path(path)

    def describe(self, path: str) -> str:
        return path


def run_command(argv: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, stdin=subprocess.DEVNULL,
                          check=False)


class SshTransport:
    """One remote host, through `ssh` and `rsync` (which honour ~/.ssh/config, the agent,
    ProxyJump and ControlMaster). `runner` runs an argv list (tests replace it)."""

    def __init__(self, host: str, username: str | None = None,
                 ssh_options: Sequence[str] = (), runner: Runner = run_command,
                 tag: str | None = None) -> None:
        self.host = host
        self.username = username
        self.ssh_options = list(ssh_options)
        self.runner = runner
        self.tag = tag or f"gumtool-{os.getpid()}"
        self.commands: list[list[str]] = []

    # -- command lines --------------------------------------------------------------------
    @property
    def target(self) -> str:
        if self.username and "@" not in self.host:
            return f"{self.username}@{self.host}"
        return self.host

    def ssh_base(self) -> list[str]:
        return ["ssh", "-o", "BatchMode=yes", *self.ssh_options]

    def ssh_argv(self, argv: list[str]) -> list[str]:
        """Run `argv` on the host (ssh hands the remote shell one command line: quoted)."""
        return [*self.ssh_base(), self.target, "--", shlex.join(argv)]

    def _rsync(self) -> list[str]:
        return ["rsync", "-e", shlex.join(self.ssh_base())]

    def resolve_argv(self, remote: str) -> list[str]:
        """Print the real path of an existing remote path (fails when there is none)."""
        return self.ssh_argv(["realpath", "-e", "--", remote])

    def read_meta_argv(self, remote: str) -> list[str]:
        """Print the remote database's db.json while holding its flock: exit 75 when a
        process (a server) holds it."""
        return self.ssh_argv(["flock", "--nonblock", "--conflict-exit-code",
                              str(LOCK_CONFLICT_EXIT), remote, "cat", "--",
                              posixpath.join(remote, META)])

    def check_unlocked_argv(self, remote: str) -> list[str]:
        """Exit 75 when a process (a server) holds the remote database directory's flock."""
        return self.ssh_argv(["flock", "--nonblock", "--conflict-exit-code",
                              str(LOCK_CONFLICT_EXIT), remote, "true"])

    def fetch_dir_argv(self, remote: str, local: Path) -> list[str]:
        """Copy a remote database directory while holding its flock (the remote rsync runs
        under `flock --nonblock`, so a server cannot start meanwhile)."""
        lock = shlex.join(["flock", "--nonblock", "--conflict-exit-code",
                           str(LOCK_CONFLICT_EXIT), remote, "rsync"])
        return [*self._rsync(), "-a", "--delete", f"--rsync-path={lock}",
                f"{self.target}:{remote.rstrip('/')}/", f"{local}/"]

    def fetch_file_argv(self, remote: str, local: Path) -> list[str]:
        return [*self._rsync(), f"{self.target}:{remote}", str(local)]

    def check_new_argv(self, remote: str) -> list[str]:
        """Exit 3 when the parent directory is missing, 4 when `remote` exists; else print
        the parent's real path."""
        script = (f'p=$(dirname -- "$1"); test -d "$p" || exit {NO_PARENT_EXIT}; '
                  f'test ! -e "$1" || exit {EXISTS_EXIT}; realpath -e -- "$p"')
        return self.ssh_argv(["sh", "-c", script, "sh", remote])

    def upload_tmp(self, remote: str) -> str:
        """The hidden partial beside `remote` that an upload goes to first."""
        return partial_path(remote, self.tag)

    def push_dir_argv(self, local: Path, remote_tmp: str) -> list[str]:
        return [*self._rsync(), "-a", "--delete", f"{local}/", f"{self.target}:{remote_tmp}/"]

    def rename_argv(self, remote_tmp: str, remote: str) -> list[str]:
        """Put the uploaded directory in place: `mv -T` fails if the destination appeared and
        is not empty; `sync -f` (syncfs of its file system) makes the uploaded files and the
        rename durable before balance reports success (rsync itself does not fsync)."""
        return self.ssh_argv(["sh", "-c", 'mv -T -- "$1" "$2" && sync -f "$2"', "sh",
                              remote_tmp, remote])

    def remove_argv(self, remote: str) -> list[str]:
        return self.ssh_argv(["rm", "-rf", "--", remote])

    # -- running --------------------------------------------------------------------------
    def _call(self, argv: list[str], what: str) -> subprocess.CompletedProcess[str]:
        self.commands.append(argv)
        try:
            return self.runner(argv)
        except FileNotFoundError:
            raise TransportError(f"{what}: {argv[0]!r} is not installed") from None

    def _failed(self, done: subprocess.CompletedProcess[str], what: str) -> TransportError:
        err = (done.stderr or "").strip()
        return TransportError(f"{what} failed (exit {done.returncode}): "
                              f"{shlex.join(done.args)}" + (f"\n{err}" if err else ""))

    def run(self, argv: list[str], what: str) -> subprocess.CompletedProcess[str]:
        done = self._call(argv, what)
        if done.returncode != 0:
            raise self._failed(done, what)
        return done

    def identify(self, path: str) -> Place:
        self._absolute(path)
        done = self._call(self.resolve_argv(path), f"resolving {self.describe(path)}")
        if done.returncode != 0 or not done.stdout.strip():
            raise BulkError(f"{self.describe(path)}: no such database directory (realpath: "
                            f"{(done.stderr or '').strip() or f'exit {done.returncode}'})")
        return self.target, done.stdout.strip()

    def inspect(self, path: str) -> Meta:
        what = f"reading {self.describe(posixpath.join(path, META))}"
        done = self._call(self.read_meta_argv(path), what)
        if done.returncode == LOCK_CONFLICT_EXIT:
            raise locked_error(self.describe(path))
        if done.returncode != 0:
            if "No such file" in (done.stderr or ""):
                raise BulkError(f"{self.describe(path)}: not a gumshoe database (no {META})")
            raise self._failed(done, what)
        return parse_meta(done.stdout.encode(), self.describe(posixpath.join(path, META)))

    def source(self, path: str, staging: Path) -> Path:
        argv = self.check_unlocked_argv(path)
        done = self._call(argv, f"checking {self.describe(path)}")
        if done.returncode == LOCK_CONFLICT_EXIT:
            raise locked_error(self.describe(path))
        if done.returncode != 0:
            raise self._failed(done, f"checking {self.describe(path)}")
        staging.mkdir(parents=True, exist_ok=True)
        self.run(self.fetch_dir_argv(path, staging), f"copying {self.describe(path)} (if the "
                 "database was locked meanwhile, stop its server and retry)")
        return staging

    def config(self, path: str, staging: Path) -> Path:
        staging.parent.mkdir(parents=True, exist_ok=True)
        self.run(self.fetch_file_argv(path, staging), f"copying {self.describe(path)}")
        return staging

    def _absolute(self, path: str) -> None:
        if not posixpath.isabs(path):
            raise BulkError(f"{self.describe(path)}: a remote path must be absolute")

    def check_new(self, path: str) -> Place:
        self._absolute(path)
        done = self._call(self.check_new_argv(path), f"checking {self.describe(path)}")
        if done.returncode == NO_PARENT_EXIT:
            raise BulkError(f"destination {self.describe(path)}: parent directory "
                            f"{self.describe(posixpath.dirname(path.rstrip('/')))} does not "
                            "exist")
        if done.returncode == EXISTS_EXIT:
            raise BulkError(f"destination {self.describe(path)} already exists; choose a new "
                            "database_dir (a new database is never written over another)")
        if done.returncode != 0 or not done.stdout.strip():
            raise self._failed(done, f"checking {self.describe(path)}")
        return self.target, posixpath.join(done.stdout.strip(),
                                           posixpath.basename(path.rstrip("/")))

    def destination(self, path: str, staging: Path) -> Path:
        staging.mkdir(parents=True, exist_ok=True)
        return staging / "db"

    def upload(self, built: Path, path: str) -> str:
        """Copy a built database to the hidden partial beside `path`; its location. On failure
        the partial is removed (as far as the host can be reached)."""
        tmp = self.upload_tmp(path)
        try:
            self.run(self.push_dir_argv(built, tmp), f"uploading to {self.describe(tmp)}")
        except BaseException:
            self.remove(tmp)
            raise
        return tmp

    def publish(self, tmp: str, path: str) -> None:
        """Rename an uploaded partial to `path` and make it durable."""
        self.run(self.rename_argv(tmp, path), f"renaming {self.describe(tmp)}")

    def remove(self, path: str) -> bool:
        """Remove a remote directory; False (not raised) when that failed."""
        try:
            self.run(self.remove_argv(path), f"removing {self.describe(path)}")
        except TransportError:
            return False
        return True

    def describe(self, path: str) -> str:
        return f"{self.target}:{path}"
