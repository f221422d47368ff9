"""The layering of gumshoe/ and gumtool/, checked by walking each module's imports with `ast`.

A module may import modules of its own tier or lower tiers, never higher ones (DESIGN.md §3,
STYLE.md "Allowed import edges"). Only the HTTP modules import the web stack. A new module must
be given a tier below: the failure message says so. The modules of a package (gumshoe/collect/)
are named `collect.<module>` and have tiers of their own; its `__init__` is `collect`.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# gumshoe modules, lowest tier first.
TIERS: list[set[str]] = [
    {"errors", "fileio", "native", "__init__"},  # no internal imports (native: C extensions)
    {"kinds"},  # metric kinds: sum, min, max (their identities and reductions)
    {"config", "tiers", "sketch"},  # tiers: tiered-retention arithmetic; sketch: uniques (numpy)
    {"schema"},
    {"layout"},  # the directory layout: file names, db.json, lock, atomic write, retention
    {"batch", "rowdecoder", "sharding"},  # rowdecoder: msgspec fast path of batch
    {"timebuckets", "expression"},  # query-language helpers (zones, arithmetic)
    {"block"},
    {"segment", "dictionary"},  # dictionary: string order through block.string_ranks
    {"textmatch"},  # prefix/contains/regex over a dictionary
    {"interval"},
    {"compaction"},  # the compactor's plan and re-roll (db.py commits it)
    {"memtable"},
    {"snapshot"},
    {"rawrecord"},  # the raw archive's record: a batch as accepted, and raw rows in memory
    {"wal"},
    # the raw archive's files (the log's sidecar, rotation, keep, recovery); reading a range
    {"archive", "rawscan"},
    {"db"},
    {"bulk"},  # whole-directory reads/writes for gumtool (above db: reuses its recovery)
    {"query", "jsonio", "sql", "sqlexpr", "sqlfilters"},  # query AST, JSON codec, SQL -> JSON
    # filters -> predicate programs and masks; partials, merge, finish (with having, fill);
    # result rows as CSV
    {"filters", "partials", "having", "fill", "resultformat"},
    {"rawformat"},  # GET /raw's parameters, NDJSON/CSV and the router's merge (no storage)
    {"pieces"},  # the scan's pieces: pruned row ranges, coalesced blocks, cached roll-ups
    {"keyparts"},  # the scan's group key: one part per grouping (codes and back)
    {"engine", "wire"},  # runs a query over a snapshot; msgpack codec of partials
    {"service"},  # a shard's query service: admission, time and memory bounds, scan threads
    {"edge", "httpserve", "metrics"},  # the HTTP edge shared by every app; serving it
    # collection (gumshoe/collect/): text columns -> batches, enrichment, the tracker script,
    {"collect.values", "collect.enrich", "collect.script"},
    {"collect.formats", "collect.templates"},  # CSV/NDJSON bodies; URL and item templates
    {"collect.coalesce", "collect.spool"},  # the sink seam; the funnel's spool (wal framing)
    {"collect.sources"},  # queue consumers (Redis)
    {"collect.routes"},  # the collect routes on the edge
    {"collect"},
    {"console", "openapi"},  # GET /console (static files) and GET /openapi.json
    {"client"},  # the Python client: standard library only (test_client_imports_only_stdlib)
    {"querycli"},  # `gumshoe query`: the client on the command line
    {"server", "router", "funnel", "cli", "__main__"},
]
TIER = {name: level for level, names in enumerate(TIERS) for name in names}

# Upward edges that are part of the design, each only as a lazy (function-level) import. None
# today: query dispatch left DB (the query service runs queries over a DB's snapshots).
LAZY_UPWARD: set[tuple[str, str]] = set()

# Edges forbidden even though they point downward.
FORBIDDEN = {
    # The router merges shards' partials with the shard's own merge code; it never touches
    # storage (STYLE.md: "It never imports db, segment or interval").
    "router": {"db", "segment", "interval", "memtable", "snapshot", "wal", "engine"},
    # The funnel spools and forwards validated batches; it never holds a database.
    "funnel": {"db", "segment", "interval", "memtable", "snapshot", "wal", "engine"},
}

WEB_STACK = {"starlette", "uvicorn", "prometheus_client", "httpx", "httpx2", "aiohttp"}
WEB_MODULES = {"server", "router", "funnel", "metrics", "edge", "httpserve", "collect.routes",
               "console", "openapi"}
# gumtool works on storage; it never reaches the servers or the web stack.
GUMTOOL_FORBIDDEN = {"gumshoe.server", "gumshoe.router", "gumshoe.cli", "gumshoe.edge",
                     "gumshoe.httpserve", *WEB_STACK}


def modules(package: str) -> list[Path]:
    return sorted((ROOT / package).glob("*.py"))


def module_path(module: str) -> Path:
    """'db' -> gumshoe/db.py, 'collect.values' -> gumshoe/collect/values.py, 'collect' ->
    gumshoe/collect/__init__.py."""
    if module == "collect":
        return ROOT / "gumshoe" / "collect" / "__init__.py"
    return ROOT / "gumshoe" / (module.replace(".", "/") + ".py")


def package_of(module: str) -> str:
    """The package relative imports of `module` start from."""
    if module == "collect":
        return "gumshoe.collect"
    return "gumshoe." + module.rpartition(".")[0] if "." in module else "gumshoe"


def imports(path: Path, package: str) -> list[tuple[str, bool]]:
    """(absolute module name, imported at module level?) for every import in `path`."""
    tree = ast.parse(path.read_text("utf-8"), str(path))
    top_level = {id(node) for node in tree.body}
    for node in tree.body:  # `if TYPE_CHECKING:` / `try:` blocks still count as top level
        if isinstance(node, (ast.If, ast.Try)):
            top_level.update(id(child) for child in ast.walk(node))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(alias.name, id(node) in top_level) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: from . import x / from .x import y / from .. import z
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                target = f"{base}.{node.module}" if node.module else base
                names = [f"{target}.{a.name}" for a in node.names] if not node.module else [target]
                found += [(name, id(node) in top_level) for name in names]
            elif node.module:
                found.append((node.module, id(node) in top_level))
    return found


def internal(name: str) -> str | None:
    """'gumshoe.db' or 'gumshoe.db.X' -> 'db'; 'gumshoe.collect.values' -> 'collect.values';
    None for anything outside gumshoe."""
    parts = name.split(".")
    if parts[0] != "gumshoe" or len(parts) < 2:
        return None
    if len(parts) > 2 and f"{parts[1]}.{parts[2]}" in TIER:
        return f"{parts[1]}.{parts[2]}"
    return parts[1]


GUMSHOE = [p.stem for p in modules("gumshoe")] + [
    "collect" if p.stem == "__init__" else f"collect.{p.stem}" for p in modules("gumshoe/collect")]


@pytest.mark.parametrize("module", GUMSHOE)
def test_module_has_a_tier(module: str) -> None:
    assert module in TIER, (f"{module_path(module).relative_to(ROOT)} has no tier: add it to "
                            f"TIERS in {Path(__file__).name} at the level of what it imports")


@pytest.mark.parametrize("module", GUMSHOE)
def test_gumshoe_imports_only_downward(module: str) -> None:
    if module not in TIER:
        pytest.skip("no tier (reported by test_module_has_a_tier)")
    problems = []
    for name, at_top in imports(module_path(module), package_of(module)):
        target = internal(name)
        if target is None or target not in TIER or TIER[target] <= TIER[module]:
            continue
        if (module, target) in LAZY_UPWARD and not at_top:
            continue
        problems.append(f"gumshoe.{module} (tier {TIER[module]}) imports gumshoe.{target} "
                        f"(tier {TIER[target]})")
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("module", sorted(FORBIDDEN))
def test_forbidden_edges(module: str) -> None:
    path = module_path(module)
    if not path.exists():
        pytest.skip(f"gumshoe/{module}.py does not exist yet")
    used = {internal(name) for name, _ in imports(path, package_of(module))}
    assert not used & FORBIDDEN[module], (f"gumshoe.{module} imports "
                                          f"{sorted(used & FORBIDDEN[module])}")


@pytest.mark.parametrize("module", GUMSHOE)
def test_only_http_modules_import_the_web_stack(module: str) -> None:
    if module in WEB_MODULES:
        return
    used = {name.split(".")[0] for name, _ in imports(module_path(module),
                                                        package_of(module))}
    assert not used & WEB_STACK, f"gumshoe.{module} imports {sorted(used & WEB_STACK)}"


@pytest.mark.parametrize("path", modules("gumtool"), ids=lambda p: p.name)
def test_gumtool_stays_off_the_servers(path: Path) -> None:
    bad = sorted({name for name, _ in imports(path, "gumtool")
                  if name in GUMTOOL_FORBIDDEN or name.split(".")[0] in WEB_STACK
                  or any(name.startswith(f + ".") for f in GUMTOOL_FORBIDDEN)})
    assert not bad, f"gumtool/{path.name} imports {bad}"


def test_client_imports_only_the_stdlib() -> None:
    """gumshoe/client.py can be copied into any project: it imports nothing but the standard
    library when it runs (pandas only lazily in query_df, and for type checkers)."""
    path = ROOT / "gumshoe" / "client.py"
    tree = ast.parse(path.read_text("utf-8"))
    typing_only = {alias.name for node in tree.body if isinstance(node, ast.If)
                   and ast.unparse(node.test) == "TYPE_CHECKING" for child in ast.walk(node)
                   if isinstance(child, ast.Import) for alias in child.names}
    used = {name.split(".")[0] for name, at_top in imports(path, "gumshoe")
            if at_top and name not in typing_only}
    assert used <= set(sys.stdlib_module_names), sorted(used - set(sys.stdlib_module_names))


def test_the_checker_sees_relative_and_lazy_imports(tmp_path: Path) -> None:
    src = tmp_path / "m.py"
    src.write_text("from . import db\nfrom .schema import Schema\nimport starlette.routing\n"
                   "def f():\n    from .engine import execute\n")
    assert imports(src, "gumshoe") == [("gumshoe.db", True), ("gumshoe.schema", True),
                                       ("starlette.routing", True), ("gumshoe.engine", False)]
    src.write_text("from .. import wire\nfrom ..batch import Batch\nfrom .values import x\n")
    assert imports(src, "gumshoe.collect") == [("gumshoe.wire", True), ("gumshoe.batch", True),
                                               ("gumshoe.collect.values", True)]
    assert internal("gumshoe.collect.values") == "collect.values"
    assert internal("gumshoe.collect") == "collect"
