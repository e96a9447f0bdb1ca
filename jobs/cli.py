"""The ``snapmover`` command line: repository inspection, upload/download, and the Job entry point.

Commands are defined here (repository and data commands), in :mod:`jobs.kube.commands`
(``snapmover job upload|download``) and by plugins registered under the ``snapmover.commands``
entry-point group (the launcher package adds ``launcher`` and ``backup-pvc`` that way, so the
mover never imports the launcher). :func:`main` is the only place that catches broadly: a
:class:`~jobs.errors.MoverError` becomes one line on stderr and its exit code.
"""

from __future__ import annotations

import sys
from importlib.metadata import entry_points

import click

from jobs import __version__
from jobs.contract import ExitCode
from jobs.errors import MoverError
from jobs.kube.commands import job

ENTRY_POINT_GROUP = "snapmover.commands"


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="snapmover")
def cli() -> None:
    """snapmover: back up and restore Kubernetes volumes to an encrypted, deduplicating repository."""


cli.add_command(job)


def _load_plugins() -> None:
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        if ep.name not in cli.commands:
            cli.add_command(ep.load(), ep.name)


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point: run the CLI, turning errors into one line and an exit code."""
    _load_plugins()
    try:
        cli.main(args=argv, prog_name="snapmover", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("snapmover: aborted", err=True)
        sys.exit(ExitCode.CANCELED)
    except click.ClickException as e:
        e.show()
        sys.exit(ExitCode.USAGE)
    except MoverError as e:
        click.echo(f"snapmover: error: {e}", err=True)
        sys.exit(e.exit_code)
    except KeyboardInterrupt:
        click.echo("snapmover: interrupted", err=True)
        sys.exit(ExitCode.CANCELED)
    sys.exit(ExitCode.OK)
