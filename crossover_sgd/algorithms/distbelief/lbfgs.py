"""Sandblaster L-BFGS (DistBelief, Dean et al. 2012): batch L-BFGS run by a *coordinator* that holds
only scalars.

Every vector (the parameters ``x``, gradients, the direction ``d``, the L-BFGS history ``y_i``/``s_i``,
the line-search brackets) lives in a :class:`VectorSpace`, named by a string; the coordinator issues
vector operations by name and gets back scalars. A sharded space runs each op on every shard and
combines the partial scalars by sum (:meth:`~VectorSpace.dot`, :meth:`~VectorSpace.sum_abs`, the loss)
or max (:meth:`~VectorSpace.max_abs`); this module knows nothing of shards.

:func:`lbfgs_step` is one ``torch.optim.LBFGS.step(closure)``: the same conditions, in the same order,
on the same values (the port of torch's ``step``, ``_strong_wolfe`` and ``_cubic_interpolate``, with
its scalars as Python floats, marked where torch holds them as 0-dim tensors: see
:class:`_TensorScalar`). On :class:`LocalSpace` (registers are flat torch tensors, ``x`` is the
flattened ``params``) it reproduces torch's float64 iterates bit for bit (see the tests). Not so on
float32 parameters (torch does that scalar arithmetic in float32, the coordinator in float64), nor
on a sharded space: a dot product or a sum summed shard by shard rounds differently from one
``torch.dot`` (max_abs is exact either way), and the line search's branches turn those last bits
into different trajectories over many iterations.

Register names: ``x`` (the parameters, :data:`X`), ``d`` (the direction, :data:`DIRECTION`), and names
the coordinator makes up from :attr:`LBFGSState.next_register` (``g7``, ``y8``, ``s9``, ``ls10``...).
:meth:`LBFGSState.registers` lists the ones a state owns between steps (``d``, the previous
gradient, the history): with ``x`` they are what a checkpoint must save besides the state.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Protocol, Sequence, Tuple, runtime_checkable

import torch

from crossover_sgd.errors import ConfigError

__all__ = ["VectorSpace", "LocalSpace", "LBFGSOptions", "LBFGSState", "lbfgs_step", "X", "DIRECTION"]

#: The register that holds the parameters.
X = "x"
#: The register that holds the search direction (kept between steps, like torch's ``state["d"]``).
DIRECTION = "d"


@runtime_checkable
class VectorSpace(Protocol):
    """Vectors held elsewhere, named by strings (``'x'``, ``'g'``, ``'d'``, ``'y3'``...). Every op is one
    round of commands. Ops that write ``dst`` create it, or replace it where it exists; ``dst`` may
    be one of the sources (elementwise ops)."""

    def copy(self, dst: str, src: str) -> None:
        """``dst = src``."""

    def scaled(self, dst: str, src: str, a: float) -> None:
        """``dst = a * src`` (like ``torch.mul(src, a)``)."""

    def sub(self, dst: str, a: str, b: str) -> None:
        """``dst = a - b``."""

    def axpy(self, dst: str, alpha: float, src: str) -> None:
        """``dst += alpha * src`` in place (like ``dst.add_(src, alpha=alpha)``)."""

    def dot(self, a: str, b: str) -> float:
        """``a . b`` (shards: the sum of the partial dots)."""

    def max_abs(self, a: str) -> float:
        """``max |a_i|`` (shards: the max of the partial maxima)."""

    def sum_abs(self, a: str) -> float:
        """``sum |a_i|`` (shards: the sum of the partial sums)."""

    def free(self, *names: str) -> None:
        """Drop registers."""

    def evaluate(self, t: float, d: str, dst: str) -> float:
        """The loss at ``x + t*d`` (``x`` itself unchanged); its gradient goes to ``dst``."""

    def evaluate_here(self, dst: str) -> float:
        """The loss at ``x``; its gradient goes to ``dst``."""


# --------------------------------------------------------------------------------------------------
# options and state
# --------------------------------------------------------------------------------------------------


@dataclass
class LBFGSOptions:
    """``torch.optim.LBFGS``'s settings (``maximize`` aside); ``max_eval`` None means
    ``max_iter * 5 // 4``, as in torch, and is resolved on construction."""

    lr: float = 1.0
    max_iter: int = 20
    max_eval: Optional[int] = None
    tolerance_grad: float = 1e-7
    tolerance_change: float = 1e-9
    history_size: int = 100
    line_search_fn: Optional[str] = None

    def __post_init__(self) -> None:
        if self.max_eval is None:
            self.max_eval = self.max_iter * 5 // 4
        if not 0.0 <= self.lr:
            raise ConfigError(f"{{lr}} {self.lr} is invalid: use a learning rate >= 0")
        if self.history_size < 1:
            # torch would pop from an empty history (IndexError) on the first memory update
            raise ConfigError(f"{{history_size}} {self.history_size} is invalid: use an integer >= 1")
        if self.line_search_fn not in (None, "strong_wolfe"):
            # torch raises "only 'strong_wolfe' is supported" inside step(); we refuse up front
            raise ConfigError(f"{{line_search_fn}} {self.line_search_fn!r} is invalid: "
                              "only 'strong_wolfe' (or none) is supported")
        if self.line_search_fn is not None and self.max_eval < 1:
            # the first line search would get max_ls < 0 (torch: UnboundLocalError)
            raise ConfigError(f"{{max_eval}} {self.max_eval} is invalid with a line search: use an integer >= 1")


@dataclass
class LBFGSState:
    """What torch keeps in ``optimizer.state``, as plain Python values (picklable, small): the
    vectors themselves stay in the space, under the names kept here."""

    func_evals: int = 0
    n_iter: int = 0
    #: the last step length (torch's ``state["t"]``); None before the first iteration
    t: Optional[float] = None
    H_diag: float = 1.0
    #: ``1 / (y_i . s_i)`` for the history, oldest first
    ro: List[float] = field(default_factory=list)
    #: the ``y_i`` registers (torch's ``old_dirs``), oldest first
    old_dirs: List[str] = field(default_factory=list)
    #: the ``s_i`` registers (torch's ``old_stps``), oldest first
    old_stps: List[str] = field(default_factory=list)
    #: the direction register (:data:`DIRECTION`) once there is one
    direction: Optional[str] = None
    #: the register holding the previous gradient (torch's ``prev_flat_grad``)
    prev_grad: Optional[str] = None
    prev_loss: Optional[float] = None
    #: the counter that makes register names unique
    next_register: int = 0

    def new_register(self, kind: str) -> str:
        """A fresh register name (``kind`` + a number)."""
        name = f"{kind}{self.next_register}"
        self.next_register += 1
        return name

    def registers(self) -> List[str]:
        """The registers this state owns between steps (``x`` aside)."""
        names = [n for n in (self.direction, self.prev_grad) if n is not None]
        return names + list(self.old_dirs) + list(self.old_stps)


# --------------------------------------------------------------------------------------------------
# the port of torch.optim.lbfgs
# --------------------------------------------------------------------------------------------------


# Bit-exactness. torch's LBFGS computes its scalars partly as Python floats (losses, lr, the first
# t_prev = 0) and partly as 0-dim tensors (every dot product and reduction, and what is computed from
# them: gtd, ys, ro, H_diag, the interpolated steps). In float64 the two agree on + - * and on
# tensor / tensor, but not on ``python_float / tensor``, which torch evaluates as
# ``python_float * tensor.reciprocal()`` (two roundings): the cubic interpolation's
# ``3 * (f1 - f2) / (x1 - x2)`` is one such division whenever a bracket end is a tensor step. So the
# coordinator marks the scalars torch holds as tensors (:class:`_TensorScalar`, a float whose
# arithmetic keeps the mark) and divides like torch (:func:`_div`); it also takes square roots with
# torch's kernel (:func:`_sqrt`).


def _ieee_div(a: float, b: float) -> float:
    """``a / b`` with IEEE semantics where Python raises (x/0 is +-inf, 0/0 nan)."""
    try:
        return a / b
    except ZeroDivisionError:
        if a != a or a == 0:
            return math.nan
        return math.copysign(math.inf, a) * math.copysign(1.0, b)


class _TensorScalar(float):
    """A float that torch's LBFGS would hold as a 0-dim float64 tensor: arithmetic with it gives
    :class:`_TensorScalar` again, and a plain number divided by it is multiplied by its reciprocal,
    as ``Tensor.__rtruediv__`` does."""

    __slots__ = ()

    def __add__(self, other: float) -> "_TensorScalar":
        return _TensorScalar(float(self) + float(other))

    __radd__ = __add__

    def __sub__(self, other: float) -> "_TensorScalar":
        return _TensorScalar(float(self) - float(other))

    def __rsub__(self, other: float) -> "_TensorScalar":
        return _TensorScalar(float(other) - float(self))

    def __mul__(self, other: float) -> "_TensorScalar":
        return _TensorScalar(float(self) * float(other))

    __rmul__ = __mul__

    def __truediv__(self, other: float) -> "_TensorScalar":
        return _div(self, other)

    def __rtruediv__(self, other: float) -> "_TensorScalar":
        return _div(other, self)

    def __neg__(self) -> "_TensorScalar":
        return _TensorScalar(-float(self))

    def __abs__(self) -> "_TensorScalar":
        return _TensorScalar(abs(float(self)))


def _div(a: float, b: float) -> float:
    """``a / b`` as torch computes it when :class:`_TensorScalar` operands are 0-dim tensors."""
    if isinstance(b, _TensorScalar):
        if isinstance(a, _TensorScalar):
            return _TensorScalar(_ieee_div(float(a), float(b)))
        # Tensor.__rtruediv__: self.reciprocal() * other (reciprocal is correctly rounded)
        return _TensorScalar(float(a) * _ieee_div(1.0, float(b)))
    if isinstance(a, _TensorScalar):
        return _TensorScalar(_ieee_div(float(a), float(b)))
    return _ieee_div(a, b)  # plain floats (where torch's Python floats would raise, IEEE instead)


def _sqrt(v: float) -> "_TensorScalar":
    """torch's ``d2_square.sqrt()`` on a float64 0-dim tensor, not ``math.sqrt``: torch's CPU sqrt
    kernel is not always correctly rounded (about 1% of doubles come out one ulp away from
    ``math.sqrt`` here), and the interpolated step must be torch's to the bit."""
    return _TensorScalar(torch.tensor(float(v), dtype=torch.float64).sqrt().item())


def _dot(space: "VectorSpace", a: str, b: str) -> "_TensorScalar":
    return _TensorScalar(space.dot(a, b))


def _max_abs(space: "VectorSpace", a: str) -> "_TensorScalar":
    return _TensorScalar(space.max_abs(a))


def _sum_abs(space: "VectorSpace", a: str) -> "_TensorScalar":
    return _TensorScalar(space.sum_abs(a))


def _cubic_interpolate(x1: float, f1: float, g1: float, x2: float, f2: float, g2: float,
                       bounds: Optional[Tuple[float, float]] = None) -> float:
    """torch's ``_cubic_interpolate`` on Python floats (minimiser of the cubic through two points
    with their values and slopes, clipped to ``bounds``); pass as :class:`_TensorScalar` what torch
    passes as tensors (the slopes ``g1``, ``g2`` always, steps that came out of an interpolation)."""
    if bounds is not None:
        xmin_bound, xmax_bound = bounds
    else:
        xmin_bound, xmax_bound = (x1, x2) if x1 <= x2 else (x2, x1)
    d1 = g1 + g2 - _div(3 * (f1 - f2), (x1 - x2))  # float / tensor: see _div
    d2_square = d1 * d1 - g1 * g2  # torch: d1**2, which is d1*d1 exactly (and cannot raise OverflowError)
    if d2_square >= 0:
        d2 = _sqrt(d2_square)
        if x1 <= x2:
            min_pos = x2 - (x2 - x1) * _div(g2 + d2 - d1, g2 - g1 + 2 * d2)
        else:
            min_pos = x1 - (x1 - x2) * _div(g1 + d2 - d1, g1 - g2 + 2 * d2)
        return min(max(min_pos, xmin_bound), xmax_bound)
    else:
        return _div(xmin_bound + xmax_bound, 2.0)


def _strong_wolfe(space: VectorSpace, state: LBFGSState, t: float, d: str, f: float, g: str, gtd: float,
                  c1: float = 1e-4, c2: float = 0.9, tolerance_change: float = 1e-9,
                  max_ls: int = 25) -> Tuple[float, str, float, int]:
    """torch's ``_strong_wolfe`` from ``x`` along register ``d``: returns ``(f_new, g_new, t,
    ls_func_evals)`` where ``g_new`` names the gradient register at the chosen point (``g`` itself
    when the search settles on ``t = 0``). Every gradient it made and no longer needs is freed.

    torch clones the gradients it keeps in the bracket; registers are never written in place after an
    evaluation made them, so sharing names is the same thing.
    """
    d_norm = _max_abs(space, d)
    owned: List[str] = []  # gradient registers made here and not freed yet

    def obj_func(step: float) -> Tuple[float, str]:
        name = state.new_register("ls")
        owned.append(name)
        return float(space.evaluate(float(step), d, name)), name

    def release(*live: str) -> None:
        dead = [n for n in owned if n not in live]
        if dead:
            space.free(*dead)
            owned[:] = [n for n in owned if n in live]

    # evaluate objective and gradient using initial step
    f_new, g_new = obj_func(t)
    ls_func_evals = 1
    gtd_new = _dot(space, g_new, d)

    # bracket an interval containing a point satisfying the Wolfe criteria
    t_prev, f_prev, g_prev, gtd_prev = 0.0, f, g, gtd
    done = False
    ls_iter = 0
    bracket: Optional[List[float]] = None
    bracket_f: List[float] = []
    bracket_g: List[str] = []
    bracket_gtd: List[float] = []
    while ls_iter < max_ls:
        # check conditions
        if f_new > (f + c1 * t * gtd) or (ls_iter > 1 and f_new >= f_prev):
            bracket = [t_prev, t]
            bracket_f = [f_prev, f_new]
            bracket_g = [g_prev, g_new]
            bracket_gtd = [gtd_prev, gtd_new]
            break

        if abs(gtd_new) <= -c2 * gtd:
            bracket = [t]
            bracket_f = [f_new]
            bracket_g = [g_new]
            done = True
            break

        if gtd_new >= 0:
            bracket = [t_prev, t]
            bracket_f = [f_prev, f_new]
            bracket_g = [g_prev, g_new]
            bracket_gtd = [gtd_prev, gtd_new]
            break

        # interpolate
        min_step = t + 0.01 * (t - t_prev)
        max_step = t * 10
        tmp = t
        t = _cubic_interpolate(t_prev, f_prev, gtd_prev, t, f_new, gtd_new, bounds=(min_step, max_step))

        # next step
        t_prev = tmp
        f_prev = f_new
        g_prev = g_new
        gtd_prev = gtd_new
        release(g_prev)
        f_new, g_new = obj_func(t)
        ls_func_evals += 1
        gtd_new = _dot(space, g_new, d)
        ls_iter += 1

    # reached max number of iterations?
    if ls_iter == max_ls:
        bracket = [0.0, t]
        bracket_f = [f, f_new]
        bracket_g = [g, g_new]
    if bracket is None:  # max_ls < 0 (LBFGSOptions refuses the settings that lead here)
        raise RuntimeError(f"strong-Wolfe line search with max_ls {max_ls} < 0")
    release(*bracket_g)

    # zoom phase: we now have a point satisfying the criteria, or a bracket around it. We refine
    # the bracket until we find the exact point satisfying the criteria
    insuf_progress = False
    # find high and low points in bracket
    low_pos, high_pos = (0, 1) if bracket_f[0] <= bracket_f[-1] else (1, 0)
    while not done and ls_iter < max_ls:
        # line-search bracket is so small
        if abs(bracket[1] - bracket[0]) * d_norm < tolerance_change:
            break

        # compute new trial value
        t = _cubic_interpolate(bracket[0], bracket_f[0], bracket_gtd[0], bracket[1], bracket_f[1], bracket_gtd[1])

        # test that we are making sufficient progress: in case `t` is so close to boundary, we mark
        # that we are making insufficient progress, and if
        #   + we have made insufficient progress in the last step, or
        #   + `t` is at one of the boundary,
        # we will move `t` to a position which is `0.1 * len(bracket)` away from the nearest
        # boundary point.
        eps = 0.1 * (max(bracket) - min(bracket))
        if min(max(bracket) - t, t - min(bracket)) < eps:
            # interpolation close to boundary
            if insuf_progress or t >= max(bracket) or t <= min(bracket):
                # evaluate at 0.1 away from boundary
                if abs(t - max(bracket)) < abs(t - min(bracket)):
                    t = max(bracket) - eps
                else:
                    t = min(bracket) + eps
                insuf_progress = False
            else:
                insuf_progress = True
        else:
            insuf_progress = False

        # Evaluate new point
        f_new, g_new = obj_func(t)
        ls_func_evals += 1
        gtd_new = _dot(space, g_new, d)
        ls_iter += 1

        if f_new > (f + c1 * t * gtd) or f_new >= bracket_f[low_pos]:
            # Armijo condition not satisfied or not lower than lowest point
            bracket[high_pos] = t
            bracket_f[high_pos] = f_new
            bracket_g[high_pos] = g_new
            bracket_gtd[high_pos] = gtd_new
            low_pos, high_pos = (0, 1) if bracket_f[0] <= bracket_f[1] else (1, 0)
        else:
            if abs(gtd_new) <= -c2 * gtd:
                # Wolfe conditions satisfied
                done = True
            elif gtd_new * (bracket[high_pos] - bracket[low_pos]) >= 0:
                # old high becomes new low
                bracket[high_pos] = bracket[low_pos]
                bracket_f[high_pos] = bracket_f[low_pos]
                bracket_g[high_pos] = bracket_g[low_pos]
                bracket_gtd[high_pos] = bracket_gtd[low_pos]

            # new point becomes new low
            bracket[low_pos] = t
            bracket_f[low_pos] = f_new
            bracket_g[low_pos] = g_new
            bracket_gtd[low_pos] = gtd_new
        release(*bracket_g)

    # return stuff
    t = bracket[low_pos]
    f_new = bracket_f[low_pos]
    g_new = bracket_g[low_pos]
    release(g_new)
    return f_new, g_new, t, ls_func_evals


def lbfgs_step(space: VectorSpace, state: LBFGSState, options: LBFGSOptions,
               on_iteration: Optional[Callable[[dict], None]] = None) -> float:
    """One ``torch.optim.LBFGS.step(closure)``: up to ``options.max_iter`` L-BFGS iterations from
    register ``x``, which it moves; returns the loss at ``x`` on entry, as torch does.

    ``on_iteration(info)`` runs at the end of every inner iteration (also the one that stops on a
    too-small directional derivative without moving), with ``n_iter`` (the state's running count),
    ``loss`` (torch's ``loss`` then: at the new ``x``, except after the last iteration without a
    line search, which does not re-evaluate), ``t`` (the step length), ``func_evals`` (the state's
    running count, torch's ``state["func_evals"]``) and ``ls_evals`` (evaluations in this
    iteration).
    """
    lr = options.lr
    max_iter = options.max_iter
    max_eval = options.max_eval
    assert max_eval is not None  # resolved by LBFGSOptions.__post_init__
    tolerance_grad = options.tolerance_grad
    tolerance_change = options.tolerance_change
    line_search_fn = options.line_search_fn
    history_size = options.history_size

    # evaluate initial f(x) and df/dx
    flat_grad = state.new_register("g")
    orig_loss = loss = float(space.evaluate_here(flat_grad))
    current_evals = 1
    state.func_evals += 1

    opt_cond = _max_abs(space, flat_grad) <= tolerance_grad

    # optimal condition
    if opt_cond:
        space.free(flat_grad)
        return orig_loss

    d = DIRECTION
    t = state.t
    old_dirs = state.old_dirs
    old_stps = state.old_stps
    ro = state.ro
    H_diag = state.H_diag
    prev_flat_grad = state.prev_grad
    prev_loss = state.prev_loss

    def report(ls_evals: int) -> None:
        if on_iteration is not None:
            on_iteration({"n_iter": state.n_iter, "loss": loss, "t": float(t), "func_evals": state.func_evals,
                          "ls_evals": ls_evals})

    n_iter = 0
    # optimize for a max of max_iter iterations
    while n_iter < max_iter:
        # keep track of nb of iterations
        n_iter += 1
        state.n_iter += 1

        ############################################################
        # compute gradient descent direction
        ############################################################
        if state.n_iter == 1:
            space.scaled(d, flat_grad, -1.0)  # d = -g (negation is exact either way)
            old_dirs = []
            old_stps = []
            ro = []
            H_diag = 1.0
        else:
            # do lbfgs update (update memory)
            assert prev_flat_grad is not None and t is not None
            y = state.new_register("y")
            s = state.new_register("s")
            space.sub(y, flat_grad, prev_flat_grad)
            space.scaled(s, d, float(t))
            ys = _dot(space, y, s)  # y*s
            if ys > 1e-10:
                # updating memory
                if len(old_dirs) == history_size:
                    # shift history by one (limited-memory)
                    space.free(old_dirs.pop(0), old_stps.pop(0))
                    ro.pop(0)

                # store new direction/step
                old_dirs.append(y)
                old_stps.append(s)
                ro.append(_div(1.0, ys))

                # update scale of initial Hessian approximation
                H_diag = _div(ys, _dot(space, y, y))  # (y*y)
            else:
                space.free(y, s)

            # compute the approximate (L-BFGS) inverse Hessian multiplied by the gradient
            num_old = len(old_dirs)
            al: List[float] = [0.0] * num_old

            # iteration in L-BFGS loop collapsed to use just one buffer: q and then r/d are the
            # register d (the old direction is spent: s holds what the memory needed of it)
            space.scaled(d, flat_grad, -1.0)  # q = -g
            for i in range(num_old - 1, -1, -1):
                al[i] = _dot(space, old_stps[i], d) * ro[i]
                space.axpy(d, float(-al[i]), old_dirs[i])

            # multiply by initial Hessian; r/d is the final direction
            space.scaled(d, d, float(H_diag))  # d = r = torch.mul(q, H_diag)
            for i in range(num_old):
                be_i = _dot(space, old_dirs[i], d) * ro[i]
                space.axpy(d, float(al[i] - be_i), old_stps[i])

        # prev_flat_grad = flat_grad: gradient registers are never written after the evaluation
        # that made them, so naming the same register is torch's copy
        if prev_flat_grad is not None and prev_flat_grad != flat_grad:
            space.free(prev_flat_grad)
        prev_flat_grad = flat_grad
        prev_loss = loss

        ############################################################
        # compute step length
        ############################################################
        # reset initial guess for step size
        if state.n_iter == 1:
            t = min(1.0, _div(1.0, _sum_abs(space, flat_grad))) * lr
        else:
            t = lr

        # directional derivative
        gtd = _dot(space, flat_grad, d)  # g * d

        # directional derivative is below tolerance
        if gtd > -tolerance_change:
            report(0)
            break

        # optional line search: user function
        ls_func_evals = 0
        if line_search_fn is not None:
            # perform line search (torch passes no tolerance_change: the search uses its 1e-9)
            loss, flat_grad, t, ls_func_evals = _strong_wolfe(
                space, state, t, d, loss, flat_grad, gtd, max_ls=max_eval - current_evals)
            space.axpy(X, float(t), d)
            opt_cond = _max_abs(space, flat_grad) <= tolerance_grad
        else:
            # no line search, simply move with fixed-step
            space.axpy(X, float(t), d)
            if n_iter != max_iter:
                # re-evaluate function only if not in last iteration
                flat_grad = state.new_register("g")
                loss = float(space.evaluate_here(flat_grad))
                opt_cond = _max_abs(space, flat_grad) <= tolerance_grad
                ls_func_evals = 1

        # update func eval
        current_evals += ls_func_evals
        state.func_evals += ls_func_evals
        report(ls_func_evals)

        ############################################################
        # check conditions
        ############################################################
        if n_iter == max_iter:
            break

        if current_evals >= max_eval:
            break

        # optimal condition
        if opt_cond:
            break

        # lack of progress. torch: d.mul(t).abs().max() <= tolerance_change; |fl(t*d_i)| is
        # fl(|t|*|d_i|) and rounding is monotone, so the max of the products is exactly
        # |t| * max|d_i| (one max_abs, no scaled copy of d)
        if abs(t) * _max_abs(space, d) <= tolerance_change:
            break

        if abs(loss - prev_loss) < tolerance_change:
            break

    if flat_grad != prev_flat_grad:
        space.free(flat_grad)
    if state.n_iter > 0:
        state.direction = d
    # plain floats in the state: torch's next step only multiplies by these, where the marks
    # make no difference
    state.t = None if t is None else float(t)
    state.old_dirs = old_dirs
    state.old_stps = old_stps
    state.ro = [float(r) for r in ro]
    state.H_diag = float(H_diag)
    state.prev_grad = prev_flat_grad
    state.prev_loss = prev_loss
    return orig_loss


# --------------------------------------------------------------------------------------------------
# a space on local tensors
# --------------------------------------------------------------------------------------------------


class LocalSpace:
    """A :class:`VectorSpace` on this process: registers are flat tensors, :data:`X` is the flattened
    ``params`` (read by concatenation, written in place per parameter, like torch's ``_add_grad``),
    and an evaluation calls ``closure`` (torch's LBFGS closure: zero the gradients, compute the loss,
    ``backward()``, return the loss) with gradients enabled."""

    def __init__(self, params: Sequence[torch.Tensor], closure: Callable[[], torch.Tensor]) -> None:
        self.params: List[torch.Tensor] = list(params)
        if not self.params:
            raise ValueError("LocalSpace needs at least one parameter")
        if any(torch.is_complex(p) for p in self.params):
            raise ValueError("LocalSpace supports real parameters only")
        self.closure = closure
        self.registers: Dict[str, torch.Tensor] = {}

    # reading and writing registers -------------------------------------------------------------

    def _read(self, name: str) -> torch.Tensor:
        if name == X:
            return torch.cat([p.detach().reshape(-1) for p in self.params])
        try:
            return self.registers[name]
        except KeyError:
            raise KeyError(f"no register {name!r} (live: {sorted(self.registers)})") from None

    @torch.no_grad()
    def _write(self, name: str, value: torch.Tensor) -> None:
        if name == X:
            offset = 0
            for p in self.params:
                p.copy_(value[offset:offset + p.numel()].view_as(p))
                offset += p.numel()
        else:
            self.registers[name] = value

    @torch.no_grad()
    def _add_to_x(self, alpha: float, update: torch.Tensor) -> None:
        # torch's LBFGS._add_grad
        offset = 0
        for p in self.params:
            numel = p.numel()
            p.add_(update[offset:offset + numel].view_as(p), alpha=alpha)
            offset += numel

    def _gather_flat_grad(self) -> torch.Tensor:
        # torch's LBFGS._gather_flat_grad
        views = []
        for p in self.params:
            if p.grad is None:
                view = p.new(p.numel()).zero_()
            elif p.grad.is_sparse:
                view = p.grad.to_dense().view(-1)
            else:
                view = p.grad.view(-1)
            views.append(view)
        return torch.cat(views, 0)

    def _closure_here(self, dst: str) -> float:
        with torch.enable_grad():
            loss = float(self.closure().detach())
        self.registers[dst] = self._gather_flat_grad()
        return loss

    # the ops -----------------------------------------------------------------------------------

    def copy(self, dst: str, src: str) -> None:
        self._write(dst, self._read(src).clone())

    def scaled(self, dst: str, src: str, a: float) -> None:
        self._write(dst, torch.mul(self._read(src), a))

    def sub(self, dst: str, a: str, b: str) -> None:
        self._write(dst, self._read(a).sub(self._read(b)))

    @torch.no_grad()
    def axpy(self, dst: str, alpha: float, src: str) -> None:
        if dst == X:
            self._add_to_x(alpha, self._read(src))
        else:
            self._read(dst).add_(self._read(src), alpha=alpha)

    def dot(self, a: str, b: str) -> float:
        return float(self._read(a).dot(self._read(b)))

    def max_abs(self, a: str) -> float:
        return float(self._read(a).abs().max())

    def sum_abs(self, a: str) -> float:
        return float(self._read(a).abs().sum())

    def free(self, *names: str) -> None:
        for name in names:
            if name == X:
                raise ValueError("cannot free the parameters register 'x'")
            self.registers.pop(name, None)

    def evaluate(self, t: float, d: str, dst: str) -> float:
        # torch's LBFGS._directional_evaluate: x += t*d, closure, restore x exactly
        with torch.no_grad():
            x_init = [p.clone(memory_format=torch.contiguous_format) for p in self.params]
        self._add_to_x(t, self._read(d))
        loss = self._closure_here(dst)
        with torch.no_grad():
            for p, saved in zip(self.params, x_init):
                p.copy_(saved)
        return loss

    def evaluate_here(self, dst: str) -> float:
        return self._closure_here(dst)
