"""Communication primitives shared by the algorithms: traffic accounting and flat buffers."""

from crossover_sgd.comm.collectives import average_tensors, broadcast_model, model_state_tensors
from crossover_sgd.comm.flat import FlatParams
from crossover_sgd.comm.stats import CommStats, ring_allreduce_bytes

__all__ = ["CommStats", "FlatParams", "average_tensors", "broadcast_model", "model_state_tensors",
           "ring_allreduce_bytes"]
