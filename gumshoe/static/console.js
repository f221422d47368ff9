"use strict";
// The gumshoe console (GET /console): builds a JSON query from GET /schema, runs it with
// POST /query, draws the answer with uPlot (a time grouping: lines; others: bars) above a
// sortable table, and shows the query as JSON and SQL, both editable. The page's state lives
// in the URL's hash, so a link reproduces it; an API key lives in sessionStorage only.
// Plain JavaScript, no build step; served by gumshoe/console.py.

const $ = (id) => document.getElementById(id);
const KEY = "gumshoe.key";
const OPS = ["=", "!=", ">", ">=", "<", "<=", "in", "prefix", "contains", "regex"];
const TRANSFORMS = ["", "minute", "hour", "day", "week", "month", "quarter", "year"];
const RANGES = {"1h": 3600, "1d": 86400, "1w": 604800};
const COLORS = ["#2563eb", "#dc2626", "#16a34a", "#d97706", "#7c3aed", "#0891b2", "#db2777",
                "#4b5563"];
const MAX_SERIES = 8, MAX_BARS = 50;
// query keys are case-insensitive on the server: the page writes them in their usual spelling
const SPELLING = Object.fromEntries(["aggregates", "groupings", "filters", "postAggregations",
  "having", "orderBy", "limit", "offset", "timeTransform", "timeZone", "fill", "name", "column",
  "type", "value", "filter", "expression", "descending", "caseInsensitive", "allowPartial"]
  .map((k) => [k.toLowerCase(), k]));

let schema = null;      // GET /schema
let state = {range: "1d", from: "", to: "", refresh: 0, query: {}};
let last = null;        // {query, rows} of the last run
let sort = null;        // {column, descending}: the table's order
let chart = null, timer = null;
const suggested = new Set();

// -- the API ------------------------------------------------------------------------------------
async function api(path, body) {
  const headers = {};
  const key = sessionStorage.getItem(KEY);
  if (key) headers.Authorization = "Bearer " + key;
  const init = body === undefined ? {headers} : {method: "POST", headers, body};
  const r = await fetch(path, init);  // relative: the API is beside /console
  const data = await r.json().catch(() => ({error: r.statusText}));
  if (r.status === 401 || r.status === 403) askKey();
  if (!r.ok) throw new Error(`${r.status}: ${data.error || r.statusText}`);
  return data;
}

function askKey() {
  $("key-form").hidden = false;
  $("key").focus();
}

function status(text, error = false) {
  $("status").textContent = text;
  $("status").className = error ? "error" : "";
}

// -- schema helpers -------------------------------------------------------------------------------
const tsName = () => schema.timestamp.name;
const typeOf = (c) => c === tsName() ? schema.timestamp.type :
  ([...schema.dimensions, ...schema.metrics].find((d) => d.name === c) || {}).type || "";
const isString = (c) => typeOf(c).startsWith("string");
const metricNames = () => schema.metrics.map((m) => m.name);
const groupColumns = () => [tsName(), ...schema.dimensions.map((d) => d.name)];
const allColumns = () => [...groupColumns(), ...metricNames()];
const aggregateTypes = () => schema.aggregateTypes || ["sum", "average"];

function seconds(duration) {  // "1h" -> 3600 (the schema's interval)
  let total = 0;
  const units = {ms: 0.001, s: 1, m: 60, h: 3600, d: 86400, w: 604800};
  for (const [, n, u] of String(duration).matchAll(/(\d+)(ms|s|m|h|d|w)/g)) total += n * units[u];
  return total || 3600;
}

function normalize(v) {  // query keys in their usual spelling, recursively
  if (Array.isArray(v)) return v.map(normalize);
  if (v === null || typeof v !== "object") return v;
  return Object.fromEntries(Object.entries(v).map(
    ([k, x]) => [SPELLING[k.toLowerCase()] || k, k.toLowerCase() === "value" ? x : normalize(x)]));
}

// -- state in the URL -----------------------------------------------------------------------------
function readHash() {
  const p = new URLSearchParams(location.hash.slice(1));
  let query = null;
  try { query = JSON.parse(p.get("q") || "null"); } catch (e) { query = null; }
  const by = p.get("sort");  // the table's order: column, or -column for descending
  sort = by ? {column: by.replace(/^-/, ""), descending: by.startsWith("-")} : null;
  return {range: p.get("range") || "1d", from: p.get("from") || "", to: p.get("to") || "",
          refresh: Number(p.get("refresh") || 0), query};
}

function writeHash() {
  const p = new URLSearchParams({range: state.range});
  if (state.range === "custom") { p.set("from", state.from); p.set("to", state.to); }
  if (state.refresh) p.set("refresh", String(state.refresh));
  if (sort) p.set("sort", (sort.descending ? "-" : "") + sort.column);
  p.set("q", JSON.stringify(state.query));
  history.replaceState(null, "", "#" + p.toString());
}

function defaultQuery() {
  return {aggregates: metricNames().slice(0, 1).map((m) => ({type: "sum", column: m})),
          groupings: [{column: tsName(), timeTransform: "hour"}]};
}

// The query run: the form's query and the time range (filters on the timestamp select whole
// intervals, so a range starts at the start of the interval holding its first second).
function effectiveQuery() {
  const ts = tsName(), step = seconds(schema.interval);
  const floor = (t) => Math.floor(t / step) * step;
  const unix = (local) => Math.floor(new Date(local).getTime() / 1000);
  const time = [];
  if (state.range in RANGES) {
    time.push({type: ">=", column: ts, value: floor(Date.now() / 1000 - RANGES[state.range])});
  } else if (state.range === "custom") {
    if (state.from) time.push({type: ">=", column: ts, value: floor(unix(state.from))});
    if (state.to) time.push({type: "<", column: ts, value: unix(state.to)});
  }
  const q = {...state.query};
  const filters = [...time, ...(q.filters || [])];
  if (filters.length) q.filters = filters;
  return q;
}

// -- the form -------------------------------------------------------------------------------------
function el(tag, props = {}, ...children) {
  const e = Object.assign(document.createElement(tag), props);
  e.append(...children);
  return e;
}

function select(options, value, className = "") {
  const s = el("select", {className});
  for (const o of options) {
    const [v, label] = Array.isArray(o) ? o : [o, o];
    s.append(el("option", {value: v, textContent: label}));
  }
  if (value !== undefined && options.some((o) => (Array.isArray(o) ? o[0] : o) === value)) {
    s.value = value;
  }
  return s;
}

function item(controls, read) {  // one editable row of a fieldset, with its remove button
  const remove = el("button", {type: "button", className: "remove", textContent: "×",
                               title: "remove"});
  const div = el("div", {className: "item"}, ...controls, remove);
  div.read = read;
  remove.onclick = () => { div.remove(); readForm(); };
  return div;
}

function without(obj, ...keys) {
  const out = {...obj};
  for (const k of keys) delete out[k];
  return out;
}

function aggregateRow(a) {
  const type = select(aggregateTypes(), a.type || "sum", "agg-type");
  const column = select(metricNames(), a.column, "agg-column");
  let rest = without(a, "type", "column");
  column.addEventListener("change", () => { rest = without(rest, "name"); });
  return item([type, column], () => ({...rest, type: type.value, column: column.value}));
}

function groupingRow(g) {
  const obj = typeof g === "string" ? {column: g} : g;
  const column = select(groupColumns(), obj.column, "group-column");
  const transform = select(TRANSFORMS.map((t) => [t, t || "interval"]), obj.timeTransform || "",
                           "group-transform");
  const rest = without(obj, "column", "timeTransform");
  const show = () => { transform.hidden = column.value !== tsName(); };
  column.addEventListener("change", show);
  show();
  return item([column, transform], () => {
    const out = {...rest, column: column.value};
    if (!transform.hidden && transform.value) out.timeTransform = transform.value;
    return Object.keys(out).length === 1 ? out.column : out;
  });
}

function filterRow(f) {
  if (!OPS.includes(String(f.type || "=").toLowerCase()) || f.column === undefined) {
    return item([el("code", {textContent: JSON.stringify(f)})], () => f);  // and/or/not: as is
  }
  const column = select(allColumns(), f.column, "filter-column");
  const op = select(OPS, String(f.type || "=").toLowerCase(), "filter-op");
  const value = el("input", {className: "filter-value", value: showValue(f.value),
                             title: "null for nil; a comma-separated list for in"});
  const rest = without(f, "column", "type", "value");
  const hint = () => { value.setAttribute("list", "dl-" + column.value); suggest(column.value); };
  column.addEventListener("change", hint);
  hint();
  return item([column, op, value], () => (
    {...rest, type: op.value, column: column.value,
     value: parseValue(column.value, op.value, value.value)}));
}

function showValue(v) {
  return Array.isArray(v) ? v.map(showValue).join(", ") : v === null ? "null" :
    v === undefined ? "" : String(v);
}

function parseValue(column, op, text) {
  if (["prefix", "contains", "regex"].includes(op)) return text;
  const one = (t) => (t.trim() === "null" ? null : isString(column) ? t : Number(t));
  return op === "in" ? text.split(",").map((t) => one(isString(column) ? t.trim() : t))
    : one(text);
}

async function suggest(column) {  // a datalist of a string dimension's values
  if (!isString(column) || suggested.has(column)) return;
  suggested.add(column);
  const values = await api("dimension_tables/" + encodeURIComponent(column)).catch(() => []);
  const list = el("datalist", {id: "dl-" + column});
  for (const v of (values || []).slice(0, 1000)) if (v !== null) list.append(el("option", {value: v}));
  document.body.append(list);
}

function renderForm() {
  $("range").value = state.range;
  $("from").value = state.from;
  $("to").value = state.to;
  $("custom-range").hidden = state.range !== "custom";
  $("refresh").value = String(state.refresh);
  $("limit").value = state.query.limit ?? "";
  const q = state.query;
  $("aggregates").replaceChildren(...(q.aggregates || []).map(aggregateRow));
  $("groupings").replaceChildren(...(q.groupings || []).map(groupingRow));
  $("filters").replaceChildren(...(q.filters || []).map(filterRow));
  showTexts(effectiveQuery());
}

function readForm() {
  const q = {...state.query};
  const rows = (id) => [...$(id).children].map((div) => div.read());
  const aggregates = rows("aggregates"), seen = new Set();
  for (const a of aggregates) {  // two aggregates of one column need names of their own
    if (!a.name && seen.has(a.column)) a.name = `${a.type}_${a.column}`;
    seen.add(a.name || a.column);
  }
  Object.assign(q, {aggregates, groupings: rows("groupings"), filters: rows("filters")});
  for (const k of ["aggregates", "groupings", "filters"]) if (!q[k].length) delete q[k];
  if ($("limit").value) q.limit = Number($("limit").value); else delete q.limit;
  Object.assign(state, {query: q, range: $("range").value, from: $("from").value,
                        to: $("to").value, refresh: Number($("refresh").value)});
  $("custom-range").hidden = state.range !== "custom";
  writeHash();
  showTexts(effectiveQuery());
  autoRefresh();
}

function autoRefresh() {
  clearInterval(timer);
  timer = state.refresh ? setInterval(run, state.refresh * 1000) : null;
}

// -- JSON and SQL ---------------------------------------------------------------------------------
function showTexts(q) {
  $("json").value = JSON.stringify(q, null, 2);
  $("sql").value = toSQL(q);
}

const ident = (n) => /^[a-z_][a-z0-9_]*$/.test(n) ? n : '"' + n.replace(/"/g, '""') + '"';
const lit = (v) => v === null ? "NULL" : typeof v === "number" ? String(v)
  : "'" + String(v).replace(/'/g, "''") + "'";
const likeEscape = (s) => s.replace(/[\\%_]/g, "\\$&");

function sqlFilter(f) {
  if (Array.isArray(f)) return f.map(sqlFilter).join(" AND ");
  const t = String(f.type || "=").toLowerCase(), c = ident(f.column || "");
  const like = f.caseInsensitive ? "ILIKE" : "LIKE";
  switch (t) {
    case "and": case "or":
      return "(" + f.filters.map(sqlFilter).join(` ${t.toUpperCase()} `) + ")";
    case "not": return `NOT (${sqlFilter(f.filter)})`;
    case "in": return `${c} IN (${f.value.map(lit).join(", ")})`;
    case "prefix": return `${c} ${like} ${lit(likeEscape(f.value) + "%")}`;
    case "contains": return `${c} ${like} ${lit("%" + likeEscape(f.value) + "%")}`;
    case "regex":
      return `REGEXP_LIKE(${c}, ${lit(f.value)}${f.caseInsensitive ? ", 'i'" : ""})`;
    default:
      if (f.value === null && (t === "=" || t === "!=")) {
        return `${c} IS ${t === "=" ? "" : "NOT "}NULL`;
      }
      return `${c} ${t} ${lit(f.value)}`;
  }
}

// The query as SQL for POST /sql; post-aggregations become arithmetic on the aggregates.
function toSQL(q) {
  const items = [], groupBy = [], outputs = {rowCount: "count(*)"}, skipped = [];
  for (const g of q.groupings || []) {
    const o = typeof g === "string" ? {column: g} : g;
    let e = ident(o.column);
    if (o.timeTransform) {
      e = `date_trunc(${lit(o.timeTransform)}, ${e}${o.timeZone ? ", " + lit(o.timeZone) : ""})`;
    }
    const name = o.name || o.column;
    items.push(e === ident(name) ? e : `${e} AS ${ident(name)}`);
    groupBy.push(String(items.length));
    if (o.fill) skipped.push("fill");
  }
  for (const a of q.aggregates || []) {
    const type = a.type || "sum", name = a.name || a.column;
    const e = `${type === "average" ? "avg" : type}(${ident(a.column)})`;
    outputs[name] = e;
    items.push(name === a.column ? e : `${e} AS ${ident(name)}`);
  }
  for (const p of q.postAggregations || []) {
    const e = p.expression.replace(/"(?:[^"]|"")*"|[A-Za-z_][A-Za-z0-9_.]*/g, (tok) => {
      const name = tok.startsWith('"') ? tok.slice(1, -1).replace(/""/g, '"') : tok;
      return name in outputs ? outputs[name] : tok;
    });
    outputs[p.name] = `(${e})`;
    items.push(`${e} AS ${ident(p.name)}`);
  }
  if (!items.length) items.push("count(*)");
  let s = `SELECT ${items.join(", ")}\nFROM events`;
  if (q.filters && q.filters.length) s += "\nWHERE " + q.filters.map(sqlFilter).join("\n  AND ");
  if (groupBy.length) s += "\nGROUP BY " + groupBy.join(", ");
  if (q.having) s += "\nHAVING " + sqlFilter(q.having);
  if (q.orderBy && q.orderBy.length) {
    s += "\nORDER BY " + q.orderBy.map((o) => (o.column === "rowCount" ? "count(*)"
      : ident(o.column)) + (o.descending ? " DESC" : "")).join(", ");
  }
  if (q.limit !== undefined && q.limit !== null) s += `\nLIMIT ${q.limit}`;
  if (q.offset) s += `\nOFFSET ${q.offset}`;
  return skipped.length ? s + `\n-- not expressible in SQL: ${skipped.join(", ")}` : s;
}

// -- running --------------------------------------------------------------------------------------
async function run() {
  const q = effectiveQuery();
  showTexts(q);
  writeHash();
  status("running…");
  try {
    const data = await api("query", JSON.stringify(q));
    last = {query: q, rows: data.results};
    status(`${data.results.length} rows in ${data.duration_ms} ms` +
           (data.missingShards ? ` (missing shards: ${data.missingShards.join(", ")})` : ""));
    drawTable();
    drawChart();
  } catch (e) {
    status(e.message, true);
  }
}

function adopt(query) {  // a query written by hand (JSON or SQL): its filters hold its range
  Object.assign(state, {query: normalize(query), range: "all"});
  sort = null;
  renderForm();
  return run();
}

async function runJSON() {
  let q;
  try { q = JSON.parse($("json").value); } catch (e) { status("JSON: " + e.message, true); return; }
  await adopt(q);
}

async function runSQL() {
  const text = $("sql").value.replace(/^\s*explain\s+/i, "");
  try { await adopt(await api("sql", "EXPLAIN " + text)); } catch (e) { status(e.message, true); }
}

// -- the answer -----------------------------------------------------------------------------------
function columnsOf(q) {  // the result's columns, in the CSV header's order
  return [...(q.groupings || []).map((g) => typeof g === "string" ? g : g.name || g.column),
          ...(q.aggregates || []).map((a) => a.name || a.column),
          ...(q.postAggregations || []).map((p) => p.name), "rowCount"];
}

function timeGrouping(q) {  // the index and zone of the grouping on the timestamp, or -1
  const gs = q.groupings || [];
  const i = gs.findIndex((g) => (typeof g === "string" ? g : g.column) === tsName());
  return {index: i, zone: i >= 0 && typeof gs[i] === "object" ? gs[i].timeZone : undefined};
}

function formatTime(t, zone) {
  const d = new Date(t * 1000);
  return new Intl.DateTimeFormat("sv-SE", {timeZone: zone || "UTC", dateStyle: "short",
                                           timeStyle: "short"}).format(d) + (zone ? "" : "Z");
}

function sortedRows() {
  if (!sort) return last.rows;
  const k = sort.column, dir = sort.descending ? -1 : 1;
  const cmp = (a, b) => a === b ? 0 : a === null ? -1 : b === null ? 1 : a < b ? -1 : 1;
  return [...last.rows].sort((a, b) => dir * cmp(a[k], b[k]));
}

function drawTable() {
  const cols = columnsOf(last.query), time = timeGrouping(last.query);
  const timeCol = time.index >= 0 ? cols[time.index] : null;
  const head = el("tr", {}, ...cols.map((c) => {
    const mark = sort && sort.column === c ? (sort.descending ? " ▼" : " ▲") : "";
    const th = el("th", {textContent: c + mark, title: "sort"});
    th.dataset.column = c;
    th.onclick = () => {
      sort = {column: c, descending: sort && sort.column === c ? !sort.descending : false};
      writeHash();
      drawTable();
      drawChart();
    };
    return th;
  }));
  const body = sortedRows().map((r) => el("tr", {}, ...cols.map((c) => {
    const v = r[c];
    const td = el("td", {textContent: v === null || v === undefined ? "null"
      : c === timeCol ? formatTime(v, time.zone) : String(v)});
    td.dataset.v = JSON.stringify(v ?? null);
    if (typeof v === "number" && c !== timeCol) td.className = "num";
    if (v === null) td.className = "null";
    return td;
  })));
  $("results").replaceChildren(el("thead", {}, head), el("tbody", {}, ...body));
}

function drawChart() {
  if (chart) { chart.destroy(); chart = null; }
  $("chart").replaceChildren();
  const q = last.query, rows = sortedRows(), cols = columnsOf(q);
  const nGroups = (q.groupings || []).length;
  if (!rows.length || !nGroups) return;
  // aggregates and post-aggregations (rowCount only when there are none)
  const values = cols.length - nGroups > 1 ? cols.slice(nGroups, -1) : ["rowCount"];
  const width = Math.max(320, $("chart").clientWidth || 800);
  const time = timeGrouping(q);
  chart = time.index >= 0 ? timeChart(rows, cols, values, time, width)
    : barChart(rows, cols.slice(0, nGroups), values, width);
}

// A line per value column, or (with other groupings) a line per group of the first value.
function timeChart(rows, cols, values, time, width) {
  const tcol = cols[time.index];
  const others = cols.slice(0, (last.query.groupings || []).length).filter((c) => c !== tcol);
  const xs = [...new Set(rows.map((r) => r[tcol]))].filter((x) => x !== null).sort((a, b) => a - b);
  const at = new Map(xs.map((x, i) => [x, i]));
  const series = new Map();  // label -> y values
  const add = (label, r, v) => {
    if (!series.has(label)) series.set(label, new Array(xs.length).fill(null));
    if (at.has(r[tcol])) series.get(label)[at.get(r[tcol])] = r[v];
  };
  for (const r of rows) {
    if (others.length) add(others.map((c) => showValue(r[c])).join(" / "), r, values[0]);
    else for (const v of values) add(v, r, v);
  }
  const labels = [...series.keys()].slice(0, MAX_SERIES);
  return new uPlot({
    width, height: 320, title: others.length ? `${values[0]} by ${others.join(", ")}` : "",
    scales: {x: {time: true}},
    tzDate: (t) => uPlot.tzDate(new Date(t * 1000), time.zone || "Etc/UTC"),
    series: [{label: tcol, value: (u, v) => v === null ? "" : formatTime(v, time.zone)},
             ...labels.map((l, i) => ({label: l, stroke: COLORS[i % COLORS.length], width: 2}))],
  }, [xs, ...labels.map((l) => series.get(l))], $("chart"));
}

const short = (label) => label === undefined ? "" :
  label.length > 14 ? label.slice(0, 13) + "…" : label;

// Bars of the first value column (the sorted one when it is a value), one per group.
function barChart(rows, groupCols, values, width) {
  const v = sort && values.includes(sort.column) ? sort.column : values[0];
  const shown = rows.slice(0, MAX_BARS);
  const cats = shown.map((r) => groupCols.map((c) => showValue(r[c])).join(" / "));
  const xs = cats.map((_, i) => i);
  return new uPlot({
    width, height: 320, title: `${v} by ${groupCols.join(", ")}` +
      (rows.length > MAX_BARS ? ` (first ${MAX_BARS} of ${rows.length})` : ""),
    scales: {x: {time: false, range: [-0.5, shown.length - 0.5]},
             y: {range: (u, lo, hi) => [Math.min(0, lo), Math.max(0, hi) * 1.05 || 1]}},
    axes: [{values: (u, splits) => splits.map((s) => Number.isInteger(s) ? short(cats[s]) : ""),
            incrs: [1, 2, 5, 10, 20, 50]}, {}],
    series: [{label: groupCols.join(" / "), value: (u, i) => cats[i] ?? ""},
             {label: v, stroke: COLORS[0], fill: COLORS[0] + "99", width: 1,
              paths: uPlot.paths.bars({size: [0.7, 60]}), points: {show: false}}],
  }, [xs, shown.map((r) => r[v])], $("chart"));
}

// -- wiring ---------------------------------------------------------------------------------------
async function start() {
  try {
    schema = await api("schema");
  } catch (e) {
    status(e.message, true);
    return;
  }
  $("key-form").hidden = true;
  $("schema-info").textContent = `${schema.dimensions.length} dimensions, ` +
    `${schema.metrics.length} metrics, ${schema.interval} intervals`;
  const s = readHash();
  Object.assign(state, s, {query: normalize(s.query || defaultQuery())});
  renderForm();
  autoRefresh();
  await run();
}

$("builder").addEventListener("change", (e) => { if (e.target.id !== "run") readForm(); });
$("limit").addEventListener("input", readForm);
$("filters").addEventListener("input", readForm);
$("run").onclick = run;
$("run-json").onclick = runJSON;
$("run-sql").onclick = runSQL;
$("add-aggregate").onclick = () => {
  $("aggregates").append(aggregateRow({type: "sum", column: metricNames()[0]}));
  readForm();
};
$("add-grouping").onclick = () => {
  const dims = schema.dimensions.map((d) => d.name);
  $("groupings").append(groupingRow(dims[0] || tsName()));
  readForm();
};
$("add-filter").onclick = () => {
  const strings = schema.dimensions.filter((d) => d.type.startsWith("string"));
  $("filters").append(filterRow({type: "=", column: (strings[0] || {}).name || tsName(),
                                 value: ""}));
  readForm();
};
$("key-form").addEventListener("submit", (e) => {
  e.preventDefault();
  sessionStorage.setItem(KEY, $("key").value);
  $("key").value = "";
  start();
});
window.addEventListener("hashchange", start);  // a link pasted into this tab
start();
