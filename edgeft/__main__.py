"""Allow ``python -m edgeft``."""

from edgeft.cli import main

main()
