"""The README's command sequences run as written, against the real processes: "Try it", the
collect example, the SQL examples, the query CLI session and the router example. (The gumtool
block has its own test in tests/gumtool/test_readme.py; the set-up, benchmark and import
blocks name files and runs that are not a test's to make.)

Each `curl` runs with bash exactly as printed, only `localhost:9000` pointed at the test's
server; the answer printed under it in the README (`# {...}` lines) must be what comes back,
up to the values that depend on the clock (`duration_ms`, and today's `day`)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from .http.harness import free_port

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()
CLOCK_KEYS = {"duration_ms", "day"}

pytestmark = pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")


def section(title: str) -> str:
    """The README text under a heading, up to the next heading (code blocks skipped)."""
    out: list[str] = []
    inside = fenced = False
    for line in README.splitlines():
        if line.startswith("```"):
            fenced = not fenced
        elif not fenced and line.startswith("#"):
            if inside:
                break
            inside = line.lstrip("#").strip() == title
            continue
        if inside:
            out.append(line)
    assert out, f"no README section {title!r}"
    return "\n".join(out) + "\n"


def sh_blocks(text: str) -> list[str]:
    return re.findall(r"```sh\n(.*?)```", text, re.DOTALL)


def commands(block: str) -> list[tuple[str, list[str]]]:
    """(command, the `# ` comment lines printed after it) for each command of a block; a
    command continues over lines while its quotes are open."""
    out: list[tuple[str, list[str]]] = []
    lines = block.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        if not line.strip() or line.startswith("#"):
            i += 1
            continue
        cmd = [line]
        while _open_quotes("\n".join(cmd)) and i + 1 < len(lines):
            i += 1
            cmd.append(lines[i])
        i += 1
        expected = []
        while i < len(lines) and lines[i].startswith("# "):
            expected.append(lines[i][2:])
            i += 1
        out.append(("\n".join(cmd), expected))
    return out


def _open_quotes(text: str) -> bool:
    single = double = False
    escaped = False
    for ch in text:
        if escaped:
            escaped = False
        elif ch == "\\" and not single:
            escaped = True
        elif ch == "'" and not double:
            single = not single
        elif ch == '"' and not single:
            double = not double
    return single or double


def without_clock(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: (None if k in CLOCK_KEYS else without_clock(v)) for k, v in obj.items()}
    if isinstance(obj, list):
        return [without_clock(v) for v in obj]
    return obj


def answers(text: str) -> list[Any]:
    """The JSON values in `text`, one per line or spread over lines."""
    decoder = json.JSONDecoder()
    out, pos, text = [], 0, text.strip()
    while pos < len(text):
        value, end = decoder.raw_decode(text, pos)
        out.append(without_clock(value))
        pos = end
        while pos < len(text) and text[pos].isspace():
            pos += 1
    return out


class Serve:
    def __init__(self, cwd: Path, *args: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = open(cwd / f"serve-{self.port}.log", "wb")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "gumshoe", *args, "--listen", f"127.0.0.1:{self.port}"],
            cwd=cwd, stdout=self.log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, (cwd / f"serve-{self.port}.log").read_text()
            try:
                if httpx.get(self.url + "/", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.05)
        raise AssertionError("server not ready")

    def stop(self) -> None:
        self.proc.terminate()
        assert self.proc.wait(30) == 0
        self.log.close()


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Serve]:
    s = Serve(tmp_path, "serve")  # the embedded default config, database ./db
    try:
        yield s
    finally:
        s.stop()


def run_sh(cmd: str, port: int, cwd: Path, env: dict[str, str] | None = None,
           merged: bool = False) -> subprocess.CompletedProcess[str]:
    """Run with bash; `merged`: stderr into stdout, in the order a terminal shows them."""
    cmd = cmd.replace("localhost:9000", f"127.0.0.1:{port}")
    return subprocess.run(["bash", "-c", "NOW=$(date +%s)\n" + cmd], cwd=cwd,
                          stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT if merged else subprocess.PIPE,
                          text=True, timeout=60, env={**os.environ, **(env or {})})


def check_block(block: str, server: Serve, cwd: Path) -> int:
    checked = 0
    for cmd, expected in commands(block):
        if cmd.startswith("NOW="):
            continue
        out = run_sh(cmd, server.port, cwd)
        assert out.returncode == 0, (cmd, out.stderr)
        if expected:
            assert answers(out.stdout) == answers("\n".join(expected)), (cmd, out.stdout)
            checked += 1
    return checked


def test_try_it(server: Serve, tmp_path: Path) -> None:
    (block,) = sh_blocks(section("Try it"))
    assert check_block(block, server, tmp_path) == 4


def test_sql_examples(server: Serve, tmp_path: Path) -> None:
    check_block(sh_blocks(section("Try it"))[0], server, tmp_path)  # the data they query
    (block,) = sh_blocks(section("SQL"))
    assert check_block(block, server, tmp_path) == 2


def test_collect_examples(server: Serve, tmp_path: Path) -> None:
    blocks = [b for b in sh_blocks(section("Collect events")) if "localhost:9000" in b]
    assert blocks
    for block in blocks:
        for cmd, _ in commands(block):
            out = run_sh(cmd, server.port, tmp_path)
            assert out.returncode == 0, (cmd, out.stderr)
            if "/track" in cmd or "/insert" in cmd:
                assert json.loads(out.stdout)["inserted"] >= 1, (cmd, out.stdout)


def test_query_cli_session(server: Serve, tmp_path: Path) -> None:
    check_block(sh_blocks(section("Try it"))[0], server, tmp_path)
    session = re.search(r"```sh\n(\$ gumshoe query.*?)```", README, re.DOTALL)
    assert session, "no gumshoe query session in the README"
    steps = re.split(r"^\$ ", session.group(1), flags=re.MULTILINE)[1:]
    assert len(steps) >= 3
    bin_dir = Path(sys.executable).parent
    env = {"GUMSHOE_URL": server.url, "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    for step in steps:
        cmd, _, shown = step.partition("\n")
        out = run_sh(cmd, server.port, tmp_path, env, merged=True)
        printed = out.stdout.strip()
        if shown.strip():
            assert printed == shown.strip(), (cmd, printed)


def test_router_example(tmp_path: Path) -> None:
    (block,) = sh_blocks(section("Router"))
    lines = [ln for ln in block.splitlines() if ln.strip()]
    assert [ln.split()[1] for ln in lines] == ["serve", "serve", "router"]
    shutil.copy(ROOT / "config.toml", tmp_path / "config.toml")
    ports = {p: str(free_port()) for p in re.findall(r"127\.0\.0\.1:(\d+)", block)}
    procs = []
    try:
        for line in lines:
            for old, new in ports.items():
                line = line.replace(f"127.0.0.1:{old}", f"127.0.0.1:{new}")
            argv = line.rstrip(" &").split()[1:]
            listen = argv.index("--listen")
            port = int(argv[listen + 1].rsplit(":", 1)[1])
            argv = argv[:listen] + argv[listen + 2:]
            s = Serve.__new__(Serve)
            s.port, s.url = port, f"http://127.0.0.1:{port}"
            s.log = open(tmp_path / f"{port}.log", "wb")  # noqa: SIM115
            s.proc = subprocess.Popen([sys.executable, "-m", "gumshoe", *argv, "--listen",
                                       f"127.0.0.1:{port}"], cwd=tmp_path, stdout=s.log,
                                      stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
            procs.append(s)
            deadline = time.monotonic() + 30
            while True:
                try:
                    if httpx.get(s.url + "/", timeout=1).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                assert time.monotonic() < deadline and s.proc.poll() is None, \
                    (tmp_path / f"{port}.log").read_text()
                time.sleep(0.05)
        router = procs[-1]
        rows = [{"at": int(time.time()), "name": n, "visits": 1} for n in ("a", "b", "c", "d")]
        assert httpx.put(router.url + "/insert", json=rows).json()["inserted"] == 4
        assert httpx.post(router.url + "/query", json={}).json()["results"] == [{"rowCount": 4}]
        assert (tmp_path / "s0").is_dir() and (tmp_path / "s1").is_dir()
    finally:
        for s in reversed(procs):
            s.stop()
