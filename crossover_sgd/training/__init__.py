"""The training loop shared by every algorithm, and what it needs: data, models, schedules,
checkpoints and outputs."""
