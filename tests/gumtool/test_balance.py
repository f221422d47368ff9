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

import gumshoe.bulk
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
    assert t.check_new_argv("/srv/new db") == [
        *ssh, "ops@db1", "--",
        ("sh -c 'p=$(dirname -- \"$1\"); test -d \"$p\" || exit 3; test ! -e \"$1\" || exit 4; "
         "realpath -e -- \"$p\"' sh '/srv/new db'")]
    assert t.resolve_argv("/srv/db/") == [*ssh, "ops@db1", "--", "realpath -e -- /srv/db/"]
    assert t.read_meta_argv("/srv/db") == [
        *ssh, "ops@db1", "--",
        "flock --nonblock --conflict-exit-code 75 /srv/db cat -- /srv/db/db.json"]
    assert t.upload_tmp("/srv/new/") == "/srv/.new.gumtool-7.partial"  # hidden, beside it
    assert t.push_dir_argv(Path("/w/dest0/db"), "/srv/.new.gumtool-7.partial") == [
        *rsync_e, "-a", "--delete", "/w/dest0/db/", "ops@db1:/srv/.new.gumtool-7.partial/"]
    assert t.rename_argv("/srv/.new.gumtool-7.partial", "/srv/new") == [
        *ssh, "ops@db1", "--",
        ("sh -c 'mv -T -- \"$1\" \"$2\" && sync -f \"$2\"' sh /srv/.new.gumtool-7.partial "
         "/srv/new")]
    assert t.remove_argv("/srv/x") == [*ssh, "ops@db1", "--", "rm -rf -- /srv/x"]


def ssh_kind(argv: list[str]) -> str:
    words = shlex.split(argv[-1])
    if words[0] == "flock":
        return "read meta" if "cat" in words else "check unlocked"
    if words[0] == "sh":
        return "rename" if "mv -T" in words[2] else "check new"
    return words[0]


def leftovers(*roots: Path) -> list[str]:
    """Hidden partials or build directories of gumtool anywhere under `roots`."""
    return sorted(str(p) for root in roots for p in root.rglob(".*")
                  if "gumtool" in p.name)


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
        done = subprocess.run(words, capture_output=True, text=True, timeout=30, check=False)
        if words[0] == "realpath" or (words[0] == "sh" and "realpath" in words[2]):
            # paths as the host sees them
            done.stdout = done.stdout.replace(str(self.root / host), "")
        return done


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
    # Checks first (destinations new, sources resolved, not in use, their metadata), then
    # the copies, the uploads to hidden partials, and the renames.
    assert [ssh_kind(c) for c in hosts.calls if c[0] == "ssh"] == (
        ["check new"] * 3 + ["realpath"] * 2 + ["read meta"] * 2 + ["check unlocked"] * 2
        + ["rename"] * 3)
    assert sum(1 for c in hosts.calls if any("--rsync-path=flock" in w for w in c)) == 2
    pushes = [c[-1] for c in hosts.calls if c[0] == "rsync" and ":" in c[-1]]
    assert [p.split(":", 1)[1] for p in pushes] == [
        "/srv/.new0.gumtool-test.partial/", "/srv/.new1.gumtool-test.partial/",
        "/srv/.new2.gumtool-test.partial/"]
    new = []
    for k, h in enumerate("abb"):
        d = hosts.root / h / "srv" / f"new{k}"
        assert (d / "db.json").exists()
        new.append(write_config(tmp_path / f"check{k}.toml", d))
    new.append(local_cfg)
    check_placement(new)
    assert [router_answer(new, q) for q in QUERIES] == answers(lone, QUERIES)
    assert leftovers(hosts.root, tmp_path) == []


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


# -- all or nothing, checks up front ----------------------------------------------------------
def remote_setup(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, runner: Any = None
                 ) -> tuple[FakeHosts, list[str], Path]:
    """Two remote source shards (a:/srv/db, b:/srv/db), three remote destination configs
    (a:/srv/new0, b:/srv/new1, b:/srv/new2) and the lone database they came from."""
    lone, src = make_shards(tmp_path, 2)
    hosts = FakeHosts(tmp_path / "hosts")
    for h, d in zip("ab", src):
        (hosts.root / h / "srv").mkdir(parents=True)
        shutil.copytree(d, hosts.root / h / "srv" / "db")
    cfgs = []
    for k, h in enumerate("abb"):
        write_config(hosts.root / h / "srv" / f"new{k}.toml", f"/srv/new{k}")
        cfgs.append(f"{h}:/srv/new{k}.toml")
    monkeypatch.setattr(gumtool.balance, "make_transport",
                        lambda host, args: gumtool.transport.LocalTransport() if host is None
                        else SshTransport(host, runner=runner or hosts, tag="gumtool-test"))
    return hosts, cfgs, lone


def new_dbs(hosts: FakeHosts) -> list[Path]:
    return sorted(p for p in hosts.root.rglob("new*") if p.is_dir())


@pytest.mark.parametrize("twice", [["a:/srv/db", "a:/srv/db/"], ["a:/srv/db", "a:/srv/./db"],
                                   ["a:/srv/db", "a:/srv/link"]])
def test_the_same_remote_source_twice_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                 capsys: pytest.CaptureFixture[str],
                                                 twice: list[str]) -> None:
    """Sources are compared by host and resolved path: listed twice, however spelled, one
    database would be counted twice (200,000 rows out of a 100,000-row database)."""
    hosts, cfgs, _ = remote_setup(tmp_path, monkeypatch)
    (hosts.root / "a" / "srv" / "link").symlink_to(hosts.root / "a" / "srv" / "db")
    assert run("balance", "--source-db-dirs", ",".join(twice), "--dest-db-configs",
               ",".join(cfgs), "--dry-run") == 1
    assert (f"--source-db-dirs lists one database twice: a:{twice[1][2:]} is a:/srv/db"
            in capsys.readouterr().err)
    assert not any(c[0] == "rsync" and "--rsync-path" in " ".join(c) for c in hosts.calls)


def test_the_same_local_source_twice_is_refused(tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    _, src = make_shards(tmp_path, 2)
    dest = write_config(tmp_path / "d.toml", tmp_path / "d")
    assert run("balance", "--source-db-dirs", f"{src[0]},{src[1]},{src[0]}/", "--dest-db-configs",
               str(dest)) == 1
    assert "--source-db-dirs lists one database twice" in capsys.readouterr().err
    assert not (tmp_path / "d").exists()


def test_remote_destination_without_parent_is_refused_before_any_work(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    hosts, cfgs, _ = remote_setup(tmp_path, monkeypatch)
    write_config(hosts.root / "b" / "srv" / "new1.toml", "/srv/missing/new1")
    assert run("balance", "--source-db-dirs", "a:/srv/db,b:/srv/db", "--dest-db-configs",
               ",".join(cfgs)) == 1
    assert ("destination b:/srv/missing/new1: parent directory b:/srv/missing does not exist"
            in capsys.readouterr().err)
    assert not any("--rsync-path" in " ".join(c) for c in hosts.calls)  # nothing copied
    assert new_dbs(hosts) == [] and leftovers(tmp_path) == []


def test_dry_run_checks_remote_sources(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    hosts, cfgs, _ = remote_setup(tmp_path, monkeypatch)
    argv = ["balance", "--source-db-dirs", "a:/srv/db,b:/srv/db", "--dest-db-configs",
            ",".join(cfgs), "--dry-run"]
    assert run(*argv) == 0
    out = capsys.readouterr().out
    assert "  source a:/srv/db: 6 flushed interval(s), not in use\n" in out
    assert out.endswith("dry run: nothing written\n")
    assert not any("--rsync-path" in " ".join(c) for c in hosts.calls)  # nothing copied
    with open_db(write_config(tmp_path / "held.toml", hosts.root / "b" / "srv" / "db")):
        assert run(*argv) == 1  # a server holds b:/srv/db
    assert "database 'b:/srv/db' is in use" in capsys.readouterr().err
    (hosts.root / "b" / "srv" / "db" / "db.json").unlink()
    assert run(*argv) == 1
    assert "b:/srv/db: not a gumshoe database (no db.json)" in capsys.readouterr().err
    shutil.rmtree(hosts.root / "b" / "srv" / "db")
    assert run(*argv) == 1
    assert "b:/srv/db: no such database directory" in capsys.readouterr().err
    assert not (hosts.root / "b" / "srv" / "db").exists()  # flock created nothing
    write_config(hosts.root / "b" / "srv" / "other.toml", "/srv/db2",
                 dims=[["name", "string:uint16"]])
    shutil.copytree(hosts.root / "a" / "srv" / "db", hosts.root / "b" / "srv" / "db")
    assert run("balance", "--source-db-dirs", "a:/srv/db,b:/srv/db", "--dest-db-configs",
               "b:/srv/other.toml", "--dry-run") == 1
    assert "sources vs destination config b:/srv/other.toml" in capsys.readouterr().err


class FailingHosts(FakeHosts):
    """Fails (or interrupts) the `n`-th call whose argv contains `word`."""

    def __init__(self, root: Path, word: str, n: int, exc: BaseException | None = None) -> None:
        super().__init__(root)
        self.word, self.n, self.exc, self.seen = word, n, exc, 0

    def __call__(self, argv: list[str]) -> subprocess.CompletedProcess[str]:
        if any(self.word in w for w in argv):
            self.seen += 1
            if self.seen == self.n:
                if self.exc is not None:
                    raise self.exc
                return subprocess.CompletedProcess(argv, 12, "", "connection reset")
        return super().__call__(argv)


@pytest.mark.parametrize(("word", "n", "exc"), [
    (".partial/", 2, None),  # the second upload fails
    (".partial/", 3, KeyboardInterrupt()),  # Ctrl-C (or SIGTERM) during the third upload
    ("mv -T", 2, None),  # the second rename fails: the first shard is already in place
    ("mv -T", 3, KeyboardInterrupt()),
])
def test_remote_balance_is_all_or_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                          capsys: pytest.CaptureFixture[str], word: str, n: int,
                                          exc: BaseException | None) -> None:
    """A failure or an interrupt after a shard was uploaded, or even renamed into place,
    leaves no new database and no partial; a rerun then succeeds."""
    failing = FailingHosts(tmp_path / "hosts", word, n, exc)
    hosts, cfgs, lone = remote_setup(tmp_path, monkeypatch, runner=failing)
    argv = ["balance", "--source-db-dirs", "a:/srv/db,b:/srv/db", "--dest-db-configs",
            ",".join(cfgs), "-q"]
    assert run(*argv) == (130 if exc else 1)
    err = capsys.readouterr().err
    assert "balance: removing the " in err and "no new database is left behind" in err
    assert new_dbs(hosts) == [] and leftovers(tmp_path) == []
    failing.n = 0  # a healthy network again
    assert run(*argv) == 0
    assert len(new_dbs(hosts)) == 3 and leftovers(tmp_path) == []
    shards = [write_config(tmp_path / f"check{k}.toml", d) for k, d in enumerate(new_dbs(hosts))]
    assert [router_answer(shards, q) for q in QUERIES] == answers(lone, QUERIES)


def test_local_balance_interrupted_while_renaming(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    _, src = make_shards(tmp_path, 2)
    dests = [write_config(tmp_path / f"d{k}.toml", tmp_path / f"d{k}") for k in range(3)]
    real = gumshoe.bulk.NewDB.publish
    calls: list[Path] = []

    def publish(self: gumshoe.bulk.NewDB) -> None:
        calls.append(self.dest)
        if len(calls) == 3:
            raise KeyboardInterrupt
        real(self)

    monkeypatch.setattr(gumshoe.bulk.NewDB, "publish", publish)
    argv = ["balance", "--source-db-dirs", ",".join(src), "--dest-db-configs",
            ",".join(map(str, dests)), "-q"]
    assert run(*argv) == 130
    assert "removing the 2 shard(s) this run had uploaded or renamed" in capsys.readouterr().err
    assert not any((tmp_path / f"d{k}").exists() for k in range(3))
    assert leftovers(tmp_path) == []
    monkeypatch.undo()
    assert run(*argv) == 0
    check_placement(dests)
