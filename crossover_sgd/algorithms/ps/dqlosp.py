"""DQLOSP: LOSP with messages quantized both ways (:mod:`crossover_sgd.comm.quantize`).

A worker pushes its gradient sum quantized (indices of ``--quant-bits`` bits plus one norm per
tensor); a shard dequantizes, averages, quantizes the update ``lr_ps * mean`` once, applies
exactly what it sends, and replies with it: each worker keeps a copy of the global model updated
from those updates, never pulling full weights, and the copy stays bit-identical to the server's
model (checked on every reply against the digest the shard sends). The research code this
family comes from never got there (its copies drifted apart)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Optional

from crossover_sgd.algorithms.options import option
from crossover_sgd.algorithms.ps.losp import LOSP, LOSPOptions
from crossover_sgd.errors import ConfigError

__all__ = ["DQLOSP", "DQLOSPOptions"]


@dataclass
class DQLOSPOptions(LOSPOptions):
    quant_bits: int = option(8, "dqlosp: bits per quantized element (1..16; levels 2^bits on [-1, 1] times "
                                "the tensor's norm)", minimum=1, metavar="BITS")
    stochastic_rounding: bool = option(False, "dqlosp: unbiased stochastic rounding instead of the nearest level",
                                       metavar="BOOL")

    def check(self, world_size: Optional[int]) -> None:
        super().check(world_size)
        if self.quant_bits > 16:
            raise ConfigError(f"{{quant_bits}} {self.quant_bits} is invalid: use 1 to 16 bits")


class DQLOSP(LOSP):
    """LOSP over quantized messages, with bit-identical copies of the global model."""

    name = "dqlosp"
    options_class: ClassVar = DQLOSPOptions

    def message_bits(self) -> Optional[int]:
        return self.options.quant_bits

    def stochastic(self) -> bool:
        return bool(self.options.stochastic_rounding)
