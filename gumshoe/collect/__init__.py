"""Collection: the front doors for events -- beacons, the tracker script, CSV and NDJSON
bodies, URL templates, queue sources -- and the funnel's spool.

Sits below the apps (server, router, funnel) and above the HTTP edge; an app hands it a *sink*
(`await sink.insert(batch, batch_id)`, see coalesce.Sink) and mounts `endpoints(...)`. Modules,
lowest first: values (text columns -> Batch), formats (CSV/NDJSON bodies), templates (URL and
item templates), enrich (User-Agent, URLs), script (the tracker), coalesce (the sink seam and
grouping of one-event requests), spool (the funnel's CRC-framed files), sources (Redis queues),
routes (the Starlette handlers).
"""

from __future__ import annotations

from .coalesce import FunctionSink, Sink
from .formats import is_row_format, parse_body
from .routes import endpoints, validate
from .sources import with_sources

__all__ = ["FunctionSink", "Sink", "endpoints", "is_row_format", "parse_body", "validate", "with_sources"]
