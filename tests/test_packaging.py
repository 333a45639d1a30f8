"""What pip users get, built the way they build it, and the CI guards.

- The wheel carries everything a pip user needs, the browser build of socket.io-client
  included, when built from a fresh checkout (no ``./dev``: hatch_build.py runs npm ci)
  and from an sdist (which carries the client: no npm needed).
- ``constraints.txt`` pins every package the ``dev`` extra pulls in (``./dev pin``
  rewrites it with :func:`write_constraints`).
- Under ``CI=true``, tests/conftest.py turns skips (also at collection) and xfails into
  failures.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tarfile
import time
import urllib.error
import urllib.request
import venv
import zipfile
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.support.browser import free_port

ROOT = Path(__file__).resolve().parent.parent
VENDORED = "src/taskevents/flask/static/vendor/socket.io.min.js"
VENDORED_LICENSE = "src/taskevents/flask/static/vendor/socket.io-client.LICENSE"
IN_WHEEL = (
    "taskevents/py.typed",
    "taskevents/flask/static/vendor/socket.io.min.js",
    "taskevents/flask/static/vendor/socket.io-client.LICENSE",
    "taskevents/flask/static/dashboard.js",
    "taskevents/flask/static/dashboard.css",
    "taskevents/flask/templates/taskevents/dashboard.html",
)
CONSTRAINTS = ROOT / "constraints.txt"
#: The extras CI installs (``dev`` pulls in the others); the constraints cover them all.
PINNED_EXTRAS = ("dev", "socketio", "gevent", "color", "docs", "bench")
#: Installed from this repository, never pinned.
NOT_PINNED = frozenset({"taskevents", "taskevents-example-adapter"})
SOCKET_IO_BANNER = re.compile(rb"^/\*!\s*\*\s*Socket\.IO v(\d+\.\d+\.\d+)")


def locked_client_version() -> str:
    text = (ROOT / "package-lock.json").read_text()
    match = re.search(r'"node_modules/socket\.io-client":\s*{\s*"version":\s*"([^"]+)"', text)
    assert match, "socket.io-client is not in package-lock.json"
    return match.group(1)


def run(
    args: list[str],
    *,
    timeout: float,
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run a command; on failure, fail the test with its output."""
    result = subprocess.run(
        args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )
    assert result.returncode == 0, (
        f"{' '.join(args)} exited {result.returncode}:\n{result.stdout}\n{result.stderr}"
    )
    return result


def fresh_checkout(dest: Path) -> Path:
    """The working tree as a fresh clone of it would be once committed: the files git
    tracks or would track (uncommitted changes included), nothing it ignores, so no
    node_modules and no vendored client."""
    listed = run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        timeout=60,
    ).stdout
    for name in filter(None, listed.split("\0")):
        source = ROOT / name
        if source.is_file():  # not deleted in the working tree
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, dest / name)
    assert (dest / "hatch_build.py").is_file()
    assert not (dest / "node_modules").exists()
    assert not (dest / VENDORED).exists()
    return dest


def build_wheel(source: Path, out: Path, *, env: dict[str, str] | None = None) -> Path:
    """``pip wheel --no-deps`` as a user runs it: isolated build, hatchling from PyPI."""
    run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", str(out), str(source)],
        timeout=240,
        env=env,
    )
    (wheel,) = out.glob("taskevents-*.whl")
    return wheel


def check_wheel(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        for needed in IN_WHEEL:
            assert needed in names, f"{needed} is not in {wheel.name}"
        client = archive.read("taskevents/flask/static/vendor/socket.io.min.js")
        metadata_name = next(n for n in names if n.endswith("entry_points.txt"))
        entry_points = archive.read(metadata_name).decode()
    banner = SOCKET_IO_BANNER.match(client)
    assert banner, client[:200]
    assert banner.group(1).decode() == locked_client_version()
    assert "taskevents = taskevents.cli:main" in entry_points
    assert "socketio = taskevents.adapters.socketio:SocketIOAdapter" in entry_points


def test_wheel_ships_the_dashboard_and_the_socketio_client(tmp_path: Path) -> None:
    """The quick check, from this checkout (already set up by ./dev)."""
    run(
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
        timeout=300,
    )
    (wheel,) = tmp_path.glob("taskevents-*.whl")
    check_wheel(wheel)


@pytest.mark.timeout(300)
def test_wheel_from_a_fresh_checkout_serves_the_dashboard_client(tmp_path: Path) -> None:
    """pip wheel in a fresh checkout (hatch_build.py runs npm ci), installed into a new
    virtualenv with the socketio extra: the demo serves the vendored client."""
    checkout = fresh_checkout(tmp_path / "checkout")
    wheel = build_wheel(checkout, tmp_path / "dist")
    check_wheel(wheel)

    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    bin_dir = env_dir / ("Scripts" if os.name == "nt" else "bin")
    python = bin_dir / "python"
    run(
        [
            str(python),
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "-c",
            str(CONSTRAINTS),
            f"taskevents[socketio] @ {wheel.as_uri()}",
        ],
        timeout=240,
    )
    where = run(
        [str(python), "-c", "import taskevents; print(taskevents.__file__)"],
        cwd=tmp_path,
        timeout=60,
    ).stdout
    assert Path(where.strip()).is_relative_to(env_dir), where

    port = free_port()
    log_path = tmp_path / "demo.log"
    with log_path.open("wb") as log:
        server = subprocess.Popen(
            [str(bin_dir / "taskevents"), "demo", "--port", str(port)],
            cwd=tmp_path,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while True:
            assert server.poll() is None, f"the demo exited:\n{log_path.read_text()}"
            try:
                with urllib.request.urlopen(base + "/api/tasks", timeout=2):
                    break
            except (OSError, urllib.error.URLError):
                assert time.monotonic() < deadline, f"no answer:\n{log_path.read_text()}"
                time.sleep(0.2)
        with urllib.request.urlopen(base + "/", timeout=5) as response:
            page = response.read().decode()
        assert "/taskevents/static/vendor/socket.io.min.js" in page
        with urllib.request.urlopen(
            base + "/taskevents/static/vendor/socket.io.min.js", timeout=5
        ) as response:
            status = response.status
            content_type = response.headers.get("Content-Type", "")
            body = response.read()
    finally:
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(timeout=10)
    assert status == 200
    assert "javascript" in content_type, content_type
    banner = SOCKET_IO_BANNER.match(body)
    assert banner, body[:200]
    assert banner.group(1).decode() == locked_client_version()


@pytest.mark.timeout(300)
def test_sdist_carries_the_client_and_builds_a_wheel_without_npm(tmp_path: Path) -> None:
    checkout = fresh_checkout(tmp_path / "checkout")
    run(
        [sys.executable, "-m", "hatchling", "build", "-t", "sdist", "-d", str(tmp_path / "dist")],
        cwd=checkout,
        timeout=240,
    )
    (sdist,) = (tmp_path / "dist").glob("taskevents-*.tar.gz")
    prefix = sdist.name.removesuffix(".tar.gz")
    with tarfile.open(sdist) as archive:
        names = set(archive.getnames())
    for needed in (VENDORED, VENDORED_LICENSE, "hatch_build.py", "package-lock.json"):
        assert f"{prefix}/{needed}" in names, needed
    assert not any("/node_modules/" in name for name in names)

    # No npm on PATH: only this Python's directory, which has none.
    no_npm = dict(os.environ, PATH=str(Path(sys.executable).parent))
    assert shutil.which("npm", path=no_npm["PATH"]) is None
    check_wheel(build_wheel(sdist, tmp_path / "wheel", env=no_npm))


def test_a_checkout_without_npm_fails_the_build_with_advice(tmp_path: Path) -> None:
    checkout = fresh_checkout(tmp_path / "checkout")
    no_npm = dict(os.environ, PATH=str(Path(sys.executable).parent))
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-w",
            str(tmp_path / "dist"),
            str(checkout),
        ],
        capture_output=True,
        text=True,
        timeout=240,
        env=no_npm,
        check=False,
    )
    assert result.returncode != 0
    output = result.stdout + result.stderr
    assert "needs npm (Node.js 18+), which is not on PATH" in output, output
    assert "sdist" in output
    assert not list((tmp_path / "dist").glob("*.whl"))


# -- constraints.txt -------------------------------------------------------------------


def pinned_requirements() -> list[str]:
    """``Name==version`` of every distribution the extras in PINNED_EXTRAS pull in, as
    installed in this environment (markers evaluated here), sorted."""
    pins: dict[str, str] = {}
    done: set[tuple[str, str]] = set()
    todo = [("taskevents", extra) for extra in PINNED_EXTRAS]
    while todo:
        name, extra = todo.pop()
        if (canonicalize_name(name), extra) in done:
            continue
        done.add((canonicalize_name(name), extra))
        dist = metadata.distribution(name)
        if canonicalize_name(name) not in NOT_PINNED:
            pins[canonicalize_name(name)] = f"{dist.metadata['Name']}=={dist.version}"
        for line in dist.requires or []:
            requirement = Requirement(line)
            if requirement.marker is None or requirement.marker.evaluate({"extra": extra}):
                todo.extend((requirement.name, e) for e in ("", *requirement.extras))
    return [pins[name] for name in sorted(pins)]


def constraints_text() -> str:
    python = ".".join(map(str, sys.version_info[:2]))
    header = (
        "# Exact versions for ./dev and CI (pip install -c constraints.txt ...); pyproject.toml\n"
        f"# keeps the ranges. Everything the {', '.join(PINNED_EXTRAS)} extras pull in, as\n"
        f"# installed in .venv (Python {python}, {sys.platform}). Regenerate with ./dev pin\n"
        "# after upgrading packages in .venv.\n"
    )
    return header + "".join(f"{line}\n" for line in pinned_requirements())


def write_constraints() -> None:
    """``./dev pin``."""
    CONSTRAINTS.write_text(constraints_text())
    print(f"wrote {CONSTRAINTS}")


def test_constraints_pin_exactly_what_the_extras_install() -> None:
    pinned = [
        line
        for line in CONSTRAINTS.read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert pinned == pinned_requirements(), (
        "constraints.txt is not what the extras install here: run ./dev pin "
        "(after ./dev setup, which installs with it)"
    )
    for needed in ("flask-socketio", "gevent", "sphinx", "furo", "pytest", "django", "pyee"):
        assert any(canonicalize_name(line.split("==")[0]) == needed for line in pinned), needed


def test_dev_installs_with_the_constraints_and_restamps_when_they_change() -> None:
    dev = (ROOT / "dev").read_text()
    stamp_inputs = next(line for line in dev.splitlines() if "inputs=$(cat pyproject.toml" in line)
    assert "constraints.txt" in stamp_inputs
    assert "-c constraints.txt -e '.[dev]'" in dev


# -- the CI guards of tests/conftest.py ------------------------------------------------

GUARDED_TESTS = {
    "test_collect_skip.py": """
import pytest

pytest.importorskip("taskevents_no_such_module", reason="needs taskevents_no_such_module")


def test_never_collected():
    pass
""",
    "test_outcomes.py": """
import pytest


def test_passes():
    pass


def test_skips():
    pytest.skip("chromium is missing")


@pytest.fixture
def missing():
    pytest.skip("node is missing")


def test_skips_in_a_fixture(missing):
    pass


@pytest.mark.xfail(reason="known bug")
def test_xfails():
    raise AssertionError


@pytest.mark.xfail(reason="fixed already")
def test_xpasses():
    pass
""",
}


def run_guarded(tmp_path: Path, *, ci: bool) -> str:
    for name, text in GUARDED_TESTS.items():
        (tmp_path / name).write_text(text)
    shutil.copy(ROOT / "tests" / "conftest.py", tmp_path / "conftest.py")
    env = {k: v for k, v in os.environ.items() if k not in ("CI", "PYTEST_ADDOPTS")}
    if ci:
        env["CI"] = "true"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-p",
            "no:cacheprovider",
            "-rA",
            "--continue-on-collection-errors",
            str(tmp_path),
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        check=False,
    )
    return result.stdout + result.stderr


def summary(output: str) -> str:
    return output.strip().splitlines()[-1]


def test_under_ci_skips_xfails_and_collection_skips_fail(tmp_path: Path) -> None:
    output = run_guarded(tmp_path, ci=True)
    assert re.search(r"\b3 failed, 1 passed, 2 errors\b", summary(output)), output
    assert "skipped while collecting under CI=true" in output
    assert "needs taskevents_no_such_module" in output
    assert "skipped under CI=true" in output
    assert "chromium is missing" in output
    assert "node is missing" in output
    assert "xfailed under CI=true" in output
    assert "xpassed under CI=true" in output
    assert "known bug" in output


def test_outside_ci_skips_and_xfails_stay(tmp_path: Path) -> None:
    output = run_guarded(tmp_path, ci=False)
    assert re.search(r"\b1 passed, 3 skipped, 1 xfailed, 1 xpassed\b", summary(output)), output


@pytest.mark.parametrize("ci", [True, False])
def test_a_missing_playwright_fails_the_browser_tests_under_ci(tmp_path: Path, ci: bool) -> None:
    """tests/web/test_dashboard.py skips at import time without Playwright, which
    only the collection hook sees."""
    stub = tmp_path / "stub" / "playwright"
    stub.mkdir(parents=True)
    (stub / "__init__.py").write_text("")  # a playwright without playwright.sync_api
    env = {k: v for k, v in os.environ.items() if k not in ("CI", "PYTEST_ADDOPTS")}
    env["PYTHONPATH"] = str(stub.parent)
    if ci:
        env["CI"] = "true"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-p",
            "no:cacheprovider",
            "--collect-only",
            "-q",
            "tests/web/test_dashboard.py",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        check=False,
    )
    output = result.stdout + result.stderr
    if ci:
        assert result.returncode != 0, output
        assert "skipped while collecting under CI=true" in output, output
        assert "the browser tests need playwright" in output, output
    else:
        assert result.returncode == pytest.ExitCode.NO_TESTS_COLLECTED, output
        assert "SKIPPED [1] tests/web/test_dashboard.py" in output, output
