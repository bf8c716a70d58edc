"""edgekit's fused attention kernels: the CUDA sources (package data), their CPU emulation build, the Python side
(attention.py: float64 references, ctypes loader, torch ops), the roofline model and the kernel benchmark."""
