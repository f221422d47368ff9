"""gumshoe's Python client, standard library only (urllib, json, gzip), so it can be vendored.

Imports nothing from gumshoe (tests/test_architecture.py checks it): copy this one file into a
project that cannot install gumshoe and it works the same.

    >>> from gumshoe.client import Client
    >>> c = Client("http://127.0.0.1:9000")
    >>> c.insert([{"at": 1700000000, "country": "US", "clicks": 2}])
    {'inserted': 1, 'rejected': 0, 'duplicates': 0}
    >>> c.query("SELECT country, sum(clicks) FROM events GROUP BY country")
    [{'clicks': 2, 'country': 'US', 'rowCount': 1}]

Inserts are split into batches, each sent with its own `X-Batch-Id` derived from the call's
batch id; a connection error, a timeout, a 5xx or a 429 is retried with exponential backoff and
the same batch id, so the server applies every batch exactly once. Errors are exceptions:
`GumshoeHTTPError` (the server's status and its `error` message) or `GumshoeConnectionError`.
"""

from __future__ import annotations

import datetime
import gzip
import http.client
import itertools
import json
import random
import re
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any, TypedDict, TypeVar

if TYPE_CHECKING:
    import pandas

__all__ = ["Client", "GumshoeClientError", "GumshoeConnectionError", "GumshoeHTTPError",
           "InsertResult"]

Query = Mapping[str, Any] | str
T = TypeVar("T")
MAX_BATCH_ID = 200  # the server takes 256 printable ASCII characters, a router 240


class GumshoeClientError(Exception):
    """Base of the client's errors."""


class GumshoeHTTPError(GumshoeClientError):
    """The server answered with an error status.

    Attributes
    ----------
    status
        The HTTP status (400: bad request, 404: no such route, 413: body too large, ...).
    message
        The server's `error` text (e.g. ``groupings[0].column: unknown column 'cuntry'``).
    """

    def __init__(self, status: int, message: str, url: str) -> None:
        super().__init__(f"{status} from {url}: {message}")
        self.status = status
        self.message = message
        self.url = url
        self.retry_after: str | None = None  # the Retry-After header of a 429/503


class GumshoeConnectionError(GumshoeClientError):
    """The server could not be reached (after every retry)."""


class InsertResult(TypedDict):
    """`inserted`/`rejected` rows summed over the batches; `duplicates`: batches the server had
    already applied (a retry after a lost answer, or a repeated batch id), whose rows were
    counted by the earlier request and are not in `inserted`."""

    inserted: int
    rejected: int
    duplicates: int


def _json_default(value: Any) -> Any:
    """Datetimes as Unix seconds (naive ones as UTC), numpy scalars as Python numbers."""
    if isinstance(value, datetime.datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=datetime.UTC)
        return value.timestamp()
    if isinstance(value, datetime.date):
        return datetime.datetime(value.year, value.month, value.day,
                                 tzinfo=datetime.UTC).timestamp()
    item = getattr(value, "item", None)
    if callable(item):
        return item()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def _encode(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":"), allow_nan=False,
                      default=_json_default).encode()


class Client:
    """A connection to one gumshoe server or router.

    Parameters
    ----------
    url
        The server's base URL, e.g. ``http://127.0.0.1:9000`` (``http://`` is added when
        missing).
    key
        An API key, sent as ``Authorization: Bearer <key>``.
    timeout
        Seconds to wait for each request's connection and answer.
    retries
        How many times a request is retried after a connection error, a timeout, a 5xx or a
        429 (0: never).
    backoff
        The first retry's delay in seconds; each further retry waits twice as long (with
        jitter), at most `max_backoff`, or what the server's ``Retry-After`` says.
    max_backoff
        The longest delay between two attempts, in seconds.
    gzip_min_bytes
        Insert bodies of at least this many bytes are sent gzip-compressed (None: never). A
        server that does not take ``Content-Encoding: gzip`` gets them uncompressed instead.
    """

    def __init__(self, url: str, key: str | None = None, timeout: float = 30.0, *,
                 retries: int = 5, backoff: float = 0.5, max_backoff: float = 30.0,
                 gzip_min_bytes: int | None = 64 * 1024) -> None:
        if "://" not in url:
            url = "http://" + url
        self.url = url.rstrip("/")
        self.key = key
        self.timeout = timeout
        self.retries = retries
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.gzip_min_bytes = gzip_min_bytes
        self._gzip_ok: bool | None = None  # None: not known yet whether the server takes gzip

    def __repr__(self) -> str:
        return f"Client({self.url!r})"

    # -- the API ---------------------------------------------------------------------------
    def insert(self, rows: Iterable[Mapping[str, Any]], batch_id: str | None = None,
               batch_size: int = 10_000) -> InsertResult:
        """Insert rows (dicts of column -> value; datetimes become Unix seconds).

        Parameters
        ----------
        rows
            The rows, any iterable (a generator is read one batch at a time).
        batch_id
            Names this insert so that calling it again with the same rows and `batch_size`
            applies nothing twice (within the server's ``batch_id_window``). Batch ``n`` is sent
            as ``X-Batch-Id: <batch_id>:<n>``. Default: a new random id.
        batch_size
            Rows per request.

        Returns
        -------
        InsertResult
            ``{"inserted": n, "rejected": m, "duplicates": d}`` summed over the batches.

        Raises
        ------
        GumshoeHTTPError
            A batch was refused (400 names the row and column; earlier batches stay applied).
        GumshoeConnectionError
            The server could not be reached after every retry.
        """
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        if batch_id is None:
            batch_id = uuid.uuid4().hex
        elif not (batch_id.isascii() and batch_id.isprintable()) or not (
                0 < len(batch_id) <= MAX_BATCH_ID):
            raise ValueError(f"batch_id: expected 1 to {MAX_BATCH_ID} printable ASCII "
                             f"characters, got {batch_id!r}")
        total = InsertResult(inserted=0, rejected=0, duplicates=0)
        it = iter(rows)
        for n in itertools.count():
            batch = list(itertools.islice(it, batch_size))
            if not batch:
                break
            answer = self._insert_batch(_encode(batch), f"{batch_id}:{n}")
            total["inserted"] += int(answer.get("inserted", 0))
            total["rejected"] += int(answer.get("rejected", 0))
            total["duplicates"] += bool(answer.get("duplicate"))
        return total

    def query(self, q: Query) -> list[dict[str, Any]]:
        """Run a query: a dict in the JSON query language (``POST /query``) or a SQL string
        (``POST /sql``). Returns the result rows."""
        answer = self._json("POST", *self._query_route(q))
        if not isinstance(answer, dict) or "results" not in answer:
            raise GumshoeClientError("the server answered without results (for EXPLAIN use "
                                     "Client.explain)")
        return list(answer["results"])

    def explain(self, sql: str) -> dict[str, Any]:
        """The JSON query a SQL statement maps to (``EXPLAIN`` is added when missing)."""
        words = sql.split(None, 1)
        prefix = "" if words and words[0].upper() == "EXPLAIN" else "EXPLAIN "
        try:
            answer = self._json("POST", "/sql", (prefix + sql).encode(),
                                {"Content-Type": "text/plain; charset=utf-8"})
        except GumshoeHTTPError as e:
            # error positions count our prefix: give them in the caller's text
            where = re.match(r"line 1, column (\d+): ", e.message)
            if prefix and where and int(where.group(1)) > len(prefix):
                e.message = (f"line 1, column {int(where.group(1)) - len(prefix)}: "
                             + e.message[where.end():])
                e.args = (f"{e.status} from {e.url}: {e.message}",)
            raise
        if not isinstance(answer, dict):
            raise GumshoeClientError(f"EXPLAIN answered {answer!r}, not a JSON query")
        return answer

    def query_df(self, q: Query) -> pandas.DataFrame:
        """`query` as a pandas DataFrame (one column per output name). Needs pandas."""
        try:
            import pandas
        except ImportError as e:
            raise ImportError("Client.query_df needs pandas (pip install pandas); "
                              "Client.query returns the same rows as a list of dicts") from e
        return pandas.DataFrame.from_records(self.query(q))

    def stream(self, q: Query) -> Iterator[dict[str, Any]]:
        """The result rows of `q` one at a time, read from the server's NDJSON stream
        (``?format=stream``) as they arrive, never all held in memory."""
        path, body, headers = self._query_route(q)
        response = self._open("POST", path + "?format=stream", body, headers)
        try:
            header = response.readline()
            if not header:
                raise GumshoeConnectionError(f"{self.url}{path}: empty stream")
            for line in response:
                if line.strip():
                    yield json.loads(line)
        except (OSError, http.client.HTTPException) as e:  # the connection broke mid-stream
            raise GumshoeConnectionError(f"POST {self.url}{path}: {e}") from e
        finally:
            response.close()

    def schema(self) -> dict[str, Any]:
        """The server's schema (``GET /schema``): timestamp, dimensions, metrics, interval."""
        answer = self._json("GET", "/schema")
        if not isinstance(answer, dict):
            raise GumshoeClientError(f"GET /schema answered {answer!r}, not an object")
        return answer

    def dimension_values(self, name: str) -> list[str]:
        """The strings seen so far in string dimension `name` (``GET /dimension_tables/..``)."""
        answer = self._json("GET", "/dimension_tables/" + urllib.parse.quote(name, safe=""))
        return list(answer or [])

    # -- HTTP ------------------------------------------------------------------------------------
    def _query_route(self, q: Query) -> tuple[str, bytes, dict[str, str]]:
        if isinstance(q, str):
            return "/sql", q.encode(), {"Content-Type": "text/plain; charset=utf-8"}
        if isinstance(q, Mapping):
            return "/query", _encode(dict(q)), {"Content-Type": "application/json"}
        raise TypeError(f"a query is a dict (JSON query) or a str (SQL), not "
                        f"{type(q).__name__}")

    def _insert_batch(self, body: bytes, batch_id: str) -> dict[str, Any]:
        headers = {"Content-Type": "application/json", "X-Batch-Id": batch_id}
        if (self.gzip_min_bytes is not None and len(body) >= self.gzip_min_bytes
                and self._gzip_ok is not False):
            try:
                answer = self._json("PUT", "/insert", gzip.compress(body, compresslevel=1),
                                    {**headers, "Content-Encoding": "gzip"})
            except GumshoeHTTPError as e:
                # A server without gzip support reads the compressed bytes as bad JSON (400)
                # or refuses the encoding (415). A 4xx applied nothing: send it plainly.
                if self._gzip_ok or e.status not in (400, 415):
                    raise
                answer = self._json("PUT", "/insert", body, headers)
                self._gzip_ok = False
            else:
                self._gzip_ok = True
        else:
            answer = self._json("PUT", "/insert", body, headers)
        if not isinstance(answer, dict):
            raise GumshoeClientError(f"PUT /insert answered {answer!r}")
        return answer

    def _json(self, method: str, path: str, body: bytes | None = None,
              headers: Mapping[str, str] | None = None) -> Any:
        """One request (retried as the class says); the answer's JSON."""

        def attempt() -> Any:
            with self._open_once(method, path, body, headers) as response:
                data = response.read()
            return json.loads(data) if data.strip() else None

        return self._retrying(f"{method} {self.url}{path}", attempt)

    def _open(self, method: str, path: str, body: bytes | None,
              headers: Mapping[str, str] | None) -> Any:
        """The open response of one request (retried until it opens)."""
        return self._retrying(f"{method} {self.url}{path}",
                              lambda: self._open_once(method, path, body, headers))

    def _retrying(self, what: str, attempt: Callable[[], T]) -> T:
        """`attempt()`, retried with exponential backoff after a connection error, a timeout,
        a 5xx or a 429, at most `retries` times."""
        for n in itertools.count():
            try:
                return attempt()
            except GumshoeHTTPError as e:
                if n >= self.retries or not (e.status >= 500 or e.status == 429):
                    raise
                delay = self._delay(n, e.retry_after)
            except (OSError, http.client.HTTPException) as e:
                if n >= self.retries:
                    reason = getattr(e, "reason", None) or e
                    raise GumshoeConnectionError(f"{what}: {reason}") from e
                delay = self._delay(n, None)
            time.sleep(delay)
        raise AssertionError("unreachable")

    def _delay(self, n: int, retry_after: str | None) -> float:
        if retry_after is not None and retry_after.strip().isdigit():
            return min(self.max_backoff, float(retry_after))
        return min(self.max_backoff, self.backoff * 2.0 ** n) * random.uniform(0.5, 1.0)

    def _open_once(self, method: str, path: str, body: bytes | None,
                   headers: Mapping[str, str] | None) -> Any:
        url = self.url + path
        all_headers = {"Accept": "application/json", "User-Agent": "gumshoe-client",
                       **(headers or {})}
        if self.key is not None:
            all_headers["Authorization"] = f"Bearer {self.key}"
        request = urllib.request.Request(url, data=body, method=method, headers=all_headers)
        try:
            return urllib.request.urlopen(request, timeout=self.timeout)
        except urllib.error.HTTPError as e:
            error = GumshoeHTTPError(e.code, _error_message(e), f"{method} {url}")
            error.retry_after = e.headers.get("Retry-After")
            e.close()
            raise error from None


def _error_message(e: urllib.error.HTTPError) -> str:
    """The server's `error` text, or the body (or reason) when it is not gumshoe's JSON."""
    try:
        body = e.read()
    except (OSError, http.client.HTTPException):
        body = b""
    try:
        obj = json.loads(body)
    except ValueError:
        obj = None
    if isinstance(obj, dict) and isinstance(obj.get("error"), str):
        return str(obj["error"])
    text = body.decode("utf-8", "replace").strip()
    return text[:500] if text else str(e.reason)
