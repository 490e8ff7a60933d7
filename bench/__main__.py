"""`python -m bench` runs every figure and prints the table."""

import sys

from bench.run import main

sys.exit(main())
