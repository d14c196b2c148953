"""`python -m quantgrid.cli`: the same CLI, for child processes started with sys.executable."""

from quantgrid.cli import main

main()
