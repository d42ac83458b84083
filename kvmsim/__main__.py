"""`python -m kvmsim ...`: the command line (kvmsim/cli.py)."""

import sys

from kvmsim.cli import main

sys.exit(main())
