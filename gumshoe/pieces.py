"""The pieces a scan reads: row ranges that pruning left of segments, as views, and small
ones coalesced into one block (each row's interval start in `dims[START]`), with the stats
that still hold for them; and the roll-up of an interval's blocks, remembered for repeated
metric-filter queries.

Imports schema, block and sketch. The query engine (engine.py) plans and scans them.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Any

import numpy as np

from .block import Block, rollup
from .schema import Schema
from .sketch import SketchColumn

START = "\0start"  # a coalesced block's per-row interval starts (a name no column can have)
COALESCE_ROWS = 4096  # pieces this small (pruned to a few rows) are scanned together
COALESCE_MIN_PIECES = 8  # ... when there are at least this many
Piece = tuple[int, Block, dict[str, Any], int, int]  # (start, segment's block, stats, lo, hi)

_ROLLUP_CACHE: OrderedDict[tuple[int, ...], tuple[list[Block], Block]] = OrderedDict()
_ROLLUP_CACHE_SIZE = 16
_ROLLUP_LOCK = threading.Lock()


def rolled_up(schema: Schema, blocks: list[Block]) -> Block:
    """rollup(blocks), remembered for the last few block sets. Blocks never change, so their
    identities key the cache (the entry holds the blocks, so the ids stay theirs); repeated
    metric-filter queries pay for an interval's roll-up once per insert into it."""
    key = tuple(map(id, blocks))
    with _ROLLUP_LOCK:
        hit = _ROLLUP_CACHE.get(key)
        if hit is not None:
            _ROLLUP_CACHE.move_to_end(key)
            return hit[1]
    rolled = rollup(schema, blocks)
    with _ROLLUP_LOCK:
        _ROLLUP_CACHE[key] = (blocks, rolled)
        while len(_ROLLUP_CACHE) > _ROLLUP_CACHE_SIZE:
            _ROLLUP_CACHE.popitem(last=False)
    return rolled


def slice_block(block: Block, lo: int, hi: int) -> Block:
    """Rows [lo, hi) of a block: views of its columns (nil masks kept, even if all False)."""
    return Block(hi - lo, block.count[lo:hi], {k: v[lo:hi] for k, v in block.dims.items()},
                 {k: (None if v is None else v[lo:hi]) for k, v in block.nils.items()},
                 {k: v[lo:hi] for k, v in block.metrics.items()},
                 {k: v.slice(lo, hi) for k, v in block.sketches.items()})


def concat_pieces(schema: Schema, pieces: list[Piece]) -> Block:
    """One block of the pieces' rows (count, dimensions with nils, metrics, each row's
    interval start in dims[START]); count and metrics at full width."""
    lengths = np.fromiter((hi - lo for _, _, _, lo, hi in pieces), np.int64, len(pieces))
    n = int(lengths.sum())
    dims: dict[str, np.ndarray] = {}
    nils: dict[str, np.ndarray | None] = {}
    for d in schema.dimensions:
        name = d.name
        dims[name] = np.concatenate([b.dims[name][lo:hi] for _, b, _, lo, hi in pieces])
        if all(b.nils[name] is None for _, b, _, _, _ in pieces):
            nils[name] = None
        else:
            parts = [b.nils[name] for _, b, _, _, _ in pieces]
            nils[name] = np.concatenate(
                [np.zeros(p[4] - p[3], bool) if x is None else x[p[3]:p[4]]
                 for p, x in zip(pieces, parts)])
    dims[START] = np.repeat(np.fromiter((s for s, *_ in pieces), np.int64, len(pieces)),
                            lengths)
    count = np.concatenate([b.count[lo:hi] for _, b, _, lo, hi in pieces], dtype=np.int64)
    metrics = {m.name: np.concatenate([b.metrics[m.name][lo:hi] for _, b, _, lo, hi in pieces],
                                      dtype=m.store_dtype) for m in schema.metrics}
    sketches = {u.name: SketchColumn.concat([b.sketches[u.name].slice(lo, hi)
                                             for _, b, _, lo, hi in pieces])
                for u in schema.uniques}
    return Block(n, count, dims, nils, metrics, sketches)


def piece_stats(pieces: list[Piece]) -> dict[str, Any]:
    """Stats that hold for rows drawn from the pieces' segments: per metric the extremes of
    their min/max and the sum of their sum bounds (a segment's bound covers any of its rows),
    so a coalesced block keeps the sum-overflow checks of flushed data (split_sums)."""
    out: dict[str, Any] = {}
    seen = {id(st): st for _, _, st, _, _ in pieces}.values()
    for key in {k for st in seen for k in st if k.startswith(("m:", "bound:m:"))}:
        values = [st.get(key) for st in seen]
        if any(v is None for v in values):
            continue
        if key.startswith("m:"):
            out[key] = (min(v[0] for v in values), max(v[1] for v in values))  # type: ignore
        else:
            out[key] = sum(values)
    return out
