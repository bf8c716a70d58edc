"""edgekit: make MiMo-Embodied (Qwen2.5-VL architecture) checkpoints run on edge targets."""

__version__ = "0.1.0"
