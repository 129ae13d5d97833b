"""The coordinator's L-BFGS (crossover_sgd.algorithms.distbelief.lbfgs) against torch.optim.LBFGS.

Each test runs ``lbfgs_step`` on a :class:`LocalSpace` and ``torch.optim.LBFGS.step`` on identical
float64 copies of the parameters, step() call by step() call, and compares the parameters, the
losses, torch's ``state`` (counters, step length, history, direction, previous gradient) and the
live registers.
"""

from __future__ import annotations

import dataclasses
import functools
import pickle
import random
from typing import Callable, List

import pytest
import torch
import torch.nn.functional as F
from torch.optim.lbfgs import _cubic_interpolate as torch_cubic_interpolate

from crossover_sgd.algorithms.distbelief.lbfgs import (
    DIRECTION, X, LBFGSOptions, LBFGSState, LocalSpace, VectorSpace, _cubic_interpolate, _div, _TensorScalar, lbfgs_step)
from crossover_sgd.errors import ConfigError

RTOL, ATOL = 1e-9, 1e-12
F64 = torch.float64

Params = List[torch.Tensor]


# --------------------------------------------------------------------------------------------------
# problems
# --------------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=None)
def _digits():
    from sklearn.datasets import load_digits

    features, labels = load_digits(return_X_y=True)
    x = torch.tensor(features, dtype=F64)
    std = x.std(0)
    x = (x - x.mean(0)) / torch.where(std > 0, std, torch.ones_like(std))
    return x, torch.tensor(labels, dtype=torch.long)


def logreg_params() -> Params:
    gen = torch.Generator().manual_seed(0)
    return [torch.randn(64, 10, generator=gen, dtype=F64) * 0.01, torch.zeros(10, dtype=F64)]


def logreg_loss(params: Params) -> torch.Tensor:
    """Multinomial logistic regression on standardized digits, full batch, + 1e-3/2 |W|^2."""
    w, b = params
    x, y = _digits()
    return F.cross_entropy(x @ w + b, y) + 0.5e-3 * (w * w).sum()


def rosenbrock_params(n: int) -> Callable[[], Params]:
    def make() -> Params:
        return [torch.tensor([-1.2 if i % 2 == 0 else 1.0 for i in range(n)], dtype=F64)]
    return make


def rosenbrock_loss(params: Params) -> torch.Tensor:
    (x,) = params
    return (100.0 * (x[1:] - x[:-1] ** 2) ** 2 + (1.0 - x[:-1]) ** 2).sum()


def closure_for(params: Params, loss_fn) -> Callable[[], torch.Tensor]:
    def closure() -> torch.Tensor:
        for p in params:
            p.grad = None
        loss = loss_fn(params)
        loss.backward()
        return loss
    return closure


# --------------------------------------------------------------------------------------------------
# torch and the coordinator side by side
# --------------------------------------------------------------------------------------------------


class Pair:
    """torch.optim.LBFGS and lbfgs_step/LocalSpace on identical copies of the same parameters."""

    def __init__(self, make_params: Callable[[], Params], loss_fn, **opts) -> None:
        self.loss_fn = loss_fn
        self.ref = [p.clone().requires_grad_() for p in make_params()]
        self.torch_opt = torch.optim.LBFGS(self.ref, **opts)
        self.torch_closure = closure_for(self.ref, loss_fn)
        self.mine = [p.clone().requires_grad_() for p in make_params()]
        self.space = LocalSpace(self.mine, closure_for(self.mine, loss_fn))
        self.state = LBFGSState()
        self.options = LBFGSOptions(**opts)
        self.infos: List[dict] = []

    @property
    def torch_state(self) -> dict:
        return self.torch_opt.state[self.ref[0]]

    def step(self) -> None:
        """One step() on each side, then everything compared."""
        ref_loss = self.torch_opt.step(self.torch_closure).item()
        my_loss = lbfgs_step(self.space, self.state, self.options, self.infos.append)
        assert isinstance(my_loss, float)
        assert my_loss == pytest.approx(ref_loss, rel=RTOL, abs=ATOL)
        self.assert_same()

    def assert_same(self) -> None:
        for mine, ref in zip(self.mine, self.ref):
            torch.testing.assert_close(mine.detach(), ref.detach(), rtol=RTOL, atol=ATOL)
        with torch.no_grad():
            assert float(self.loss_fn(self.mine)) == pytest.approx(float(self.loss_fn(self.ref)), rel=RTOL, abs=ATOL)
        ts, st, regs = self.torch_state, self.state, self.space.registers
        assert st.func_evals == ts["func_evals"]
        assert st.n_iter == ts["n_iter"]
        if "d" not in ts:  # torch returned at the optimality test before keeping anything
            assert st.t is None and st.direction is None and st.prev_grad is None
            assert regs == {}
            return
        assert st.t == pytest.approx(float(ts["t"]), rel=RTOL, abs=ATOL)
        assert st.H_diag == pytest.approx(float(ts["H_diag"]), rel=RTOL, abs=ATOL)
        assert st.prev_loss == pytest.approx(ts["prev_loss"], rel=RTOL, abs=ATOL)
        assert st.ro == pytest.approx([float(r) for r in ts["ro"]], rel=RTOL, abs=ATOL)
        assert len(st.old_dirs) == len(st.old_stps) == len(ts["old_dirs"]) == len(ts["old_stps"])
        for names, tensors in ((st.old_dirs, ts["old_dirs"]), (st.old_stps, ts["old_stps"]),
                               ([st.direction, st.prev_grad], [ts["d"], ts["prev_flat_grad"]])):
            for name, tensor in zip(names, tensors):
                torch.testing.assert_close(regs[name], tensor, rtol=RTOL, atol=ATOL)
        # nothing leaks: the space holds exactly what the state owns
        assert sorted(regs) == sorted(st.registers())


def run(pair: Pair, steps: int) -> Pair:
    for _ in range(steps):
        pair.step()
    return pair


# --------------------------------------------------------------------------------------------------
# the trajectories
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("history_size", [3, 10])
def test_digits_strong_wolfe_matches_torch(history_size):
    pair = run(Pair(logreg_params, logreg_loss, line_search_fn="strong_wolfe", history_size=history_size,
                    max_iter=5), 3)
    assert pair.state.n_iter >= 12  # some steps stop on max_eval (6) before max_iter
    assert len(pair.state.old_dirs) == min(history_size, pair.state.n_iter - 1)  # shifted / not full
    with torch.no_grad():
        assert float(logreg_loss(pair.mine)) < 0.5 * float(logreg_loss(logreg_params()))


def test_digits_fixed_step_matches_torch():
    pair = run(Pair(logreg_params, logreg_loss, lr=0.1, history_size=3, max_iter=5), 3)
    # without a line search the last iteration of a step does not re-evaluate: 1 + 4 per step
    assert pair.state.func_evals == 15 and pair.state.n_iter == 15


@pytest.mark.parametrize("n", [2, 10])
def test_rosenbrock_strong_wolfe_matches_torch(n):
    pair = run(Pair(rosenbrock_params(n), rosenbrock_loss, line_search_fn="strong_wolfe", history_size=10,
                    max_iter=20), 3)
    # the line search had to bracket and zoom: more evaluations than iterations
    assert pair.state.func_evals > pair.state.n_iter + 3
    with torch.no_grad():
        assert float(rosenbrock_loss(pair.mine)) < 1e-2 * float(rosenbrock_loss(rosenbrock_params(n)()))


def pseudo_huber_loss(params: Params) -> torch.Tensor:
    """sum_i sqrt(1 + (i x_i)^2) - 1: curvature that fades away from 0 (steps far too long or short)."""
    (x,) = params
    return (torch.sqrt(1 + (x * torch.arange(1, x.numel() + 1, dtype=F64)) ** 2) - 1).sum()


def bump_loss(a: float, b: float, c: float, w: float, e: float):
    """sum_i a x_i + b exp(-(x_i - c)^2 / w) + e x_i^2: a slope with a Gaussian bump (or dip) on it.
    The constants below came from a random search for line searches that reach a given branch."""
    def loss(params: Params) -> torch.Tensor:
        (x,) = params
        return (a * x + b * torch.exp(-(x - c) ** 2 / w) + e * x ** 2).sum()
    return loss


BUMP = bump_loss(-0.467220046859638, 0.6538845826401847, 0.4679385580312859, 0.21862492061911418, 0.027979129165520478)
DIP = bump_loss(-0.6312958741179411, -1.742452031227298, 1.1441262857790662, 0.11013681711181707, 0.020162158646640973)


def start_at(*values: float) -> Callable[[], Params]:
    return lambda: [torch.tensor(values, dtype=F64)]


WOLFE = dict(line_search_fn="strong_wolfe", history_size=5)


# each case reaches the rule or branch it is named after (checked by breaking that rule in lbfgs.py)
@pytest.mark.parametrize("make_params, loss_fn, opts", [
    pytest.param(rosenbrock_params(2), rosenbrock_loss, dict(WOLFE, max_iter=10, max_eval=3), id="max_eval"),
    pytest.param(rosenbrock_params(2), rosenbrock_loss, dict(WOLFE, max_iter=20, lr=0.01), id="line_search_runs_out"),
    pytest.param(rosenbrock_params(2), rosenbrock_loss, dict(WOLFE, max_iter=50, tolerance_grad=1.0), id="tolerance_grad"),
    pytest.param(start_at(3.0, -2.0, 5.0), pseudo_huber_loss, dict(WOLFE, max_iter=30), id="loss_change"),
    pytest.param(rosenbrock_params(2), rosenbrock_loss, dict(lr=1e-6, tolerance_change=1e-4, max_iter=10), id="step_change"),
    pytest.param(start_at(3.0, -2.0, 5.0), pseudo_huber_loss,
                 dict(WOLFE, max_iter=30, lr=100.0, tolerance_grad=0.0, tolerance_change=0.0), id="zoom_bracket_too_small"),
    pytest.param(start_at(0.3908456758528507), BUMP, dict(WOLFE, max_iter=10, lr=2.0), id="zoom_off_the_boundary"),
    pytest.param(start_at(-0.3755358082517901, 0.7199887988667453), DIP, dict(WOLFE, max_iter=10), id="zoom_armijo_but_not_lower"),
    pytest.param(start_at(-3.6077305143952443, -1.6973363842607778), pseudo_huber_loss, dict(WOLFE, max_iter=20),
                 id="bracketing_not_lower_than_previous"),
])
def test_stopping_rules_and_line_search_branches_match_torch(make_params, loss_fn, opts):
    pair = run(Pair(make_params, loss_fn, **opts), 2)
    assert [info["n_iter"] for info in pair.infos] == list(range(1, pair.state.n_iter + 1))


def test_iteration_callback_counts_evaluations_like_torch():
    pair = Pair(logreg_params, logreg_loss, line_search_fn="strong_wolfe", history_size=3, max_iter=5)
    for calls in range(1, 4):
        pair.step()
        last = pair.infos[-1]
        assert last["func_evals"] == pair.torch_state["func_evals"]
        assert last["n_iter"] == pair.torch_state["n_iter"]
        assert last["t"] == pytest.approx(float(pair.torch_state["t"]), rel=RTOL, abs=ATOL)
        # every evaluation is one step()'s first or one reported by an iteration
        assert calls + sum(info["ls_evals"] for info in pair.infos) == pair.torch_state["func_evals"]
    assert [info["n_iter"] for info in pair.infos] == list(range(1, pair.state.n_iter + 1))
    assert set(pair.infos[0]) == {"n_iter", "loss", "t", "func_evals", "ls_evals"}
    # the reported loss is the loss at the new point, decreasing under the line search
    losses = [info["loss"] for info in pair.infos]
    assert losses == sorted(losses, reverse=True)


# --------------------------------------------------------------------------------------------------
# early exits
# --------------------------------------------------------------------------------------------------


def test_start_at_the_optimum_returns_at_once():
    pair = Pair(lambda: [torch.ones(4, dtype=F64)], rosenbrock_loss, line_search_fn="strong_wolfe")
    for _ in range(2):
        pair.step()  # compares with torch, which returns after one evaluation
    assert pair.infos == []
    assert pair.state == LBFGSState(func_evals=2, next_register=2)
    assert torch.equal(pair.mine[0].detach(), torch.ones(4, dtype=F64))
    assert pair.space.registers == {}


def test_flat_direction_stops_without_moving_like_torch():
    """gtd > -tolerance_change: the first iteration stops before any step; torch keeps t and d."""
    pair = Pair(logreg_params, logreg_loss, line_search_fn="strong_wolfe", max_iter=5, tolerance_change=10.0)
    start = [p.detach().clone() for p in pair.mine]
    run(pair, 2)
    assert all(torch.equal(p.detach(), s) for p, s in zip(pair.mine, start))
    assert pair.state.n_iter == 2 and pair.state.func_evals == 2
    assert [info["ls_evals"] for info in pair.infos] == [0, 0]


# --------------------------------------------------------------------------------------------------
# checkpoints
# --------------------------------------------------------------------------------------------------


def test_state_round_trips_through_pickle_and_continues_like_torch():
    pair = run(Pair(logreg_params, logreg_loss, line_search_fn="strong_wolfe", history_size=3, max_iter=5), 2)
    blob = pickle.dumps(pair.state)
    assert len(blob) < 2000
    assert all(not isinstance(v, torch.Tensor) for v in dataclasses.astuple(pair.state))
    restored = pickle.loads(blob)
    assert restored == pair.state and restored is not pair.state
    # a restart: new parameter tensors and a new space, the registers copied as a checkpoint would
    pair.mine = [p.detach().clone().requires_grad_() for p in pair.mine]
    registers = {name: tensor.clone() for name, tensor in pair.space.registers.items()}
    pair.space = LocalSpace(pair.mine, closure_for(pair.mine, logreg_loss))
    pair.space.registers = registers
    pair.state = restored
    saved_at = restored.n_iter
    run(pair, 2)
    assert pair.state.n_iter > saved_at


# --------------------------------------------------------------------------------------------------
# pieces
# --------------------------------------------------------------------------------------------------


def test_cubic_interpolate_is_torchs_bit_for_bit():
    """Same inputs, same types: what torch holds as 0-dim tensors (slopes always, steps sometimes)
    is a _TensorScalar here; ``float / tensor`` is torch's reciprocal-multiply, sqrt is torch's."""
    rng = random.Random(0)
    branches = set()
    for _ in range(3000):
        x1, x2 = rng.uniform(-2, 2), rng.uniform(-2, 2)
        f1, f2, g1, g2 = (rng.uniform(-3, 3) for _ in range(4))
        bounds = None if rng.random() < 0.5 else tuple(sorted((rng.uniform(-3, 3), rng.uniform(-3, 3))))
        tensor_x = (rng.random() < 0.5, rng.random() < 0.5)
        ref_x = [torch.tensor(v, dtype=F64) if is_t else v for v, is_t in zip((x1, x2), tensor_x)]
        my_x = [_TensorScalar(v) if is_t else v for v, is_t in zip((x1, x2), tensor_x)]
        ref = torch_cubic_interpolate(ref_x[0], f1, torch.tensor(g1, dtype=F64), ref_x[1], f2,
                                      torch.tensor(g2, dtype=F64), bounds)
        mine = _cubic_interpolate(my_x[0], f1, _TensorScalar(g1), my_x[1], f2, _TensorScalar(g2), bounds)
        assert mine == float(ref), (x1, f1, g1, x2, f2, g2, bounds, tensor_x)
        assert isinstance(mine, _TensorScalar) == isinstance(ref, torch.Tensor)
        d1 = g1 + g2 - 3 * (f1 - f2) / (x1 - x2)
        branches.add((d1 * d1 - g1 * g2 >= 0, x1 <= x2, bounds is None))
    assert len(branches) == 8


def test_division_follows_torchs_scalar_types():
    values = [3.7, -1e-300, 0.0, -0.0, 7.0, 1e300, float("inf")]
    for a in values:
        for b in values:
            for a_t, b_t in ((False, True), (True, False), (True, True)):
                ref = (torch.tensor(a, dtype=F64) if a_t else a) / (torch.tensor(b, dtype=F64) if b_t else b)
                my_a, my_b = (_TensorScalar(a) if a_t else a), (_TensorScalar(b) if b_t else b)
                for mine in (_div(my_a, my_b), my_a / my_b):
                    assert isinstance(mine, _TensorScalar)
                    assert (mine == float(ref)) or (mine != mine and float(ref) != float(ref)), (a, b, a_t, b_t)
    assert _div(1.0, 0.0) == float("inf") and _div(-1.0, 0.0) == float("-inf") and _div(0.0, 0.0) != _div(0.0, 0.0)


@pytest.mark.parametrize("make_params, loss_fn, opts", [
    pytest.param(rosenbrock_params(10), rosenbrock_loss, dict(WOLFE, max_iter=100, lr=10.0), id="rosenbrock10"),
    pytest.param(logreg_params, logreg_loss, dict(WOLFE, max_iter=25, history_size=10), id="digits"),
])
def test_long_runs_are_torchs_bit_for_bit(make_params, loss_fn, opts):
    pair = run(Pair(make_params, loss_fn, **opts), 2)
    assert all(torch.equal(mine.detach(), ref.detach()) for mine, ref in zip(pair.mine, pair.ref))
    assert pair.state.n_iter >= 30


def test_options_follow_torch_defaults_and_refuse_bad_values():
    assert LBFGSOptions(max_iter=8).max_eval == 10
    assert LBFGSOptions(max_iter=8, max_eval=3).max_eval == 3
    for bad in (dict(line_search_fn="armijo"), dict(lr=-1.0), dict(history_size=0),
                dict(line_search_fn="strong_wolfe", max_eval=0)):
        with pytest.raises(ConfigError):
            LBFGSOptions(**bad)


def test_local_space_ops():
    w = torch.tensor([[1.0, -2.0], [3.0, 0.5]], dtype=F64, requires_grad=True)
    b = torch.tensor([4.0], dtype=F64, requires_grad=True)
    unused = torch.tensor([9.0], dtype=F64, requires_grad=True)  # no gradient: zeros, like torch
    space = LocalSpace([w, b, unused], closure_for([w, b], lambda ps: (ps[0] ** 2).sum() + 2 * ps[1].sum()))
    assert isinstance(space, VectorSpace)
    space.copy("a", X)
    space.scaled("h", "a", 0.5)
    space.sub("k", "a", "h")
    assert space.dot("k", "h") == pytest.approx(0.25 * (1 + 4 + 9 + 0.25 + 16 + 81))
    assert space.max_abs("a") == 9.0 and space.sum_abs("a") == 19.5
    assert space.evaluate(1.0, "a", "g") == pytest.approx(4 * (1 + 4 + 9 + 0.25) + 16)  # at 2x
    assert space._read("g").tolist() == [4.0, -8.0, 12.0, 2.0, 2.0, 0.0]
    assert space._read(X).tolist() == [1.0, -2.0, 3.0, 0.5, 4.0, 9.0]  # x restored
    space.axpy(X, -1.0, "h")
    assert w.tolist() == [[0.5, -1.0], [1.5, 0.25]] and b.tolist() == [2.0] and unused.tolist() == [4.5]
    assert space.evaluate_here("g2") == pytest.approx(0.25 + 1 + 2.25 + 0.0625 + 4)
    space.scaled(X, "a", -1.0)  # writing x writes the parameters
    assert w.tolist() == [[-1.0, 2.0], [-3.0, -0.5]] and b.tolist() == [-4.0] and unused.tolist() == [-9.0]
    space.free("a", "h", "k", "g", "g2")
    assert space.registers == {}
    with pytest.raises(ValueError):
        space.free(X)
    with pytest.raises(KeyError, match="no register 'nope'"):
        space.dot("nope", X)
    with pytest.raises(ValueError):
        LocalSpace([], lambda: torch.zeros(()))


@pytest.mark.parametrize("make_params, loss_fn, opts", [
    pytest.param(start_at(3.0, -2.0, 5.0), pseudo_huber_loss,
                 dict(max_iter=30, lr=100.0, tolerance_grad=0.0, tolerance_change=0.0), id="long_zoom"),
    pytest.param(rosenbrock_params(2), rosenbrock_loss, dict(max_iter=20, lr=0.01), id="long_bracketing"),
])
def test_registers_stay_few_during_line_searches(make_params, loss_fn, opts):
    """The line search frees the gradients it drops: at an evaluation the space holds the history
    (2 m), d, the iteration's gradient, at most two bracket gradients and the new one: 2 m + 5."""
    peak = []

    class Peak(LocalSpace):
        def _closure_here(self, dst):
            loss = super()._closure_here(dst)
            peak.append(len(self.registers))
            return loss

    params = [p.requires_grad_() for p in make_params()]
    space = Peak(params, closure_for(params, loss_fn))
    state, options = LBFGSState(), LBFGSOptions(line_search_fn="strong_wolfe", history_size=3, **opts)
    for _ in range(2):
        lbfgs_step(space, state, options)
    assert state.func_evals > state.n_iter + 10 and len(state.old_dirs) == 3
    assert max(peak) <= 2 * 3 + 5
    assert sorted(space.registers) == sorted(state.registers()) and DIRECTION in space.registers
