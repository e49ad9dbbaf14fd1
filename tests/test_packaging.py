"""What a legal department and a packager read first: the license, the notice, the
changelog, and the version set in one place."""

from __future__ import annotations

import re
import tomllib
from importlib.metadata import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _project() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def test_the_license_is_apache_2_0_in_the_file_and_in_the_metadata():
    text = (ROOT / "LICENSE").read_text()
    assert text.lstrip().startswith("Apache License\n                           Version 2.0, January 2004")
    assert "END OF TERMS AND CONDITIONS" in text
    assert _project()["license"] == "Apache-2.0"
    installed = metadata("smpc")  # what pip installed from pyproject.toml
    assert installed["License-Expression"] == "Apache-2.0"
    assert set(installed.get_all("License-File")) == {"LICENSE", "NOTICE"}


def test_the_notice_names_crypten_and_its_license():
    notice = (ROOT / "NOTICE").read_text()
    assert "CrypTen" in notice and "MIT License" in notice


def test_the_changelog_has_a_section_for_the_version_and_no_other_place_sets_it():
    version = _project()["version"]
    changelog = (ROOT / "CHANGELOG.md").read_text()
    assert "## [Unreleased]" in changelog
    assert re.search(rf"^## \[{re.escape(version)}\] - \d{{4}}-\d{{2}}-\d{{2}}$", changelog, re.M)
    assert metadata("smpc")["Version"] == version
    # the version lives in pyproject.toml alone: no module repeats it
    for path in [*ROOT.glob("smpc/**/*.py"), *ROOT.glob("launch/**/*.py"), *ROOT.glob("parties/**/*.py")]:
        assert not re.search(r"__version__\s*=|version\s*=\s*[\"']\d", path.read_text()), path
