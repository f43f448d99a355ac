"""What a package index and a user of the sdist get (issue 13, item 2).

The sdist is built here (setuptools alone, well under a second); installing the wheel and the
sdist into fresh virtualenvs is ``.ci/package_check.sh``'s job. ``topgun --version`` and
``python -m topgun`` run as a user would run them.
"""
from __future__ import annotations

import email.parser
import importlib.util
import re
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path
from typing import Iterator, Tuple

import pytest

import topgun

ROOT = Path(__file__).resolve().parents[2]
Sdist = Tuple[set[str], email.message.Message, Path]


@pytest.fixture(scope="module")
def sdist(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sdist]:
    """(paths in the sdist relative to its top directory, its PKG-INFO, the egg-info directory)."""
    if importlib.util.find_spec("setuptools") is None:
        pytest.fail("building the sdist needs setuptools (scripts/test.sh installs it): pip install setuptools")
    out = tmp_path_factory.mktemp("sdist")
    proc = subprocess.run([sys.executable, "setup.py", "-q", "egg_info", "--egg-base", str(out),
                           "sdist", "--dist-dir", str(out)], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (archive,) = out.glob("topgun-*.tar.gz")
    with tarfile.open(archive) as tar:
        top = f"topgun-{topgun.__version__}/"
        names = {m.name[len(top):] for m in tar.getmembers() if m.isfile() and m.name.startswith(top)}
        pkg_info = tar.extractfile(top + "PKG-INFO")
        assert pkg_info is not None
        yield names, email.parser.BytesParser().parse(pkg_info), out / "topgun.egg-info"


def _source_files(folder: str) -> set[str]:
    return {str(p.relative_to(ROOT)) for p in (ROOT / folder).rglob("*")
            if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc"}


def test_the_sdist_carries_everything_its_tests_read(sdist: Sdist) -> None:
    names, _, _ = sdist
    for folder in ("tests", "examples", "docs"):
        missing = sorted(_source_files(folder) - names)
        assert missing == [], f"the sdist lacks {missing}"
    assert {"LICENSE", "tox.ini", "setup.py", "topgun/py.typed"} <= names


def test_the_metadata_says_who_what_and_under_which_license(sdist: Sdist) -> None:
    _, info, _ = sdist
    assert info["Version"] == topgun.__version__
    assert info["License"] == "Apache-2.0"
    assert info["Author"] == "topgun-python developers"
    assert info["Requires-Python"] == ">=3.10"
    assert "TopGun server, https://github.com/TopGunBuild/topgun" in info.get_all("Project-URL")
    classifiers = set(info.get_all("Classifier"))
    assert "License :: OSI Approved :: Apache Software License" in classifiers
    assert {f"Programming Language :: Python :: 3.{minor}" for minor in range(10, 14)} <= classifiers
    assert "Typing :: Typed" in classifiers


def test_the_client_alone_installs_no_extra(sdist: Sdist) -> None:
    # requires.txt, not PKG-INFO: older setuptools leave Requires-Dist out of an sdist's PKG-INFO
    requires = sdist[2] / "requires.txt"
    sections = re.split(r"^\[(.*)\]$", requires.read_text(), flags=re.MULTILINE)
    plain = {re.split(r"[<>=; ]", line)[0].lower() for line in sections[0].split()}
    assert plain == {"gevent", "msgpack", "mmh3", "tenacity"}
    extras = dict(zip(sections[1::2], sections[2::2]))
    # the C hash where it has wheels; 3.10 hashes with the Python loop (same values)
    assert extras.pop(':python_version >= "3.11"').split() == ["fnv-hash-fast>=2.0"]
    assert set(extras) >= {"server", "cli", "test", "web", "locust"}
    assert "gevent-websocket" in extras["server"] and "ujson" in extras["cli"]
    assert not re.search(r"flask|django|gunicorn|requests|locust", extras["test"])


def test_the_long_description_reads_right_on_a_package_index(sdist: Sdist) -> None:
    _, info, _ = sdist
    description = info.get_payload()
    assert info["Description-Content-Type"] == "text/markdown"
    assert description.startswith("# topgun\n")
    links = re.findall(r"\]\(([^)\s]+)\)", description)
    assert links and [link for link in links if not link.startswith("https://")] == []
    assert "./scripts" not in description and "scripts/" not in description
    assert "Apache License 2.0" in description


def test_the_readme_first_screen_keeps_the_two_commands() -> None:
    first_screen = "\n".join((ROOT / "README.md").read_text(encoding="utf-8").splitlines()[:15])
    assert "./scripts/demo.sh" in first_screen and "./scripts/test.sh" in first_screen
    assert "Apache License 2.0" in (ROOT / "README.md").read_text(encoding="utf-8")
    assert "Apache License" in (ROOT / "LICENSE").read_text(encoding="utf-8").splitlines()[1]


def test_python_dash_m_topgun_prints_the_version() -> None:
    proc = subprocess.run([sys.executable, "-m", "topgun", "--version"], capture_output=True, text=True, timeout=60)
    assert (proc.returncode, proc.stdout) == (0, f"topgun {topgun.__version__}\n"), proc.stderr


def test_the_topgun_script_prints_the_version() -> None:
    script = shutil.which("topgun", path=str(Path(sys.executable).parent))
    assert script is not None, "the topgun console script is not installed next to this python"
    proc = subprocess.run([script, "--version"], capture_output=True, text=True, timeout=60)
    assert (proc.returncode, proc.stdout) == (0, f"topgun {topgun.__version__}\n"), proc.stderr
