"""Command line and demo (the interface layer)."""
