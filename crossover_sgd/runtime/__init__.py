"""Runtime: launch detection, the local launcher, device/backend choice and process groups."""

from crossover_sgd.runtime.launch import LaunchInfo, detect_launch
from crossover_sgd.runtime.process_group import DistContext, init_distributed, select_backend, select_device

__all__ = ["LaunchInfo", "DistContext", "detect_launch", "init_distributed", "select_backend", "select_device"]
