"""How `format1_db/` was made: a database as gumshoe wrote it before layout.py (db.json format
"gumshoe/1", no checksums for db.json or dictionaries, no last_updated), with two flushes and
a third batch left only in the write-ahead log (closed without a flush).

Run with the gumshoe of commit d883ebb first on the path, e.g.
    git archive d883ebb gumshoe | tar -x -C /tmp/old && \
        PYTHONPATH=/tmp/old python tests/storage/data/make_format1_db.py /tmp/format1_db
"""

from __future__ import annotations

import sys

from gumshoe.config import SchemaConfig, parse_config
from gumshoe.db import DB

T0 = 1_700_000_000 - 1_700_000_000 % 3600


def main(path: str) -> None:
    sc = SchemaConfig(4096, 3600, ("at", "uint32"),
                      (("name", "string:uint16"), ("age", "uint8")), (("visits", "uint32"),),
                      "4KB")
    cfg = parse_config("").replace(database_dir=path, schema=sc, retention_days=0,
                                   durability="os")
    db = DB(cfg)
    db.insert([{"at": T0 + i * 600, "name": f"n{i % 5}", "age": i % 3, "visits": i}
               for i in range(20)], "first")
    db.flush()
    db.insert([{"at": T0 + 3600 + i, "name": f"m{i % 4}", "age": None, "visits": 1}
               for i in range(10)], "second")
    db.flush()
    db.insert([{"at": T0 + 7200 + i, "name": ["n0", "z1", "z2"][i % 3], "age": 7, "visits": 2}
               for i in range(6)], "third")
    db.close(flush=False)


if __name__ == "__main__":
    main(sys.argv[1])
