"""``pip install .`` ships the library's parts, typed, and builds without a warning.

The wheel is built without build isolation (the test extra installs setuptools), so
this needs no network and takes a few seconds. It builds a copy of the source, so that
no ``build/`` folder left in the clone by an earlier build can add to the wheel.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


SOURCES = ("pyproject.toml", "README.md", "LICENSE")
FOLDERS = ("crdtmem", "transport", "simulations", "benchmarks", "examples", "tests")


def test_wheel_holds_the_library_parts_and_builds_without_warnings(tmp_path: Path) -> None:
    source, out = tmp_path / "source", tmp_path / "wheel"
    for name in SOURCES:
        (source / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(ROOT / name, source / name)
    for folder in FOLDERS:
        shutil.copytree(
            ROOT / folder, source / folder, ignore=shutil.ignore_patterns("__pycache__", "*.gz")
        )
    # Byte-compiling off (PYTHONDONTWRITEBYTECODE) makes setuptools say so as a
    # "warning:"; that is the environment's doing, not the project's packaging.
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    build = subprocess.run(
        [
            *(sys.executable, "-m", "pip", "wheel", "--verbose", "--no-deps"),
            *("--no-build-isolation", "--no-index", "--wheel-dir", str(out), str(source)),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert build.returncode == 0, build.stdout + build.stderr
    noise = [
        line
        for line in (build.stdout + build.stderr).splitlines()
        if re.search(r"warn|deprecat", line, re.IGNORECASE)
        # pip's own notice about find-links folders the machine's pip config names
        and "is ignored: it is neither a file nor a directory" not in line
    ]
    assert not noise, "\n".join(noise)

    (wheel,) = out.glob("crdtmem-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    tops = {name.split("/")[0] for name in names if not name.split("/")[0].endswith(".dist-info")}
    assert tops == {"crdtmem", "transport", "simulations"}
    for part in ("crdtmem", "transport", "simulations"):
        assert f"{part}/__init__.py" in names and f"{part}/py.typed" in names
    assert not any(name.startswith(("benchmarks/", "examples/", "tests/")) for name in names)
    (licence,) = [name for name in names if name.endswith(".dist-info/licenses/LICENSE")]
    metadata = next(name for name in names if name.endswith(".dist-info/METADATA"))
    text = zipfile.ZipFile(wheel).read(metadata).decode()
    assert "License-Expression: MIT" in text and licence
    assert "Requires-Dist: rich" not in text.split("Provides-Extra")[0]
