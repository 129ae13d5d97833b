"""LARS (Layer-wise Adaptive Rate Scaling) as used with Crossover-SGD, MXNet style.

Standalone package (depends on torch only).

Math
----
For each parameter tensor ``w`` with gradient ``g`` that is not excluded (by
default: not 1-D, i.e. not a bias or normalisation parameter), LARS rescales the
step by the trust ratio::

    t = eta * ||w|| / (||g|| + wd * ||w|| + eps)      (t = 1 if ||w|| = 0 or ||g|| = 0)
    d = g + wd * w                                    (weight decay inside the scaled step)

so the local learning rate is ``lr * t``. Two optional clippings (at most one):

* ``larc=True``, LARC (NVIDIA apex ``LARC(clip=True)``, timm ``Lars(trust_clip=True)``):
  ``t = min(t / lr, 1)`` (still 1 where a norm is 0), so the local lr is ``min(t, lr)``;
* ``trust_ratio_max=c``, a cap on the trust ratio: ``t = min(t, c)``, local lr
  ``lr * min(t, c)`` (not LARC, also not for ``c = 1``).

Excluded tensors use ``t = 1`` and no weight decay (plain SGD with momentum).

Two momentum forms:

* MXNet/TF form (the study's), lr *inside* the buffer::

      buf = m * buf + lr * t * d ;   w -= buf

* PyTorch form, lr *outside* the buffer::

      buf = m * buf + t * d ;        w -= lr * buf

They coincide while lr is constant. When lr changes, the MXNet buffer still holds
velocity accumulated at older learning rates; multiplying ``m`` by ``lr_t / lr_{t-1}``
(``momentum_correction=True``) rescales it, and by induction ``buf_mxnet = lr_t *
buf_pytorch``, i.e. the two forms become identical. Nesterov momentum steps by
``lr * t * d + m * buf`` (MXNet) or ``lr * (t * d + m * buf)`` (PyTorch).

Study defaults (:data:`STUDY_DEFAULTS`): ``eta = 0.0025``, ``momentum = 0.96``,
``weight_decay = 5e-5``, ``eps = 1e-9``, MXNet form.

Contents
--------
* :class:`LARS` -- the multi-tensor, host-sync-free optimizer (GradScaler aware, with
  a norm hook for cross-rank norm synchronisation);
* :func:`param_groups` -- split a model into LARS and excluded parameter groups;
* :func:`trust_ratio` -- the trust ratio on floats or tensors;
* :func:`larc_ratio` -- LARC's clipped ratio ``min(t / lr, 1)`` on floats or tensors;
* :mod:`lars.reference` -- the slow per-parameter reference (tests, benchmarks).
"""

from .functional import larc_ratio, trust_ratio
from .groups import default_exclude, param_groups
from .optimizer import LARS, NormHook
from .options import STUDY_DEFAULTS

__all__ = ["LARS", "NormHook", "STUDY_DEFAULTS", "default_exclude", "larc_ratio", "param_groups",
           "trust_ratio"]
