"""``python -m segbatch``: the same as the ``segbatch`` command."""

from segbatch.cli import main

main()
