"""Peer-to-peer node graphs (:mod:`topology.nodes`): node_list.json / hosts.json, generated graphs, CLI."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import pytest

from topology import (
    Graph,
    NodeGraph,
    NodeListError,
    generated_nodes,
    load_hosts,
    load_node_list,
    write_hosts,
    write_node_list,
)

REPO_ROOT = Path(__file__).resolve().parents[2]

# the original code's own files (nttcslab/ecl-isvr conf/node_list.n3.ring.json, hosts.n3.json):
# the two ends of an edge list different slots, ports are strings
ORIGINAL_NODE_LIST = """{
  "nodes": {
    "node0": {"device": "cuda", "round": 10, "edges": {"node2": 0, "node1": 4}},
    "node1": {"device": "cuda", "round": 10, "edges": {"node0": 1, "node2": 5}},
    "node2": {"device": "cuda", "round": 10, "edges": {"node1": 2, "node0": 6}}
  }
}"""
ORIGINAL_HOSTS = """{"hosts": [{"name": "node0", "addr": "localhost", "port": "10000"},
                     {"name": "node1", "addr": "localhost", "port": "10001"},
                     {"name": "node2", "addr": "localhost", "port": "10002"}]}"""


def _write(path: Path, text: str | bytes) -> Path:
    path.write_bytes(text if isinstance(text, bytes) else text.encode("utf-8"))
    return path


def _ring(**over) -> dict:
    """A good 3-node ring a-b-c, round 2, as a dict to spoil."""
    nodes = {
        "a": {"device": "cuda:0", "round": 2, "edges": {"b": 0, "c": 1}},
        "b": {"round": 2, "edges": {"a": 0, "c": 1}},
        "c": {"round": 2, "edges": {"a": 1, "b": 1}},
    }
    nodes.update(over)
    return nodes


GOOD_HOSTS = '{"a": "10.0.0.1", "b": {"addr": "10.0.0.2", "port": 29500}, "c": {"host": "10.0.0.3", "port": "29501"}}'


# --- reading the original's files and the other accepted layouts ---------------------


def test_original_files_load_with_both_ends_slots(tmp_path):
    nl = _write(tmp_path / "node_list.json", ORIGINAL_NODE_LIST)
    hosts = _write(tmp_path / "hosts.json", ORIGINAL_HOSTS)
    g = load_node_list(nl, hosts)
    assert g.names == ("node0", "node1", "node2") and g.round == 10 and g.n == 3
    assert g.graph == Graph.complete(3)
    assert g.devices == ("cuda",) * 3
    assert g.addresses == ("localhost",) * 3 and g.ports == (10000, 10001, 10002)
    assert g.slot(0, 1) == 4 and g.slot(1, 0) == 1 and not g.symmetric
    # node0 starts with node2 at 0 and with node1 at 4; node1 starts with node0 at 1, node2 with node0 at 6
    assert [g.exchanges_at(0, t) for t in range(10)] == [(2,), (1,), (), (), (1,), (), (2,), (), (), ()]
    assert g.exchanges_at(0, 14) == (1,)
    with pytest.raises(NodeListError, match=r'node_list\.json: edge "node0" -- "node2": .*slot 0.*slot 6'):
        load_node_list(nl, symmetric_slots=True)


def test_rank_order_follows_hosts_file(tmp_path):
    nl = _write(tmp_path / "nl.json", json.dumps(_ring()))
    hosts = _write(tmp_path / "hosts.json", '[{"name": "c", "address": "h3"}, {"name": "a", "addr": "h1"},'
                                            ' {"name": "b", "host": "h2", "port": 7}]')
    g = load_node_list(nl, hosts)
    assert g.names == ("c", "a", "b") and g.index("a") == 1
    assert g.addresses == ("h3", "h1", "h2") and g.ports == (None, None, 7)
    assert g.devices == (None, "cuda:0", None)
    assert g.slot(g.index("a"), g.index("c")) == 1 and g.symmetric
    assert load_node_list(nl).names == ("a", "b", "c")  # without hosts: the node list's order


def test_list_layout_and_flat_hosts(tmp_path):
    nodes = [{"name": name, **value} for name, value in _ring().items()]
    nl = _write(tmp_path / "nl.json", json.dumps(nodes))
    g = load_node_list(nl, _write(tmp_path / "hosts.json", GOOD_HOSTS))
    assert g.ports == (None, 29500, 29501) and g.addresses == ("10.0.0.1", "10.0.0.2", "10.0.0.3")
    assert g == load_node_list(_write(tmp_path / "wrapped.json", json.dumps({"nodes": _ring()})),
                               tmp_path / "hosts.json")
    assert load_hosts(tmp_path / "hosts.json") == [("a", "10.0.0.1", None), ("b", "10.0.0.2", 29500),
                                                   ("c", "10.0.0.3", 29501)]


# --- round trips ------------------------------------------------------------------------


@pytest.mark.parametrize("kind,n,k", [("ring", 5, None), ("ring", 2, None), ("torus", 12, None),
                                      ("complete", 6, None), ("regular", 10, 3), ("erdos-renyi", 9, 3),
                                      ("star", 4, None), ("ring", 1, None)])
@pytest.mark.parametrize("round_", [1, 2, 5])
def test_generated_write_load_round_trip(tmp_path, kind, n, k, round_):
    g = generated_nodes(kind, n, round_, k=k, seed=3)
    write_node_list(g, tmp_path / "nl.json")
    assert load_node_list(tmp_path / "nl.json", symmetric_slots=True) == g
    write_hosts(g, tmp_path / "hosts.json", address="10.1.2.3", port=20000)
    loaded = load_node_list(tmp_path / "nl.json", tmp_path / "hosts.json")
    assert loaded == dataclasses.replace(g, addresses=("10.1.2.3",) * n, ports=tuple(range(20000, 20000 + n)))
    write_node_list(loaded, tmp_path / "again.json")  # devices, addresses and ports survive too
    write_hosts(loaded, tmp_path / "again_hosts.json")
    assert load_node_list(tmp_path / "again.json", tmp_path / "again_hosts.json") == loaded
    assert not list(tmp_path.glob(".*.tmp"))


def test_original_files_round_trip(tmp_path):
    g = load_node_list(_write(tmp_path / "nl.json", ORIGINAL_NODE_LIST), _write(tmp_path / "h.json", ORIGINAL_HOSTS))
    # ports as strings: the original concatenates them into "tcp://addr:port"
    assert g.to_hosts()["hosts"][0] == {"name": "node0", "addr": "localhost", "port": "10000"}
    write_node_list(g, tmp_path / "out.json")
    write_hosts(g, tmp_path / "out_hosts.json")
    assert load_node_list(tmp_path / "out.json", tmp_path / "out_hosts.json") == g
    assert json.loads((tmp_path / "out.json").read_text())["nodes"]["node0"] == {
        "device": "cuda", "round": 10, "edges": {"node1": 4, "node2": 0}}


def test_generated_slots_are_colours_mod_round():
    g = generated_nodes("ring", 6, 2)
    assert g.names == tuple(f"node{i}" for i in range(6)) and g.symmetric
    assert g.max_exchanges_per_step() == 1  # an even ring needs 2 colours
    assert generated_nodes("ring", 5, 2).max_exchanges_per_step() == 2  # an odd ring needs 3: edges share a slot
    assert generated_nodes("ring", 5, 3).max_exchanges_per_step() == 1
    assert all(len(generated_nodes("torus", 9, 1).exchanges_at(i, 0)) == 4 for i in range(9))  # round 1: all at once
    with pytest.raises(ValueError, match="round"):
        generated_nodes("ring", 4, 0)
    with pytest.raises(ValueError, match="unknown graph"):
        generated_nodes("moebius", 4)


# --- the schedule ------------------------------------------------------------------------


@pytest.mark.parametrize("kind,k", [("ring", None), ("torus", None), ("complete", None), ("regular", 3),
                                    ("erdos-renyi", 3), ("star", None), ("line", None), ("grid", None)])
def test_exchanges_at_is_symmetric_and_covers_every_edge(kind, k):
    for n in range(4, 17):
        if kind == "regular" and n % 2:
            continue
        for round_ in (1, 2, 3, 4, 7):
            g = generated_nodes(kind, n, round_, k=k, seed=n)
            seen = set()
            for t in range(2 * round_ + 1):
                for i in range(n):
                    for j in g.exchanges_at(i, t):
                        assert i in g.exchanges_at(j, t)
                        assert g.slot(i, j) == g.slot(j, i) == t % round_
                        seen.add((min(i, j), max(i, j)))
            assert seen == set(g.graph.edges)


def test_sign_is_antisymmetric_by_rank():
    g = generated_nodes("complete", 5)
    for i in range(5):
        for j in range(5):
            if i != j:
                assert g.sign(i, j) == -g.sign(j, i) == (1 if i < j else -1)
    with pytest.raises(NodeListError):
        g.sign(2, 2)


def test_lookups_name_the_problem():
    g = generated_nodes("ring", 4)
    assert g.neighbours(0) == (1, 3) and g.index("node2") == 2
    with pytest.raises(NodeListError, match=r'unknown node "node9": the nodes are "node0", "node1"'):
        g.index("node9")
    with pytest.raises(NodeListError, match="not an edge"):
        g.slot(0, 2)
    with pytest.raises(NodeListError, match="step must be >= 0"):
        g.exchanges_at(0, -1)
    text = g.describe()
    assert "node0" in text and "node1@0" in text and "round 1" in text


def test_node_graph_checks_its_fields():
    ring = Graph.ring(3)
    slots = {e: 0 for e in ring.edges}
    assert NodeGraph(("a", "b", "c"), ring, 1, slots).slots[(1, 0)] == 0  # i < j keys serve both ends
    for bad, match in [
        (dict(names=("a", "a", "c")), "twice"),
        (dict(names=("a", "b")), "2 names"),
        (dict(round=True), "round"),
        (dict(slots={(0, 1): 0}), "slots"),
        (dict(slots={e: 1 for e in ring.edges}), "slot 1"),
        (dict(ports=(1, 2, 70000)), "port 70000"),
    ]:
        fields = dict(names=("a", "b", "c"), graph=ring, round=1, slots=slots) | bad
        with pytest.raises(NodeListError, match=match):
            NodeGraph(**fields)


# --- bad input: one line naming the file and the value -------------------------------------

BAD_NODE_LISTS = [
    ('{"a": {"round": 2,', "line 1, column"),                                        # not JSON
    ('"hello"', '"hello"'),                                                           # wrong top level
    ("{}", "no nodes"),
    ('[{"round": 2, "edges": {}}]', '"round"'),                                      # list item without name
    (json.dumps(_ring(a={"round": 2, "edges": ["b", "c"]})), '["b", "c"]'),          # edges not an object
    (json.dumps(_ring(a=[1, 2])), "[1, 2]"),                                          # node not an object
    ('{"a": {"round": 2, "edges": {"b": 0}}, "b": {"round": 2, "edges": {"a": 0}}, '
     '"a": {"round": 2, "edges": {"b": 0}}}', '"a" appears twice'),                  # duplicate name
    ('[{"name": "a", "round": 1, "edges": {"b": 0}}, {"name": "b", "round": 1, "edges": {"a": 0}}, '
     '{"name": "a", "round": 1, "edges": {"b": 0}}]', '"a" appears twice'),          # duplicate name, list form
    ('{"a": {"round": 1, "edges": {"b": 0, "b": 0}}, "b": {"round": 1, "edges": {"a": 0}}}', '"b" appears twice'),
    (json.dumps(_ring(a={"round": 2, "edges": {"b": 0, "c": 1, "zed": 0}})), '"zed"'),  # unknown neighbour
    (json.dumps(_ring(a={"round": 2, "edges": {"b": 0, "c": 1, "a": 0}})), "self-edge"),
    (json.dumps(_ring(a={"round": 2, "edges": {"b": 0.5, "c": 1}})), "slot 0.5"),
    (json.dumps(_ring(a={"round": 2, "edges": {"b": True, "c": 1}})), "slot true"),
    (json.dumps(_ring(a={"round": 2, "edges": {"b": "0", "c": 1}})), 'slot "0"'),
    (json.dumps(_ring(a={"round": 2, "edges": {"b": -1, "c": 1}})), "slot -1"),
    (json.dumps(_ring(a={"round": 2, "edges": {"b": 2, "c": 1}})), "slot 2"),       # slot >= round
    (json.dumps(_ring(c={"round": 2, "edges": {"b": 1}})), '"a" -> "c"'),            # a lists c, c does not list a
    (json.dumps(_ring(c={"round": 3, "edges": {"a": 1, "b": 1}})), "round 3"),       # different rounds
    (json.dumps(_ring(a={"round": True, "edges": {"b": 0, "c": 1}})), "round true"),
    (json.dumps(_ring(a={"round": 0, "edges": {"b": 0, "c": 1}})), "round 0"),
    (json.dumps(_ring(a={"edges": {"b": 0, "c": 1}})), '"round"'),                   # missing round
    (json.dumps(_ring(a={"round": 2, "edge": {"b": 0, "c": 1}})), '"edge"'),         # unknown key
    (json.dumps(_ring(a={"round": 2, "device": 0, "edges": {"b": 0, "c": 1}})), "device 0"),
    (json.dumps(_ring(d={"round": 2, "edges": {}})), '"d" has no edges'),
    (json.dumps({"a": {"round": 1, "edges": {"b": 0}}, "b": {"round": 1, "edges": {"a": 0}},
                 "c": {"round": 1, "edges": {"d": 0}}, "d": {"round": 1, "edges": {"c": 0}}}),
     '{"a", "b"}; {"c", "d"}'),                                                       # not connected
    (b'{"a\xff": 1}', "not UTF-8"),
]


@pytest.mark.parametrize("text,needle", BAD_NODE_LISTS)
def test_bad_node_list_is_one_line_naming_file_and_value(tmp_path, text, needle):
    path = _write(tmp_path / "my_nodes.json", text)
    with pytest.raises(NodeListError) as info:
        load_node_list(path)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(str(path) + ":"), message
    assert needle in message, message


BAD_HOSTS = [
    ('{"a": "h1", "b": "h2"}', '"c" of'),                                             # node missing
    ('{"a": "h1", "b": "h2", "c": "h3", "zz": "h4"}', '"zz"'),                        # host not a node
    ('{"a": "h1", "b": "h2", "c": {"addr": "h3", "port": "abc"}}', 'port "abc"'),
    ('{"a": "h1", "b": "h2", "c": {"addr": "h3", "port": 0}}', "port 0"),
    ('{"a": "h1", "b": "h2", "c": {"addr": "h3", "port": 70000}}', "port 70000"),
    ('{"a": "h1", "b": "h2", "c": {"addr": "h3", "port": true}}', "port true"),
    ('{"a": "h1", "b": {"addr": "h3", "port": 5}, "c": {"addr": "h3", "port": "5"}}', "h3:5"),  # same address
    ('{"a": "h1", "b": "h2", "c": {"addr": "h3", "host": "h4"}}', "addr, host"),      # two address keys
    ('{"a": "h1", "b": "h2", "c": {"port": 5}}', "no address"),
    ('{"a": "h1", "b": "h2", "c": {"addr": "h3", "prot": 5}}', '"prot"'),
    ('{"a": "h1", "b": "h2", "c": 7}', '"c"'),
    ('{"hosts": [{"name": "a", "addr": "h"}, {"name": "a", "addr": "h"}]}', '"a" appears twice'),
    ('{"hosts": [{"addr": "h"}]}', '{"addr": "h"}'),
    ('[1, 2', "line 1, column"),
]


@pytest.mark.parametrize("text,needle", BAD_HOSTS)
def test_bad_hosts_is_one_line_naming_file_and_value(tmp_path, text, needle):
    nodes = _write(tmp_path / "nl.json", json.dumps(_ring()))
    hosts = _write(tmp_path / "my_hosts.json", text)
    with pytest.raises(NodeListError) as info:
        load_node_list(nodes, hosts)
    message = str(info.value)
    assert "\n" not in message and message.startswith(str(hosts) + ":"), message
    assert needle in message, message


def test_unreadable_files(tmp_path):
    with pytest.raises(NodeListError, match=r"missing\.json: cannot read it"):
        load_node_list(tmp_path / "missing.json")
    with pytest.raises(NodeListError, match=r"nohosts\.json: cannot read it"):
        load_hosts(tmp_path / "nohosts.json")
    with pytest.raises(NodeListError, match="cannot read it"):
        load_node_list(tmp_path)  # a directory


def test_write_leaves_nothing_half_written(tmp_path):
    (tmp_path / "dir.json").mkdir()
    with pytest.raises(OSError):
        write_node_list(generated_nodes("ring", 3), tmp_path / "dir.json")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dir.json"]
    with pytest.raises(NodeListError, match="port 65535 is too high for 3 nodes"):
        write_hosts(generated_nodes("ring", 3), tmp_path / "h.json", port=65535)
    assert not (tmp_path / "h.json").exists()


# --- python -m topology nodes ---------------------------------------------------------------


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "topology", "nodes", *args], cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=120)


def test_cli_generates_writes_and_checks(tmp_path):
    nl, hosts = tmp_path / "out" / "nl.json", tmp_path / "out" / "hosts.json"
    proc = _run("--graph", "ring", "--n", "5", "--round", "2", "--node-list", str(nl), "--hosts", str(hosts),
                "--port", "29500")
    assert proc.returncode == 0, proc.stderr
    assert "node4" in proc.stdout and "3 colour(s)" in proc.stdout
    g = load_node_list(nl, hosts)
    assert g.slots == generated_nodes("ring", 5, 2).slots and g.ports == tuple(range(29500, 29505))
    check = _run("--check", str(nl), "--hosts", str(hosts))
    assert check.returncode == 0, check.stderr
    assert check.stdout.splitlines()[2:] == g.describe().splitlines()[2:]


def test_cli_bad_input_is_one_line_exit_2_nothing_written(tmp_path):
    nl, hosts = tmp_path / "nl.json", tmp_path / "hosts.json"
    proc = _run("--graph", "regular", "--n", "5", "--degree", "3", "--node-list", str(nl), "--hosts", str(hosts))
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("python -m topology nodes: error: d=3")
    assert not any(tmp_path.iterdir())
    bad = _write(tmp_path / "bad.json", json.dumps(_ring(a={"round": 2, "edges": {"b": 0, "c": 1, "zed": 0}})))
    proc = _run("--check", str(bad))
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1
    assert f"error: {bad}: node \"a\": unknown neighbour \"zed\"" in proc.stderr
