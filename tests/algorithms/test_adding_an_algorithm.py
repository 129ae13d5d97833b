"""docs/design.md's "How to add an algorithm" is true: its example, executed as written, is an
algorithm whose options become flags through the registry, and which averages with its ring
neighbours on three real processes exactly as its docstring's formula says."""

from __future__ import annotations

import argparse
import sys

import pytest
import torch

from crossover_sgd.algorithms import registry
from crossover_sgd.runtime.local_launcher import launch_local
from support import ROOT, design_example


@pytest.fixture(scope="module")
def example():
    return design_example(ROOT / "docs" / "design.md")


def test_one_registry_line_gives_the_flag_its_check_and_the_warning(example, monkeypatch):
    from crossover_sgd import cli

    toy = example["NeighbourAverage"]
    monkeypatch.setattr(registry, "REGISTERED", registry.REGISTERED + (toy,))
    monkeypatch.setitem(registry.ALGORITHMS, "neighbour-average", toy)
    parser = cli.build_parser()
    (sub,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    groups = {g.title: [o for a in g._group_actions for o in a.option_strings] for g in sub.choices["train"]._action_groups}
    assert groups["options of neighbour-average"] == ["--neighbourhood"]
    argv = ["train", "--algorithm", "neighbour-average", "--neighbourhood", "complete"]
    config = cli.config_from_args(parser.parse_args(argv))
    assert config.validate().neighbourhood == "complete"
    with pytest.raises(Exception, match="--neighbourhood 'star' is unknown: choose one of ring, complete"):
        cli.config_from_args(parser.parse_args(argv[:-1] + ["star"])).validate()
    other = cli.config_from_args(parser.parse_args(["train", "--algorithm", "sgp", "--neighbourhood", "complete"]))
    assert other.validate().ineffective_options() == [
        "--neighbourhood complete (only neighbour-average uses it; the algorithm is sgp)"]


@pytest.mark.slow
def test_the_example_averages_with_its_ring_neighbours_on_real_processes(tmp_path):
    n = 3
    assert launch_local(n, [sys.executable, str(ROOT / "tests" / "workers" / "design_example.py"), str(tmp_path)]) == 0
    runs = [torch.load(tmp_path / f"rank{r}.pt") for r in range(n)]
    for r, run in enumerate(runs):
        left, right = runs[(r - 1) % n]["before"], runs[(r + 1) % n]["before"]
        for mine, a, b, after in zip(run["before"], left, right, run["after"]):
            assert torch.equal(after, (mine + (0 + a + b)) / 3)  # exact: integer-valued float64
        assert run["rounds"] == 1 and run["bytes_sent"] == 2 * (2 * 3 + 2) * 8  # the model to each neighbour
