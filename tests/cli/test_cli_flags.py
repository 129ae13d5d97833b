"""``crossover-sgd train``'s flags come from the generic settings and the algorithms' option
dataclasses (the registry); the set of flags is the one users have always had."""

from __future__ import annotations

import argparse

import pytest

from crossover_sgd.algorithms.registry import REGISTERED, option_groups
from crossover_sgd.cli import build_parser

#: Every flag of ``crossover-sgd train`` before the options moved to the algorithms (commit 20c9e93).
FLAGS_BEFORE = {
    "--accum-steps", "--accum_steps", "--algorithm", "--amp", "--backend", "--batch-size", "--batch_size",
    "--channels-last", "--channels_last", "--checkpoint-every", "--checkpoint_every", "--chromosome",
    "--clip-grad-norm", "--clip_grad_norm", "--data", "--data-dir", "--data_dir", "--dataset", "--device", "--epochs",
    "--eval-every", "--eval_every", "--fair", "--gossip-buffers", "--gossip-dtype", "--gossip-momentum",
    "--gossip-overlap", "--gossip_buffers", "--gossip_dtype", "--gossip_momentum", "--gossip_overlap",
    "--gpu-per-node", "--gpu_per_node", "--groupnum", "--help", "--image-size", "--image_size", "--label-smoothing",
    "--label_smoothing", "--lars", "--lars-coef", "--lars-momentum-correction", "--lars-momentum-form",
    "--lars-trust-clip", "--lars_coef", "--lars_momentum_correction", "--lars_momentum_form", "--lars_trust_clip",
    "--local-itr", "--local_itr", "--log-level", "--log_level", "--lr", "--lr-schedule", "--lr_schedule",
    "--manual-seed", "--manual_seed", "--model", "--momentum", "--nesterov", "--nproc", "--out", "--poly-end",
    "--poly-hold-epochs", "--poly-power", "--poly_end", "--poly_hold_epochs", "--poly_power", "--resume", "--seed",
    "--segmented", "--segments", "--sgp-overlap", "--sgp-peers", "--sgp_overlap", "--sgp_peers", "--skip-nonfinite",
    "--skip_nonfinite", "--step-gamma", "--step-milestones", "--step_gamma", "--step_milestones", "--stop-at-step",
    "--stop_at_step", "--sync-grad", "--sync-lars-group-size", "--sync-lars-start-epoch", "--sync_grad",
    "--sync_lars_group_size", "--sync_lars_start_epoch", "--synthetic-classes", "--synthetic-samples",
    "--synthetic_classes", "--synthetic_samples", "--tag", "--tensorboard", "--timeout", "--warmup-epochs",
    "--warmup_epochs", "--wd-schedule", "--wd_schedule", "--weight-decay", "--weight_decay", "--workers",
    "--world-size", "--world_size", "-h",
}

#: Flags added since, each on purpose (FLAGS_BEFORE stays as it was: no flag may disappear).
FLAGS_ADDED = {
    "--dtype",  # added by issue 11.8: float64 runs, for checks of an algorithm's math
    # the peer-to-peer family's generic settings (the original code's spellings are the underscored ones)
    "--partition", "--dirichlet-alpha", "--dirichlet_alpha", "--train-data-length", "--train_data_length",
    "--local-val-fraction", "--local_val_fraction", "--norm", "--group-channels", "--group_channels",
    "--drop-rate", "--drop_rate", "--last-drop-rate", "--last_drop_rate", "--l2-lambda", "--l2_lambda",
    "--step-size", "--step_size", "--gamma",
    # the peer-to-peer family's options (issue 12; underscored: the original's spellings)
    "--graph", "--graph-degree", "--graph_degree", "--node-list", "--node_list", "--hosts", "--node-name",
    "--node_name", "--nodename", "--round", "--async-step", "--async_step", "--swap-timeout", "--swap_timeout",
    "--sleep-factor", "--sleep_factor", "--slow-nodes", "--slow_nodes", "--piw", "--use-gcoef", "--use_gcoef",
    "--eta", "--rho", "--rho-init", "--rho_init", "--rho-scaling", "--rho_scaling", "--primal-iterations",
    "--primal_iterations",
    # the parameter-server family's options (issue 13; localsgd, osp, losp, dqlosp)
    "--ps-shards", "--ps_shards", "--local-steps", "--local_steps", "--ps-lr", "--ps_lr", "--ps-lr-schedule",
    "--ps_lr_schedule", "--ps-eval-every", "--ps_eval_every", "--ps-delay", "--ps_delay", "--k-trace", "--k_trace",
    "--losp-gamma", "--losp_gamma", "--losp-gamma-schedule", "--losp_gamma_schedule", "--quant-bits", "--quant_bits",
    "--stochastic-rounding", "--stochastic_rounding",
    # DistBelief (issue 14): Downpour SGD
    "--n-fetch", "--n_fetch", "--n-push", "--n_push", "--ps-optimizer", "--ps_optimizer", "--warmstart-steps",
    "--warmstart_steps",
    # DistBelief: Sandblaster L-BFGS
    "--portion-size", "--portion_size", "--lbfgs-batch", "--lbfgs_batch", "--history-size", "--history_size",
    "--lbfgs-max-iter", "--lbfgs_max_iter", "--lbfgs-lr", "--lbfgs_lr", "--line-search", "--line_search",
    "--slow-replicas", "--slow_replicas", "--slow-factor", "--slow_factor",
    # the emulated cluster (issue 15): the local launcher's ranks on network namespaces, rate-limited links
    "--emulate-nodes", "--emulate_nodes", "--link-rate", "--link_rate",
    # MNIST-1D (issue 16): the size and seed of the generated data set
    "--mnist1d-samples", "--mnist1d_samples", "--mnist1d-seed", "--mnist1d_seed",
}


@pytest.fixture(scope="module")
def train_parser() -> argparse.ArgumentParser:
    parser = build_parser()
    (sub,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return sub.choices["train"]


def test_train_has_the_same_flags_as_before(train_parser):
    """The flags of before, plus the ones added deliberately since: none lost, none added by accident."""
    assert not FLAGS_ADDED & FLAGS_BEFORE
    expected = FLAGS_BEFORE | FLAGS_ADDED
    flags = {o for action in train_parser._actions for o in action.option_strings}
    assert flags == expected, (sorted(flags - expected), sorted(expected - flags))


def test_algorithm_flags_are_grouped_by_the_algorithms_that_read_them(train_parser):
    titles = {group.title: {o for a in group._group_actions for o in a.option_strings}
              for group in train_parser._action_groups}
    assert titles["options of allreduce"] == {"--sync-grad", "--sync_grad"}
    assert titles["options of sgp"] == {"--sgp-peers", "--sgp_peers"}
    assert "--gossip-overlap" in titles["options of sgp, crossover"]
    assert "--chromosome" in titles["options of crossover, hierarchical-crossover"]
    assert "--gossip-dtype" in titles["options of sgp, crossover, hierarchical-crossover"]
    for title, specs in option_groups():  # every group's flags are those its options declare
        declared = {f"--{s.name.replace('_', '-')}" for s in specs} | {a for s in specs for a in s.aliases}
        assert declared <= titles[f"options of {title}"]
    help_text = train_parser.format_help()
    assert all(f"options of {title}" in help_text for title, _ in option_groups())
    assert set(title.split(", ")[0] for title, _ in option_groups()) <= {cls.name for cls in REGISTERED}
