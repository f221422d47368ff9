"""gumshoe: a columnar roll-up analytics database (the successor of GumshoeDB)."""

__version__ = "0.1.0"
