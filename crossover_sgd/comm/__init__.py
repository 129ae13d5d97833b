"""Communication primitives shared by the algorithms: traffic accounting, flat buffers, the
averaging and summing all-reduce, process groups of rank subsets, lost-peer errors."""

from crossover_sgd.comm.collectives import average, broadcast_model, model_state_tensors, total
from crossover_sgd.comm.failure import first_line, is_communication_failure, peer_failure
from crossover_sgd.comm.flat import FlatParams
from crossover_sgd.comm.groups import consecutive_group, group_ranks, partition_group
from crossover_sgd.comm.stats import CommStats, ring_allreduce_bytes

__all__ = ["CommStats", "FlatParams", "average", "broadcast_model", "consecutive_group", "first_line",
           "group_ranks", "is_communication_failure", "model_state_tensors", "partition_group", "peer_failure",
           "ring_allreduce_bytes", "total"]
