"""What every ``snapmover`` command's ``--help`` ends with, and the ``completion`` command.

:func:`add_epilogs` walks the command tree once (after plugins are loaded) and gives each command
an epilog: an example, the environment variables it reads and the exit codes (the table of
``jobs.contract.ExitCode``). Examples live in :data:`EXAMPLES`, keyed by the command path; a test
checks that every visible command has one. Used only by :mod:`jobs.cli`.
"""

from __future__ import annotations

from typing import Final

import click
from click.shell_completion import get_completion_class

from jobs.contract import ENV_PASSWORD, ENV_PASSWORD_FILE, ENV_REPOSITORY, ExitCode

PROG: Final = "snapmover"
COMPLETE_VAR: Final = "_SNAPMOVER_COMPLETE"

EXAMPLES: Final[dict[str, str]] = {
    "repo": "snapmover repo info -r s3://backups/team?endpoint=https://s3.example.com",
    "repo init": "snapmover repo init -r file:///srv/backups --password-file ./password",
    "repo info": "snapmover repo info -r s3://backups/team --json",
    "repo check": "snapmover repo check -r s3://backups/team --read-data",
    "repo unlock": "snapmover repo unlock -r s3://backups/team",
    "upload": "snapmover upload -r file:///srv/backups --source /data --exclude '*.tmp' --exclude /cache/",
    "download": "snapmover download -r file:///srv/backups --snapshot 1a2b3c4d --target /restore --include /etc",
    "ls": "snapmover ls -r s3://backups/team 1a2b3c4d /var/log",
    "dump": "snapmover dump -r s3://backups/team 1a2b3c4d /etc/app.conf > app.conf",
    "snapshots": "snapmover snapshots -r s3://backups/team --tag pvc=data",
    "forget": "snapmover forget -r s3://backups/team --keep-last 7 --keep-daily 14 && snapmover prune -r ...",
    "prune": "snapmover prune -r s3://backups/team",
    "completion": "snapmover completion bash > /etc/bash_completion.d/snapmover",
    "doctor": "snapmover doctor -r s3://backups/team?endpoint=https://s3.example.com --password-file ./password",
    "launcher": "snapmover launcher --kubeconfig ~/.kube/config --namespace snapmover --log-format json",
    "backup-pvc": "snapmover backup-pvc --namespace app --pvc data --wait --keep-last 7",
}

REPOSITORY_ENV: Final = (
    f"{ENV_REPOSITORY}  repository URL when -r/--repo is not given",
    f"{ENV_PASSWORD_FILE}, {ENV_PASSWORD}  the repository password (file first)",
    "AWS_ENDPOINT_URL, AWS_SHARED_CREDENTIALS_FILE, AWS_PROFILE, AWS_ACCESS_KEY_ID, ...  S3 (boto3's default chain)",
    "AWS_CA_BUNDLE  PEM file of the CA that signs the S3 endpoint's certificate",
    "HTTPS_PROXY, HTTP_PROXY, NO_PROXY  proxy for the S3 endpoint",
)

EXIT_MEANINGS: Final[dict[ExitCode, str]] = {
    ExitCode.OK: "done",
    ExitCode.FAILED: "failed",
    ExitCode.USAGE: "bad input or usage",
    ExitCode.INTEGRITY: "wrong password or damaged repository",
    ExitCode.STORAGE_UNAVAILABLE: "storage unreachable or refusing access",
    ExitCode.CANCELED: "canceled (signal or spec.cancel)",
    ExitCode.NOT_FOUND: "not found (snapshot, repository)",
    ExitCode.VOLUME_IO: "volume missing or unreadable",
    ExitCode.LOCKED: "repository locked by another process",
}


def environment_of(command: click.Command) -> list[str]:
    """The environment variables ``command`` reads: its options' envvars, plus the repository ones."""
    names = {p.name for p in command.params}
    lines = [
        f"{p.envvar}  {p.name}" for p in command.params if isinstance(p.envvar, str) and p.envvar != ENV_REPOSITORY
    ]
    if "password_file" in names or "repo_url" in names:
        lines = [*REPOSITORY_ENV, *lines]
    return lines


def epilog_for(path: str, command: click.Command) -> str:
    """The epilog text of one command (``\\b`` keeps click from rewrapping the lists)."""
    parts = []
    if path in EXAMPLES:
        parts.append("\b\nExample:\n  " + EXAMPLES[path])
    env = environment_of(command)
    if env:
        parts.append("\b\nEnvironment:\n" + "\n".join("  " + line for line in env))
    parts.append("\b\nExit codes:\n" + "\n".join(f"  {int(c)}  {m}" for c, m in EXIT_MEANINGS.items()))
    return "\n\n".join(parts)


def add_epilogs(group: click.Group, prefix: str = "") -> None:
    """Give every command under ``group`` (recursively) its epilog, unless it has one already."""
    for name, command in group.commands.items():
        path = f"{prefix} {name}".strip()
        if not command.epilog:
            command.epilog = epilog_for(path, command)
        if isinstance(command, click.Group):
            add_epilogs(command, path)


@click.command()
@click.argument("shell", type=click.Choice(["bash", "zsh", "fish"]))
@click.pass_context
def completion(ctx: click.Context, shell: str) -> None:
    """Print the shell completion script for SHELL (source it from your shell's startup file)."""
    root = ctx.find_root().command
    cls = get_completion_class(shell)
    assert cls is not None
    click.echo(cls(root, {}, PROG, COMPLETE_VAR).source())
