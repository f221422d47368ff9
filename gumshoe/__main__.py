"""`python -m gumshoe` is the `gumshoe` command."""

import sys

from .cli import main

sys.exit(main())
