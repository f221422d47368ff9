"""The benchmark suite: gumshoe beside DuckDB and pure-numpy ideal kernels, in one command.

Run ``python -m synthetic.run [--quick]``; see synthetic/run.py and synthetic/RESULTS.md.
Everything here is measurement code: it imports gumshoe, never the other way round.
"""
