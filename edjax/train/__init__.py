"""Training: optimizer, mesh and sharding, train step, orbax checkpoints, metric writers."""
