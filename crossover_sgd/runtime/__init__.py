"""Runtime: launch detection (``launch``), the local launcher (``local_launcher``), device,
backend and process group (``process_group``), heartbeats (``watchdog``), ``launch-info``
(``report``). Import the submodules directly; this package imports nothing (the launcher process
of ``--nproc`` never needs torch)."""
