"""The segbatch test suite."""
