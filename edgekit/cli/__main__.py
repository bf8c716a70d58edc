"""`python -m edgekit.cli ...`: the same entry point as the `edgekit` console script."""

from edgekit.cli import main

main()
