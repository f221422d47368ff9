"""The gumshoe error hierarchy. No internal imports; every layer raises these."""

from __future__ import annotations


class GumshoeError(Exception):
    """Base of every gumshoe error."""


class ConfigError(GumshoeError, ValueError):
    """A bad config file or schema; fatal at start-up."""


class ClientError(GumshoeError, ValueError):
    """The client's fault; maps to an HTTP 4xx."""

    status = 400


class QueryError(ClientError):
    """An invalid query; the message names the query part at fault."""


class InsertError(ClientError):
    """An invalid insert batch; the message names the row and column at fault."""


class SchemaMismatchError(GumshoeError):
    """The stored schema differs from the configured one."""


class DBLockedError(GumshoeError):
    """The database directory is held by another process."""


class CorruptDataError(GumshoeError):
    """Stored data failed a check (checksum, header, missing file)."""


class StorageFailedError(GumshoeError):
    """A write or fsync failed; the database no longer accepts writes (fail-stop). 503."""

    status = 503


class OverloadedError(GumshoeError):
    """A bounded resource is exhausted for now (body budget, query memory pool, connections);
    maps to 503 with Retry-After. The message names the config key of the bound."""

    status = 503

    def __init__(self, message: str, retry_after: int = 1) -> None:
        super().__init__(message)
        self.headers = {"Retry-After": str(retry_after)}


class QueryTimeoutError(GumshoeError):
    """A query ran past its time limit and was stopped; maps to 504."""

    status = 504


class TransientStorageError(GumshoeError):
    """A storage operation failed for want of a resource that frees up again (file descriptors:
    EMFILE/ENFILE). Nothing was acknowledged or lost and the database stays writable: the next
    insert or flush retries. The HTTP layer answers 503 with Retry-After."""

    status = 503

    def __init__(self, message: str, retry_after: int = 1) -> None:
        super().__init__(message)
        self.headers = {"Retry-After": str(retry_after)}
