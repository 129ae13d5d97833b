"""Runtime: launch detection (``launch``), the local launcher (``local_launcher``), the emulated
cluster it can run on (``emulation``: network namespaces, rate-limited links), device, backend and
process group (``process_group``), heartbeats (``watchdog``), ``launch-info`` (``report``),
``netcheck`` (``netcheck``). Import the submodules directly; this package imports nothing (the
launcher process of ``--nproc`` never needs torch)."""
