"""Training: presets, the data loader, the training loop and checkpoints."""
