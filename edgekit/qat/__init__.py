"""Quantization-aware training (`edgekit qat`): run.py drives it; fake_quant.py is the numerics."""
