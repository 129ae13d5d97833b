"""The Singularity/Apptainer definition, checked for what can be checked without building it
(neither runtime nor the NVIDIA registry is reachable here): its sections, that it copies and
installs this project, that its scripts parse, and that its runscript calls an entry point that
exists."""

from __future__ import annotations

import importlib
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Dict, List

import pytest

from support import ROOT, unavailable

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover (the test extra installs tomli on Python < 3.11)
    import tomli as tomllib

pytestmark = pytest.mark.slow

DEF = ROOT / "singularity" / "crossover-sgd.def"
#: The sections a definition file may have (Apptainer/SingularityCE).
KNOWN = {"%setup", "%files", "%environment", "%post", "%runscript", "%startscript", "%test", "%labels",
         "%help", "%arguments", "%apprun", "%appinstall", "%appenv", "%apphelp", "%applabels",
         "%appfiles", "%apptest", "%appstart"}
#: Dependencies the NVIDIA PyTorch base image provides, built for its CUDA (not to be reinstalled).
FROM_BASE_IMAGE = {"torch", "torchvision", "numpy"}


def parse(path: Path):
    """(header key -> value, section -> body lines) of a definition file."""
    header: Dict[str, str] = {}
    sections: Dict[str, List[str]] = {}
    current = None
    for line in path.read_text().splitlines():
        if line.startswith("%"):
            current = line.split()[0]
            assert current not in sections, f"section {current} appears twice"
            sections[current] = []
        elif current is None:
            if line.strip() and not line.lstrip().startswith("#"):
                key, _, value = line.partition(":")
                header[key.strip()] = value.strip()
        else:
            sections[current].append(line)
    return header, sections


@pytest.fixture(scope="module")
def definition():
    return parse(DEF)


@pytest.fixture(scope="module")
def pyproject():
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_header_bootstraps_from_an_nvidia_pytorch_image(definition):
    header, sections = definition
    assert header["Bootstrap"] == "docker"
    assert re.fullmatch(r"nvcr\.io/nvidia/pytorch:\d\d\.\d\d-py3", header["From"]), header["From"]
    labels = dict(line.split(None, 1) for line in sections["%labels"] if line.strip())
    assert labels["org.opencontainers.image.base.name"] == header["From"]


def test_sections(definition):
    _, sections = definition
    assert set(sections) <= KNOWN, set(sections) - KNOWN
    for name in ("%labels", "%help", "%files", "%post", "%runscript", "%test"):
        assert any(line.strip() for line in sections[name]), f"{name} is empty"


def test_files_copy_this_project_and_post_installs_it(definition, pyproject):
    _, sections = definition
    copies = [line.split() for line in sections["%files"] if line.strip() and not line.lstrip().startswith("#")]
    assert all(len(pair) == 2 for pair in copies), copies
    for source, destination in copies:
        assert (ROOT / source).exists(), f"%files copies {source}, which is not in the repository"
        assert destination == f"/opt/crossover-sgd/{source}"
    copied = {source for source, _ in copies}
    packages = {pattern.rstrip("*") for pattern in pyproject["tool"]["setuptools"]["packages"]["find"]["include"]}
    assert packages | {"pyproject.toml", pyproject["project"]["readme"], "imagenet_test.py"} <= copied

    post = "\n".join(sections["%post"])
    assert "cd /opt/crossover-sgd" in post
    installs = [shlex.split(line) for line in sections["%post"] if "pip install" in line]
    assert any(words[-1] == "." and "--no-deps" in words for words in installs), installs  # this package
    installed = {re.split(r"[<>=\[ ]", word)[0].lower() for words in installs
                 for word in words[words.index("install") + 1:] if not word.startswith("-")}
    for requirement in pyproject["project"]["dependencies"] + pyproject["project"]["optional-dependencies"]["mpi"]:
        name = re.split(r"[<>=\[ ;]", requirement)[0].lower()
        assert name in installed | FROM_BASE_IMAGE, f"dependency {name} is neither installed nor in the base image"


def test_runscript_calls_an_entry_point_that_exists(definition, pyproject):
    _, sections = definition
    commands = [line.split() for line in sections["%runscript"] if line.strip() and not line.lstrip().startswith("#")]
    assert commands == [["exec", "crossover-sgd", '"$@"']]
    target = pyproject["project"]["scripts"]["crossover-sgd"]
    module, _, function = target.partition(":")
    assert callable(getattr(importlib.import_module(module), function))
    # %test uses the same entry point on the built-in job
    test = "\n".join(sections["%test"])
    assert "crossover-sgd train --nproc 2" in test and "summary.json" in test


@pytest.mark.parametrize("section", ["%post", "%runscript", "%test", "%environment"])
def test_scripts_parse_as_posix_sh(definition, section, tmp_path):
    """Apptainer runs these sections with /bin/sh (dash on Debian/Ubuntu images)."""
    sh = shutil.which("dash") or shutil.which("sh")
    if sh is None:
        unavailable("no POSIX sh (dash or sh) on this machine")
    script = tmp_path / "section.sh"
    script.write_text("\n".join(definition[1][section]) + "\n")
    result = subprocess.run([sh, "-n", str(script)], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr


def test_readme_builds_from_the_repository_root():
    readme = (ROOT / "singularity" / "README.md").read_text()
    for command in ("apptainer build --fakeroot crossover-sgd.sif singularity/crossover-sgd.def",
                    "singularity build --fakeroot crossover-sgd.sif singularity/crossover-sgd.def", "--nv", "--bind"):
        assert command in readme
