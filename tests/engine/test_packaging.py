"""The Lua scripts ship inside the wheel and load from an installed copy.

engine/scripts.py reads lua/*.lua with importlib.resources; a wheel that forgot
the package data would import fine and fail on the first command. This builds
the wheel from a copy of the tree, installs it into a private folder and loads
every script in a fresh interpreter that cannot see the source tree.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

from engine.scripts import LIBRARY, OPERATIONS

REPO = Path(__file__).resolve().parents[2]
_NOT_SOURCE = shutil.ignore_patterns(
    ".git",
    ".venv",
    "venv",
    "*.egg-info",
    "build",
    "dist",
    "__pycache__",
    ".*_cache",
    ".hypothesis",
    ".slotkeeper",
    "tests",
)
_PIP_ENV = {**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1", "PIP_NO_INPUT": "1"}

# Runs in the fresh interpreter: only the installed wheel may provide the packages.
_CHECK = """
import json, sys
from pathlib import Path

# The dev venv has an editable install of this project; its finder would quietly
# serve the source tree if the wheel lacked a module.
sys.meta_path[:] = [f for f in sys.meta_path if "__editable__" not in getattr(f, "__module__", "")]

import engine, lua
from engine.scripts import OPERATIONS, script_source

site = Path(sys.argv[1]).resolve()
for module in (engine, lua):
    assert Path(module.__file__).resolve().is_relative_to(site), module.__file__
print(json.dumps({name: script_source(name) for name in OPERATIONS}))
"""


def _build_wheel(source: Path, out: Path) -> Path:
    """Without build isolation when the venv has the backend (fast, offline), else with."""
    base = [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(out)]
    failures = []
    for extra in (["--no-build-isolation"], []):
        run = subprocess.run(
            [*base, *extra, str(source)],
            capture_output=True,
            text=True,
            timeout=120,
            env=_PIP_ENV,
        )
        wheels = list(out.glob("slotkeeper-*.whl"))
        if run.returncode == 0 and len(wheels) == 1:
            return wheels[0]
        failures.append(f"pip wheel {extra}: rc={run.returncode}\n{run.stderr[-2000:]}")
    raise AssertionError("could not build the wheel:\n" + "\n".join(failures))


def test_wheel_ships_every_script_and_loads_them_installed(tmp_path: Path) -> None:
    source = tmp_path / "src"
    shutil.copytree(REPO, source, ignore=_NOT_SOURCE)
    wheel = _build_wheel(source, tmp_path / "dist")

    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        expected = {f"lua/{name}.lua" for name in OPERATIONS} | {f"lua/{f}" for f in LIBRARY}
        assert expected <= names, sorted(expected - names)
        assert {"lua/__init__.py", "engine/__init__.py", "engine/scripts.py"} <= names
        # The dashboard's assets and every migration are package data too.
        data = {"api/static/dashboard.js", "api/static/dashboard.css"}
        data |= {f"migrations/{p.name}" for p in (REPO / "migrations").glob("*.sql")}
        assert data <= names, sorted(data - names)
        shipped = {n: zf.read(n).decode() for n in expected}
    for name, text in shipped.items():
        assert text == (REPO / name).read_text(encoding="utf-8"), name

    site = tmp_path / "site"
    install = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--no-deps",
            "--no-compile",
            "-q",
            "--target",
            str(site),
            str(wheel),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env=_PIP_ENV,
    )
    assert install.returncode == 0, install.stderr

    elsewhere = tmp_path / "run"  # not the repository: its packages must not be importable
    elsewhere.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    env["PYTHONPATH"] = str(site)
    loaded = subprocess.run(
        [sys.executable, "-c", _CHECK, str(site)],
        cwd=elsewhere,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert loaded.returncode == 0, loaded.stderr
    sources = json.loads(loaded.stdout)

    assert set(sources) == set(OPERATIONS)
    library = [shipped[f"lua/{f}"] for f in LIBRARY]
    for name, text in sources.items():
        assert text == "\n".join([*library, shipped[f"lua/{name}.lua"]]), name
        assert f"-- {name}.lua" in text
