"""``python -m attnsearch`` (and ``torchrun -m attnsearch``) runs the CLI."""

from .cli import app

if __name__ == "__main__":  # never on import (e.g. by a spawned multiprocessing child)
    app()
