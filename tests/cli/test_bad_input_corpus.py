"""The bad-input contract over every entry point, as one table (issue 11).

Every case runs an entry point (``crossover-sgd train``, ``imagenet_test.py``, ``plot``,
``experiment``, ``launch-info``, ``ecl``, ``python -m topology``) with one bad input and checks the
contract of docs/usage.md: exit code 2, exactly one line on stderr, ``PROG: error: ...``, naming
the bad value and what would be accepted (the case's words), no traceback, and nothing written:
the test's scratch directories, the filesystems it mounted, the working directory and the
repository's ``runs/`` are the same before and after (every path, every file's bytes and mtime,
every directory's mtime: probing a path for writability leaves no trace). The ``lars`` API cases check the API's contract instead: a ValueError or TypeError
with one line naming the value.

Paths: ``{RO}`` is a small tmpfs mounted read-only, ``{FULL}`` a small tmpfs filled to the last
byte (both made by this module as root; skipped with the reason where that is impossible, a
failure under CI), ``{TMP}`` the case's scratch directory, ``{FILE}`` a file in it, ``{DIR}`` a
directory in it, ``{RUN}`` a run directory with metrics (for ``plot``), ``{NODES}`` a directory in
it holding the peer-to-peer node files of :data:`NODE_FILES` (``{NODES}/ring3.json``).

Speed: the table runs in this process through the entry points' ``main(argv)`` (what the console
scripts call), a few cases through the real console scripts and ``python -m`` in subprocesses, to
show they behave the same. A case marked xfail (strict) fails today: remove the mark when its fix
lands.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

import pytest

from support import ROOT, child_env, installed_program, run, unavailable

LEGACY = str(ROOT / "imagenet_test.py")
#: Train settings that would take seconds, not hours, should a case be accepted by mistake.
SHORT_TRAIN = ("--epochs", "1", "--workers", "0")
SHORT_LEGACY = ("--dataset", "digits", "--model", "small_cnn", "--maxepoch", "1", "--warmup_epoch", "0",
                "--workers", "0", "--allreduce", "True")
WRITABLE_DIR = "choose a writable directory"
WRITABLE_FILE = "choose a writable file path"
FREE_SPACE = "free space on that filesystem"
#: ``crossover-sgd ecl``'s general part (the original's DATADIR OUTDIR and flags before OPTIMIZER).
ECL_HEAD = ("ecl", "data", "{TMP}/out", "--epochs", "1", "--dataset_name", "digits", "--cpu")
PROGS = {"train": "crossover-sgd", "legacy": "imagenet_test.py", "plot": "crossover-sgd",
         "plot-module": "crossover-sgd", "experiment": "crossover-sgd", "experiment-module": "crossover-sgd",
         "launch-info": "crossover-sgd", "netcheck": "crossover-sgd", "ecl": "crossover-sgd ecl",
         "topology": "python -m topology"}


def _node_list(edges: Dict[str, Dict[str, int]], round: int = 1) -> Dict[str, object]:
    """A node_list.json object (the original's layout): node -> its neighbours' slots."""
    return {"nodes": {name: {"round": round, "edges": mine} for name, mine in edges.items()}}


def _hosts(*names: str) -> Dict[str, object]:
    """A hosts.json object (the original's layout) on 127.0.0.1, node i on port 29500 + i."""
    return {"hosts": [{"name": name, "addr": "127.0.0.1", "port": str(29500 + i)} for i, name in enumerate(names)]}


#: The peer-to-peer node files under ``{NODES}``: a file name -> its JSON object or its text.
NODE_FILES: Dict[str, object] = {
    "pair.json": _node_list({"node0": {"node1": 0}, "node1": {"node0": 0}}),
    "hosts.json": _hosts("node0", "node1"),
    "hosts_node0.json": _hosts("node0"),
    "ring3.json": _node_list({"node0": {"node1": 0, "node2": 1}, "node1": {"node0": 0, "node2": 1},
                              "node2": {"node0": 1, "node1": 1}}, round=2),
    "not_json.json": '{"nodes": {node0: {"round": 1}}\n',
    "asymmetric.json": _node_list({"node0": {"node1": 0}, "node1": {}}),
    "unknown_neighbour.json": _node_list({"node0": {"node1": 0, "node9": 0}, "node1": {"node0": 0}}),
    "self_edge.json": _node_list({"node0": {"node0": 0, "node1": 0}, "node1": {"node0": 0}}),
    "slot_2_of_round_2.json": _node_list({"node0": {"node1": 2}, "node1": {"node0": 0}}, round=2),
    "duplicate_key.json": '{"nodes": {"node0": {"round": 1, "edges": {"node1": 0}},\n'
                          '           "node0": {"round": 1, "edges": {"node1": 0}},\n'
                          '           "node1": {"round": 1, "edges": {"node0": 0}}}}\n',
    "duplicate_name.json": [{"name": "node0", "round": 1, "edges": {"node1": 0}},
                            {"name": "node0", "round": 1, "edges": {"node1": 0}},
                            {"name": "node1", "round": 1, "edges": {"node0": 0}}],
    "no_edges.json": _node_list({"node0": {"node1": 0}, "node1": {"node0": 0}, "node2": {}}),
    "two_slots.json": _node_list({"node0": {"node1": 0}, "node1": {"node0": 1}}, round=2),
}


# ----------------------------------------------------------------------------- the table
@dataclass(frozen=True)
class Case:
    """One bad input: the entry point, its arguments, the words its error line must hold."""

    entry: str
    argv: Tuple[str, ...]
    words: Tuple[str, ...]
    xfail: str = ""  # why it fails today (strict: remove the mark when fixed)
    cwd: str = ""  # the working directory (default: an empty scratch directory)

    @property
    def id(self) -> str:
        shown = " ".join(self.argv)
        for short in ("train ", " ".join(SHORT_TRAIN) + " ", " ".join(SHORT_LEGACY) + " ", "--out {TMP}/out ",
                      " ".join(ECL_HEAD) + " "):
            shown = shown.replace(short, "", 1) if shown.startswith(short) else shown
        return f"{self.entry}: {shown}"[:120]

    def needs_mounts(self) -> bool:
        return any("{RO}" in a or "{FULL}" in a for a in (*self.argv, *self.words, self.cwd))


def train(*argv: str, words: Sequence[str], default_out: bool = False, **kw) -> Case:
    out = () if "--out" in argv or default_out else ("--out", "{TMP}/out")
    return Case("train", ("train", *SHORT_TRAIN, *out, *argv), tuple(words), **kw)


def legacy(*argv: str, words: Sequence[str], **kw) -> Case:
    out = () if "--out" in argv else ("--out", "{TMP}/out")
    return Case("legacy", (*SHORT_LEGACY, *out, *argv), tuple(words), **kw)


def plot(*argv: str, words: Sequence[str], module: bool = False, **kw) -> Case:
    return Case("plot-module" if module else "plot", (() if module else ("plot",)) + argv, tuple(words), **kw)


def experiment(*argv: str, words: Sequence[str], module: bool = False, **kw) -> Case:
    out = () if "--out" in argv or argv[:1] not in (("mixing",), ("scalability",)) else ("--out", "{TMP}/exp")
    head = () if module else ("experiment",)
    return Case("experiment-module" if module else "experiment", head + argv + out, tuple(words), **kw)


def launch_info(*argv: str, words: Sequence[str], **kw) -> Case:
    return Case("launch-info", ("launch-info", *argv), tuple(words), **kw)


def netcheck(*argv: str, words: Sequence[str], **kw) -> Case:
    return Case("netcheck", ("netcheck", *argv), tuple(words), **kw)


def ecl(*argv: str, words: Sequence[str], **kw) -> Case:
    """``crossover-sgd ecl`` with :data:`ECL_HEAD` before ``argv`` (OPTIMIZER and its words)."""
    return Case("ecl", (*ECL_HEAD, *argv), tuple(words), **kw)


def topology(*argv: str, words: Sequence[str], **kw) -> Case:
    return Case("topology", argv, tuple(words), **kw)


SIM = ("simulate", "--schedule", "ring", "--n", "8", "--rounds", "2")
DSGD = ("--algorithm", "dsgd")
ISVR = ("--algorithm", "pdmm-isvr")
PS = ("--algorithm", "localsgd")
RO_DIR = ("read-only file system", WRITABLE_DIR)
RO_FILE = ("read-only file system", WRITABLE_FILE)
FULL = ("no space left on device", FREE_SPACE)

#: The output paths a user can get wrong, for a directory (``--out``): argument, words.
OUT_DIRS: List[Tuple[str, Tuple[str, ...]]] = [
    ("{RO}/run", ("cannot create it", *RO_DIR)),
    ("{RO}/a/b/run", ("cannot create it", *RO_DIR)),
    ("{RO}/existing", ("cannot write in it", *RO_DIR)),
    ("{FULL}/run", ("cannot create it", *FULL)),
    ("{FULL}/existing", ("cannot write in it", *FULL)),
    ("/proc/crossover-sgd-run", ("cannot create it", "no such file or directory", WRITABLE_DIR)),
    ("{FILE}", ("exists and is not a directory", "directory")),
    ("{FILE}/run", ("{FILE} is not a directory", WRITABLE_DIR)),
]
#: ... and for a file (``--json``).
OUT_FILES: List[Tuple[str, Tuple[str, ...]]] = [
    ("{RO}/table.json", ("cannot create it", *RO_FILE)),
    ("{RO}/new/table.json", ("cannot create it", *RO_FILE)),
    ("{FULL}/table.json", ("cannot create it", *FULL)),
    ("/proc/crossover-sgd.json", ("cannot create it", "no such file or directory", WRITABLE_FILE)),
    ("{DIR}", ("is a directory", WRITABLE_FILE)),
    ("{FILE}/table.json", ("{FILE} is not a directory", WRITABLE_FILE)),
]

CASES: List[Case] = [
    # ---- user-given output paths (issue 11.3): every entry point, every kind
    *[train("--out", path, words=("--out", path, *words)) for path, words in OUT_DIRS],
    *[train("--nproc", "2", "--out", path, words=("--out", path, *words)) for path, words in OUT_DIRS[::2]],
    train("--resume", "--out", "{TMP}/none", words=("--resume", "{TMP}/none", "no checkpoint")),
    *[legacy("--out", path, words=("--out", path, *words)) for path, words in OUT_DIRS],
    *[legacy("--nproc", "2", "--out", path, words=("--out", path, *words)) for path, words in OUT_DIRS[3:5]],
    *[plot("{RUN}", "--out", path, words=("--out", path, *words)) for path, words in OUT_DIRS],
    plot("{RO}/a_run", words=("--out", "{RO}/a_run/plots", "cannot create it", *RO_DIR)),  # default: RUN_DIR/plots
    *[plot("{RUN}", "--out", path, words=("--out", path, *words), module=True) for path, words in OUT_DIRS[3:6]],
    *[experiment("mixing", "--quick", "--no-plots", "--out", path, words=("--out", path, *words))
      for path, words in OUT_DIRS],
    *[experiment("scalability", "--quick", "--out", path, words=("--out", path, *words)) for path, words in OUT_DIRS],
    *[experiment("mixing", "--quick", "--out", path, words=("--out", path, *words), module=True)
      for path, words in OUT_DIRS[:2]],
    *[launch_info("--json", path, words=("--json", path, *words)) for path, words in OUT_FILES],
    *[topology(*SIM, "--json", path, words=("--json", path, *words)) for path, words in OUT_FILES],
    *[topology(*SIM, "--plot", path.replace(".json", ".png"), words=("--plot", path.replace(".json", ".png"), *words))
      for path, words in OUT_FILES[::2]],
    # ---- flags of train
    train("--algoritm", "crossover", words=("--algoritm", "did you mean --algorithm?")),
    train("--batchsize", "64", words=("--batchsize", "did you mean --batch")),
    train("--algorithm", "adamw", words=("--algorithm", "adamw", "allreduce")),
    train("--model", "vgg16", words=("--model", "vgg16", "resnet50")),
    train("--dataset", "imagenette", words=("--dataset", "imagenette", "digits")),
    train("--lr-schedule", "exp", words=("--lr-schedule", "exp", "cosine")),
    train("--batch-size", "0", words=("--batch-size 0", ">= 1")),
    train("--epochs", "-1", words=("--epochs -1",)),
    train("--local-itr", "0", words=("--local-itr 0",)),
    train("--nesterov", "maybe", words=("--nesterov", "maybe", "True or False")),
    train("--batch-size", "many", words=("--batch-size", "many")),
    train("--log-level", "bogus", words=("--log-level", "'bogus'", "DEBUG")),
    train("--lars-trust-clip", "sometimes", words=("--lars-trust-clip", "sometimes", "larc")),
    train("--nproc", "0", words=("--nproc 0", ">= 1")),
    train("--nproc", "-3", words=("--nproc -3", ">= 1")),
    train("--world-size", "4", words=("--world_size 4", "--nproc 4", "srun", "torchrun", "mpirun")),
    train("--dataset", "imagenet", words=("--dataset imagenet", "--data-dir")),
    train("--dataset", "imagefolder", "--data-dir", "{TMP}/no_such_dir", words=("{TMP}/no_such_dir",)),
    # MNIST-1D (issue 16): its size, its seed, the models and formats of 1-D signals, its cache directory
    train("--mnist1d-samples", "0", words=("--mnist1d-samples 0", "multiple of 10", "at least 100")),
    train("--dataset", "mnist1d", "--mnist1d-samples", "50", words=("--mnist1d-samples 50", "at least 100")),
    train("--dataset", "mnist1d", "--mnist1d-samples", "1005", words=("--mnist1d-samples 1005", "multiple of 10")),
    train("--mnist1d-seed", "-1", words=("--mnist1d-seed -1", "0 to 2**32 - 1")),
    train("--dataset", "mnist1d", "--model", "small_cnn",
          words=("--model small_cnn", "--dataset mnist1d", "1-D signals", "cnn1d or logistic")),
    train("--model", "cnn1d", words=("--model cnn1d", "--dataset digits", "--dataset mnist1d")),
    train("--dataset", "mnist1d", "--channels-last", "True", words=("--channels-last True", "--channels-last False")),
    train("--dataset", "mnist1d", "--data-dir", "{FILE}",
          words=("--data-dir {FILE}", "not a directory", "a writable directory")),
    train("--dataset", "mnist1d", "--data-dir", "{RO}/cache", words=("--data-dir {RO}/cache", *RO_DIR[:1],
                                                                     "a writable directory")),
    train("--algorithm", "crossover", "--chromosome", "medium", words=("--chromosome", "medium", "coarse")),
    train("--algorithm", "sgp", "--sgp-peers", "0", words=("--sgp-peers 0",)),
    train("--resume", words=("--resume", "--out"), default_out=True),
    train("--partition", "random", words=("--partition", "'random'", "noniid")),
    train("--partition", "dirichlet", "--dirichlet-alpha", "0", words=("--dirichlet-alpha 0", "> 0")),
    train("--partition", "iid", "--train_data_length", "0", words=("--train-data-length 0", ">= 1")),
    train("--train-data-length", "many", words=("--train-data-length", "many")),
    train("--local-val-fraction", "0.9", words=("--local-val-fraction 0.9", "0.5")),
    train("--norm", "layer", words=("--norm", "'layer'", "group")),
    train("--norm", "group", words=("--norm group", "--model small_cnn", "ResNet")),
    train("--model", "resnet18", "--norm", "group", "--group_channels", "24",
          words=("--group-channels 24", "power of two")),
    train("--group-channels", "0", words=("--group-channels 0", ">= 1")),
    train("--drop_rate", "1", words=("--drop-rate 1", "< 1")),
    train("--last-drop-rate", "-0.5", words=("--last-drop-rate -0.5", "< 1")),
    train("--model", "logistic", "--drop-rate", "0.1", words=("--drop-rate 0.1", "--model logistic")),
    train("--l2_lambda", "-0.01", words=("--l2-lambda -0.01", ">= 0")),
    train("--lr-schedule", "step", "--step_size", "0", words=("--step-size 0", ">= 1")),
    train("--lr-schedule", "step", "--step-size", "410", "--gamma", "1.5", words=("--gamma 1.5", "<= 1")),
    train("--out", "{RUNHELD}", words=("{RUNHELD}", "already holds a run", "--resume")),
    # ---- peer-to-peer (train): the node files, then the options
    train(*DSGD, "--node-list", "{NODES}/not_json.json",
          words=("--node-list", "{NODES}/not_json.json", "not valid JSON", "line 1, column 12")),
    train(*DSGD, "--nproc", "2", "--node-list", "{NODES}/not_json.json",
          words=("--node-list", "{NODES}/not_json.json", "not valid JSON")),
    train(*DSGD, "--nproc", "2", "--node-list", "{NODES}/asymmetric.json",
          words=("--node-list", "{NODES}/asymmetric.json", 'edge "node0" -> "node1"', 'no "node1" -> "node0"',
                 "list every edge at both ends")),
    train(*DSGD, "--nproc", "2", "--node-list", "{NODES}/unknown_neighbour.json",
          words=("{NODES}/unknown_neighbour.json", 'unknown neighbour "node9"', 'the nodes are "node0", "node1"')),
    train(*DSGD, "--node-list", "{NODES}/self_edge.json",
          words=("{NODES}/self_edge.json", 'node "node0": self-edge "node0"', "two different nodes")),
    train(*DSGD, "--nproc", "2", "--node-list", "{NODES}/slot_2_of_round_2.json",
          words=("{NODES}/slot_2_of_round_2.json", 'slot 2 for "node1"', "slots are 0..1 (round 2)")),
    train(*DSGD, "--nproc", "2", "--node-list", "{NODES}/pair.json", "--hosts", "{NODES}/hosts_node0.json",
          words=("--hosts: {NODES}/hosts_node0.json", 'node "node1" of {NODES}/pair.json is missing',
                 "give every node an address")),
    train(*DSGD, "--nproc", "2", "--node-list", "{NODES}/duplicate_key.json",
          words=("{NODES}/duplicate_key.json", 'key "node0" appears twice', "give each node")),
    train(*DSGD, "--node-list", "{NODES}/duplicate_name.json",
          words=("{NODES}/duplicate_name.json", 'node name "node0" appears twice', "give each node once")),
    train(*DSGD, "--node-list", "{NODES}/no_edges.json",
          words=("{NODES}/no_edges.json", 'node "node2" has no edges', "every node needs a neighbour")),
    train(*DSGD, "--nproc", "3", "--node-list", "{NODES}/no_edges.json", words=('node "node2" has no edges',)),
    train(*DSGD, "--nproc", "2", "--node-list", "{NODES}/ring3.json",
          words=("--node-list {NODES}/ring3.json has 3 nodes", "the run has 2 ranks", "one rank per node (3 ranks)")),
    train(*DSGD, "--node-list", "{NODES}/ring3.json", words=("has 3 nodes", "the run has 1 rank:", "(3 ranks)")),
    train(*DSGD, "--node-list", "{NODES}/missing.json",
          words=("--node-list", "{NODES}/missing.json", "No such file or directory", "a readable JSON file")),
    train(*DSGD, "--node-list", "{DIR}", words=("--node-list", "{DIR}", "Is a directory", "a readable JSON file")),
    train(*DSGD, "--nproc", "2", "--node-list", "{DIR}", words=("--node-list", "{DIR}", "Is a directory")),
    train(*DSGD, "--node-list", "{NODES}/pair.json", "--hosts", "{NODES}/hosts.json", "--node-name", "node7",
          words=("--node-name 'node7'", "not a node of --node-list {NODES}/pair.json", "the nodes are node0, node1")),
    train(*DSGD, "--node-name", "node0", words=("--node-name", "needs --node-list and --hosts")),
    train(*DSGD, "--node-name", "node0", "--node-list", "{NODES}/pair.json",
          words=("--node-name", "needs --node-list and --hosts")),
    train(*DSGD, "--hosts", "{NODES}/hosts.json", words=("--hosts needs --node-list",)),
    train(*DSGD, "--nproc", "2", "--slow-nodes", "node0,node9",
          words=("--slow-nodes", "'node9' is not a node", "the nodes are node0, node1")),
    train(*DSGD, "--nproc", "2", "--node-list", "{NODES}/pair.json", "--slow-nodes", "node2",
          words=("--slow-nodes", "'node2' is not a node", "node0, node1")),
    train(*ISVR, "--piw", "3", words=("--piw 3", "0.5, 1 or 2")),
    train(*ISVR, "--nproc", "2", "--piw", "2", "--round", "1", words=("--piw 2", "--round >= 2", "--round is 1")),
    train(*DSGD, "--swap-timeout", "-1", words=("--swap-timeout -1", "seconds > 0")),
    train(*DSGD, "--nproc", "2", "--swap-timeout", "0", words=("--swap-timeout 0", "seconds > 0")),
    train(*DSGD, "--swap-timeout", "nan", words=("--swap-timeout nan", "finite", "> 0")),
    train(*DSGD, "--sleep-factor", "-0.5", words=("--sleep-factor -0.5", ">= 0")),
    train(*DSGD, "--graph", "regular", words=("--graph regular", "needs --graph-degree")),
    train(*DSGD, "--nproc", "2", "--graph", "erdos-renyi", words=("--graph erdos-renyi", "needs --graph-degree")),
    train(*DSGD, "--graph", "hypercube", words=("--graph", "'hypercube'", "ring, complete, star")),
    train(*DSGD, "--round", "0", words=("--round 0", ">= 1")),
    # ---- parameter server (train): the options, then the shard count against the world and the model
    train(*PS, "--ps-shards", "0", words=("--ps-shards 0", ">= 1")),
    train(*PS, "--ps-shards", "3", "--nproc", "3", words=("--ps-shards 3", "no worker among the 3 rank(s)",
                                                          "at least 4 ranks")),
    train(*PS, "--ps-shards", "2", words=("--ps-shards 2", "no worker among the 1 rank(s)", "at least 3 ranks")),
    # found only when the model is built (prepare/prepare_role, in every rank, before anything is
    # written): logistic has 2 parameter tensors, so 4 ranks show it (small_cnn's 6 would need 8)
    train(*PS, "--model", "logistic", "--ps-shards", "3", "--nproc", "4",
          words=("--ps-shards 3 exceeds the model's 2 parameter tensors", "at most 2 shards")),
    train(*PS, "--local-steps", "0", words=("--local-steps 0", ">= 1")),
    train("--algorithm", "dqlosp", "--quant-bits", "0", words=("--quant-bits 0", ">= 1")),
    train("--algorithm", "dqlosp", "--quant-bits", "17", words=("--quant-bits 17", "1 to 16 bits")),
    train(*PS, "--ps-lr", "-1", words=("--ps-lr -1", ">= 0")),
    train(*PS, "--ps-lr-schedule", "bogus", words=("--ps-lr-schedule", "'bogus'", "constant, linear, cosine")),
    train(*PS, "--k-trace", "/nonexistent", words=("--k-trace /nonexistent", "not a run directory with a ps/ folder",
                                                   "--out of an earlier run")),
    train("--algorithm", "osp", "--k-trace", "{DIR}", words=("--k-trace {DIR}", "not a run directory")),
    train("--algorithm", "osp", "--ps-delay", "-0.5", words=("--ps-delay -0.5", ">= 0")),
    train("--algorithm", "losp", "--losp-gamma-schedule", "exp", words=("--losp-gamma-schedule", "'exp'", "cosine")),
    # ---- DistBelief (train): Downpour's and Sandblaster's options, the coordinator's rank, the batch
    train("--algorithm", "downpour", "--n-fetch", "0", words=("--n-fetch 0", ">= 1")),
    train("--algorithm", "downpour", "--n-push", "0", words=("--n-push 0", ">= 1")),
    train("--algorithm", "downpour", "--ps-optimizer", "adam", words=("--ps-optimizer", "'adam'", "sgd, adagrad")),
    train("--algorithm", "sandblaster", "--history-size", "0", words=("--history-size 0", ">= 1")),
    train("--algorithm", "sandblaster", "--nproc", "2", words=("--ps-shards 1", "1 coordinator",
                                                                "no worker among the 2 rank(s)", "at least 3 ranks")),
    # found by the replicas when they see the data (before anything is written)
    train("--algorithm", "sandblaster", "--nproc", "3", "--portion-size", "5000",
          words=("--portion-size 5000 is larger than the batch", "use at most")),
    # ---- imagenet_test.py
    legacy("--world_size", "4", words=("--world_size 4", "--nproc 4", "srun", "torchrun", "mpirun")),
    legacy("--crossover", "True", words=("--crossover True", "--allreduce True")),
    legacy("--clip_grad", "Flase", words=("--clip_grad", "Flase", "True or False")),
    legacy("--batch_size", "0", words=("--batch_size 0",)),
    legacy("--lrdecay", "exponential", words=("--lrdecay", "exponential", "poly")),
    legacy("--groupnum", "2", words=("--groupnum 2", "--crossover True")),
    legacy("--batchsize", "64", words=("--batchsize", "did you mean --batch_size?")),
    legacy("--nproc", "0", words=("--nproc 0",)),
    legacy("--warmup_epoch", "95", "--maxepoch", "90", words=("--warmup_epoch 95",)),
    # ---- plot
    plot("{TMP}/no_such_run", "--out", "{TMP}/plots", words=("{TMP}/no_such_run", "not a directory", "--out")),
    plot("{DIR}", "--out", "{TMP}/plots", words=("{DIR}", "holds no metrics")),
    plot("{RUN}", "--dpi", "5", "--out", "{TMP}/plots", words=("--dpi 5", "20 or more")),
    plot("{RUN}", "--outt", "{TMP}/plots", words=("--outt", "did you mean --out?")),
    plot(words=("RUN_DIR",)),
    # ---- experiment
    experiment("mixing", "--rounds", "0", words=("--rounds 0", ">= 1")),
    experiment("mixing", "--segments", "0", words=("--segments 0", ">= 1")),
    experiment("mixing", "--tolerance", "0", words=("--tolerance 0", "> 0")),
    experiment("mixing", "--sizes", "1", words=("--sizes", ">= 2")),
    experiment("mixing", "--topologies", "star", words=("--topologies", "star", "ring")),
    experiment("mixing", "--log-level", "chatty", words=("--log-level", "chatty", "DEBUG")),
    experiment("scalability", "--world-sizes", "1", words=("--world-sizes", ">= 2")),
    experiment("scalability", "--epochs", "0", words=("--epochs 0", ">= 1")),
    experiment("scalability", "--seeds", "1", "1", words=("--seeds", "once")),
    experiment("scalability", "--base-lr", "0", words=("--base-lr", "> 0")),
    experiment("scalability", "--lr-rule", "cubic", words=("--lr-rule", "cubic", "linear")),
    experiment("scalability", "--train-args", "--bogus 1", words=("--train-args", "--bogus")),
    experiment("scalability", "--train-args", "--batch-size 0", words=("--train-args", "--batch-size 0")),
    experiment("scalability", "--train-args", "--batch_size 32", words=("--train-args", "--batch-size",
                                                                        "set by the experiment", "remove it")),
    experiment("scalability", "--global-batch", "100", "--world-sizes", "4", "8",
               words=("--global-batch 100", "not divisible by 8", "multiple of 8")),
    experiment("scalability", "--global-batch", "64", "--batch-size", "16", words=("--batch-size", "--global-batch",
                                                                                  "not both")),
    experiment("scalability", "--global-batches", "100", "--batch-world", "8",
               words=("--global-batches 100", "multiple of 8")),
    experiment("scalability", "--lr-grid", "0.5", "0", words=("--lr-grid 0.5 0", "> 0")),
    experiment("scalability", "--lr-grid", "1", "1", words=("--lr-grid 1 1", "once")),
    experiment("scalability", "--global-batch", "64", "--lr-grid-world", "3", words=("--lr-grid-world 3",
                                                                                    "--world-sizes")),
    experiment("scalability", "--lr-grid-world", "4", words=("--lr-grid-world", "--global-batch")),
    experiment("scalability", "--study", "--quick", words=("--quick", "--study")),
    experiment("scalability", "--variants", "allreduce", "--batch-variants", "sgp",
               words=("--batch-variants sgp", "not in --variants")),
    experiment("scalability", "--dataset", "imagenet2", words=("--dataset", "imagenet2", "digits")),
    experiment("scalability", "--verdict-by", "z", words=("--verdict-by", "'z'", "bootstrap")),
    experiment("hurricane", words=("hurricane", "mixing", "scalability")),
    # ---- launch-info
    launch_info("--nproc", "0", words=("--nproc 0", ">= 1")),
    launch_info("--nproc", "-3", words=("--nproc -3", ">= 1")),
    launch_info("--nproc", "two", words=("--nproc", "two")),
    launch_info("--jsno", "x.json", words=("--jsno", "did you mean --json?")),
    launch_info("--nproc", "2", "--emulate-nodes", "3", "--link-rate", "1gbit", words=("--emulate-nodes 3", "--nproc 2",
                                                                                        "divisor of 2")),
    # ---- the emulated cluster (issue 15): train's and netcheck's --emulate-nodes and --link-rate
    train("--emulate-nodes", "2", "--link-rate", "1gbit", words=("--emulate-nodes and --link-rate", "add --nproc N")),
    train("--emulate-nodes", "2", words=("--emulate-nodes", "add --nproc N")),
    train("--nproc", "4", "--emulate-nodes", "3", "--link-rate", "1gbit", words=("--emulate-nodes 3", "--nproc 4",
                                                                                "divisor of 4", "1 .. 4")),
    train("--nproc", "2", "--emulate-nodes", "4", "--link-rate", "1gbit", words=("--emulate-nodes 4", "1 .. 2")),
    train("--nproc", "2", "--emulate-nodes", "0", "--link-rate", "1gbit", words=("--emulate-nodes 0", "1 .. 2")),
    train("--nproc", "2", "--emulate-nodes", "two", "--link-rate", "1gbit", words=("--emulate-nodes", "'two'")),
    train("--nproc", "2", "--emulate-nodes", "2", words=("--emulate-nodes 2 needs --link-rate RATE", "1gbit")),
    train("--nproc", "2", "--link-rate", "1gbit", words=("--link-rate needs --emulate-nodes M", "divisor of --nproc 2")),
    train("--nproc", "2", "--emulate-nodes", "2", "--link-rate", "fast",
          words=("--link-rate 'fast' is not a rate", "200mbit, 1gbit, 1Gbit/s, 500M, 10g")),
    train("--nproc", "2", "--emulate-nodes", "2", "--link-rate", "1gbps", words=("--link-rate '1gbps'", "1Gbit/s")),
    train("--nproc", "2", "--emulate-nodes", "2", "--link-rate", "0", words=("--link-rate '0' is out of range",
                                                                             "100kbit .. 400gbit")),
    train("--nproc", "2", "--emulate-nodes", "2", "--link-rate=-1gbit", words=("--link-rate '-1gbit'", "200mbit")),
    train("--nproc", "2", "--emulate-nodes", "2", "--link-rate", "1tbit", words=("--link-rate '1tbit' is out of range",)),
    netcheck("--mbytes", "0", words=("--mbytes 0", "> 0")),
    netcheck("--nproc", "2", "--mbytes", "nan", words=("--mbytes nan", "> 0")),
    netcheck("--nproc", "2", "--timeout", "0", words=("--timeout 0", "seconds > 0")),
    netcheck(words=("netcheck measures between ranks", "--nproc 2")),
    netcheck("--nproc", "2", "--link-rate", "10g", words=("--link-rate needs --emulate-nodes M",)),
    netcheck("--nproc", "2", "--emulate-nodes", "2", "--link-rate", "fast", words=("--link-rate 'fast'", "10g")),
    netcheck("--emulate-nodes", "1", "--link-rate", "1gbit", words=("add --nproc N",)),
    # ---- crossover-sgd ecl (the original's command line; its own flags: tests/cli/test_ecl_cli.py)
    ecl("DSGD", "node0", "{NODES}/not_json.json", "{NODES}/hosts.json",
        words=("conf: {NODES}/not_json.json", "not valid JSON")),
    ecl("DSGD", "node7", "{NODES}/pair.json", "{NODES}/hosts.json",
        words=("nodename 'node7'", "not a node of conf {NODES}/pair.json", "the nodes are node0, node1")),
    ecl("PdmmISVR", "node0", "{NODES}/pair.json", "{NODES}/hosts_node0.json",
        words=("host: {NODES}/hosts_node0.json", 'node "node1"', "give every node an address")),
    ecl("GossipSGD", "node0", "{NODES}/pair.json", "{DIR}", words=("host: {DIR}", "Is a directory")),
    # ---- python -m topology
    topology("simulate", "--schedule", "ring", "--n", "10000000000", "--rounds", "1",
             words=("10000000000 replicas", "GiB of memory", "available", "smaller N")),
    topology("simulate", "--schedule", "ring", "--n", "0", words=("--n", "0", ">= 1")),
    topology("simulate", "--schedule", "ring", "--n", "8", "--jsno", "x.json", words=("--jsno", "did you mean --json?")),
    topology("simulate", "--schedule", "star", "--n", "8", words=("--schedule", "star", "ring")),
    topology("peers", "--schedule", "ring", "--n", "8", "--rounds", "0", words=("rounds", "0", ">= 1")),
    topology("peers", "--schedule", "crossover", "--n", "8", "--segments", "0", words=("segments", ">= 1")),
    topology("peers", "--schedule", "exponential", "--n", "8", "--k", "0", words=("k", ">= 1")),
    topology("peers", "--schedule", "graph", "--n", "8", "--edge-file", "{TMP}/no_edges.txt",
             words=("{TMP}/no_edges.txt",)),
    topology("simulate", "--schedule", "ring", "--n", "8", "--segment-bytes", "a,b", words=("--segment-bytes", "'a,b'")),
    topology("nodes", "--check", "{NODES}/asymmetric.json",
             words=("{NODES}/asymmetric.json", 'edge "node0" -> "node1"', "list every edge at both ends")),
    topology("nodes", "--check", "{NODES}/pair.json", "--hosts", "{NODES}/hosts_node0.json",
             words=("{NODES}/hosts_node0.json", 'node "node1"', "give every node an address")),
    topology("nodes", "--check", "{NODES}/two_slots.json", "--symmetric-slots",
             words=("{NODES}/two_slots.json", "slot 0", "slot 1", "give both ends the same slot")),
    topology("nodes", "--check", "{DIR}", words=("{DIR}", "Is a directory", "a readable JSON file")),
    topology("nodes", "--graph", "regular", "--n", "4", words=("--graph regular", "--degree")),
    *[topology("nodes", "--graph", "ring", "--n", "4", "--node-list", path.replace("table", "node_list"),
               words=("--node-list", path.replace("table", "node_list"), *words)) for path, words in OUT_FILES[::2]],
]


#: The lars API: (params, keyword arguments, exception types, words of the message).
LARS_CASES: List[Tuple[str, Dict[str, object], Tuple[type, ...], Tuple[str, ...]]] = [
    ("params", {"lr": 0.1, "eta": 0}, (ValueError,), ("eta=0", "> 0")),
    ("params", {"lr": 0.1, "eta": -1.0}, (ValueError,), ("eta=-1.0", "> 0")),
    ("params", {"lr": 0.1, "eta": float("nan")}, (ValueError,), ("eta=nan", "finite")),
    ("params", {"lr": -1}, (ValueError,), ("lr=-1", ">= 0")),
    ("params", {"lr": 0.1, "momentum": 1.5}, (ValueError,), ("momentum=1.5", "< 1")),
    ("params", {"lr": 0.1, "weight_decay": -1}, (ValueError,), ("weight_decay=-1", ">= 0")),
    ("params", {"lr": 0.1, "momentum_form": "keras"}, (ValueError,), ("momentum_form='keras'", "mxnet")),
    ("params", {"lr": 0.1, "larc": True, "trust_ratio_max": 2.0}, (ValueError,), ("trust_ratio_max=2.0", "larc")),
    ("params", {"lr": 0.1, "nesterov": True, "momentum": 0}, (ValueError,), ("nesterov=True", "momentum")),
    ("None", {"lr": 0.1}, (TypeError,), ("params=None", "model.parameters()")),
    ("5", {"lr": 0.1}, (TypeError,), ("params=5",)),
    ("groups", {"lr": 0.1}, (ValueError,), ("eta=0",)),
]


def _params(kind: str):
    import torch

    weight = torch.nn.Parameter(torch.ones(3, 3))
    return {"params": [weight], "None": None, "5": 5, "groups": [{"params": [weight], "eta": 0}]}[kind]


def _param(case: Case):
    marks = [pytest.mark.xfail(strict=True, reason=case.xfail)] if case.xfail else []
    return pytest.param(case, id=case.id, marks=marks)


# ----------------------------------------------------------------------------- filesystems
@dataclass
class Mounts:
    ro: Path
    full: Path
    points: List[Path] = field(default_factory=list)


def _mount(args: Sequence[str]) -> Optional[str]:
    """Run mount/umount; the reason it failed (None: it worked)."""
    if shutil.which(args[0]) is None:
        return f"{args[0]} is not installed"
    try:
        result = subprocess.run(list(args), capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return str(exc)
    return None if result.returncode == 0 else (result.stderr.strip() or f"exit code {result.returncode}")


@pytest.fixture(scope="module")
def mount_state(tmp_path_factory) -> Iterator[Dict[str, object]]:
    """A read-only and a full filesystem (small tmpfs mounts), made once for the module."""
    state: Dict[str, object] = {}
    base = tmp_path_factory.mktemp("mounts")
    points: List[Path] = []
    try:
        if os.geteuid() != 0:
            state["reason"] = "mounting a small tmpfs needs root (read-only and full filesystems)"
        else:
            ro, full = base / "ro", base / "full"
            for point in (ro, full):
                point.mkdir()
                reason = _mount(["mount", "-t", "tmpfs", "-o", "size=64k,mode=0755", "tmpfs", str(point)])
                if reason is not None:
                    state["reason"] = f"cannot mount a tmpfs at {point}: {reason}"
                    break
                points.append(point)
            if "reason" not in state:
                _populate_read_only(ro)
                reason = _mount(["mount", "-o", "remount,ro", str(ro)])
                if reason is not None:
                    state["reason"] = f"cannot remount {ro} read-only: {reason}"
            if "reason" not in state:
                _fill(full)
                state["mounts"] = Mounts(ro, full, points)
        yield state
    finally:
        for point in reversed(points):
            if _mount(["umount", str(point)]) is not None:
                _mount(["umount", "-l", str(point)])


def _populate_read_only(ro: Path) -> None:
    (ro / "existing").mkdir()
    _write_run(ro / "a_run")


def _fill(full: Path) -> None:
    """Create ``existing/`` and fill the filesystem to the last byte."""
    (full / "existing").mkdir()
    fd = os.open(full / "filler", os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        for size in (65536, 4096, 1):
            try:
                while True:
                    os.write(fd, b"\0" * size)
            except OSError:
                pass
    finally:
        os.close(fd)


def _write_run(path: Path) -> None:
    """A run directory that ``plot`` can read: one rank's metrics of two epochs."""
    path.mkdir(parents=True)
    (path / "config.json").write_text('{"algorithm": "allreduce", "nproc": 1}\n')
    (path / "metrics_rank0.csv").write_text(
        "epoch,step,train_loss,val_loss,val_acc,consensus_val_acc,consensus_distance,lr\n"
        "1,10,1.5,1.2,0.5,0.5,0.0,0.1\n2,20,0.9,0.8,0.7,0.7,0.0,0.05\n")


# ----------------------------------------------------------------------------- snapshots
def snapshot(root: Path) -> Dict[str, Tuple]:
    """Every path below ``root`` (and ``root``): a file's size, mtime and bytes, a directory's mtime."""
    state: Dict[str, Tuple] = {}
    if not root.exists():
        return state
    state["."] = ("dir", os.stat(root).st_mtime_ns)
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames:
            path = os.path.join(dirpath, name)
            state[os.path.relpath(path, root)] = ("dir", os.lstat(path).st_mtime_ns)
        for name in filenames:
            path = os.path.join(dirpath, name)
            st = os.lstat(path)
            data = b"" if st.st_size > (1 << 20) else Path(path).read_bytes()
            state[os.path.relpath(path, root)] = ("file", st.st_size, st.st_mtime_ns, data)
    return state


class World:
    """A case's scratch directories, its placeholders, and the snapshots of what it may touch."""

    def __init__(self, tmp: Path, mounts: Optional[Mounts]):
        self.tmp = tmp / "scratch"
        self.cwd = tmp / "cwd"
        self.tmp.mkdir()
        self.cwd.mkdir()
        (self.tmp / "a_file").write_text("keep me\n")
        (self.tmp / "a_dir").mkdir()
        _write_run(self.tmp / "run")
        held = self.tmp / "held"
        _write_run(held)
        self.mounts = mounts
        nodes = self.tmp / "nodes"
        nodes.mkdir()
        for name, content in NODE_FILES.items():
            (nodes / name).write_text(content if isinstance(content, str) else json.dumps(content, indent=2))
        self.values = {"{TMP}": str(self.tmp), "{FILE}": str(self.tmp / "a_file"), "{DIR}": str(self.tmp / "a_dir"),
                       "{RUN}": str(self.tmp / "run"), "{RUNHELD}": str(held), "{NODES}": str(nodes)}
        if mounts is not None:
            self.values.update({"{RO}": str(mounts.ro), "{FULL}": str(mounts.full)})
        self.watched = [self.tmp, self.cwd, ROOT / "runs"] + ([mounts.ro, mounts.full] if mounts else [])

    def fill(self, text: str) -> str:
        for key in sorted(self.values, key=len, reverse=True):  # {RUNHELD} before {RUN}
            text = text.replace(key, self.values[key])
        if "{" in text and re.search(r"\{(RO|FULL)\}", text):
            unavailable("this case needs the read-only and full filesystems")
        return text

    def snapshots(self) -> Dict[str, Dict[str, Tuple]]:
        return {str(root): snapshot(root) for root in self.watched}


@pytest.fixture
def world(request, tmp_path) -> World:
    case = request.node.callspec.params.get("case") if hasattr(request.node, "callspec") else None
    mounts = None
    if isinstance(case, Case) and case.needs_mounts():
        state = request.getfixturevalue("mount_state")
        if "mounts" not in state:
            unavailable(str(state["reason"]))
        mounts = state["mounts"]
    return World(tmp_path, mounts)


# ----------------------------------------------------------------------------- the checks
def assert_contract(case: Case, world: World, code: object, stderr: str) -> str:
    """Exit code 2, one line ``PROG[ COMMAND]: error: ...`` naming every word of the case."""
    prog = PROGS[case.entry]
    assert code == 2, f"exit code {code!r}, stderr:\n{stderr}"
    assert "Traceback" not in stderr, stderr
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, f"{len(lines)} lines on stderr, expected one:\n{stderr}"
    line = lines[0]
    assert re.match(rf"{re.escape(prog)}( [\w-]+)*: error: ", line), f"not '{prog}: error: ...': {line!r}"
    for word in case.words:
        assert world.fill(word) in line, f"{world.fill(word)!r} not in {line!r}"
    return line


def invoke(case: Case, argv: List[str], monkeypatch, capsys) -> Tuple[object, str]:
    """Call the case's entry point in this process, as its console script would."""
    capsys.readouterr()
    try:
        if case.entry in ("train", "plot", "experiment", "launch-info", "netcheck", "ecl"):
            from crossover_sgd import cli

            code = cli.main(argv)
        elif case.entry == "legacy":
            from crossover_sgd import legacy

            code = legacy.main(argv, script=LEGACY)
        elif case.entry == "plot-module":
            from crossover_sgd import plotting

            code = plotting.main(argv)
        elif case.entry == "experiment-module":
            from crossover_sgd import experiments

            code = experiments.main(argv)
        else:
            from topology import cli as topology_cli

            code = topology_cli.main(argv)
    except SystemExit as exc:  # argparse's refusals
        code = exc.code
    return code, capsys.readouterr().err


@pytest.fixture
def isolated(monkeypatch):
    """No launcher variables; logging handlers restored (the worker and experiments install theirs)."""
    clean = child_env()
    for key in list(os.environ):
        if key not in clean:
            monkeypatch.delenv(key)
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.mark.parametrize("case", [_param(c) for c in CASES])
def test_bad_input(case: Case, world: World, isolated, monkeypatch, capsys):
    monkeypatch.chdir(world.fill(case.cwd) if case.cwd else world.cwd)
    argv = [world.fill(a) for a in case.argv]
    before = world.snapshots()
    code, stderr = invoke(case, argv, monkeypatch, capsys)
    assert_contract(case, world, code, stderr)
    assert world.snapshots() == before, "something was written, changed or left behind"


@pytest.mark.parametrize("params,kwargs,types,words", LARS_CASES,
                         ids=[f"lars: {p} {k}" for p, k, _, _ in LARS_CASES])
def test_lars_api_refuses(params, kwargs, types, words):
    import lars

    with pytest.raises(types) as info:
        lars.LARS(_params(params), **kwargs)
    message = str(info.value)
    assert len(message.splitlines()) == 1, message
    for word in words:
        assert word in message, f"{word!r} not in {message!r}"


def test_corpus_size():
    """At least 100 bad inputs, over every entry point and the lars API."""
    assert len(CASES) + len(LARS_CASES) >= 100
    assert {c.entry for c in CASES} == set(PROGS)


# ----------------------------------------------------------------------------- real console scripts
def _console(*argv: str) -> List[str]:
    program = installed_program("crossover-sgd")
    return [program, *argv] if program else [sys.executable, "-m", "crossover_sgd", *argv]


SUBPROCESS_CASES: List[Tuple[List[str], Case]] = [
    (_console("train", "--epochs", "1", "--out", "{RO}/run"),
     train("--out", "{RO}/run", words=("--out", "{RO}/run", *RO_DIR))),
    (_console("train", "--nproc", "2", "--epochs", "1", "--out", "{FULL}/run"),
     train("--out", "{FULL}/run", words=("--out", "{FULL}/run", *FULL))),
    ([sys.executable, LEGACY, *SHORT_LEGACY, "--out", "/proc/crossover-sgd-run"],
     legacy("--out", "/proc/crossover-sgd-run", words=("--out", "/proc/crossover-sgd-run", WRITABLE_DIR))),
    (_console("plot", "{RUN}", "--out", "{FILE}"),
     plot("--out", "{FILE}", words=("--out", "{FILE}", "not a directory"))),
    ([sys.executable, "-m", "crossover_sgd.experiments", "mixing", "--quick", "--out", "{RO}/mixing"],
     experiment("mixing", "--out", "{RO}/mixing", words=("--out", "{RO}/mixing", *RO_DIR))),
    (_console("launch-info", "--json", "/proc/crossover-sgd.json"),
     launch_info("--json", "/proc/crossover-sgd.json", words=("--json", "/proc/crossover-sgd.json", WRITABLE_FILE))),
    (_console("launch-info", "--nproc", "2", "--json", "{RO}/table.json"),
     launch_info("--json", "{RO}/table.json", words=("--json", "{RO}/table.json", *RO_FILE))),
    ([sys.executable, "-m", "topology", *SIM, "--json", "{FULL}/table.json"],
     topology("--json", "{FULL}/table.json", words=("--json", "{FULL}/table.json", *FULL))),
    (_console("train", "--epochs", "1"),  # the default --out, runs/..., under a read-only working directory
     Case("train", ("train",), ("--out", "runs/", *RO_DIR), cwd="{RO}/existing")),
    (_console("train", "--algorithm", "dsgd", "--nproc", "2", "--epochs", "1", "--node-list", "{NODES}/ring3.json",
              "--out", "{TMP}/out"),
     train("--node-list", "{NODES}/ring3.json", words=("--node-list {NODES}/ring3.json has 3 nodes", "2 ranks"))),
    (_console(*ECL_HEAD, "DSGD", "node0", "{NODES}/asymmetric.json", "{NODES}/hosts.json"),
     ecl("DSGD", words=("conf: {NODES}/asymmetric.json", "list every edge at both ends"))),
]


@pytest.mark.parametrize("command,case", SUBPROCESS_CASES,
                         ids=[" ".join(Path(a).name if a.startswith("/") else a for a in c[:6])
                              for c, _ in SUBPROCESS_CASES])
def test_console_script(command, case: Case, world: World):
    before = world.snapshots()
    cwd = Path(world.fill(case.cwd)) if case.cwd else world.cwd
    result = run([world.fill(a) for a in command], cwd=cwd, timeout=120)
    assert result.stdout.count("error") == 0, result.stdout
    assert_contract(case, world, result.returncode, result.stderr)
    assert world.snapshots() == before, "something was written, changed or left behind"


# ----------------------------------------------------------------------------- writes that fail later
@pytest.fixture
def tmpfs(tmp_path) -> Iterator:
    """``tmpfs(size)``: a fresh tmpfs of ``size`` mounted for this test (unmounted after it)."""
    points: List[Path] = []

    def make(size: str) -> Path:
        if os.geteuid() != 0:
            unavailable("mounting a small tmpfs needs root (a filesystem that fills up)")
        point = tmp_path / f"fs{len(points)}"
        point.mkdir()
        reason = _mount(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(point)])
        if reason is not None:
            unavailable(f"cannot mount a tmpfs at {point}: {reason}")
        points.append(point)
        return point

    yield make
    for point in reversed(points):
        if _mount(["umount", str(point)]) is not None:
            _mount(["umount", "-l", str(point)])


def test_atomic_write_that_fails_leaves_nothing(tmpfs):
    from crossover_sgd.atomic import atomic_write, atomic_write_text

    fs = tmpfs("64k")
    with pytest.raises(OSError) as info:  # the disk fills up: no temporary file, no directory made for it
        atomic_write_text(fs / "new" / "deeper" / "big.txt", "x" * 200_000)
    assert info.value.filename == str(fs / "new" / "deeper" / "big.txt")
    assert "No space left" in str(info.value)
    assert list(fs.iterdir()) == []

    (fs / "kept.txt").write_text("old\n")

    def broken(handle):
        handle.write(b"half")
        raise RuntimeError("the writer failed")

    with pytest.raises(RuntimeError):  # any failure: the old file stays whole, no temporary file
        atomic_write(fs / "kept.txt", broken)
    assert [p.name for p in fs.iterdir()] == ["kept.txt"] and (fs / "kept.txt").read_text() == "old\n"


def _one_error_line(result) -> str:
    """Exit code 2; one line on stderr mentions an error, and it is the last (progress lines may
    come before it); no traceback, no blame on a lost peer."""
    assert result.returncode == 2, f"exit code {result.returncode}:\n{result.stderr}"
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert "Traceback" not in result.stderr, result.stderr
    errors = [line for line in lines if "error" in line.lower()]
    assert len(errors) == 1 and lines[-1] == errors[0], result.stderr
    assert "lost peer" not in result.stderr and "communication failed" not in result.stderr, result.stderr
    return errors[0]


#: A checkpoint of small_cnn on digits (weights and momentum) takes about 240 KiB: a filesystem of
#: 128 KiB holds the run's small files but not its first checkpoint; one of 400 KiB (1 rank) or
#: 700 KiB (2 ranks) holds the first checkpoint step but not a second one beside it.
TRAIN_UNTIL_FULL = ("train", "--epochs", "3", "--batch-size", "64", "--checkpoint-every", "1", "--workers", "0")


@pytest.mark.slow
def test_disk_full_before_the_first_checkpoint_removes_the_run(tmpfs, tmp_path):
    fs = tmpfs("128k")
    out = fs / "run"
    result = run([sys.executable, "-m", "crossover_sgd", *TRAIN_UNTIL_FULL, "--out", str(out)], cwd=tmp_path,
                 timeout=240)
    line = _one_error_line(result)
    assert line.startswith(f"crossover-sgd: error: --out {out}: cannot write checkpoints/"), line
    assert "no space left on device" in line and "the run directory was removed" in line, line
    assert list(fs.iterdir()) == [], "the run directory holds nothing of value: it must be removed"


@pytest.mark.slow
@pytest.mark.parametrize("nproc,size", [(1, "400k"), (2, "700k")], ids=["1 rank", "2 ranks"])
def test_disk_full_after_some_epochs_keeps_the_checkpoints(tmpfs, tmp_path, nproc, size):
    fs = tmpfs(size)
    out = fs / "run"
    launch = ["--nproc", str(nproc)] if nproc > 1 else []
    result = run([sys.executable, "-m", "crossover_sgd", *TRAIN_UNTIL_FULL, *launch, "--out", str(out)],
                 cwd=tmp_path, timeout=240)
    line = _one_error_line(result)
    assert f"--out {out}: cannot write " in line and "no space left on device" in line, line
    assert "--resume" in line and "checkpoints are kept" in line, line
    published = json.loads((out / "checkpoints" / "latest.json").read_text())
    steps = sorted(p.name for p in (out / "checkpoints").iterdir() if p.is_dir())
    assert steps == [f"step{published['step']:08d}"], steps  # the partial step is gone
    assert sorted(p.name for p in (out / "checkpoints" / steps[0]).iterdir()) == [f"rank{r}.pt" for r in range(nproc)]
    leftovers = [p for p in out.rglob("*") if p.name.endswith(".tmp") or p.name.startswith(".")]
    assert leftovers == [], leftovers
