"""`make bench`: inuqueue's performance figures, each against a baseline of the run.

The machine is shared and small, so no figure is an absolute number alone: each one
is measured beside a baseline taken in the same run on the same machine, and judged
by their ratio (see bench/README.md).
"""
