"""``crossover-sgd plot``: training curves from real run directories into non-empty PNG files
(accuracy against the epoch and against wall time); the per-node figure of a run with
nodes/*.csv (hand-written runs); the server and per-worker figures of a real parameter-server run
(ps/*.csv), alone, side by side with another and beside an all-reduce run; the DistBelief
figures of real runs (the staleness of Downpour's updates, Sandblaster's L-BFGS iterations and
portions per replica), checked against the records they draw; one-line errors for a directory
without metrics, an unreadable node, worker or DistBelief record and a missing matplotlib.

The parameter-server and DistBelief runs are the session's shared runs (``shared_run``, see
tests/conftest.py), which the algorithm tests read too: nothing here writes into them."""

from __future__ import annotations

import json
import math
import shutil
import sys
from pathlib import Path

import pytest

from support import cli, read_metrics, run

from crossover_sgd.errors import ConfigError
from crossover_sgd.plotting import QUANTITIES, load_run, plot_runs

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("plot") / "digits-run"
    result = cli("train", "--epochs", "2", "--out", str(out), timeout=180)
    assert result.returncode == 0, result.stderr[-3000:]
    return out


def test_plots_of_a_real_run(run_dir, tmp_path):
    second = tmp_path / "copy-of-run"
    shutil.copytree(run_dir, second)
    written = plot_runs([run_dir, second], tmp_path / "plots")
    assert [p.name for p in written] == [f"{q.name}.png" for q in QUANTITIES]
    for path in written:
        data = path.read_bytes()
        assert data.startswith(PNG_SIGNATURE) and len(data) > 5000, path
    metrics = load_run(run_dir)
    assert metrics.algorithm == "allreduce" and metrics.epochs() == [1.0, 2.0]
    mean, low, high = metrics.band("val_acc")
    assert low == high == mean  # one rank


def test_plot_module_command_line(run_dir, tmp_path):
    out = tmp_path / "cli-plots"
    result = run([sys.executable, "-m", "crossover_sgd.plotting", str(run_dir), "--out", str(out)], timeout=120)
    assert result.returncode == 0, result.stderr
    assert sorted(result.stdout.split()) == sorted(str(out / f"{q.name}.png") for q in QUANTITIES)


def test_directory_without_metrics_is_one_line(tmp_path):
    with pytest.raises(ConfigError, match="holds no metrics"):
        load_run(tmp_path)
    result = run([sys.executable, "-m", "crossover_sgd.plotting", str(tmp_path)], timeout=120)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("crossover-sgd: error:") and "holds no metrics" in lines[0]


def test_missing_matplotlib_is_one_line(run_dir, tmp_path):
    code = ("import sys; sys.modules['matplotlib'] = None; from crossover_sgd.plotting import main; "
            f"raise SystemExit(main([{str(run_dir)!r}, '--out', {str(tmp_path / 'p')!r}]))")
    result = run([sys.executable, "-c", code], timeout=120)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "matplotlib" in lines[0] and "crossover-sgd[plot]" in lines[0]
    assert not (tmp_path / "p").exists()


def test_runs_with_the_same_directory_name_get_distinct_labels(tmp_path):
    from crossover_sgd.plotting import distinct_names

    assert distinct_names([tmp_path / "sgp" / "n8", tmp_path / "crossover" / "n8"]) == ["sgp/n8", "crossover/n8"]
    assert distinct_names([tmp_path / "a", tmp_path / "b"]) == ["a", "b"]


# ------------------------------------------------------------------------------------------ per-node CSVs
def write_csv(path, columns, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [",".join(columns)] + [",".join(str(row.get(c, "nan")) for c in columns) for row in rows]
    path.write_text("\n".join(lines) + "\n")


def node_rows(offset: float, live: list, dropped: list) -> list:
    return [{"epoch": e + 1, "train_loss": 2.0 / (e + 1) + offset, "val_loss": 2.1 / (e + 1),
             "test_loss": 2.2 / (e + 1), "train_acc": 0.3 + 0.1 * e, "val_acc": 0.25 + 0.1 * e + offset,
             "test_acc": 0.2 + 0.1 * e + offset, "comm_bytes_sent": 1000 * (e + 1), "comm_bytes_recv": 1000 * (e + 1),
             "comm_seconds": 0.1 * (e + 1), "wall_time_s": 3.0 * (e + 1), "live_neighbours": live[e],
             "dropped_neighbours": dropped[e]} for e in range(len(live))]


@pytest.fixture
def nodes_run(tmp_path):
    """A hand-written run directory of 3 nodes on a ring: node2 is lost after epoch 2, so node0
    and node1 drop it at epoch 3 (their live neighbours fall from 2 to 1); metrics per rank too."""
    from crossover_sgd.training.outputs import METRIC_COLUMNS, NODE_COLUMNS

    run_dir = tmp_path / "p2p-run"
    write_csv(run_dir / "nodes" / "node0.csv", NODE_COLUMNS, node_rows(0.0, [2, 2, 1, 1], [0, 0, 1, 1]))
    write_csv(run_dir / "nodes" / "node1.csv", NODE_COLUMNS, node_rows(0.02, [2, 2, 1, 1], [0, 0, 1, 1]))
    write_csv(run_dir / "nodes" / "node2.csv", NODE_COLUMNS, node_rows(0.04, [2, 2], [0, 0]))
    for rank, epochs in enumerate((4, 4, 2)):
        write_csv(run_dir / f"metrics_rank{rank}.csv", METRIC_COLUMNS,
                  [{"epoch": e + 1, "step": 10 * (e + 1), "train_loss": 1.0 / (e + 1), "val_loss": 1.1 / (e + 1),
                    "val_acc": 0.5 + 0.1 * e, "lr": 0.1} for e in range(epochs)])
    (run_dir / "config.json").write_text(json.dumps({"algorithm": "dsgd", "nproc": 3}))
    return run_dir


def test_node_csvs_are_drawn_one_line_per_node(nodes_run, tmp_path):
    from crossover_sgd.plotting import NODE_PANELS, neighbour_losses

    metrics = load_run(nodes_run)
    assert list(metrics.nodes) == ["node0", "node1", "node2"] and metrics.algorithm == "dsgd"
    assert metrics.nodes["node2"]["epoch"] == [1.0, 2.0]
    assert neighbour_losses(metrics.nodes["node0"]) == [(2, 1)]  # at the third evaluation, one dropped
    assert neighbour_losses(metrics.nodes["node2"]) == []
    written = plot_runs([nodes_run], tmp_path / "plots")
    assert [p.name for p in written] == [f"{q.name}.png" for q in QUANTITIES] + ["nodes.png"]
    data = (tmp_path / "plots" / "nodes.png").read_bytes()
    assert data.startswith(PNG_SIGNATURE) and len(data) > 20_000
    assert [panel[0] for panel in NODE_PANELS] == ["test_acc", "val_acc", "train_loss", "live_neighbours"]


def test_neighbour_losses_count_drops_and_finished_neighbours():
    from crossover_sgd.plotting import neighbour_losses

    nan = float("nan")
    columns = {"epoch": [1, 2, 3, 4, 5], "live_neighbours": [3, 3, 2, nan, 1], "dropped_neighbours": [1, 1, 1, nan, 3]}
    # epoch 1: one dropped already; epoch 3: a neighbour finished (none dropped); epoch 5: two dropped
    assert neighbour_losses(columns) == [(0, 1), (2, 0), (4, 2)]
    assert neighbour_losses({"epoch": [1, 2]}) == []  # no neighbour columns: nothing to mark


def test_nodes_of_several_runs_and_a_run_of_nodes_only(nodes_run, tmp_path):
    only_nodes = tmp_path / "only" / "nodes-run"
    shutil.copytree(nodes_run / "nodes", only_nodes / "nodes")
    with open(only_nodes / "nodes" / "node3.csv", "w") as handle:  # a node that never evaluated
        handle.write("epoch,train_loss,test_acc\n")
    (only_nodes / "nodes" / "node0.json").write_text(json.dumps({"config": {"algorithm": "pdmm-sgd"}, "world_size": 4}))
    metrics = load_run(only_nodes)  # no metrics_rank*.csv, no config.json: a node's summary names the method
    assert metrics.ranks == [] and list(metrics.nodes)[-1] == "node3" and metrics.algorithm == "pdmm-sgd"
    assert plot_runs([only_nodes], tmp_path / "one") == [tmp_path / "one" / "nodes.png"]
    written = plot_runs([nodes_run, only_nodes], tmp_path / "both")
    names = [p.name for p in written]
    assert names == [f"{q.name}.png" for q in QUANTITIES] + ["nodes_p2p-run.png", "nodes_nodes-run.png"]
    for path in written:
        assert path.read_bytes().startswith(PNG_SIGNATURE) and path.stat().st_size > 5000, path


def test_a_run_without_nodes_draws_as_before(nodes_run, tmp_path):
    shutil.rmtree(nodes_run / "nodes")
    assert load_run(nodes_run).nodes == {}
    written = plot_runs([nodes_run], tmp_path / "plots")
    assert [p.name for p in written] == [f"{q.name}.png" for q in QUANTITIES]
    assert not (tmp_path / "plots" / "nodes.png").exists()


def test_node_plot_on_the_command_line_and_a_bad_node_csv(nodes_run, tmp_path):
    out = tmp_path / "cli"
    result = run([sys.executable, "-m", "crossover_sgd.plotting", str(nodes_run), "--out", str(out)], timeout=120)
    assert result.returncode == 0, result.stderr
    assert str(out / "nodes.png") in result.stdout.split()
    for content, words in ((b"\xff\xfe\x00garbage\n", "cannot be read as a CSV"),
                           (b"step,loss\n1,2\n", "no 'epoch' column")):
        (nodes_run / "nodes" / "node1.csv").write_bytes(content)
        with pytest.raises(ConfigError, match=words):
            load_run(nodes_run)
        bad_out = tmp_path / "bad"
        result = run([sys.executable, "-m", "crossover_sgd.plotting", str(nodes_run), "--out", str(bad_out)],
                     timeout=120)
        assert result.returncode == 2, result.stderr
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("crossover-sgd: error:"), lines
        assert "node1.csv" in lines[0] and words in lines[0]
        assert not bad_out.exists()  # nothing half-written is left behind


# ------------------------------------------------------------------------------------------ parameter server
def assert_image(path, min_bytes: int = 20_000) -> None:
    """``path`` is a PNG that decodes (Pillow, matplotlib's own dependency) to a figure-sized image."""
    from PIL import Image

    data = path.read_bytes()
    assert data.startswith(PNG_SIGNATURE) and len(data) > min_bytes, path
    with Image.open(path) as image:
        image.verify()
    with Image.open(path) as image:
        image.load()
        assert image.format == "PNG" and image.width > 600 and image.height > 400, (path, image.size)


def plotted(runs, out, extra, full):
    """``plot_runs(runs, out)``: the per-quantity figures, then exactly the ``extra`` files, each a
    decodable PNG; those in ``full`` figure-sized."""
    written = plot_runs(runs, out)
    assert [p.name for p in written] == [f"{q.name}.png" for q in QUANTITIES] + list(extra)
    for path in written:
        assert_image(path, 20_000 if path.name in full else 5000)
    return written


@pytest.fixture
def ps_run(shared_run):
    """A real LOSP run shared with the parameter-server tests: one server shard (rank 0) and four
    workers, 10 epochs of digits, the server's model evaluated every 10 rounds (and at the end)."""
    return shared_run("ps-losp-4w1s")


def copy_run(run_dir: Path, to: Path) -> Path:
    """A copy of a shared run to change (its checkpoints left out)."""
    shutil.copytree(run_dir, to, ignore=shutil.ignore_patterns("checkpoints"))
    return to


def test_server_and_worker_figures_of_a_real_ps_run(ps_run, tmp_path, drawn):
    metrics = load_run(ps_run)
    workers = [f"worker_rank{r}" for r in range(1, 5)]
    assert metrics.algorithm == "losp" and list(metrics.workers) == workers
    assert "(losp, 4 workers)" in metrics.label
    rounds = metrics.server["round"]
    assert rounds == list(range(1, len(rounds) + 1)) and len(rounds) >= 20
    # --ps-eval-every 10: the server's model is evaluated every 10th round, the rows between have no accuracy
    evaluated = [r for r, a in zip(rounds, metrics.server["test_acc"]) if not math.isnan(a)]
    assert evaluated == [r for r in rounds if r % 10 == 0]
    assert all(0 <= a <= 1 for a in metrics.server["test_acc"] if not math.isnan(a))
    assert metrics.server["elapsed_s"] == sorted(metrics.server["elapsed_s"])
    assert metrics.server_final["global_iterations"] == metrics.server["global_iterations"][-1]
    assert 0.9 <= metrics.server_final["test_acc"] <= 1  # the evaluation at the end
    for columns in metrics.workers.values():
        assert columns["push"] == list(range(len(columns["push"]))) and columns["final"][-1] == 1
        assert all(k >= 0 for k in columns["k"]) and all(w <= l + 1e-6 for w, l in
                                                          zip(columns["wait_s"], columns["latency_s"]))
    plotted([ps_run], tmp_path / "plots", ["server.png", "workers.png"], full={"server.png", "workers.png"})
    # the accuracy against wall time: the evaluations (rows of its accuracy), at the time each was made
    (_, xs, ys), (_, end_x, end_y) = drawn["server.png"][0]["lines"]  # against wall time; the star at the end
    times = [t for t, a in zip(metrics.server["elapsed_s"], metrics.server["test_acc"]) if not math.isnan(a)]
    accs = [100 * a for a in metrics.server["test_acc"] if not math.isnan(a)]
    assert xs == times and ys == pytest.approx(accs) and len(xs) == len(rounds) // 10
    assert end_x == [metrics.server_final["wall_time_s"]] and end_y == [100 * metrics.server_final["test_acc"]]
    # one line per worker, every push drawn
    k_axes = drawn["workers.png"][0]
    assert [len(xs) for _, xs, _ in k_axes["lines"][::2]] == [len(metrics.workers[w]["push"]) for w in workers]


def test_ps_runs_side_by_side_and_beside_an_allreduce_run(ps_run, run_dir, tmp_path):
    second = copy_run(ps_run, tmp_path / "osp-run")
    config = json.loads((second / "config.json").read_text())
    (second / "config.json").write_text(json.dumps({**config, "algorithm": "osp"}))
    # one server figure for both PS runs (the all-reduce run has no server), one worker figure per PS run
    plotted([ps_run, second, run_dir], tmp_path / "plots",
            ["server.png", "workers_ps-losp-4w1s.png", "workers_osp-run.png"], full={"server.png"})


def test_a_ps_run_of_records_only_and_on_the_command_line(ps_run, tmp_path):
    records = tmp_path / "records-only"
    shutil.copytree(ps_run / "ps", records / "ps")  # no metrics_rank*.csv, no config.json
    (records / "ps" / "shard0.json").unlink()  # no star at the end: the rows alone
    metrics = load_run(records)
    assert metrics.ranks == [] and metrics.server_final == {} and len(metrics.workers) == 4
    assert [p.name for p in plot_runs([records], tmp_path / "one")] == ["server.png", "workers.png"]
    out = tmp_path / "cli"
    result = run([sys.executable, "-m", "crossover_sgd.plotting", str(ps_run), "--out", str(out)], timeout=120)
    assert result.returncode == 0, result.stderr
    assert {str(out / "server.png"), str(out / "workers.png")} <= set(result.stdout.split())
    (records / "ps" / "worker_rank2.csv").write_text("epoch,k\n1,2\n")
    with pytest.raises(ConfigError, match="worker_rank2.csv is not a metrics CSV: it has no 'push' column"):
        load_run(records)
    assert_one_line_error(records, tmp_path / "bad", "worker_rank2.csv")


def assert_one_line_error(run_dir: Path, out: Path, *words: str) -> None:
    """``crossover-sgd plot RUN_DIR --out OUT`` fails with one line naming ``words``, exit 2, and
    leaves nothing behind."""
    result = run([sys.executable, "-m", "crossover_sgd.plotting", str(run_dir), "--out", str(out)], timeout=120)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("crossover-sgd: error:"), lines
    assert all(word in lines[0] for word in words), lines
    assert not out.exists()


# ------------------------------------------------------------------------------------------ DistBelief
@pytest.fixture
def drawn(monkeypatch):
    """What each figure showed (per axes: title, lines, bars, texts), by file name, taken just
    before the figure was written."""
    from crossover_sgd.plotting import curves, distbelief, figure, nodes, server

    real = figure.save_figure
    seen = {}

    def capture(fig, path, dpi=120):
        seen[Path(path).name] = [axes_content(ax) for ax in fig.axes]
        return real(fig, path, dpi)

    for module in (curves, distbelief, nodes, server):
        monkeypatch.setattr(module, "save_figure", capture)
    return seen


def axes_content(ax) -> dict:
    legend = ax.get_legend()
    return {"title": ax.get_title(), "xlabel": ax.get_xlabel(), "ylabel": ax.get_ylabel(),
            "lines": [(line.get_label(), [float(x) for x in line.get_xdata()], [float(y) for y in line.get_ydata()])
                      for line in ax.lines],
            "bars": {c.get_label(): [(bar.get_x() + bar.get_width() / 2, bar.get_height(), bar.get_hatch())
                                     for bar in c] for c in ax.containers},
            "bottoms": {c.get_label(): [bar.get_y() for bar in c] for c in ax.containers},
            "texts": [t.get_text() for t in ax.texts], "xticks": [t.get_text() for t in ax.get_xticklabels()],
            "legend": [t.get_text() for t in legend.get_texts()] if legend else []}


def shard_record(run_dir: Path, shard: int = 0) -> dict:
    return json.loads((run_dir / "ps" / f"shard{shard}.json").read_text())


def test_staleness_figure_of_real_downpour_runs(shared_run, tmp_path, drawn):
    runs = [shared_run("downpour-sgd"), shared_run("downpour-adagrad")]
    replicas = [1, 2, 3, 4]
    histograms = []
    for run_dir in runs:
        metrics = load_run(run_dir)
        record = shard_record(run_dir)
        assert metrics.downpour and not metrics.sandblaster and metrics.algorithm == "downpour"
        histogram = dict(sorted((int(s), n) for s, n in record["staleness_histogram"].items()))
        assert metrics.staleness == {"shard0": histogram} and metrics.staleness_total() == histogram
        assert sum(histogram.values()) == record["updates"] == metrics.shard_updates["shard0"] == len(
            metrics.server["round"])
        # every push of a replica is one update of the shard: the updates per replica are its pushes
        pushes = {r: len(read_metrics(run_dir / "ps" / f"worker_rank{r}.csv")) for r in replicas}
        assert metrics.updates_by_replica() == pushes and sum(pushes.values()) == record["updates"]
        assert metrics.lost_replicas == record["lost_replicas"] == []
        histograms.append(histogram)
    plotted(runs, tmp_path / "plots", ["server.png", "workers_downpour-sgd.png", "workers_downpour-adagrad.png",
                                       "staleness.png"], full={"staleness.png"})
    histogram_axes, replica_axes = drawn["staleness.png"]
    # one bar group per run: a bar per staleness, its height the shard's count; the mean in the legend
    assert len(histogram_axes["bars"]) == 2
    for (label, bars), histogram, run_dir in zip(histogram_axes["bars"].items(), histograms, runs):
        mean = sum(s * n for s, n in histogram.items()) / sum(histogram.values())
        assert label.startswith(run_dir.name + " (downpour, 4 workers)") and f"mean staleness {mean:.2f}" in label
        assert [round(x) for x, _, _ in bars] == list(histogram) and [h for _, h, _ in bars] == list(histogram.values())
        assert sum(h for _, h, _ in bars) == shard_record(run_dir)["updates"]
    assert histogram_axes["legend"] == list(histogram_axes["bars"])
    assert "staleness" in histogram_axes["xlabel"] and "updates applied" in histogram_axes["ylabel"]
    # the updates of each replica, one bar per run; none lost
    assert replica_axes["xticks"] == ["1", "2", "3", "4"]
    for (label, bars), run_dir in zip(replica_axes["bars"].items(), runs):
        pushes = [len(read_metrics(run_dir / "ps" / f"worker_rank{r}.csv")) for r in replicas]
        assert [h for _, h, _ in bars] == pushes and not any(hatch for _, _, hatch in bars)
    assert "lost" not in replica_axes["texts"] and len(replica_axes["texts"]) == 8  # the mean staleness per bar


def test_a_lost_downpour_replica_and_a_bad_shard_record(shared_run, tmp_path, drawn):
    lost = copy_run(shared_run("downpour-sgd"), tmp_path / "lost-replica")
    record = shard_record(lost)
    (lost / "ps" / "shard0.json").write_text(json.dumps({**record, "lost_replicas": [3]}))  # as a lost one is listed
    assert load_run(lost).lost_replicas == [3]
    plot_runs([lost], tmp_path / "plots")
    (label, bars), = drawn["staleness.png"][1]["bars"].items()
    assert [hatch for _, _, hatch in bars] == [None, None, "//", None]
    assert drawn["staleness.png"][1]["texts"].count("lost") == 1
    assert drawn["staleness.png"][1]["legend"][-1].startswith("lost replica")
    for bad, words in (("{not json", "cannot be read as a JSON record"),
                       (json.dumps({**record, "staleness_histogram": {"two": 3}}),
                        "staleness_histogram is not a map of non-negative integers to counts"),
                       ("[1, 2]", "is not a JSON record")):
        (lost / "ps" / "shard0.json").write_text(bad)
        with pytest.raises(ConfigError, match=words):
            load_run(lost)
        assert_one_line_error(lost, tmp_path / "bad", "shard0.json", words)


def test_lbfgs_and_portions_figures_of_a_real_sandblaster_run(shared_run, tmp_path, drawn):
    run_dir = shared_run("sandblaster-1s2r200p")  # 1 shard, the coordinator (rank 1), replicas 2 and 3
    metrics = load_run(run_dir)
    record = json.loads((run_dir / "ps" / "coordinator.json").read_text())
    rows = read_metrics(run_dir / "ps" / "coordinator.csv")
    assert metrics.sandblaster and not metrics.downpour and metrics.algorithm == "sandblaster"
    assert metrics.workers == {} and metrics.lost_replicas == []
    by_replica = {int(r): n for r, n in record["portions_by_replica"].items()}
    assert metrics.coordinator_final["portions_by_replica"] == by_replica and list(by_replica) == [2, 3]
    assert all(n > 0 for n in by_replica.values())
    results = metrics.coordinator_final["results_by_replica"]
    # every result the coordinator took is counted once: first results, the rest duplicates discarded
    assert sum(results.values()) == sum(by_replica.values()) + record["duplicates"]
    assert all(results[r] >= by_replica[r] for r in by_replica)
    assert metrics.coordinator["iteration"] == list(range(1, record["iterations"] + 1))
    assert sum(metrics.coordinator["portions"]) == sum(by_replica.values()) == record["func_evals"] * record["portions"]
    assert sum(metrics.coordinator["backups"]) == record["backups"]
    # no server figure (Sandblaster's shard does not evaluate), no workers (replicas do not push)
    plotted([run_dir], tmp_path / "plots", ["lbfgs.png", "portions.png"], full={"lbfgs.png", "portions.png"})
    loss, loss_time, step, portions = drawn["lbfgs.png"]
    iterations = [float(r["iteration"]) for r in rows]
    (_, xs, ys), = loss["lines"]
    assert xs == iterations and ys == [float(r["loss"]) for r in rows]
    (_, xs, ys), = loss_time["lines"]
    assert xs == [float(r["elapsed_s"]) for r in rows] and ys == [float(r["loss"]) for r in rows]
    (_, xs, ys), = step["lines"]
    assert xs == iterations and ys == [float(r["t"]) for r in rows]
    assert [ys for _, _, ys in portions["lines"]] == [[float(r["portions"]) for r in rows],
                                                      [float(r["backups"]) for r in rows]]
    assert loss["legend"][0].startswith("sandblaster-1s2r200p (sandblaster")
    assert f"batch {record['batch']} samples in {record['portions']} portions" in loss["legend"][0]
    # portions.png: a bar per replica, its height the portions it computed first; duplicates stacked
    axes, = drawn["portions.png"]
    assert axes["xticks"] == ["2", "3"]
    counted, *discarded = axes["bars"].values()
    assert [h for _, h, _ in counted] == [by_replica[2], by_replica[3]]
    if record["duplicates"]:  # (backups happened in every run so far, and with them duplicates)
        assert [h for _, h, _ in discarded[0]] == [results[2] - by_replica[2], results[3] - by_replica[3]]
        assert list(axes["bottoms"].values())[1] == [by_replica[2], by_replica[3]]  # stacked on the counted
    else:
        assert discarded == []
    assert f"{sum(by_replica.values())} portions, {record['backups']} backups" in axes["legend"][0]
    assert "slow" not in " ".join(axes["texts"]) and "lost" not in axes["texts"]


def test_lost_and_slow_sandblaster_replicas_and_bad_coordinator_records(shared_run, tmp_path, drawn):
    marked = copy_run(shared_run("sandblaster-1s2r200p"), tmp_path / "marked")
    record = json.loads((marked / "ps" / "coordinator.json").read_text())
    # as the coordinator lists a replica slowed on purpose (--slow-replicas 0) and a lost one
    (marked / "ps" / "coordinator.json").write_text(json.dumps({**record, "slow_replicas": {"2": 4.0},
                                                                "lost_replicas": [3]}))
    metrics = load_run(marked)
    assert metrics.lost_replicas == [3] and metrics.coordinator_final["slow_replicas"] == {2: 4.0}
    plot_runs([marked], tmp_path / "plots")
    axes, = drawn["portions.png"]
    counted = list(axes["bars"].values())[0]
    assert [hatch for _, _, hatch in counted] == [None, "//"]
    assert axes["texts"] == ["slow x4", "lost"]  # above each replica's bars
    coordinator = marked / "ps" / "coordinator.json"
    for path, bad, words in ((coordinator, "{\"portions_by_replica\": ", "cannot be read as a JSON record"),
                             (coordinator, json.dumps({**record, "portions_by_replica": {"2": "many"}}),
                              "portions_by_replica is not a map of non-negative integers to counts"),
                             (coordinator, json.dumps({**record, "lost_replicas": "3"}),
                              "lost_replicas is not a list of ranks"),
                             (marked / "ps" / "coordinator.csv", "step,loss\n1,2\n", "has no 'iteration' column")):
        saved = path.read_bytes()
        path.write_text(bad)
        with pytest.raises(ConfigError, match=words):
            load_run(marked)
        assert_one_line_error(marked, tmp_path / "bad", path.name, words)
        path.write_bytes(saved)


def test_distbelief_runs_side_by_side_with_accuracy_against_wall_time(shared_run, tmp_path, drawn):
    runs = [shared_run("downpour-sgd"), shared_run("sandblaster-1s2r200p")]
    out = tmp_path / "cli"
    result = run([sys.executable, "-m", "crossover_sgd.plotting", *map(str, runs), "--out", str(out)], timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [str(out / f"{q.name}.png") for q in QUANTITIES] + [
        str(out / name) for name in ("server.png", "workers_downpour-sgd.png", "staleness.png", "lbfgs.png",
                                     "portions.png")]
    for name in ("staleness.png", "lbfgs.png", "portions.png", "accuracy_time.png"):
        assert_image(out / name)
    plot_runs(runs, tmp_path / "plots")
    # accuracy against wall time: per run the replicas' mean accuracy at the mean time of each evaluation
    replicas, _averaged = drawn["accuracy_time.png"][0]["lines"][:2]
    ranks = [read_metrics(f) for f in sorted(runs[0].glob("metrics_rank*.csv"))]
    assert len(ranks) == 4 and replicas[0].endswith(": replicas")
    times = [sum(float(r[i]["wall_time_s"]) for r in ranks) / 4 for i in range(len(ranks[0]))]
    accuracy = [100 * sum(float(r[i]["val_acc"]) for r in ranks) / 4 for i in range(len(ranks[0]))]
    assert replicas[1] == pytest.approx(times) and replicas[2] == pytest.approx(accuracy)
    assert replicas[1] == sorted(replicas[1]) and accuracy[-1] >= 90
    # the staleness of the Downpour run alone, the portions of the Sandblaster run alone
    assert [label.split(" (")[0] for label in drawn["staleness.png"][0]["bars"]] == ["downpour-sgd"]
    assert list(drawn["portions.png"][0]["bars"])[0].startswith("sandblaster-1s2r200p (sandblaster")
    assert drawn["portions.png"][0]["xticks"] == ["2", "3"]
