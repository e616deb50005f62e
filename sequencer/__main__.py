"""Run the command line as ``python -m sequencer``."""

from sequencer.cli import main

main()
