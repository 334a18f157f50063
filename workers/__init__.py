"""segbatch."""
