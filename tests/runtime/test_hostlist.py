"""Slurm host list and tasks-per-node expansion, on the strings Slurm really writes."""

from __future__ import annotations

import pytest

from crossover_sgd.runtime.hostlist import expand_hostlist, expand_tasks_per_node


@pytest.mark.parametrize("hostlist, expected", [
    ("gpu5", ["gpu5"]),
    ("localhost", ["localhost"]),
    ("node07,node08", ["node07", "node08"]),
    ("node[1-3]", ["node1", "node2", "node3"]),
    ("node[7]", ["node7"]),
    # zero padding is kept and the width follows the lower bound, as `scontrol show hostnames` does
    ("node[07-08]", ["node07", "node08"]),
    ("n[08-11]", ["n08", "n09", "n10", "n11"]),
    ("n[098-101]", ["n098", "n099", "n100", "n101"]),
    ("n[8-10]", ["n8", "n9", "n10"]),
    # ranges and single numbers mixed inside one bracket group
    ("node[01-03,07,10-11]", ["node01", "node02", "node03", "node07", "node10", "node11"]),
    # several bracket groups at the top level, plus plain names
    ("cpu[1-2],gpu[05-06],login01", ["cpu1", "cpu2", "gpu05", "gpu06", "login01"]),
    # a name that continues after its bracket group
    ("rack[1-2]-ib", ["rack1-ib", "rack2-ib"]),
    # two bracket groups in one name (a rack x node grid), first group varies slowest
    ("a[1-2]b[3-4]", ["a1b3", "a1b4", "a2b3", "a2b4"]),
    ("r[0-1]n[08-09]", ["r0n08", "r0n09", "r1n08", "r1n09"]),
    ("", []),
    ("  node[1-2]\n", ["node1", "node2"]),
])
def test_expand_hostlist(hostlist, expected):
    assert expand_hostlist(hostlist) == expected


@pytest.mark.parametrize("hostlist", [
    "node[1-3",           # unclosed bracket
    "node1-3]",           # closing bracket only
    "node]1-3[",          # balanced counts, wrong order
    "node[a-c]",          # not numbers
    "node[1-]",           # open range
    "node[-3]",
    "node[3-1]",          # reversed range: would expand to no host at all
    "node[]",             # empty group
    "node[1,,3]",         # empty item
    "node[1-2-3]",
    "node[[1-2]]",        # nested brackets
])
def test_malformed_hostlist_raises_value_error(hostlist):
    with pytest.raises(ValueError, match="malformed Slurm host list"):
        expand_hostlist(hostlist)


@pytest.mark.parametrize("spec, expected", [
    ("4", [4]),
    ("2(x2)", [2, 2]),
    ("2(x3),1", [2, 2, 2, 1]),
    ("1,3(x2),2", [1, 3, 3, 2]),
    ("8(x1)", [8]),
])
def test_expand_tasks_per_node(spec, expected):
    assert expand_tasks_per_node(spec) == expected


@pytest.mark.parametrize("spec", ["", "2(x)", "x2", "2(3)", "2(x3)1", "two", "2,,1"])
def test_malformed_tasks_per_node_raises_value_error(spec):
    with pytest.raises(ValueError, match="malformed SLURM_TASKS_PER_NODE"):
        expand_tasks_per_node(spec)
