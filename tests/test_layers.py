"""The layering of docs/design.md holds: import-linter's contracts in pyproject.toml
(``[tool.importlinter]``) are kept by this checkout, and they do break when a lower layer imports
an upper one or a stand-alone package imports crossover_sgd.

The linter runs in a fresh interpreter with the tree under test first on ``sys.path`` (a process
that already imported crossover_sgd, like this one, would make import-linter's package lookup
answer with the imported package), and that process reports where it found each root package, so
a test cannot pass by analysing the installed copy instead of the tree it names.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Dict, NamedTuple

import pytest

from support import ROOT

try:
    import tomllib
except ImportError:  # Python < 3.11: the test extra brings tomli
    import tomli as tomllib

PACKAGES = ("crossover_sgd", "lars", "topology")

# Runs `lint-imports --no-cache --no-logo pyproject.toml` (the console script's own entry point) in
# the current directory, after printing where each package named in argv is found from there.
# --no-cache: nothing is written into the tree (import-linter caches in .import_linter_cache/).
DRIVER = r"""
import importlib.util, json, os, sys
root = os.path.realpath(os.getcwd())
sys.path.insert(0, root)
found = {}
for name in sys.argv[1:]:
    spec = importlib.util.find_spec(name)
    found[name] = os.path.dirname(os.path.realpath(spec.origin)) if spec and spec.origin else None
print("ANALYSED " + json.dumps(found), flush=True)
from importlinter.cli import lint_imports_command
sys.argv = ["lint-imports", "--no-cache", "--no-logo", "pyproject.toml"]
lint_imports_command()
"""


def contract_names() -> Dict[str, str]:
    """Contract id -> name, from the checkout's pyproject.toml."""
    with open(ROOT / "pyproject.toml", "rb") as f:
        contracts = tomllib.load(f)["tool"]["importlinter"]["contracts"]
    return {c["id"]: c["name"] for c in contracts}


class Lint(NamedTuple):
    returncode: int
    output: str
    status: Dict[str, str]  # contract name -> "KEPT" / "BROKEN"


def lint(root: Path) -> Lint:
    """import-linter's verdict on the tree at ``root`` (its pyproject.toml and packages)."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(COLUMNS="1000", NO_COLOR="1", TERM="dumb")  # one line per contract, no colour codes
    proc = subprocess.run([sys.executable, "-c", DRIVER, *PACKAGES], cwd=root, env=env,
                          capture_output=True, text=True, timeout=120)
    first, _, rest = proc.stdout.partition("\n")
    assert first.startswith("ANALYSED "), f"the linter process did not start:\n{proc.stdout}\n{proc.stderr}"
    found = json.loads(first[len("ANALYSED "):])
    expected = {name: str((root / name).resolve()) for name in PACKAGES}
    assert found == expected, f"the linter would analyse {found}, not the tree {root}"
    output = rest + proc.stderr
    status = {}
    for line in output.splitlines():
        name, _, verdict = line.strip().rpartition(" ")
        if verdict in ("KEPT", "BROKEN"):
            status[name] = verdict
    return Lint(proc.returncode, output, status)


def test_the_checkout_keeps_its_import_contracts():
    result = lint(ROOT)
    assert result.returncode == 0, (
        f"lint-imports: broken import contracts (pyproject.toml [tool.importlinter]):\n{result.output}")
    names = contract_names()
    assert result.status == {name: "KEPT" for name in names.values()}, result.output


@pytest.fixture(scope="module")
def clean_copy_lint(tmp_path_factory) -> Lint:
    """The verdict on an unmodified copy: what the injected imports below are compared with."""
    return lint(copy_tree(tmp_path_factory.mktemp("clean")))


def copy_tree(dst: Path) -> Path:
    for name in PACKAGES:
        shutil.copytree(ROOT / name, dst / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    shutil.copy2(ROOT / "pyproject.toml", dst / "pyproject.toml")
    return dst


@pytest.mark.parametrize("path, statement, contract, violation, route", [
    # a lower layer (comm) imports an entry point
    ("crossover_sgd/comm/stats.py", "import crossover_sgd.cli", "layers",
     "crossover_sgd.comm is not allowed to import crossover_sgd.cli",
     "crossover_sgd.comm.stats -> crossover_sgd.cli (l.{line})"),
    # a stand-alone package imports crossover_sgd
    ("topology/mixing.py", "import crossover_sgd", "standalone",
     "topology is not allowed to import crossover_sgd",
     "topology.mixing -> crossover_sgd (l.{line})"),
], ids=["comm-imports-cli", "topology-imports-crossover_sgd"])
def test_a_forbidden_import_breaks_its_contract(tmp_path, clean_copy_lint, path, statement,
                                                contract, violation, route):
    name = contract_names()[contract]
    assert name in clean_copy_lint.status, clean_copy_lint.output
    assert violation not in clean_copy_lint.output

    root = copy_tree(tmp_path)
    target = root / path
    text = target.read_text()
    if not text.endswith("\n"):
        text += "\n"
    line = text.count("\n") + 1
    target.write_text(f"{text}{statement}\n")

    result = lint(root)
    assert result.returncode == 1, result.output
    assert result.status.get(name) == "BROKEN", result.output
    broken_section = result.output.partition("Broken contracts")[2]
    assert name in broken_section, result.output
    assert violation in broken_section, result.output
    assert route.format(line=line) in broken_section, result.output
