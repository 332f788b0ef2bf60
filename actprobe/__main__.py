"""``python -m actprobe`` runs the command line."""

from .cli import main

main()
