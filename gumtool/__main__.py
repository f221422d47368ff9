"""`python -m gumtool`: the same as the `gumtool` console script."""

import sys

from .cli import main

sys.exit(main())
