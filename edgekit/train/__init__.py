"""Training a MiMo-Embodied-architecture checkpoint on generated scenes: a model with task accuracy to lose and win back."""
