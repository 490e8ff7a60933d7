"""`python -m inuqueue` runs the command line."""

import sys

from inuqueue.cli import main

sys.exit(main())
