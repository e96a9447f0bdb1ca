"""The container image (images/): built with `images/build.sh` (podman, private store, cached) and
run for real: metadata, the smoke command, what the final layer must not contain, and
`snapmover repo init` + `upload` + `download` round trips INSIDE the image against a file://
repository on a bind-mounted host directory — once as the image's non-root default user, once the
way mover Jobs run it (UID 0 with the role's reduced capability set, read-only root filesystem).

The first run builds the image (~1.5 min with a fresh debootstrap base); later runs reuse the
cached base, wheels and layers (~10 s). podman comes from scripts/test.d/30-images.sh.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.unit.jobs.volume.treecompare import MiB, compare_trees, make_sample_tree

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).parents[2]
PODMAN = [str(ROOT / "images" / "podman.sh")]
PASSWORD = "image test password"
DEFAULT_USER = "65532:65532"
# The Job contract's capability sets (launcher/jobspec.py): what a mover pod adds after dropping ALL.
UPLOAD_CAPS = ["DAC_READ_SEARCH"]
DOWNLOAD_CAPS = ["CHOWN", "FOWNER", "DAC_OVERRIDE", "SETFCAP", "MKNOD"]


def project_version() -> str:
    return str(tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"])


def podman(*args: str, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([*PODMAN, *args], capture_output=True, text=True, timeout=timeout, check=False)
    if check:
        assert proc.returncode == 0, f"podman {' '.join(args)} → {proc.returncode}: {proc.stderr[-2000:]}"
    return proc


@pytest.fixture(scope="module")
def image() -> str:
    """The image reference, built (or found up to date in the cache) by images/build.sh."""
    if shutil.which("podman") is None:
        message = "podman is not installed (scripts/test.d/30-images.sh installs it)"
        if os.environ.get("SNAPMOVER_REQUIRE_SERVERS") == "1":
            pytest.fail(message)
        pytest.skip(message)
    env = {**os.environ, "SNAPMOVER_ENGINE": "podman"}
    env.pop("SNAPMOVER_BASE", None)  # the test builds whatever base this machine can have
    proc = subprocess.run(
        [str(ROOT / "images" / "build.sh")], capture_output=True, text=True, timeout=900, env=env, check=False
    )
    assert proc.returncode == 0, f"images/build.sh failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return f"localhost/snapmover:{project_version()}"


def test_lock_pins_every_project_dependency_at_a_satisfying_version_with_hashes() -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    lock = (ROOT / "images" / "requirements.lock").read_text()
    pinned = {
        canonicalize_name(m.group(1)): m.group(2) for m in re.finditer(r"^([A-Za-z0-9_.-]+)==(\S+) \\$", lock, re.M)
    }
    assert pinned, "no pins found in images/requirements.lock"
    for spec in pyproject["project"]["dependencies"]:
        req = Requirement(spec)
        name = canonicalize_name(req.name)
        assert name in pinned, f"{req.name} is a dependency but not pinned in images/requirements.lock"
        assert req.specifier.contains(pinned[name]), f"lock pins {req.name}=={pinned[name]}, pyproject wants {spec}"
    blocks = re.split(r"^(?=[A-Za-z0-9])", lock, flags=re.M)
    unhashed = [b.split("==")[0] for b in blocks if "==" in b and "--hash=sha256:" not in b]
    assert unhashed == []


def test_image_metadata_and_archive(image: str) -> None:
    info = json.loads(podman("image", "inspect", image).stdout)[0]
    config = info["Config"]
    assert config["User"] == DEFAULT_USER
    assert config["Entrypoint"] == ["snapmover"]
    labels = config["Labels"]
    assert labels["org.opencontainers.image.title"] == "snapmover"
    assert labels["org.opencontainers.image.version"] == project_version()
    for key in ("revision", "created", "licenses", "base.name", "description"):
        assert labels.get(f"org.opencontainers.image.{key}", "unknown") != "unknown", key
    archive = ROOT / "build" / "images" / f"snapmover-{project_version()}.oci.tar"
    assert archive.stat().st_size > 10 * MiB
    assert (archive.parent / (archive.name + ".id")).read_text().strip() == info["Id"]


def test_smoke_command_and_a_final_layer_without_installers_or_build_context(image: str) -> None:
    version = podman("run", "--rm", "--network=none", image, "--version").stdout
    assert version.strip() == f"snapmover, version {project_version()}"
    script = (
        "id -u; id -g;"
        " for t in pip pip3 gcc cc make; do command -v $t && echo FOUND $t; done;"
        " python3 -c 'import pip' 2>/dev/null && echo FOUND pip-module;"
        " for d in /src /root/.cache /opt/snapmover/lib/python3.11/site-packages/kubernetes/aio; do"
        "   [ -e $d ] && echo FOUND $d; done;"
        " snapmover launcher --help >/dev/null && echo launcher-ok;"
        " snapmover job --help >/dev/null && echo job-ok"
    )
    out = podman("run", "--rm", "--network=none", "--entrypoint", "sh", image, "-c", script).stdout.split()
    assert out[:2] == ["65532", "65532"]
    assert [w for w in out if w == "FOUND"] == [], out
    assert out[-2:] == ["launcher-ok", "job-ok"]


class Mover:
    """`snapmover` runs in the image with a host directory layout: /repo, /secrets and data dirs."""

    def __init__(self, image: str, work: Path) -> None:
        self.image = image
        self.repo = work / "repo"
        self.secrets = work / "secrets"
        self.repo.mkdir()
        self.secrets.mkdir()
        (self.secrets / "password").write_text(PASSWORD + "\n")

    def run(self, *args: str, mounts: dict[Path, str], options: tuple[str, ...] = ()) -> str:
        volumes = [f"-v={self.repo}:/repo", f"-v={self.secrets}:/secrets:ro"]
        volumes += [f"-v={host}:{spec}" for host, spec in mounts.items()]
        proc = podman(
            "run", "--rm", "--network=none", "--read-only", "--tmpfs=/tmp", "--security-opt=no-new-privileges",
            "-e", "SNAPMOVER_REPOSITORY=file:///repo", "-e", "SNAPMOVER_PASSWORD_FILE=/secrets/password",
            *volumes, *options, self.image, *args,
        )  # fmt: skip
        assert "Traceback" not in proc.stderr
        return proc.stdout

    def round_trip(self, src: Path, target: Path, up: tuple[str, ...] = (), down: tuple[str, ...] = ()) -> str:
        self.run("repo", "init", "--json", mounts={}, options=up)
        snapshot = json.loads(self.run("upload", "--source", "/data", "--json", mounts={src: "/data:ro"}, options=up))
        snapshot_id = str(snapshot["snapshot_id"])
        self.run("download", "--snapshot", snapshot_id, "--target", "/target", mounts={target: "/target"}, options=down)
        return snapshot_id


@pytest.fixture
def work(tmp_path: Path) -> Iterator[Path]:
    tmp_path.chmod(0o755)  # the default user (65532) must traverse it
    yield tmp_path


def test_round_trip_as_the_images_non_root_default_user(image: str, work: Path) -> None:
    src = work / "src"
    src.mkdir()
    (src / "random.bin").write_bytes(os.urandom(2 * MiB + 17))
    (src / "sub").mkdir()
    (src / "sub" / "text.txt").write_bytes(b"snapmover in a container\n" * 1000)
    (src / "sub" / "link").symlink_to("text.txt")
    target = work / "target"
    target.mkdir()
    mover = Mover(image, work)
    for path in (mover.repo, mover.secrets, mover.secrets / "password", target):
        os.chown(path, 65532, 65532)
    mover.round_trip(src, target)
    assert compare_trees(src, target, check_owner=False) == []
    assert {p.stat().st_uid for p in mover.repo.rglob("*")} == {65532}  # written by the default user


def test_round_trip_as_a_mover_job_runs_it(image: str, work: Path) -> None:
    """UID 0 with all capabilities dropped but the role's few, like the launcher's Job pods: the
    upload reads every file whatever its mode, the download restores owners, modes, devices,
    xattrs, hardlinks and holes exactly."""
    if os.geteuid() != 0:
        pytest.skip("needs root: the sample tree has device nodes and foreign owners")
    src = work / "src"
    make_sample_tree(src, large_bytes=MiB)
    target = work / "target"
    target.mkdir()
    job = ("--user=0:0", "--cap-drop=ALL")
    up = (*job, *(f"--cap-add={c}" for c in UPLOAD_CAPS))
    down = (*job, *(f"--cap-add={c}" for c in DOWNLOAD_CAPS))
    mover = Mover(image, work)
    snapshot_id = mover.round_trip(src, target, up=up, down=down)
    assert compare_trees(src, target) == []
    listed = json.loads(mover.run("snapshots", "--json", mounts={}, options=up))["snapshots"]
    assert [s["id"] for s in listed] == [snapshot_id]
