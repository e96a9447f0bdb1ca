"""``snapmover job upload|download``: the mover's entry point inside a Kubernetes Job."""

from __future__ import annotations

import click


@click.group()
def job() -> None:
    """Run inside a mover Job: read the Job environment, move data, write the CR status."""
