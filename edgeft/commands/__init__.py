"""One module per CLI command; each defines ``command``. Imported lazily by edgeft.cli."""
