"""The version has one source, ``__version__`` in ``marketspine/__init__.py``: the build
reads it from there, and the installed metadata (which ``marketspine --version`` prints)
carries it."""

from __future__ import annotations

import tomllib
from importlib.metadata import metadata, version
from pathlib import Path

import marketspine

ROOT = Path(__file__).resolve().parents[1]


def test_the_build_reads_the_version_from_the_package() -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "version" not in pyproject["project"], "the version lives in __init__.py only"
    assert "version" in pyproject["project"]["dynamic"]
    assert pyproject["tool"]["hatch"]["version"]["path"] == "src/marketspine/__init__.py"


def test_the_installed_metadata_carries_the_packages_version() -> None:
    assert version("marketspine") == marketspine.__version__, (
        "the installed metadata is older than __init__.py: reinstall (make install)"
    )


def test_the_declared_license_has_its_file() -> None:
    assert metadata("marketspine")["License-Expression"] == "MIT"
    text = (ROOT / "LICENSE").read_text()
    assert text.startswith("MIT License") and "marketspine contributors" in text
