"""GET /console: the web console (static/console.html, its script and styles, and the vendored
uPlot chart library with its licence), served from the package's data on server and router.

Imports edge (Endpoint, Role), plus starlette. The page and its files are open to anyone (they
hold no data); the API calls the page makes carry a read key when [auth] is on (the page asks
for it and keeps it in sessionStorage, never in the URL). Only the files named in ASSETS are
served: no path from a request ever reaches the file system.
"""

from __future__ import annotations

import functools
from importlib import resources

from starlette.requests import Request
from starlette.responses import Response

from .edge import Endpoint, Role
from .errors import ClientError

UPLOT = "uPlot-1.6.32"  # npm uplot, pinned in static/package.json and package-lock.json
ASSETS = {  # served name -> media type
    "console.js": "text/javascript; charset=utf-8",
    "console.css": "text/css; charset=utf-8",
    f"{UPLOT}.iife.min.js": "text/javascript; charset=utf-8",
    f"{UPLOT}.min.css": "text/css; charset=utf-8",
    f"{UPLOT}.LICENSE": "text/plain; charset=utf-8",
}
# The page's own files may change with gumshoe: revalidate. uPlot's carry their version.
_CACHE = {"console.js": "no-cache", "console.css": "no-cache"}
_SECURITY = {  # the page loads only its own files and talks only to its own server
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; "
                               "style-src 'self'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


class NoSuchAsset(ClientError):
    status = 404


@functools.cache
def asset(name: str) -> bytes:
    """The bytes of a file of gumshoe/static/ (read once)."""
    return resources.files("gumshoe").joinpath("static", name).read_bytes()


async def page(request: Request) -> Response:
    return Response(asset("console.html"), media_type="text/html; charset=utf-8",
                    headers={**_SECURITY, "Cache-Control": "no-cache"})


async def static_file(request: Request) -> Response:
    name = request.path_params["file"]
    media_type = ASSETS.get(name)
    if media_type is None:
        raise NoSuchAsset(f"no such console file: {name!r}")
    return Response(asset(name), media_type=media_type,
                    headers={"Cache-Control": _CACHE.get(name, "public, max-age=31536000, "
                                                               "immutable"),
                             "X-Content-Type-Options": "nosniff"})


def endpoints() -> list[Endpoint]:
    """The console's routes, for the server's and the router's endpoint lists."""
    return [Endpoint("/console", page, ("GET",), Role.OPEN),
            Endpoint("/console/{file}", static_file, ("GET",), Role.OPEN)]
