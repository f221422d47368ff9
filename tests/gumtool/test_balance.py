"""`gumtool balance`: re-sharding 2 -> 3 -> 2 keeps every answer (through the router's merge
of partials) and puts every rolled-up row on the shard `sharding.shard_of` gives it; remote
locations go through ssh/rsync command lines, checked as data and simulated locally."""

from __future__ import annotations

import shlex
import shutil
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import gumtool.balance
import gumtool.transport
from gumshoe.batch import parse_rows
from gumshoe.config import load_config
from gumshoe.schema import Schema
from gumshoe.sharding import shard_of
from gumtool.transport import SshTransport, parse_location

from .helpers import (
    QUERIES,
    answers,
    build_db,
    dump,
    make_rows,
    open_db,
    router_answer,
    run,
    shard_rows,
    write_config,
)

DUMP_Q = {"groupings": [{"column": "at", "name": "at"}, "name", "country", "age"],
          "aggregates": [{"column": "visits"}, {"column": "clicks"}, {"column": "score"}]}


def make_shards(tmp_path: Path, n: int) -> tuple[Path, list[str]]:
    lone = write_config(tmp_path / "lone.toml", tmp_path / "lone")
    schema = Schema.from_config(load_config(lone).schema)
    batches = [make_rows(500, seed) for seed in (11, 12)]
    build_db(lone, batches[:1], unflushed=batches[1])
    dirs = []
    for k in range(n):
        cfg = write_config(tmp_path / f"src{k}.toml", tmp_path / f"src{k}")
        parts = [shard_rows(schema, rows, n)[k] for rows in batches]
        build_db(cfg, parts[:1], unflushed=parts[1])
        dirs.append(str(tmp_path / f"src{k}"))
    return lone, dirs


def check_placement(configs: list[Path]) -> None:
    """Every stored row is on the shard the router would send its key to; no key twice."""
    seen: set[tuple[Any, ...]] = set()
    for k, cfg in enumerate(configs):
        schema = Schema.from_config(load_config(cfg).schema)
        rows = answers(cfg, [DUMP_Q])[0]
        assert rows, f"shard {k} is empty"
        batch = parse_rows(schema, [{c: r[c] for c in ("at", "name", "country", "age")}
                                    for r in rows])
        shard = shard_of(schema, batch.timestamps, batch.dims, batch.nils, len(configs))
        assert np.all(shard == k)
        keys = {(r["at"], r["name"], r["country"], r["age"]) for r in rows}
        assert not keys & seen
        seen |= keys


def test_balance_2_to_3_then_3_to_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    lone, src = make_shards(tmp_path, 2)
    expected = answers(lone, QUERIES)
    src_cfgs = [tmp_path / f"src{k}.toml" for k in range(2)]
    assert [router_answer(src_cfgs, q) for q in QUERIES] == expected

    three = [write_config(tmp_path / f"three{k}.toml", tmp_path / f"three{k}",
                          segment_size="2KB") for k in range(3)]
    assert run("balance", "--source-db-dirs", ",".join(src), "--dest-db-configs",
               ",".join(map(str, three)), "--parallelism", "2") == 0
    out = capsys.readouterr().out
    assert "onto 3 shard(s)" in out and out.endswith("done\n")
    check_placement(three)
    assert [router_answer(three, q) for q in QUERIES] == expected

    two = [write_config(tmp_path / f"two{k}.toml", tmp_path / f"two{k}") for k in range(2)]
    assert run("balance", "--source-db-dirs", ",".join(str(tmp_path / f"three{k}")
                                                       for k in range(3)),
               "--dest-db-configs", str(two[0]), "--dest-db-configs", str(two[1]), "-q") == 0
    check_placement(two)
    assert [router_answer(two, q) for q in QUERIES] == expected
    # 2 -> 3 -> 2 gives back the original shards' contents.
    for k in range(2):
        assert dump(two[k]) == dump(src_cfgs[k])


def test_balance_onto_one_shard_is_a_merge(tmp_path: Path) -> None:
    lone, src = make_shards(tmp_path, 3)
    one = write_config(tmp_path / "one.toml", tmp_path / "one")
    assert run("balance", "--source-db-dirs", ",".join(src), "--dest-db-configs", str(one),
               "-q") == 0
    assert dump(one) == dump(lone)


def test_balance_refuses_existing_destinations_before_any_work(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _, src = make_shards(tmp_path, 2)
    dests = [write_config(tmp_path / f"d{k}.toml", tmp_path / f"d{k}") for k in range(2)]
    dup = write_config(tmp_path / "dup.toml", tmp_path / "d0")
    assert run("balance", "--source-db-dirs", ",".join(src), "--dest-db-configs",
               f"{dests[0]},{dup}") == 1
    assert "two configs share the database_dir" in capsys.readouterr().err
    build_db(dests[1], [make_rows(5, 1)])
    assert run("balance", "--source-db-dirs", ",".join(src), "--dest-db-configs",
               ",".join(map(str, dests))) == 1
    assert "already exists and holds a gumshoe database" in capsys.readouterr().err
    assert not (tmp_path / "d0").exists()


def test_dry_run_writes_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _, src = make_shards(tmp_path, 2)
    dests = [write_config(tmp_path / f"d{k}.toml", tmp_path / f"d{k}") for k in range(3)]
    assert run("balance", "--source-db-dirs", ",".join(src), "--dest-db-configs",
               ",".join(map(str, dests)), "--dry-run") == 0
    out = capsys.readouterr().out
    assert f"shard 2: {tmp_path / 'd2'} (config {dests[2]})" in out
    assert out.endswith("dry run: nothing written\n")
    assert not any((tmp_path / f"d{k}").exists() for k in range(3))


# -- remote locations -------------------------------------------------------------------------
def test_parse_location() -> None:
    assert parse_location("db1:/var/lib/gumshoe") == ("db1", "/var/lib/gumshoe")
    assert parse_location("ops@db1:/x/conf.toml") == ("ops@db1", "/x/conf.toml")
    assert parse_location("/local/path") == (None, "/local/path")
    assert parse_location("relative/db") == (None, "relative/db")
    assert parse_location("./odd:name") == (None, "./odd:name")


def test_ssh_and_rsync_command_lines() -> None:
    t = SshTransport("db1", username="ops", ssh_options=["-o", "Port=2222"], tag="gumtool-7")
    ssh = ["ssh", "-o", "BatchMode=yes", "-o", "Port=2222"]
    rsync_e = ["rsync", "-e", "ssh -o BatchMode=yes -o Port=2222"]
    assert t.fetch_dir_argv("/srv/db", Path("/w/source0")) == [
        *rsync_e, "-a", "--delete",
        "--rsync-path=flock --nonblock --conflict-exit-code 75 /srv/db rsync",
        "ops@db1:/srv/db/", "/w/source0/"]
    assert t.check_unlocked_argv("/srv/db") == [
        *ssh, "ops@db1", "--", "flock --nonblock --conflict-exit-code 75 /srv/db true"]
    assert t.fetch_file_argv("/etc/g.toml", Path("/w/d.toml")) == [
        *rsync_e, "ops@db1:/etc/g.toml", "/w/d.toml"]
    assert t.check_new_argv("/srv/new db") == [*ssh, "ops@db1", "--", "test '!' -e '/srv/new db'"]
    assert t.upload_tmp("/srv/new/") == "/srv/new.gumtool-7.partial"
    assert t.push_dir_argv(Path("/w/dest0/db"), "/srv/new.gumtool-7.partial") == [
        *rsync_e, "-a", "/w/dest0/db/", "ops@db1:/srv/new.gumtool-7.partial/"]
    assert t.rename_argv("/srv/new.gumtool-7.partial", "/srv/new") == [
        *ssh, "ops@db1", "--",
        ("sh -c 'mv -T -- \"$1\" \"$2\" && sync -f \"$2\"' sh /srv/new.gumtool-7.partial "
         "/srv/new")]
    assert t.remove_argv("/srv/x") == [*ssh, "ops@db1", "--", "rm -rf -- /srv/x"]


class FakeHosts:
    """Runs the transport's argv lists against local directories: host H's `/p` is
    root/H/p. rsync copies; ssh runs its command with the paths rewritten."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.calls: list[list[str]] = []

    def local(self, spec: str) -> str:
        host, path = spec.split(":", 1)
        return str(self.root / host.split("@")[-1]) + path

    def __call__(self, argv: list[str]) -> subprocess.CompletedProcess[str]:
        self.calls.append(argv)
        if argv[0] == "rsync":
            src, dst = argv[-2:]
            src = self.local(src) if ":" in src else src
            dst = self.local(dst) if ":" in dst else dst
            if src.endswith("/"):
                shutil.copytree(src, dst, dirs_exist_ok=True)
            else:
                shutil.copyfile(src, dst)
            return subprocess.CompletedProcess(argv, 0, "", "")
        assert argv[0] == "ssh"
        host = argv[argv.index("--") - 1].split("@")[-1]
        words = [str(self.root / host) + w if w.startswith("/") else
                 w.replace("sync -f", "true")  # no file system flush in tests
                 for w in shlex.split(argv[-1])]
        return subprocess.run(words, capture_output=True, text=True, timeout=30, check=False)


def test_balance_with_remote_sources_and_destinations(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    lone, src = make_shards(tmp_path, 2)
    hosts = FakeHosts(tmp_path / "hosts")
    for h in ("a", "b"):
        (hosts.root / h / "srv").mkdir(parents=True)
    shutil.copytree(src[0], hosts.root / "a" / "srv" / "db")
    shutil.copytree(src[1], hosts.root / "b" / "srv" / "db")
    remote_cfgs = []
    for k, h in enumerate("abb"):
        write_config(hosts.root / h / "srv" / f"new{k}.toml", f"/srv/new{k}")
        remote_cfgs.append(f"ops@{h}:/srv/new{k}.toml")
    local_cfg = write_config(tmp_path / "local.toml", tmp_path / "new_local")
    transports: list[SshTransport] = []

    def make_transport(host: str | None, args: Any) -> Any:
        if host is None:
            return gumtool.transport.LocalTransport()
        t = SshTransport(host, runner=hosts, tag="gumtool-test")
        transports.append(t)
        return t

    monkeypatch.setattr(gumtool.balance, "make_transport", make_transport)
    assert run("balance", "--source-db-dirs", "a:/srv/db,b:/srv/db", "--dest-db-configs",
               ",".join(remote_cfgs + [str(local_cfg)]), "--workdir", str(tmp_path / "work"),
               "-q") == 0
    assert not (tmp_path / "work").exists()
    kinds = [(c[0], c[-1].split()[0] if c[0] == "ssh" else c[-1].rsplit("/", 2)[-2])
             for c in hosts.calls]
    assert [k for k in kinds if k[0] == "ssh"] == ([("ssh", "test")] * 3 + [("ssh", "flock")] * 2
                                                   + [("ssh", "sh")] * 3)
    assert sum(1 for c in hosts.calls if any("--rsync-path=flock" in w for w in c)) == 2
    new = []
    for k, h in enumerate("abb"):
        d = hosts.root / h / "srv" / f"new{k}"
        assert (d / "db.json").exists()
        new.append(write_config(tmp_path / f"check{k}.toml", d))
    new.append(local_cfg)
    check_placement(new)
    assert [router_answer(new, q) for q in QUERIES] == answers(lone, QUERIES)
    assert not list((hosts.root / "b" / "srv").glob("*.partial"))


def test_remote_destination_that_exists_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    _, src = make_shards(tmp_path, 1)
    hosts = FakeHosts(tmp_path / "hosts")
    (hosts.root / "a" / "srv" / "taken").mkdir(parents=True)
    write_config(hosts.root / "a" / "srv" / "c.toml", "/srv/taken")
    monkeypatch.setattr(gumtool.balance, "make_transport",
                        lambda host, args: gumtool.transport.LocalTransport() if host is None
                        else SshTransport(host, runner=hosts))
    assert run("balance", "--source-db-dirs", src[0], "--dest-db-configs", "a:/srv/c.toml") == 1
    assert "destination a:/srv/taken already exists" in capsys.readouterr().err


def test_remote_source_held_by_a_server_is_refused(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    _, src = make_shards(tmp_path, 1)
    hosts = FakeHosts(tmp_path / "hosts")
    (hosts.root / "a" / "srv").mkdir(parents=True)
    shutil.copytree(src[0], hosts.root / "a" / "srv" / "db")
    cfg = write_config(tmp_path / "d.toml", tmp_path / "d")
    monkeypatch.setattr(gumtool.balance, "make_transport",
                        lambda host, args: gumtool.transport.LocalTransport() if host is None
                        else SshTransport(host, runner=hosts))
    with open_db(write_config(tmp_path / "held.toml", hosts.root / "a" / "srv" / "db")):
        # flock(1) on the remote host sees the lock the DB holds
        assert run("balance", "--source-db-dirs", "a:/srv/db", "--dest-db-configs",
                   str(cfg)) == 1
    assert ("database 'a:/srv/db' is in use: its directory is locked, most likely by a running "
            "gumshoe server") in capsys.readouterr().err
    assert not (tmp_path / "d").exists()
