"""Where `gumtool balance` reads and writes: local paths, or `host:/path` on another machine
through the system `ssh` and `rsync` (run with subprocess; no home-made transport).

Imports gumshoe bulk only. Both transports offer the same steps, so balance has one flow:
`source` gives a local directory to read a source database from (for ssh: refused when the
remote directory is flock'ed by a server, else an rsync copy made while holding that flock), `config` a
local copy of a config file, `check_new` refuses an existing destination, `destination` says
where to build the new database locally, and `upload` puts it in place (for ssh: rsync to a
temporary directory beside the destination, then `mv -T` on the remote host, atomic there).
SshTransport builds every command as an argv list (`*_argv` methods) before running it, so the
command lines can be checked as data.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Protocol

from gumshoe.bulk import BulkError, check_destination
from gumshoe.errors import DBLockedError

Runner = Callable[[list[str]], "subprocess.CompletedProcess[str]"]
_REMOTE_RE = re.compile(r"(?P<host>[^/:]+):(?P<path>.+)")
LOCK_CONFLICT_EXIT = 75  # flock --conflict-exit-code: the remote database is in use


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
    def source(self, path: str, staging: Path) -> Path: ...
    def config(self, path: str, staging: Path) -> Path: ...
    def check_new(self, path: str) -> None: ...
    def destination(self, path: str, staging: Path) -> Path: ...
    def upload(self, built: Path, path: str) -> None: ...
    def describe(self, path: str) -> str: ...


class LocalTransport:
    """Paths on this machine: read in place, built in place (NewDB renames atomically)."""

    def source(self, path: str, staging: Path) -> Path:
        return Path(path)

    def config(self, path: str, staging: Path) -> Path:
        return Path(path)

    def check_new(self, path: str) -> None:
        check_destination(Path(path))

    def destination(self, path: str, staging: Path) -> Path:
        return Path(path)

    def upload(self, built: Path, path: str) -> None:
        if built != Path(path):  # built elsewhere: move it into place
            check_destination(Path(path))
            shutil.move(str(built), path)

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
        return self.ssh_argv(["test", "!", "-e", remote])

    def upload_tmp(self, remote: str) -> str:
        return f"{remote.rstrip('/')}.{self.tag}.partial"

    def push_dir_argv(self, local: Path, remote_tmp: str) -> list[str]:
        return [*self._rsync(), "-a", f"{local}/", f"{self.target}:{remote_tmp}/"]

    def rename_argv(self, remote_tmp: str, remote: str) -> list[str]:
        """Put the uploaded directory in place: `mv -T` fails if the destination appeared and
        is not empty; `sync -f` (syncfs of its file system) makes the uploaded files and the
        rename durable before balance reports success (rsync itself does not fsync)."""
        return self.ssh_argv(["sh", "-c", 'mv -T -- "$1" "$2" && sync -f "$2"', "sh",
                              remote_tmp, remote])

    def remove_argv(self, remote: str) -> list[str]:
        return self.ssh_argv(["rm", "-rf", "--", remote])

    # -- running --------------------------------------------------------------------------
    def run(self, argv: list[str], what: str) -> subprocess.CompletedProcess[str]:
        self.commands.append(argv)
        try:
            done = self.runner(argv)
        except FileNotFoundError:
            raise TransportError(f"{what}: {argv[0]!r} is not installed") from None
        if done.returncode != 0:
            err = (done.stderr or "").strip()
            raise TransportError(f"{what} failed (exit {done.returncode}): {shlex.join(argv)}"
                                 + (f"\n{err}" if err else ""))
        return done

    def source(self, path: str, staging: Path) -> Path:
        argv = self.check_unlocked_argv(path)
        self.commands.append(argv)
        done = self.runner(argv)
        if done.returncode == LOCK_CONFLICT_EXIT:
            raise DBLockedError(f"database {self.describe(path)!r} is in use: its directory is "
                                "locked, most likely by a running gumshoe server; stop the "
                                "server first")
        if done.returncode != 0:
            raise TransportError(f"checking {self.describe(path)} failed (exit "
                                 f"{done.returncode}): {shlex.join(argv)}\n"
                                 f"{(done.stderr or '').strip()}")
        staging.mkdir(parents=True, exist_ok=True)
        self.run(self.fetch_dir_argv(path, staging), f"copying {self.describe(path)} (if the "
                 "database was locked meanwhile, stop its server and retry)")
        return staging

    def config(self, path: str, staging: Path) -> Path:
        staging.parent.mkdir(parents=True, exist_ok=True)
        self.run(self.fetch_file_argv(path, staging), f"copying {self.describe(path)}")
        return staging

    def check_new(self, path: str) -> None:
        if not os.path.isabs(path):
            raise BulkError(f"{self.describe(path)}: a remote database_dir must be an absolute "
                            "path")
        argv = self.check_new_argv(path)
        self.commands.append(argv)
        done = self.runner(argv)
        if done.returncode == 1:
            raise BulkError(f"destination {self.describe(path)} already exists; choose a new "
                            "database_dir (a new database is never written over another)")
        if done.returncode != 0:
            raise TransportError(f"checking {self.describe(path)} failed (exit "
                                 f"{done.returncode}): {shlex.join(argv)}\n"
                                 f"{(done.stderr or '').strip()}")

    def destination(self, path: str, staging: Path) -> Path:
        staging.mkdir(parents=True, exist_ok=True)
        return staging / "db"

    def upload(self, built: Path, path: str) -> None:
        tmp = self.upload_tmp(path)
        try:
            self.run(self.push_dir_argv(built, tmp), f"uploading to {self.describe(tmp)}")
            self.run(self.rename_argv(tmp, path), f"renaming {self.describe(tmp)}")
        except BaseException:
            try:
                self.run(self.remove_argv(tmp), f"removing {self.describe(tmp)}")
            except TransportError:
                pass
            raise

    def describe(self, path: str) -> str:
        return f"{self.target}:{path}"
