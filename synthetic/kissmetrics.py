"""A seeded KISSmetrics-like "Data Export" (JSON lines) for `gumtool import --preset kissmetrics`.

    python -m synthetic.kissmetrics --events 100000 --files 4 --out DIR [--gzip] [--seed 1]

Each line is one record, as KISSmetrics exports them (and as km-db reads them): an event
(`_n` event name, `_p` person, `_t` Unix time, other keys are properties), an alias record
(`_p` and `_p2`: two identities of one person, no `_n`), or a property record (`_p`, `_t` and
properties, no `_n`). People start anonymous (a random token); some sign up, and an alias
record ties their token to a numeric user id or an email address, sometimes in a chain
(token -> email -> user id), sometimes after events under the later identity. Property values
are strings, numbers or missing; a few identities are plain JSON numbers.
"""

from __future__ import annotations

import argparse
import gzip
import json
import random
from pathlib import Path
from typing import Any

T0 = 1_351_180_800  # 2012-10-25, the era of km-db's sample revisions
EVENTS = ["visited site", "page view", "signed up", "form submitted", "purchased",
          "test event", "clicked button", "viewed pricing"]
REFERRERS = ["Direct", "google.com", "news.ycombinator.com", "twitter.com", None]
COUNTRIES = ["US", "GB", "DE", "FR", "CH"]


def records(n_events: int, seed: int = 1, people: int | None = None) -> list[dict[str, Any]]:
    """About `n_events` events plus alias and property records, in roughly time order."""
    rnd = random.Random(seed)
    people = people or max(4, n_events // 20)
    tokens = [f"{rnd.getrandbits(64):016x}=" for _ in range(people)]
    out: list[dict[str, Any]] = []
    t = T0
    user_ids: dict[str, str] = {}
    for _ in range(n_events):
        t += rnd.randrange(0, 40)
        who = rnd.randrange(people)
        p: Any = user_ids.get(tokens[who], tokens[who]) if rnd.random() < 0.5 else tokens[who]
        if isinstance(p, str) and p.isdigit() and rnd.random() < 0.2:
            p = int(p)  # some exports carry numeric identities as JSON numbers
        rec: dict[str, Any] = {"_n": rnd.choice(EVENTS), "_p": p, "_t": t}
        if rnd.random() < 0.7:
            rec["referrer"] = rnd.choice(REFERRERS)
        if rnd.random() < 0.6:
            rec["country"] = rnd.choice(COUNTRIES)
        if rnd.random() < 0.3:
            rec["amount"] = rnd.randrange(1, 200)
        if rnd.random() < 0.2:
            rec["viewed url"] = f"http://localhost:1080/{rnd.randrange(50)}.html"
        out.append(rec)
        r = rnd.random()
        if r < 0.03 and tokens[who] not in user_ids:  # signs up: alias token -> id or email
            target = str(rnd.randrange(1, 10**6)) if rnd.random() < 0.6 else \
                f"user{rnd.randrange(10**5)}@example.com"
            user_ids[tokens[who]] = target
            out.append({"_p": tokens[who], "_p2": target, "_t": t})
            if rnd.random() < 0.3:  # a chain: the email is tied to a numeric id later
                out.append({"_p": target, "_p2": str(rnd.randrange(1, 10**6)), "_t": t + 1})
        elif r < 0.06:
            out.append({"_p": tokens[who], "_t": t, "plan": rnd.choice(["free", "pro"])})
    return out


def lines(recs: list[dict[str, Any]]) -> list[bytes]:
    return [json.dumps(r, separators=(",", ":")).encode() for r in recs]


def write(out: Path, n_events: int, files: int = 1, seed: int = 1, compress: bool = False
          ) -> list[Path]:
    """Write the export as `files` revision files (`<n>.json` or `.json.gz`)."""
    data = lines(records(n_events, seed))
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    per = -(-len(data) // files)
    for i in range(files):
        body = b"\n".join(data[i * per:(i + 1) * per]) + b"\n"
        path = out / (f"{140 + i}.json" + (".gz" if compress else ""))
        path.write_bytes(gzip.compress(body, 6) if compress else body)
        paths.append(path)
    return paths


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--events", type=int, default=100_000)
    ap.add_argument("--files", type=int, default=4)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--gzip", action="store_true")
    ap.add_argument("--out", type=Path, required=True)
    a = ap.parse_args()
    for p in write(a.out, a.events, a.files, a.seed, a.gzip):
        print(p)


if __name__ == "__main__":
    main()
