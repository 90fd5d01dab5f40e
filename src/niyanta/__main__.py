"""``python -m niyanta`` runs the CLI (used by tests and the demo to start real processes)."""

from niyanta.cli.main import app

app()
