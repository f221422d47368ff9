"""[collect] and [funnel] in config.toml: defaults, parsing, errors naming the key, and the
round trip through config_toml."""

from __future__ import annotations

from pathlib import Path

import pytest

from gumshoe.config import config_toml, load_config, parse_config
from gumshoe.errors import ConfigError

FULL = """
[collect]
allowed_origins = ["https://a.example"]
[[collect.routes]]
path = "/add_event/{age}/{name}/{visits}"
set = {country = "webstat", clicks = 2}
[[collect.sources]]
type = "redis"
url = "redis://127.0.0.1:6379/0"
key = "webstat:events"
format = "{age}/{name}/{at:date}/{visits}"
batch_size = 100
poll_interval = "250ms"
[[collect.sources]]
type = "redis"
url = "redis://127.0.0.1:6379/1"
key = "events"
stream = true
[collect.script]
event = "name"
track_localhost = true
[collect.enrich]
browser = "name"
host_of = ["country"]
[funnel]
id = "edge-1"
batch_rows = 500
batch_wait = "1s"
spool_size = "10MB"
"""


def test_defaults() -> None:
    c = load_config()
    assert c.collect.allowed_origins == ("*",) and c.collect.routes == ()
    assert c.collect.script.enabled and c.collect.script.opt_out == "gumshoe_opt_out"
    assert c.funnel.batch_rows == 10_000 and c.funnel.batch_wait == 0.2
    assert c.funnel.spool_size == 10**9


def test_full_config_and_round_trip() -> None:
    c = parse_config(FULL)
    assert c.collect.routes[0].set == (("country", "webstat"), ("clicks", 2))
    assert c.collect.sources[0].poll_interval == 0.25
    assert c.collect.sources[1].stream and c.collect.sources[1].format == "json"
    assert c.collect.enrich.host_of == ("country",)
    assert c.funnel.id == "edge-1" and c.funnel.spool_size == 10**7
    assert parse_config(config_toml(c)) == c


@pytest.mark.parametrize(("text", "message"), [
    ("[collect]\nallowed_origin = []", "unknown config key 'collect.allowed_origin'"),
    ("[[collect.routes]]\npath = '/x/{name}'\nmethod = 'GET'",
     "unknown config key 'collect.routes[0].method'"),
    ("[[collect.routes]]\npath = 'x/{name}'", "collect.routes[0].path: must start with '/'"),
    ("[collect]\nroutes = {path = '/x'}", "collect.routes: expected an array of tables"),
    ("[[collect.sources]]\ntype = 'kafka'\nurl = 'x'\nkey = 'k'",
     "collect.sources[0].type: only \"redis\" is supported"),
    ("[[collect.sources]]\ntype = 'redis'\nkey = 'k'", "collect.sources[0]: missing key 'url'"),
    ("[[collect.sources]]\ntype = 'redis'\nurl = 'http://x'\nkey = 'k'",
     "collect.sources[0].url: expected redis://"),
    ("[collect.script]\nenabled = 'yes'", "collect.script.enabled: expected true or false"),
    ("[collect.enrich]\nbrowsr = 'name'", "unknown config key 'collect.enrich.browsr'"),
    ("[funnel]\nid = 'a b'", "funnel.id: at most 64 letters"),
    ("[funnel]\nbatch_rows = 0", "funnel.batch_rows: must be at least 1"),
    ("[funnel]\nspool_size = 'lots'", "funnel.spool_size: bad size"),
])
def test_errors_name_the_key(text: str, message: str) -> None:
    with pytest.raises(ConfigError) as e:
        parse_config(text)
    assert message in str(e.value)


def test_a_collect_config_the_schema_cannot_take_stops_start_up(tmp_path: Path) -> None:
    from tests.http.harness import run_gumshoe, write_config

    cfg = write_config(tmp_path, tmp_path / "db")
    cfg.write_text(cfg.read_text() + '\n[[collect.routes]]\npath = "/e/{appid}"\n')
    r = run_gumshoe("serve", "--config", str(cfg), "--listen", "127.0.0.1:0")
    assert r.returncode == 2
    assert r.stderr.strip().splitlines()[-1] == (
        "gumshoe: error: collect.routes[0].path: {appid} is not a column of the schema")
