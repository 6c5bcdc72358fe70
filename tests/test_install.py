"""The set-up as README gives it: the repository's address in one place, the virtual environment ignored."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from maelib import course

ROOT = Path(__file__).resolve().parents[1]


def test_a_fork_sets_its_address_once_and_readme_follows(tmp_path):
    url = course.repository_url()
    readme = (ROOT / "README.md").read_text()
    assert re.search(rf"^git clone {re.escape(url)} && cd maelib$", readme, re.M)  # the Quickstart's set-up
    fork = tmp_path / "fork"
    (fork / "notebooks").mkdir(parents=True)
    (fork / "pyproject.toml").write_text((ROOT / "pyproject.toml").read_text().replace(url, "https://github.com/me/mine"))
    (fork / "README.md").write_text(readme)
    course.sync_urls(fork)
    forked = (fork / "README.md").read_text()
    assert "git clone https://github.com/me/mine && cd maelib" in forked
    assert url.removeprefix("https://") not in forked  # no link to the original is left


def test_the_virtual_environment_of_the_quickstart_is_not_committed(tmp_path):
    checked = subprocess.run(["git", "check-ignore", "--no-index", ".venv/bin/python", "data/cats_dogs/cats/x.jpg"],
                             cwd=ROOT, capture_output=True, text=True)
    assert checked.stdout.split() == [".venv/bin/python", "data/cats_dogs/cats/x.jpg"]
