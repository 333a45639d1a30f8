"""Hatchling build hook: put the browser build of socket.io-client into the package.

The dashboard loads ``taskevents/flask/static/vendor/socket.io.min.js``, the official
socket.io-client pinned by ``package-lock.json``. The file is not in git: every build
(wheel, editable or sdist) makes sure it is there and matches the lock, and otherwise
runs ``npm ci`` (so building from a git checkout needs Node.js and npm) and copies it,
with the package's licence, from ``node_modules``. An sdist carries the copied files, so
building from an sdist needs no npm.

Also runnable as a script (``python hatch_build.py``), which is what ``./dev`` does.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hatchling.builders.config import BuilderConfig
from hatchling.builders.hooks.plugin.interface import BuildHookInterface

PACKAGE = "socket.io-client"
BUNDLE = "socket.io.min.js"
#: The licence file as shipped: socket.io-client's own ``LICENSE``, renamed.
LICENSE_NAME = "socket.io-client.LICENSE"
VENDOR_DIR = Path("src", "taskevents", "flask", "static", "vendor")
NPM_CI = ("ci", "--no-audit", "--no-fund", "--ignore-scripts", "--loglevel=error")
_BANNER = re.compile(rb"Socket\.IO v(\S+)")


class VendorError(RuntimeError):
    """The socket.io-client build cannot be put into the package."""


def locked_version(root: Path) -> str:
    """The socket.io-client version that ``package-lock.json`` pins."""
    lock_path = root / "package-lock.json"
    try:
        lock = json.loads(lock_path.read_text(encoding="utf-8"))
        version = lock["packages"][f"node_modules/{PACKAGE}"]["version"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise VendorError(f"cannot read the {PACKAGE} version from {lock_path}: {exc!r}") from exc
    if not isinstance(version, str):
        raise VendorError(f"{lock_path}: the {PACKAGE} version is not a string")
    return version


def bundle_version(path: Path) -> str | None:
    """The version in the banner of a socket.io browser build, None if there is none."""
    try:
        with path.open("rb") as file:
            head = file.read(512)
    except OSError:
        return None
    match = _BANNER.search(head)
    return match.group(1).decode("ascii", "replace") if match else None


def installed_version(root: Path) -> str | None:
    """The version of socket.io-client in ``node_modules``, None if it is not there."""
    try:
        manifest = json.loads((root / "node_modules" / PACKAGE / "package.json").read_text("utf-8"))
    except (OSError, ValueError):
        return None
    version = manifest.get("version") if isinstance(manifest, dict) else None
    return version if isinstance(version, str) else None


def _license_file(package_dir: Path) -> Path | None:
    for name in ("LICENSE", "LICENSE.md", "LICENSE.txt", "LICENCE", "license"):
        if (package_dir / name).is_file():
            return package_dir / name
    return None


def _copy_if_changed(source: Path, target: Path) -> bool:
    if target.is_file() and target.read_bytes() == source.read_bytes():
        return False
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, target)
    return True


def _npm_ci(root: Path, version: str, log: Callable[[str], None]) -> None:
    npm = shutil.which("npm")
    if npm is None:
        raise VendorError(
            f"building taskevents from a source checkout needs npm (Node.js 18+), which is "
            f"not on PATH: the dashboard ships the official {PACKAGE} {version} (pinned by "
            f"package-lock.json), built with `npm ci`. Install Node.js and npm (Debian: "
            f"apt-get install nodejs npm) and build again, or install from a taskevents "
            f"sdist, which carries the built client."
        )
    log(f"taskevents: {VENDOR_DIR / BUNDLE} is missing or stale; running npm ci")
    result = subprocess.run(
        [npm, *NPM_CI],
        cwd=root,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise VendorError(
            f"`npm {' '.join(NPM_CI)}` failed in {root} (exit {result.returncode}):\n"
            f"{result.stdout}{result.stderr}"
        )


def vendor_client(root: Path, log: Callable[[str], None] = print) -> Path:
    """Make ``src/taskevents/flask/static/vendor/socket.io.min.js`` the build of the locked
    socket.io-client, running ``npm ci`` only when neither it nor ``node_modules`` has
    that version. Returns the bundle's path."""
    version = locked_version(root)
    vendor = root / VENDOR_DIR
    bundle = vendor / BUNDLE
    package_dir = root / "node_modules" / PACKAGE
    if installed_version(root) != version:
        if bundle_version(bundle) == version:
            return bundle  # an sdist, or a checkout whose node_modules is elsewhere: fine
        _npm_ci(root, version, log)
        if installed_version(root) != version:
            raise VendorError(
                f"npm ci did not install {PACKAGE} {version} into {package_dir}; "
                f"is package-lock.json in step with package.json?"
            )
    source = package_dir / "dist" / BUNDLE
    if not source.is_file():
        raise VendorError(f"{source} is missing from the {PACKAGE} {version} package")
    if _copy_if_changed(source, bundle):
        log(f"taskevents: copied {PACKAGE} {version} to {bundle.relative_to(root)}")
    license_file = _license_file(package_dir)
    if license_file is not None:
        _copy_if_changed(license_file, vendor / LICENSE_NAME)
    found = bundle_version(bundle)
    if found != version:
        raise VendorError(f"{bundle} says it is version {found}, expected {version}")
    return bundle


class VendorSocketIOClientHook(BuildHookInterface[BuilderConfig]):
    """``[tool.hatch.build.hooks.custom]``: runs before every target (sdist, wheel,
    editable); the files are then picked up as ``artifacts`` (they are git-ignored)."""

    def initialize(self, version: str, build_data: dict[str, Any]) -> None:
        try:
            vendor_client(Path(self.root), self.app.display_info)
        except VendorError as exc:
            self.app.display_error(f"taskevents build: {exc}")
            raise


if __name__ == "__main__":
    try:
        vendor_client(Path(__file__).resolve().parent)
    except VendorError as exc:
        sys.exit(f"taskevents: {exc}")
