import subprocess
import sys
from pathlib import Path

import taskevents

OPTIONAL = (
    "flask",
    "flask_socketio",
    "socketio",
    "engineio",
    "boto3",
    "botocore",
    "redis",
    "colorlog",
    "urllib3",
    "requests",
    "cloudevents",
)


def test_import_taskevents_imports_only_blinker_and_the_standard_library() -> None:
    code = "import sys, taskevents, taskevents.testing; print('\\n'.join(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    loaded = {name.split(".")[0] for name in out.stdout.split()}
    outside_stdlib = loaded - set(sys.stdlib_module_names) - {"__main__", "_distutils_hack"}
    assert outside_stdlib == {"taskevents", "blinker"}
    assert loaded.isdisjoint(OPTIONAL)


def test_all_lists_every_public_name_sorted() -> None:
    public = {
        name
        for name, value in vars(taskevents).items()
        if not name.startswith("_") and not getattr(value, "__file__", None)
    }
    public.discard("annotations")
    assert set(taskevents.__all__) == public

    # isort-style, as ruff keeps it: CONSTANTS, then Classes, then functions
    def key(name: str) -> tuple[int, str]:
        return (0 if name.isupper() else 1 if name[0].isupper() else 2, name)

    assert list(taskevents.__all__) == sorted(taskevents.__all__, key=key)


def test_package_is_typed() -> None:
    assert (Path(taskevents.__file__).parent / "py.typed").is_file()
