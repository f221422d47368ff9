"""The markdown report of a benchmark run (results.json -> report.md / RESULTS.md)."""

from __future__ import annotations

from typing import Any

INSERT_TARGET = 1_000_000  # rows/s, library level (issue 2)
INSERT_IDEAL_TARGET = 0.7  # within 30% of the ideal ingest kernel
DUCK_TARGET = 1.5  # low-cardinality groupings: >= 1.5x DuckDB's speed (issue 3)
IDEAL_TARGET = 1.2  # queries within 20% of the ideal kernel


KEEP_MARKER = "<!-- synthetic.run rewrites what is above this line and keeps what is below -->"


def keep_tail(text: str, path: Any) -> str:
    """`text` with the part of the existing file at `path` from KEEP_MARKER on appended: the
    other benchmarks' sections (bulk import, a billion rows, sketches) survive a full run."""
    try:
        old = path.read_text()
    except OSError:
        return text
    at = old.find(KEEP_MARKER)
    return text if at < 0 else text.rstrip("\n") + "\n\n" + old[at:]


def _n(v: Any, digits: int = 0) -> str:
    if v is None:
        return "-"
    if isinstance(v, float) and digits:
        return f"{v:,.{digits}f}"
    return f"{round(v):,}"


def _rate(v: Any) -> str:
    if v is None:
        return "-"
    return f"{v / 1e6:.2f}M" if v >= 1e5 else f"{v / 1e3:.0f}k"


def _ms(e: dict[str, Any] | None) -> str:
    if not e:
        return "-"
    return f"{e['median_ms']:.1f} / {e['p90_ms']:.1f}"


def _x(v: Any) -> str:
    return "-" if v is None else f"{v:.2f}x"


def _mark(ok: bool) -> str:
    return "yes" if ok else "**no**"


def markdown(doc: dict[str, Any]) -> str:
    meta, runs = doc["meta"], doc["runs"]
    m, g = meta["machine"], meta["git"]
    good = [r for r in runs if "ingest" in r]
    out = ["# gumshoe benchmarks (synthetic/)", ""]
    out.append(f"- **Date:** {meta['date']}; **command:** `{meta['command']}` "
               f"({meta.get('seconds', 0) / 60:.1f} min)")
    out.append(f"- **Machine:** {m['nproc']} CPUs ({m['cpu']}), {m['ram_gb']} GB RAM; "
               f"Python {m['python']}, numpy {m['numpy']}, DuckDB {m['duckdb']}; load average "
               f"{m['loadavg_start'][0]:.2f} at the start, "
               f"{m.get('loadavg_end', [0])[0]:.2f} at the end")
    dirty = " (with uncommitted changes under gumshoe/)" if g["gumshoe_dirty"] else ""
    out.append(f"- **Commit measured:** `{g['commit'][:12]}`{dirty}")
    if good:
        i0 = good[0]["ingest"]
        out.append(f"- **Setup:** {good[0]['hours']} hours of data (daily cycle), 10k-row "
                   f"batches of row dicts, segment_size {i0['segment_size']:,} B, durability "
                   f"`{i0['durability']}`, flush every {i0['flush_every_rows']:,} input rows; "
                   f"gumshoe query_parallelism = DuckDB threads = ideal threads = "
                   f"{good[0]['threads']}; DuckDB string dimensions as "
                   f"{good[0].get('duckdb_strings', 'varchar').upper()}")
    fails = [f"{r['rows']:,} rows: {f}" for r in runs for f in r.get("failures", [])]
    nq = sum(len(r.get("queries", [])) for r in good)
    out.append("- **Correctness:** " + (f"every answer matched DuckDB's ({nq} query runs "
                                        "checked; the stored table matched the ideal roll-up "
                                        "of the raw input at every size)" if not fails else
                                        f"**{len(fails)} FAILURES**"))
    out += [f"  - {f}" for f in fails]
    out.append("")
    if not good:
        return "\n".join(out) + "\n"

    out += ["## Ingest (library level, `DB.insert` of 10k-row lists of dicts)", "",
            "| input rows | stored rows | roll-up | insert rows/s (MEMORY) | ideal rows/s (parse · "
            "roll-up) | insert / ideal | with flushes | flush µs/row (ideal write) | "
            "largest flush | insert→queryable | on disk | peak RSS |",
            "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in good:
        i = r["ingest"]
        lf = i["largest_flush"]
        out.append(
            f"| {_n(i['rows'])} | {_n(i['stored_rows'])} | {i['rollup_ratio']:.2f}:1 | "
            f"{_rate(i['insert_rows_per_s'])} ({_rate(i.get('memory', {}).get('rows_per_s'))}) | "
            f"{_rate(i['ideal_ingest_rows_per_s'])} "
            f"({_rate(i['ideal_parse_rows_per_s'])} · {_rate(i['ideal_rollup_rows_per_s'])}) | "
            f"{_x(i['insert_vs_ideal'])} | {_rate(i['sustained_rows_per_s'])} | "
            f"{i['flush_us_per_rolled_row']:.2f} ({r['ideal_flush_us_per_row']:.2f}) | "
            f"{_n(lf['rolled_rows'])} in {lf['seconds']:.2f}s | "
            f"{i['last_insert_to_queryable_ms']:.0f} ms | "
            f"{i['bytes_on_disk'] / 2**20:,.0f} MiB "
            f"({i['bytes_on_disk'] / max(i['stored_rows'], 1):.0f} B/row) | "
            f"{i['peak_rss_mb']:,.0f} MiB |")
    out += ["", "Ideal = the minimal numpy work on the same batches: column extraction from "
            "the dicts with every string already known (sampled on 1 batch in 8) plus a dense "
            "`bincount` roll-up of each hour done once. *(MEMORY)*: the same inserts into a "
            "`database_dir = \"MEMORY\"` DB (no write-ahead log), first 2M rows. "
            "*With flushes* counts flush time too. "
            "Flush µs per rolled-up row written; the ideal write is one fsync'd file per "
            "column of 1M rows. *insert→queryable*: a total query issued right after the last "
            "insert returns (it counts every row). Peak RSS is the whole benchmark process.",
            ""]

    hi = meta.get("http_insert")
    if hi:
        rates = ", ".join(f"{k} client{'s' if str(k) != '1' else ''}: {_rate(v)} rows/s"
                          for k, v in hi.get("rows_per_s", {}).items())
        out += ["HTTP insert (`python -m synthetic.http_insert`, `PUT /insert` of 10k-row JSON "
                f"batches to `gumshoe serve`): {rates or 'no figures'}", "", "```",
                hi.get("output", ""), "```", ""]

    big = good[-1]
    qs = big.get("queries", [])
    out += [f"## Queries at {big['rows']:,} input rows = {big['stored_rows']:,} rolled-up rows",
            "", "Milliseconds, median / p90 of the timed runs; rows/s = rolled-up rows / "
            "gumshoe median. *vs DuckDB* = DuckDB time / gumshoe time (>1: gumshoe faster); "
            "*vs ideal* = gumshoe time / ideal time (1.00 = as fast as the ideal kernel). "
            "HTTP = `POST /query` to `gumshoe serve` on loopback (keep-alive, JSON decoded); "
            f"server peak RSS {_n(big.get('server_peak_rss_mb'))} MiB.", "",
            "| query | groups | gumshoe | rows/s | HTTP | DuckDB | ideal | vs DuckDB | "
            "vs ideal | HTTP vs DuckDB |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for q in qs:
        e = q["engines"]
        gm = e.get("gumshoe")
        out.append(
            f"| {q['query']}{' (low-card.)' if q['low_cardinality'] else ''} | {q['groups']} | "
            f"{_ms(gm)} | {_rate(gm['rows_per_s']) if gm else '-'} | {_ms(e.get('http'))} | "
            f"{_ms(e.get('duckdb'))} | {_ms(e.get('ideal'))} | "
            f"{_x(q.get('duckdb_over_gumshoe'))} | {_x(q.get('gumshoe_over_ideal'))} | "
            f"{_x(q.get('duckdb_over_http'))} |")
    if all("min_ms" in e for q in qs for e in q["engines"].values()):
        out += ["", "The same runs by their fastest time (less sensitive to other processes on "
                "a shared machine):", "",
                "| query | gumshoe | HTTP | DuckDB | ideal | vs DuckDB | vs ideal |",
                "|---|---:|---:|---:|---:|---:|---:|"]
        for q in qs:
            e = q["engines"]
            best = {k: v["min_ms"] for k, v in e.items()}
            g = best.get("gumshoe")
            vs_d = best["duckdb"] / g if g and "duckdb" in best else None
            vs_i = g / best["ideal"] if g and "ideal" in best else None
            out.append(f"| {q['query']} | " + " | ".join(
                f"{best[k]:.1f}" if k in best else "-" for k in
                ("gumshoe", "http", "duckdb", "ideal")) + f" | {_x(vs_d)} | {_x(vs_i)} |")
    out += ["", "<details><summary>The queries (gumshoe JSON)</summary>", ""]
    out += [f"- `{q['query']}`: `{_json(q['json'])}`" for q in qs]
    out += ["", "</details>", ""]

    out += ["## Targets", ""]
    i = big["ingest"]
    mem = i.get("memory", {}).get("rows_per_s")
    ok = i["insert_rows_per_s"] >= INSERT_TARGET
    out.append(f"- Insert ≥ 1M rows/s at library level: {_mark(ok)} "
               f"({_rate(i['insert_rows_per_s'])} rows/s at {i['rows']:,} rows, durability "
               f"`{i['durability']}`; {_rate(mem)} rows/s into a MEMORY DB)")
    if i["insert_vs_ideal"] is not None:
        out.append(f"- Insert within 30% of the ideal ingest kernel: "
                   f"{_mark(i['insert_vs_ideal'] >= INSERT_IDEAL_TARGET)} "
                   f"({i['insert_vs_ideal']:.2f}x of the ideal)")
    low = [q for q in qs if q["low_cardinality"] and q.get("duckdb_over_gumshoe")]
    if low:
        worst = min(low, key=lambda q: q["duckdb_over_gumshoe"])
        out.append(f"- Low-cardinality groupings ≥ 1.5x DuckDB: "
                   f"{_mark(worst['duckdb_over_gumshoe'] >= DUCK_TARGET)} (worst: "
                   f"{worst['query']} at {worst['duckdb_over_gumshoe']:.2f}x; "
                   + ", ".join(f"{q['query']} {q['duckdb_over_gumshoe']:.2f}x" for q in low)
                   + ")")
    scored = [q for q in qs if q.get("gumshoe_over_ideal")]
    if scored:
        within = [q for q in scored if q["gumshoe_over_ideal"] <= IDEAL_TARGET]
        out.append(f"- Queries within 20% of the ideal kernel: {len(within)} of {len(scored)}"
                   f" (worst: " + ", ".join(
                       f"{q['query']} {q['gumshoe_over_ideal']:.2f}x" for q in sorted(
                           scored, key=lambda q: -q["gumshoe_over_ideal"])[:4]) + ")")
    out.append("")

    if len(good) > 1:
        out += ["## Growth curve", "",
                "Median ms, gumshoe / DuckDB, per input-row size (rolled-up rows in brackets).",
                ""]
        head = "| query | " + " | ".join(
            f"{r['rows'] / 1e6:g}M ({r['stored_rows'] / 1e6:.2f}M)" for r in good) + " |"
        out += [head, "|---|" + "---:|" * len(good)]
        out.append("| insert rows/s | " + " | ".join(
            _rate(r["ingest"]["insert_rows_per_s"]) for r in good) + " |")
        out.append("| load average (start-end) | " + " | ".join(
            f"{r.get('loadavg_start', 0):.1f}-{r.get('loadavg_end', 0):.1f}" for r in good)
            + " |")
        names = [q["query"] for q in qs]
        for name in names:
            cells = []
            for r in good:
                q = next((x for x in r.get("queries", []) if x["query"] == name), None)
                e = q["engines"] if q else {}
                cells.append(f"{e['gumshoe']['median_ms']:.1f} / {e['duckdb']['median_ms']:.1f}"
                             if "gumshoe" in e and "duckdb" in e else "-")
            out.append(f"| {name} | " + " | ".join(cells) + " |")
        out.append("")
    return "\n".join(out) + "\n"


def _json(obj: Any) -> str:
    import json

    return json.dumps(obj, separators=(",", ":"))
