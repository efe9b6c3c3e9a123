"""``python -m attnsearch.cli`` runs the CLI."""

from . import app

if __name__ == "__main__":
    app()
