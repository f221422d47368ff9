"""The README's gumtool commands run as written: the shell block of its "gumtool" section,
run with bash in a directory holding the router example's shard databases `s0` and `s1`
(made with the embedded default config, as `gumshoe serve --db s0` makes them)."""

from __future__ import annotations

import os
import random
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from gumshoe.config import default_config_text, parse_config
from gumshoe.db import DB
from gumshoe.schema import Schema
from gumshoe.service import query_rows

from .helpers import router_answer, shard_rows

ROOT = Path(__file__).resolve().parents[2]
QUERIES = [{}, {"groupings": ["country"], "aggregates": [{"column": "clicks"}]},
           {"groupings": ["name", {"column": "at", "timeTransform": "hour", "name": "h"}],
            "aggregates": [{"column": "visits"}, {"type": "average", "column": "clicks"}]}]


def readme_block(section: str) -> str:
    text = (ROOT / "README.md").read_text()
    body = text.split(f"\n## {section}\n", 1)[1].split("\n## ", 1)[0]
    m = re.search(r"```sh\n(.*?)```", body, re.DOTALL)
    assert m, f"no sh block in the README's {section} section"
    return m.group(1)


def default_config(d: Path) -> Path:
    """A config file as the commands' configs are read: the defaults, one database_dir."""
    path = d.with_suffix(".check.toml")
    path.write_text(f'database_dir = "{d}"\n')
    return path


def answers(config: Path) -> list[Any]:
    from gumshoe.config import load_config
    with DB(load_config(config)) as db:
        return [query_rows(db, q) for q in QUERIES]


def test_readme_gumtool_commands_run_as_written(tmp_path: Path) -> None:
    block = readme_block("gumtool")
    assert "gumtool merge" in block and "gumtool balance" in block and "--drop" in block
    base = parse_config(default_config_text())
    schema = Schema.from_config(base.schema)
    rnd = random.Random(5)
    now = int(time.time())
    rows = [{"at": now - rnd.randrange(3 * 86400), "name": rnd.choice(["Starbuck", "Boomer",
                                                                        "Apollo", None]),
             "country": rnd.choice(["USA", "CAN", "DEU"]), "age": rnd.randrange(18, 80),
             "visits": 1, "clicks": rnd.randrange(4)} for _ in range(400)]
    for k, part in enumerate(shard_rows(schema, rows, 2)):
        with DB(base.replace(database_dir=str(tmp_path / f"s{k}"))) as db:
            db.insert(part)
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    done = subprocess.run(["bash", "-euo", "pipefail", "-c", block], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    assert "gumtool" not in " ".join(p.name for p in tmp_path.iterdir() if p.name[0] == ".")
    shards = [default_config(tmp_path / f"s{k}") for k in range(2)]
    expected = [router_answer(shards, q) for q in QUERIES]
    assert answers(default_config(tmp_path / "all")) == expected
    new = [default_config(tmp_path / f"n{k}") for k in range(3)]
    assert [router_answer(new, q) for q in QUERIES] == expected
    wide = tmp_path / "all-wide.check.toml"
    wide.write_text((tmp_path / "wide.toml").read_text().replace(
        'database_dir = "all-wide"', f'database_dir = "{tmp_path / "all-wide"}"'))
    with DB(parse_config(wide.read_text())) as db:
        assert query_rows(db, {"groupings": ["device"]}) == [{"device": None, "rowCount": len(rows)}]
    by_country = tmp_path / "by-country.check.toml"
    by_country.write_text(f'database_dir = "{tmp_path / "by-country"}"\n[schema]\n'
                          'dimension_columns = [["country", "string:uint8"]]\n')
    with DB(parse_config(by_country.read_text())) as db:
        assert query_rows(db, QUERIES[1]) == expected[1]
