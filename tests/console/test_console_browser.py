"""The console in a real browser: headless Chromium (Debian `chromium`, driven by Playwright for
Python; skipped, saying why, where either is missing) loads GET /console from a real server
holding rows, a query is built by clicking, and the table's numbers must equal POST /query's for
the query the clicks describe; the chart must have drawn (pixels on its canvas). Also: SQL typed
into the page, a link reproducing the page, and API keys on (the page asks for a read key and
keeps it out of the URL). Screenshots go to the test's tmp directory. Nothing leaves loopback.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.http.harness import ServerProcess, sample_rows, write_config

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--no-first-run"]
READ_KEY = "console-read-key-0123456789"
pytestmark = pytest.mark.skipif(
    shutil.which("chromium") is None and not Path(CHROMIUM).exists(),
    reason="chromium is not installed (Debian package chromium; .ci/run installs it)")

# the number of pixels of the chart's canvas that are not transparent
DRAWN = """() => {
  const c = document.querySelector('#chart canvas');
  if (!c) return 0;
  const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
  let n = 0;
  for (let i = 3; i < d.length; i += 4) if (d[i] !== 0) n++;
  return n;
}"""
# the table as {header: [cell text, ...]} and each cell's raw JSON value
TABLE = """() => {
  const heads = [...document.querySelectorAll('#results th')].map(th => th.dataset.column);
  return [...document.querySelectorAll('#results tbody tr')].map(tr =>
    Object.fromEntries([...tr.children].map((td, i) =>
      [heads[i], {text: td.textContent, v: JSON.parse(td.dataset.v)}])));
}"""


@pytest.fixture(scope="module")
def sync_api() -> Any:
    return pytest.importorskip("playwright.sync_api", reason="playwright is not installed "
                               "(pip install -e '.[test]')")


def start_server(tmp_path: Path, tables: str = "", key: str | None = None) -> ServerProcess:
    cfg = write_config(tmp_path, tmp_path / "db", tables)
    server = ServerProcess(cfg, tmp_path / "server.log", key=key).start()
    r = server.insert(sample_rows(600, seed=17))
    assert r.status_code == 200, r.text
    return server


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerProcess]:
    s = start_server(tmp_path)
    yield s
    assert s.stop() == 0


@pytest.fixture
def browser(sync_api: Any) -> Iterator[Any]:
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            yield b
        finally:
            b.close()


def open_console(browser: Any, url: str) -> Any:
    page = browser.new_page(viewport={"width": 1280, "height": 1000})
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.errors = errors
    page.goto(url)
    return page


def wait_for_answer(page: Any) -> None:
    """Until the page shows the answer of its latest run (or an error)."""
    page.wait_for_function("() => /rows in|^\\d{3}:|JSON:/.test("
                           "document.getElementById('status').textContent)", timeout=15000)
    status = page.text_content("#status")
    assert " rows in " in status, status


def run(page: Any) -> None:
    page.evaluate("document.getElementById('status').textContent = ''")
    page.click("#run")
    wait_for_answer(page)


def assert_table_is(page: Any, results: list[dict[str, Any]], time_column: str | None = None
                    ) -> None:
    table = page.evaluate(TABLE)
    assert len(table) == len(results) > 0
    for row, expected in zip(table, results, strict=True):
        assert set(row) == set(expected)
        for column, value in expected.items():
            cell = row[column]
            assert cell["v"] == value, (column, cell, value)  # the raw value of the cell
            if value is None:
                assert cell["text"] == "null"
            elif column == time_column:
                assert cell["text"].endswith("Z")  # a UTC time, not seconds
            elif isinstance(value, (int, float)):
                assert float(cell["text"]) == value, (column, cell, value)  # the shown number
            else:
                assert cell["text"] == value


def page_query(page: Any) -> dict[str, Any]:
    import json

    return dict(json.loads(page.input_value("#json")))


def test_a_query_built_by_clicking(server: ServerProcess, browser: Any, tmp_path: Path) -> None:
    page = open_console(browser, server.url + "/console")
    wait_for_answer(page)  # the default query: last day (nothing: the rows are from 2023)
    page.select_option("#range", "all")
    # group by country instead of the hour
    page.click("#groupings .remove")
    page.click("#add-grouping")
    page.locator("#groupings .group-column").select_option("country")
    # sum of clicks (the default aggregate is visits), and the average score
    page.locator("#aggregates .agg-column").first.select_option("clicks")
    page.click("#add-aggregate")
    aggregate = page.locator("#aggregates .item").nth(1)
    aggregate.locator(".agg-type").select_option("average")
    aggregate.locator(".agg-column").select_option("score")
    # a filter: visits >= 1
    page.click("#add-filter")
    f = page.locator("#filters .item").first
    f.locator(".filter-column").select_option("visits")
    f.locator(".filter-op").select_option(">=")
    f.locator(".filter-value").fill("1")
    run(page)
    expected_query = {"aggregates": [{"type": "sum", "column": "clicks"},
                                     {"type": "average", "column": "score"}],
                      "groupings": ["country"],
                      "filters": [{"type": ">=", "column": "visits", "value": 1}]}
    assert page_query(page) == expected_query
    r = server.query(expected_query)
    assert r.status_code == 200, r.text
    assert_table_is(page, r.json()["results"])
    assert page.evaluate(DRAWN) > 1000  # the bars
    page.screenshot(path=str(tmp_path / "console-bars.png"), full_page=True)

    # sorting the table by clicks, descending (two clicks on the header)
    page.click("#results th[data-column=clicks]")
    page.click("#results th[data-column=clicks]")
    sorted_rows = sorted(r.json()["results"], key=lambda x: x["clicks"], reverse=True)
    assert_table_is(page, sorted_rows)

    # a time grouping: hours, a line per country
    page.locator("#groupings .group-column").select_option("at")
    page.locator("#groupings .group-transform").select_option("hour")
    page.click("#add-grouping")
    page.locator("#groupings .group-column").nth(1).select_option("country")
    run(page)
    q = page_query(page)
    assert q["groupings"] == [{"column": "at", "timeTransform": "hour"}, "country"]
    r = server.query(q)
    by_clicks = sorted(r.json()["results"], key=lambda x: x["clicks"], reverse=True)
    assert_table_is(page, by_clicks, time_column="at")  # still sorted as the user asked
    assert page.evaluate("document.querySelectorAll('#chart .u-series').length") == 5  # x, 4
    assert page.evaluate(DRAWN) > 1000  # the lines
    page.screenshot(path=str(tmp_path / "console-lines.png"), full_page=True)

    # the URL holds the page's state: a new page at that URL shows the same answer
    other = open_console(browser, page.url)
    wait_for_answer(other)
    assert other.evaluate(TABLE) == page.evaluate(TABLE)
    assert other.input_value("#range") == "all"
    assert not page.errors and not other.errors, page.errors + other.errors


def test_sql_typed_into_the_page(server: ServerProcess, browser: Any) -> None:
    page = open_console(browser, server.url + "/console#range=all")
    wait_for_answer(page)
    sql = ("SELECT name, sum(clicks) AS clicks, sum(clicks) / sum(visits) AS cpv FROM events "
           "WHERE country IN ('US', 'CA') GROUP BY name HAVING sum(visits) > 0 "
           "ORDER BY clicks DESC LIMIT 5")
    page.fill("#sql", sql)
    page.evaluate("document.getElementById('status').textContent = ''")
    page.click("#run-sql")
    wait_for_answer(page)
    r = server.client.post("/sql", content=sql)
    assert r.status_code == 200, r.text
    assert_table_is(page, r.json()["results"])
    # the JSON shown is the query the SQL means, and the SQL written back from it means it too
    explained = server.client.post("/sql", content="EXPLAIN " + sql).json()
    assert page_query(page) == explained
    again = server.client.post("/sql", content="EXPLAIN " + page.input_value("#sql")).json()
    assert again == explained
    assert not page.errors, page.errors
    # an error is shown, not thrown (the browser logs the 400 itself)
    page.fill("#sql", "SELECT cuntry FROM events GROUP BY 1")
    page.evaluate("document.getElementById('status').textContent = ''")
    page.click("#run-sql")
    page.wait_for_function("() => document.getElementById('status').textContent !== ''")
    assert "unknown column 'cuntry'" in page.text_content("#status")
    assert [e for e in page.errors if "status of 400" not in e] == []


def test_with_api_keys_the_page_asks_for_a_read_key(browser: Any, tmp_path: Path) -> None:
    server = start_server(tmp_path, f'[auth]\nread_keys = ["{READ_KEY}"]\n'
                                    f'admin_keys = ["{READ_KEY}-admin"]\n',
                          key=READ_KEY + "-admin")
    try:
        page = browser.new_page(viewport={"width": 1280, "height": 1000})
        page.goto(server.url + "/console#range=all")
        page.wait_for_selector("#key-form:not([hidden])")
        assert "401" in page.text_content("#status")
        page.fill("#key", READ_KEY)
        # cleared first, as run() does: else the wait can see the stale "401: ..." status
        page.evaluate("document.getElementById('status').textContent = ''")
        page.click("#key-form button")
        wait_for_answer(page)
        q = page_query(page)
        r = server.query(q)
        assert r.status_code == 200, r.text
        assert_table_is(page, r.json()["results"], time_column="at")
        assert page.evaluate(DRAWN) > 1000
        assert READ_KEY not in page.url
        assert page.evaluate("sessionStorage.getItem('gumshoe.key')") == READ_KEY
        page.screenshot(path=str(tmp_path / "console-auth.png"), full_page=True)
    finally:
        assert server.stop() == 0
