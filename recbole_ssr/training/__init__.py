"""Training and evaluating one model: the trainer, its group and per-user metrics."""
