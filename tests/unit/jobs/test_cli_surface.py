"""The command-line surface: `-r`, each command's help (example, environment, exit codes), the
hidden `job` group, shell completion scripts, and the progress reporter on a TTY and under --json."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from contextlib import redirect_stderr
from pathlib import Path
from typing import Any

import click
import pytest

from jobs import cli as cli_module
from jobs.cli_help import EXAMPLES
from jobs.contract import ENV_PASSWORD_FILE, ENV_REPOSITORY
from jobs.engine.progress import Progress


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(Path(sys.executable).parent / "snapmover"), *args], capture_output=True, text=True, timeout=60, check=False
    )


def visible(group: click.Group, prefix: str = "") -> list[tuple[str, click.Command]]:
    out: list[tuple[str, click.Command]] = []
    for name, command in group.commands.items():
        if command.hidden:
            continue
        path = f"{prefix} {name}".strip()
        out.append((path, command))
        if isinstance(command, click.Group):
            out += visible(command, path)
    return out


def test_every_visible_command_has_an_example() -> None:
    cli_module._load_plugins()
    paths = {p for p, _ in visible(cli_module.cli)}
    assert {"upload", "download", "repo init", "completion", "launcher", "backup-pvc"} <= paths
    assert paths - set(EXAMPLES) == set()


@pytest.mark.parametrize("command", [["upload"], ["repo", "check"], ["snapshots"], ["launcher"], ["completion"]])
def test_help_shows_example_environment_and_exit_codes(command: list[str]) -> None:
    out = run(*command, "--help")
    assert out.returncode == 0, out.stderr
    assert "Example:\n    snapmover " + " ".join(command) in out.stdout
    assert "Exit codes:\n    0  done" in out.stdout
    assert "4  storage unreachable" in out.stdout and "3  wrong password" in out.stdout
    if command[0] in ("upload", "repo", "snapshots"):
        assert ENV_REPOSITORY in out.stdout and ENV_PASSWORD_FILE in out.stdout and "AWS_CA_BUNDLE" in out.stdout
    if command == ["launcher"]:
        assert "KUBECONFIG" in out.stdout


def test_job_group_is_hidden_but_still_works() -> None:
    top = run("--help")
    assert top.returncode == 0
    commands = top.stdout.split("Commands:")[1]
    assert "\n  job " not in commands and "\n  upload " in commands
    assert run("job", "--help").returncode == 0


def test_short_repo_option(tmp_path: Any) -> None:
    out = run("snapshots", "-r", f"file://{tmp_path}/none", "--password-file", "/dev/null")
    assert out.returncode != 0
    assert "no such option" not in out.stderr.lower() and "Traceback" not in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize(("shell", "marker"), [("bash", "complete -o"), ("zsh", "compdef"), ("fish", "complete ")])
def test_completion_scripts(shell: str, marker: str) -> None:
    out = run("completion", shell)
    assert out.returncode == 0 and "_SNAPMOVER_COMPLETE" in out.stdout and marker in out.stdout


def test_completion_rejects_unknown_shell() -> None:
    out = run("completion", "tcsh")
    assert out.returncode == 2 and "Traceback" not in out.stderr


def progress(done: int) -> Progress:
    return Progress(total_bytes=100, bytes_done=done, files_total=4, files_done=done // 25, new_bytes=done)


def report(as_json: bool, tty: bool) -> str:
    err = io.StringIO()
    with redirect_stderr(err):
        reporter = cli_module.ProgressReporter(as_json, tty=tty)
        reporter.interval = 0.0
        for done in (25, 50, 100):
            reporter(progress(done))
        reporter.close()
    return err.getvalue()


def test_progress_on_a_tty_is_one_updating_line() -> None:
    text = report(False, tty=True)
    assert text.count("\r") == 3 and text.count("\n") == 1 and text.endswith("\n")
    assert "(100%)" in text.split("\r")[-1]


def test_progress_under_json_is_ndjson_on_stderr() -> None:
    lines = report(True, tty=True).splitlines()
    events = [json.loads(line)["progress"] for line in lines]
    assert [e["bytes_done"] for e in events] == [25, 50, 100] and events[-1]["percent"] == 100.0


def test_progress_in_logs_is_plain_lines() -> None:
    text = report(False, tty=False)
    assert "\r" not in text and len(text.splitlines()) == 3
