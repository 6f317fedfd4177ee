"""Training: the loop over steps, EMA, checkpoints, distributed setup."""
