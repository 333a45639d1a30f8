"""The built wheel carries everything a pip user needs, Node not included."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_wheel_ships_the_dashboard_and_the_socketio_client(tmp_path: Path) -> None:
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "--quiet",
            "-w",
            str(tmp_path),
            str(ROOT),
        ],
        check=True,
        capture_output=True,
        timeout=300,
    )
    (wheel,) = tmp_path.glob("taskevents-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for needed in (
        "taskevents/py.typed",
        "taskevents/static/vendor/socket.io.min.js",
        "taskevents/static/dashboard.js",
        "taskevents/static/dashboard.css",
        "taskevents/templates/taskevents/dashboard.html",
    ):
        assert needed in names, needed
    metadata = next(n for n in names if n.endswith("entry_points.txt"))
    entry_points = zipfile.ZipFile(wheel).read(metadata).decode()
    assert "taskevents = taskevents.cli:main" in entry_points
    assert "socketio = taskevents.adapters.socketio:SocketIOAdapter" in entry_points
