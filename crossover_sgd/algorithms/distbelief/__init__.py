"""The DistBelief family."""
