"""``python -m attnsearch`` (and ``torchrun -m attnsearch``) runs the CLI."""

from .cli import app

app()
