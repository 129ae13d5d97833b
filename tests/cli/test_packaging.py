"""The installed package: the distribution, its console script, its extras, and that the
environment's install serves this checkout (``pip install -e .``, as ``.ci/run`` does).

The install is looked at the way a user's shell sees it: subprocesses started from a scratch
directory without this checkout on ``PYTHONPATH`` (the other tests add it).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Dict

import pytest

from support import ROOT, child_env, installed_program

try:
    import tomllib
except ImportError:  # Python < 3.11: the test extra brings tomli
    import tomli as tomllib

PACKAGES = ("crossover_sgd", "lars", "topology")
SCRIPT = "crossover-sgd"


def installed_env() -> Dict[str, str]:
    """The test environment without this checkout on PYTHONPATH: only the install can serve imports."""
    env = child_env()
    parts = [p for p in env.get("PYTHONPATH", "").split(os.pathsep)
             if p and Path(p).resolve() != ROOT]
    if parts:
        env["PYTHONPATH"] = os.pathsep.join(parts)
    else:
        env.pop("PYTHONPATH", None)
    return env


def probe(code: str, cwd: Path) -> dict:
    """Run ``code`` (which prints one JSON value) in a fresh interpreter that sees only the install."""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                            env=installed_env(), cwd=cwd)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


DISTRIBUTION = """
import json, importlib.metadata as md
dist = md.distribution("crossover-sgd")
scripts = {ep.name: ep.value for ep in dist.entry_points if ep.group == "console_scripts"}
print(json.dumps({"version": dist.version, "extras": dist.metadata.get_all("Provides-Extra") or [],
                  "requires": dist.requires or [], "scripts": scripts,
                  "direct_url": dist.read_text("direct_url.json")}))
"""


@pytest.fixture(scope="module")
def dist(tmp_path_factory) -> dict:
    try:
        return probe(DISTRIBUTION, tmp_path_factory.mktemp("cwd"))
    except AssertionError as exc:
        pytest.fail(f"the distribution crossover-sgd is not installed (pip install -e .): {exc}")


def test_distribution_is_installed_with_this_version(dist):
    assert dist["version"] == pyproject()["project"]["version"]


def test_console_script_entry_point_resolves_to_the_real_function(dist, tmp_path):
    declared = pyproject()["project"]["scripts"]
    assert dist["scripts"] == declared == {SCRIPT: "crossover_sgd.cli:console_main"}
    loaded = probe("""
import json, importlib.metadata as md, inspect
(ep,) = [ep for ep in md.distribution("crossover-sgd").entry_points
         if ep.group == "console_scripts" and ep.name == "crossover-sgd"]
func = ep.load()
import crossover_sgd.cli
print(json.dumps({"is_cli_function": func is crossover_sgd.cli.console_main, "module": func.__module__,
                  "name": func.__qualname__, "file": inspect.getsourcefile(func)}))
""", tmp_path)
    assert loaded["is_cli_function"] and (loaded["module"], loaded["name"]) == ("crossover_sgd.cli", "console_main")
    assert Path(loaded["file"]).name == "cli.py"


def test_declared_extras_are_in_the_metadata(dist):
    declared = pyproject()["project"]["optional-dependencies"]
    assert {"mpi", "plot", "tensorboard", "test"} <= set(declared)
    missing = sorted(set(declared) - set(dist["extras"]))
    assert not missing, f"extras {missing} of pyproject.toml are not in the installed metadata: pip install -e ."
    for extra in declared:  # each extra brings at least one requirement, marked with its name
        assert any(f'extra == "{extra}"' in req for req in dist["requires"]), (extra, dist["requires"])


def test_packages_import_from_this_checkout(tmp_path):
    """Imports in a fresh interpreter, outside the checkout, are served by this checkout: the
    install is an editable install of it. (A copy in site-packages or an install of another
    checkout would run other code than the one under test for `crossover-sgd` in a shell.)"""
    files = probe("import json, importlib\n"
                  f"print(json.dumps({{n: importlib.import_module(n).__file__ for n in {PACKAGES!r}}}))", tmp_path)
    for name in PACKAGES:
        where = Path(files[name]).resolve()
        assert where == ROOT / name / "__init__.py", (
            f"{name} imports from {where}, not from this checkout {ROOT}: run pip install -e . here")


@pytest.mark.parametrize("args,expected", [(["--help"], ["train", "launch-info", "experiment", "plot"]),
                                           (["train", "--help"], ["--algorithm", "--nproc", "--log-level"])],
                         ids=["help", "train-help"])
def test_console_script_runs(tmp_path, args, expected):
    script = installed_program(SCRIPT)
    assert script is not None, f"no {SCRIPT} script next to {sys.executable} or on PATH: pip install -e ."
    result = subprocess.run([script, *args], capture_output=True, text=True, timeout=120, env=child_env(),
                            cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    for word in expected:
        assert word in result.stdout
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("args", [["--help"], ["train", "--help"]], ids=["help", "train-help"])
def test_python_m_runs(tmp_path, args):
    result = subprocess.run([sys.executable, "-m", "crossover_sgd", *args], capture_output=True, text=True,
                            timeout=120, env=child_env(), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "usage: crossover-sgd" in result.stdout
