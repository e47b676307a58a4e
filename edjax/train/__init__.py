"""Training: the trainer (train_and_evaluate), evaluation, the shared loss, optimizer, mesh and
sharding, orbax checkpoints, clu metric writers."""
