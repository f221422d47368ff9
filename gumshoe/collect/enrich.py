"""Server-side enrichment of one-event requests ([collect.enrich]): User-Agent -> browser, OS
and device class (with ua-parser, the maintained port of the uap-core regexes, not home-made
ones), Referer -> the page's path, URL-valued columns -> their host or path.

Imports config, schema and errors. Parsing a User-Agent takes ~1 ms, so results are cached by
the whole header (a site's visitors share a few hundred). Nothing here reads or keeps the
client's address.
"""

from __future__ import annotations

import functools
import urllib.parse
from collections.abc import Mapping
from typing import NamedTuple

from ..config import EnrichConfig
from ..errors import ConfigError
from ..schema import Schema

UA_CACHE = 4096
MAX_UA = 512  # longer User-Agent headers are cut before parsing (and caching)


class Agent(NamedTuple):
    browser: str
    os: str
    device: str  # desktop, mobile, tablet or bot


_MOBILE_OS = frozenset({"iOS", "Android", "Windows Phone", "BlackBerry OS", "Symbian OS",
                        "KaiOS", "Firefox OS", "HarmonyOS"})


@functools.lru_cache(maxsize=UA_CACHE)
def agent(user_agent: str) -> Agent:
    """Browser family, OS family and device class of a User-Agent header ("" when unknown)."""
    if not user_agent:
        return Agent("", "", "")
    from ua_parser import parse  # imported on first use: its regexes take ~0.2 s to load

    r = parse(user_agent)
    browser = r.user_agent.family if r.user_agent else ""
    os_name = r.os.family if r.os else ""
    dev = r.device
    if dev is not None and (dev.family == "Spider" or dev.brand == "Spider"):
        device = "bot"
    elif (dev is not None and ("Tablet" in (dev.brand or "") or "iPad" in dev.family
                               or "Tablet" in dev.family)) or (
            os_name == "Android" and "Mobile" not in user_agent):
        device = "tablet"
    elif os_name in _MOBILE_OS or "Mobile" in user_agent:
        device = "mobile"
    else:
        device = "desktop"
    return Agent(browser if browser != "Other" else "", os_name if os_name != "Other" else "",
                 device)


def url_host(value: str) -> str:
    """"https://a.example:8443/x?q" -> "a.example"; "a.example/x" -> "a.example"."""
    if "//" not in value:
        value = "//" + value
    try:
        return urllib.parse.urlsplit(value).hostname or ""
    except ValueError:
        return ""


def url_path(value: str) -> str:
    """"https://a.example/x/y?q#f" -> "/x/y" (query and fragment dropped); "/x?q" -> "/x"."""
    try:
        parts = urllib.parse.urlsplit(value)
    except ValueError:
        return ""
    return parts.path or ("/" if parts.netloc else "")


class Enricher:
    """The [collect.enrich] columns, checked against the schema (string dimensions only)."""

    def __init__(self, cfg: EnrichConfig, schema: Schema) -> None:
        named = {f"collect.enrich.{k}": getattr(cfg, k)
                 for k in ("browser", "os", "device", "page")}
        named.update({f"collect.enrich.host_of[{i}]": c for i, c in enumerate(cfg.host_of)})
        named.update({f"collect.enrich.path_of[{i}]": c for i, c in enumerate(cfg.path_of)})
        for key, column in named.items():
            if not column:
                continue
            col = schema.column(column)
            if col is None or not col.is_string:
                raise ConfigError(f"{key}: {column!r} is not a string dimension of the schema")
        self.cfg = cfg
        self.uses_agent = bool(cfg.browser or cfg.os or cfg.device)
        self.active = bool(self.uses_agent or cfg.page or cfg.host_of or cfg.path_of)

    def apply(self, event: dict[str, str], headers: Mapping[str, str]) -> None:
        """Fill the enrichment columns of one event (its own values win) and reduce URL
        columns to their host or path, in place."""
        c = self.cfg
        if self.uses_agent:
            a = agent(headers.get("user-agent", "")[:MAX_UA])
            for column, value in ((c.browser, a.browser), (c.os, a.os), (c.device, a.device)):
                if column and column not in event:
                    event[column] = value
        if c.page and c.page not in event:
            event[c.page] = url_path(headers.get("referer", ""))
        for column in c.host_of:
            if event.get(column):
                event[column] = url_host(event[column])
        for column in c.path_of:
            if event.get(column):
                event[column] = url_path(event[column])
