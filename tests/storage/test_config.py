"""config.py: the original's config.toml format, defaults, durations, sizes, key errors."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest

from gumshoe.config import (
    config_toml,
    default_config_text,
    load_config,
    parse_config,
    parse_duration,
    parse_size,
)
from gumshoe.errors import ConfigError
from gumshoe.schema import Schema

REPO = Path(__file__).resolve().parents[2]

ORIGINAL_SAMPLE = """
listen_addr = ":9000"
statsd_addr = "localhost:8125"
open_file_limit = 20000
database_dir = "db"
flush_interval = "10s"
query_parallelism = 4
retention_days = 7

[schema]
segment_size = "1MB"
interval_duration = "1h"
timestamp_column = ["at", "uint32"]
dimension_columns = [["name", "string:uint16"], ["country", "string:uint8"], ["age", "uint8"]]
metric_columns = [["visits", "uint8"], ["clicks", "uint8"]]
"""


def test_repository_config_is_the_embedded_default() -> None:
    assert (REPO / "config.toml").read_text("utf-8") == default_config_text()


def test_default_config() -> None:
    cfg = load_config()
    assert cfg == parse_config("")
    assert cfg.database_dir == "db" and not cfg.in_memory
    assert cfg.flush_interval == 10.0
    assert cfg.retention_days == 7
    s = cfg.schema
    assert s.segment_size == 1_000_000
    assert s.interval_duration == 3600
    assert s.timestamp_column == ("at", "uint32")
    assert s.dimension_columns == (("name", "string:uint16"), ("country", "string:uint8"),
                                   ("age", "uint8"))
    assert s.metric_columns == (("visits", "uint8"), ("clicks", "uint8"))


def test_original_config_file_is_accepted() -> None:
    cfg = parse_config(ORIGINAL_SAMPLE)
    assert cfg.listen_addr == ":9000"
    assert cfg.open_file_limit == 20000
    assert cfg.query_parallelism == 4
    assert cfg.schema.segment_size == 1_000_000
    default = load_config().schema
    for field in ("interval_duration", "timestamp_column", "dimension_columns",
                  "metric_columns"):
        assert getattr(cfg.schema, field) == getattr(default, field)


def test_omitted_keys_take_defaults() -> None:
    cfg = parse_config('retention_days = 0\n[schema]\ninterval_duration = "5m"\n')
    default = load_config()
    assert cfg.retention_days == 0
    assert cfg.schema.interval_duration == 300
    assert cfg.schema.dimension_columns == default.schema.dimension_columns
    assert cfg.listen_addr == default.listen_addr


def test_memory_mode() -> None:
    cfg = parse_config('database_dir = "MEMORY"')
    assert cfg.in_memory


def test_load_config_file(tmp_path: Path) -> None:
    p = tmp_path / "c.toml"
    p.write_text('database_dir = "/data/x"\nflush_interval = "1m"\n')
    cfg = load_config(p)
    assert cfg.database_dir == "/data/x" and cfg.flush_interval == 60.0


def test_load_config_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read config"):
        load_config(tmp_path / "nope.toml")


@pytest.mark.parametrize(("text", "seconds"), [
    ("10s", 10.0), ("1h", 3600.0), ("1h30m", 5400.0), ("500ms", 0.5), ("1.5h", 5400.0),
    ("2m", 120.0), ("0", 0.0), ("100us", 1e-4), ("1µs", 1e-6), ("250ns", 2.5e-7),
    ("24h", 86400.0), (".5s", 0.5)])
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "1d", "10", "s", "-1s", "1h 30m", "1x", "h1"])
def test_parse_duration_errors(text: str) -> None:
    with pytest.raises(ConfigError, match="flush_interval"):
        parse_duration(text, "flush_interval")


def test_parse_duration_rejects_non_strings() -> None:
    with pytest.raises(ConfigError, match="flush_interval"):
        parse_duration(10, "flush_interval")  # type: ignore[arg-type]


@pytest.mark.parametrize(("text", "size"), [
    ("1MB", 10**6), ("1MiB", 2**20), ("1k", 1000), ("1kb", 1000), ("1ki", 1024),
    ("1kib", 1024), ("1.5MB", 1_500_000), ("100", 100), ("1 mb", 10**6), ("2GB", 2 * 10**9),
    ("1gib", 2**30), ("512KiB", 512 * 1024), (4096, 4096)])
def test_parse_size(text: str | int, size: int) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["1xb", "MB", "", "-1MB", "1.2.3MB", True, 1.5])
def test_parse_size_errors(text: object) -> None:
    with pytest.raises(ConfigError, match="segment_size"):
        parse_size(text, "segment_size")  # type: ignore[arg-type]


@pytest.mark.parametrize(("text", "key"), [
    ("bogus = 1", "bogus"),
    ("[schema]\nbogus = 1", "schema.bogus"),
    ("[extra]\na = 1", "extra"),
    ("Listen_addr = ':1'", "Listen_addr"),
])
def test_unknown_key_is_an_error_naming_it(text: str, key: str) -> None:
    with pytest.raises(ConfigError, match=f"unknown config key '{key}'"):
        parse_config(text)


@pytest.mark.parametrize(("text", "key"), [
    ('open_file_limit = "many"', "open_file_limit"),
    ("open_file_limit = true", "open_file_limit"),
    ("query_parallelism = 0", "query_parallelism"),
    ("retention_days = -1", "retention_days"),
    ("retention_days = 1.5", "retention_days"),
    ('flush_interval = "1d"', "flush_interval"),
    ("flush_interval = 10", "flush_interval"),
    ('flush_interval = "0s"', "flush_interval"),
    ('durability = "sometimes"', "durability"),
    ('database_dir = ""', "database_dir"),
    ("database_dir = 5", "database_dir"),
    ("listen_addr = 9000", "listen_addr"),
    ('max_body_size = "lots"', "max_body_size"),
    ("max_body_size = -5", "max_body_size"),
    ("max_groups = 0", "max_groups"),
    ('batch_id_window = "x"', "batch_id_window"),
    ("schema = 5", "schema"),
    ('[schema]\nsegment_size = "50B"', "schema.segment_size"),
    ('[schema]\nsegment_size = "1xb"', "schema.segment_size"),
    ('[schema]\ninterval_duration = "30s"', "schema.interval_duration"),
    ('[schema]\ninterval_duration = "90.5s"', "schema.interval_duration"),
    ('[schema]\ninterval_duration = "1w"', "schema.interval_duration"),
    ('[schema]\ndimension_columns = [["a"]]', "schema.dimension_columns[0]"),
    ('[schema]\ndimension_columns = [["a", 1]]', "schema.dimension_columns[0]"),
    ('[schema]\ndimension_columns = "a"', "schema.dimension_columns"),
    ('[schema]\nmetric_columns = [["m", "uint8", "x"]]', "schema.metric_columns[0]"),
    ('[schema]\ntimestamp_column = "at"', "schema.timestamp_column"),
])
def test_bad_values_name_the_key(text: str, key: str) -> None:
    with pytest.raises(ConfigError) as e:
        parse_config(text)
    assert key in str(e.value)


def test_invalid_toml() -> None:
    with pytest.raises(ConfigError, match="invalid TOML"):
        parse_config("listen_addr = ")


@pytest.mark.parametrize(("section", "fragment"), [
    ('timestamp_column = ["at", "uint64"]', "must be uint32"),
    ('timestamp_column = ["at", "string:uint32"]', "cannot be a string"),
    ('dimension_columns = [["d", "uint9"]]', "'d': bad type: uint9"),
    ('dimension_columns = [["d", "string:int8"]]', "'d'"),
    ('dimension_columns = [["d", "string:uint64"]]', "'d'"),
    ('dimension_columns = [["d", "string"]]', "'d'"),
    ('dimension_columns = [["", "uint8"]]', "empty column name"),
    ('metric_columns = [["m", "string:uint8"]]', "'m'"),
    ("metric_columns = []", "at least one metric"),
    ('dimension_columns = [["x", "uint8"]]\nmetric_columns = [["x", "uint8"]]', "duplicate"),
    ('dimension_columns = [["at", "uint8"]]', "duplicate column name 'at'"),
    ('segment_size = "100B"\ndimension_columns = [["d", "float64"]] '
     '\nmetric_columns = ' + str([[f"m{i}", "uint64"] for i in range(12)]).replace("'", '"'),
     "cannot hold one row"),
])
def test_schema_errors(section: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as e:
        Schema.from_config(parse_config("[schema]\n" + section).schema)
    assert fragment in str(e.value)


def test_every_column_type_is_accepted() -> None:
    types = ["uint8", "int8", "uint16", "int16", "uint32", "int32", "uint64", "int64",
             "float32", "float64", "string:uint8", "string:uint16", "string:uint32"]
    dims = ", ".join(f'["d{i}", "{t}"]' for i, t in enumerate(types))
    mets = ", ".join(f'["m{i}", "{t}"]' for i, t in enumerate(types[:10]))
    schema = Schema.from_config(parse_config(
        f"[schema]\ndimension_columns = [{dims}]\nmetric_columns = [{mets}]").schema)
    assert [d.type_name for d in schema.dimensions] == types
    assert [m.type_name for m in schema.metrics] == types[:10]
    assert [d.is_string for d in schema.dimensions] == [t.startswith("string:") for t in types]


@pytest.mark.parametrize("changes", [
    {},
    {"database_dir": 'a dir "quoted"\\x', "flush_interval": 0.25, "batch_id_window": 90.5,
     "durability": "os", "retention_days": 0, "max_body_size": 12345},
])
def test_config_toml_is_the_inverse_of_parse_config(changes: dict[str, Any]) -> None:
    cfg = load_config().replace(**changes)
    assert parse_config(config_toml(cfg)) == cfg
    schema = dataclasses.replace(cfg.schema, segment_size=4321, segment_size_text="",
                                 dimension_columns=(("d", "string:uint8"),))
    other = cfg.replace(schema=schema)
    back = parse_config(config_toml(other))
    assert back.schema.segment_size == 4321 and back.schema.dimension_columns == (("d",
                                                                                  "string:uint8"),)
