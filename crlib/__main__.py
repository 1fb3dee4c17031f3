"""``python -m crlib`` runs the command line."""

from crlib.cli import main

main()
