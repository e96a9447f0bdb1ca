"""Loop devices for the test cluster's Block PVs (test infrastructure only, never shipped).

The harness's CSI part (tests/cluster/harness.py) backs every Block PV with a sparse image file
attached to a loop device, so a real kubelet can hand it to a pod through ``volumeDevices`` as a
``local`` PV. Devices are found again by their backing file, never by number (a number freed here
can be taken by anyone else on the machine at once): the harness detaches a PV's device when it
deletes the PV, and ``LocalCluster.stop`` detaches whatever is still attached under its data root.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

DELETED_SUFFIX = " (deleted)"  # how the kernel shows a backing file that was unlinked


def attach(backing: Path) -> str:
    """Attach ``backing`` to the first free loop device; returns the device path (/dev/loopN)."""
    result = subprocess.run(["losetup", "--find", "--show", str(backing)], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"cannot attach {backing} to a loop device: {result.stderr.strip()}")
    return result.stdout.strip()


def attached() -> dict[str, Path]:
    """Every attached loop device of this machine and its backing file."""
    out = subprocess.run(
        ["losetup", "--list", "--json", "--output", "NAME,BACK-FILE"], capture_output=True, text=True, check=True
    ).stdout
    devices = json.loads(out)["loopdevices"] if out.strip() else []
    return {d["name"]: Path(str(d["back-file"]).removesuffix(DELETED_SUFFIX)) for d in devices if d.get("back-file")}


def detach_backed_by(backing: Path) -> None:
    """Detach every loop device whose backing file is ``backing``."""
    for device, file in attached().items():
        if file == backing:
            subprocess.run(["losetup", "--detach", device], capture_output=True, check=False)


def under(root: Path) -> list[str]:
    """The loop devices whose backing file lies under ``root``."""
    prefix = str(root.resolve()) + "/"
    return [device for device, file in attached().items() if str(file).startswith(prefix)]


def detach_under(root: Path) -> list[str]:
    """Detach every loop device whose backing file lies under ``root``; returns the devices."""
    found = under(root)
    for device in found:
        subprocess.run(["losetup", "--detach", device], capture_output=True, check=False)
    return found


def flush(device: str) -> None:
    """Write the device's buffered blocks to its backing file (before the file is copied)."""
    subprocess.run(["blockdev", "--flushbufs", device], capture_output=True, check=False)
