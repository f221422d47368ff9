"""`gumtool import --preset kissmetrics` and km-db's rules (ignored users, whitelisted events,
alias records), against a naive reference: records read one by one with `json`, aliases
resolved by a dict-based union-find, the surviving rows inserted through `DB.insert`."""

from __future__ import annotations

import gzip
import json
import random
from pathlib import Path
from typing import Any

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from gumshoe.config import load_config
from gumshoe.db import DB
from gumtool.import_rules import resolve_aliases
from synthetic.kissmetrics import lines, records

from .helpers import dump, run, write_config

DIMS = [["event", "string:uint16"], ["country", "string:uint8"], ["referrer", "string:uint8"],
        ["person", "string:uint32"]]
METRICS = [["amount", "uint32"]]


def text(v: Any) -> str:
    return v if isinstance(v, str) else json.dumps(v)


def naive_canonical(pairs: list[tuple[str, str]]) -> dict[str, str]:
    parent: dict[str, str] = {}

    def find(x: str) -> str:
        while parent.get(x, x) != x:
            x = parent[x]
        return x

    for a, b in pairs:
        ra, rb = find(a), find(b)
        if ra != rb:
            parent[ra] = rb
    groups: dict[str, list[str]] = {}
    for x in {x for p in pairs for x in p}:
        groups.setdefault(find(x), []).append(x)
    out = {}
    for members in groups.values():
        numeric = [m for m in members if m.isascii() and m.isdigit()]
        best = min(numeric, key=lambda m: (int(m), m)) if numeric else min(members)
        out.update({m: best for m in members})
    return out


def naive_rows(recs: list[dict[str, Any]], ignored: list[str], only: list[str],
               identity_column: str | None) -> list[dict[str, Any]]:
    canon = naive_canonical([(text(r["_p"]), text(r["_p2"])) for r in recs
                             if r.get("_p2") is not None])
    ignored_canon = {canon.get(x, x) for x in ignored}
    rows = []
    for r in recs:
        if r.get("_p2") is not None or r.get("_n") is None:
            continue
        who = canon.get(text(r["_p"]), text(r["_p"]))
        if who in ignored_canon or (only and r["_n"] not in only):
            continue
        row = {"at": r["_t"], "event": r["_n"]}
        for k in ("country", "referrer", "amount"):
            if k in r:
                row[k] = r[k]
        if identity_column:
            row[identity_column] = who
        rows.append(row)
    return rows


def reference(tmp_path: Path, rows: list[dict[str, Any]]) -> Path:
    cfg = write_config(tmp_path / "ref.toml", tmp_path / "ref", dims=DIMS, metrics=METRICS)
    with DB(load_config(cfg)) as db:
        for i in range(0, len(rows), 5000):
            db.insert(rows[i:i + 5000])
    return cfg


@pytest.mark.parametrize(("identity", "rules"), [(None, False), ("person", True)])
def test_kissmetrics_export(tmp_path: Path, identity: str | None, rules: bool,
                            capsys: pytest.CaptureFixture[str]) -> None:
    recs = records(6000, seed=3)
    data = lines(recs)
    exp = tmp_path / "export"
    exp.mkdir()
    third = len(data) // 3
    for i in range(3):  # revision files, one compressed; aliases span files
        body = b"\n".join(data[i * third:(i + 1) * third if i < 2 else None]) + b"\n"
        name = f"{140 + i}.json"
        if i == 1:
            (exp / (name + ".gz")).write_bytes(gzip.compress(body))
        else:
            (exp / name).write_bytes(body)
    aliased = [text(r["_p2"]) for r in recs if r.get("_p2") is not None]
    rnd = random.Random(5)
    ignored = rnd.sample(aliased, 5) + [text(recs[7]["_p"])] if rules else []
    only = ["visited site", "purchased", "signed up", "page view"] if rules else []
    (tmp_path / "ignore.txt").write_text("\n".join(ignored) + "\n")
    (tmp_path / "only.txt").write_text("\n".join(only) + "\n")
    cfg = write_config(tmp_path / "c.toml", tmp_path / "db", dims=DIMS, metrics=METRICS)
    args = ["import", "--config", str(cfg), "--preset", "kissmetrics", str(exp),
            "--chunk-size", "64KB", "--parallelism", "2", "--json"]
    if identity:
        args += ["--identity-column", identity]
    if rules:
        args += ["--ignore-users", str(tmp_path / "ignore.txt"),
                 "--only-events", str(tmp_path / "only.txt")]
    assert run(*args) == 0
    s = json.loads(capsys.readouterr().out)
    want = naive_rows(recs, ignored, only, identity)
    assert s["imported"] == len(want)
    assert s["skipped"]["alias record"] == len(aliased)
    assert s["skipped"]["property record (no event name)"] == sum(
        1 for r in recs if r.get("_n") is None and r.get("_p2") is None)
    if rules:
        assert s["skipped"]["ignored user"] > 0 and s["skipped"]["event not whitelisted"] > 0
    assert dump(cfg) == dump(reference(tmp_path, want))


def test_an_empty_whitelist_keeps_every_event(tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    recs = records(500, seed=4)
    (tmp_path / "e.json").write_bytes(b"\n".join(lines(recs)))
    (tmp_path / "only.txt").write_text("\n")
    cfg = write_config(tmp_path / "c.toml", tmp_path / "db", dims=DIMS, metrics=METRICS)
    assert run("import", "--config", str(cfg), "--preset", "kissmetrics", "--only-events",
               str(tmp_path / "only.txt"), str(tmp_path / "e.json"), "--json") == 0
    assert json.loads(capsys.readouterr().out)["imported"] == len(naive_rows(recs, [], [], None))


def test_preset_needs_its_columns(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "e.json").write_bytes(b"")
    cfg = write_config(tmp_path / "c.toml", tmp_path / "db")  # no `event` column
    assert run("import", "--config", str(cfg), "--preset", "kissmetrics",
               str(tmp_path / "e.json")) == 1
    assert "--event-column 'event': not a column" in capsys.readouterr().err
    cfg = write_config(tmp_path / "c.toml", tmp_path / "db", dims=DIMS, metrics=METRICS)
    assert run("import", "--config", str(cfg), "--preset", "kissmetrics",
               "--identity-column", "amount", str(tmp_path / "e.json")) == 1
    assert "a uint32 column" in capsys.readouterr().err
    assert run("import", "--config", str(cfg), "--ignore-users", str(tmp_path / "e.json"),
               str(tmp_path / "e.json")) == 1
    assert "--ignore-users needs an identity field" in capsys.readouterr().err


identities = st.one_of(st.integers(0, 30).map(str), st.sampled_from(["a", "b", "c", "zz", "007",
                                                                     "7", "Z", "é"]))


@given(st.lists(st.tuples(identities, identities), max_size=40))
@example([("7", "007")])  # equal numbers: the lower text wins
@example([("b", "a"), ("c", "b"), ("9", "a"), ("10", "z"), ("z", "c")])
def test_alias_resolution_matches_a_naive_union_find(pairs: list[tuple[str, str]]) -> None:
    got = resolve_aliases([a for a, _ in pairs], [b for _, b in pairs])
    want = naive_canonical(pairs)
    assert {k: got.get(k, k) for k in want} == want
    assert all(got[k] != k for k in got)


def test_kissmetrics_csv(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The same rules over CSV (alias records are rows with a `_p2` value)."""
    recs = records(800, seed=6)
    fields = ["_n", "_p", "_t", "_p2", "country", "referrer", "amount"]
    import csv
    import io

    out = io.StringIO()
    w = csv.writer(out, lineterminator="\n")
    w.writerow(fields)
    for r in recs:
        w.writerow(["" if r.get(f) is None else r[f] for f in fields])
    (tmp_path / "e.csv").write_text(out.getvalue())
    cfg = write_config(tmp_path / "c.toml", tmp_path / "db", dims=DIMS, metrics=METRICS)
    assert run("import", "--config", str(cfg), "--preset", "kissmetrics", "--identity-column",
               "person", str(tmp_path / "e.csv"), "--json") == 0
    # CSV has no null referrer distinct from a missing one, nor JSON numbers: as text
    for r in recs:
        r["_p"] = text(r["_p"])
        if r.get("referrer") is None:
            r.pop("referrer", None)
    want = naive_rows(recs, [], [], "person")
    assert json.loads(capsys.readouterr().out)["imported"] == len(want)
    assert dump(cfg) == dump(reference(tmp_path, want))
