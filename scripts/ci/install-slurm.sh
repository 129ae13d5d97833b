#!/usr/bin/env bash
# Install a Slurm controller + node daemon (and munge) for the real-Slurm tests in tests/hpc.
#
# Debian/Ubuntu only (apt). Idempotent: does nothing when slurmctld, slurmd, srun and munged are
# already on PATH. Needs root (CI runs as root). Every apt call is bounded by a timeout, so a
# machine without package access fails in bounded time instead of hanging the test session.
#
#   scripts/ci/install-slurm.sh            # install if missing
#   INSTALL_TIMEOUT=600 scripts/ci/install-slurm.sh
set -euo pipefail

have_all() {
    command -v slurmctld >/dev/null && command -v slurmd >/dev/null \
        && command -v srun >/dev/null && command -v munged >/dev/null
}

if have_all; then
    echo "install-slurm: slurm already installed: $(slurmctld -V 2>/dev/null || echo "version unknown")"
    exit 0
fi
if ! command -v apt-get >/dev/null; then
    echo "install-slurm: no apt-get on this machine: install slurm-wlm (slurmctld, slurmd, munge) by hand" >&2
    exit 3
fi
if [ "$(id -u)" != 0 ]; then
    echo "install-slurm: must run as root to apt-get install slurm-wlm" >&2
    exit 3
fi

limit="${INSTALL_TIMEOUT:-300}"
export DEBIAN_FRONTEND=noninteractive
timeout "$limit" apt-get update -qq
# slurm-wlm pulls slurmctld, slurmd, slurm-client and munge. No systemd here: the packages'
# service start is skipped or fails harmlessly; the tests start the daemons themselves.
timeout "$limit" apt-get install -y -qq --no-install-recommends slurm-wlm munge >/dev/null

if ! have_all; then
    echo "install-slurm: slurm-wlm installed but slurmctld/slurmd/srun/munged are still missing" >&2
    exit 4
fi
echo "install-slurm: installed $(slurmctld -V 2>/dev/null || echo "version unknown")"
