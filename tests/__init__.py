"""The test suite; `make test` runs it."""
