"""GET /script.js: the tracker (static/tracker.js, minified to static/tracker.min.js by terser,
pinned in static/package.json) with the [collect.script] settings filled in.

Imports config, schema and errors. The settings are checked against the schema at start-up
(every field's column must be a string dimension) and written into the script once.
"""

from __future__ import annotations

import gzip
import json
from importlib import resources

from ..config import ScriptConfig
from ..errors import ConfigError
from ..schema import Schema

PLACEHOLDER = "__GUMSHOE__"
FIELDS = ("event", "path", "referrer", "device")
MAX_GZIPPED = 2048


def minified() -> str:
    return resources.files("gumshoe.collect").joinpath("static/tracker.min.js").read_text(
        "utf-8")


def tracker(cfg: ScriptConfig, schema: Schema) -> bytes:
    """The script served, with `cfg` in it. Raises ConfigError for a field naming a column
    that is not a string dimension."""
    fields = {}
    for name in FIELDS:
        column = getattr(cfg, name)
        if column:
            col = schema.column(column)
            if col is None or not col.is_string:
                raise ConfigError(f"collect.script.{name}: {column!r} is not a string "
                                  "dimension of the schema")
        fields[name] = column
    settings = {"e": cfg.endpoint, "f": fields, "l": cfg.track_localhost,
                "a": cfg.track_automated, "o": cfg.opt_out}
    # JSON in a <script>-safe form: no "</" can close the script element
    text = json.dumps(settings, separators=(",", ":")).replace("</", "<\\/")
    source = minified()
    if source.count(PLACEHOLDER) != 1:
        raise AssertionError("tracker.min.js must hold the settings placeholder once")
    return source.replace(PLACEHOLDER, text).encode()


def gzipped_size(script: bytes) -> int:
    return len(gzip.compress(script, 9))
