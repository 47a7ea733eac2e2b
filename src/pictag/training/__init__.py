"""Training: optimizer and schedule, the epoch loop, resumable checkpoints and logging."""
