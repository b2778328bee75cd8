"""The native PyTorch engine: one run's training loop with its hooks, checkpoints and lr schedule."""
