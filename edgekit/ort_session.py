"""Every ONNX Runtime session edgekit opens gets its options here.

ONNX Runtime multiplies u8·s8 (the INT8 vision graphs' activations and weights) with VPMADDUBSW on x86 CPUs without
VNNI (AVX2, AVX-512 before VNNI), which saturates pairs of products at 16 bits: on such a CPU (an AMD EPYC with AVX2
here) the integer graph's products came out wrong by up to 24% of their range, and the QDQ graphs it fuses too.
`session.x64quantprecision` = 1 makes ONNX Runtime use its exact u8·u8 kernels on exactly those CPUs and changes
nothing on CPUs with VNNI (onnxruntime_session_options_config_keys.h).
"""

from __future__ import annotations

from pathlib import Path

from edgekit.errors import EdgekitError

EXACT_INT8_ON_CPUS_WITHOUT_VNNI = ("session.x64quantprecision", "1")


def session_options(threads: int = 2, *, optimize: bool = True):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.add_session_config_entry(*EXACT_INT8_ON_CPUS_WITHOUT_VNNI)
    if not optimize:
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return opts


def load_session(graph: str | Path | bytes, opts, label: str | Path):
    """An ONNX Runtime CPU session over a graph file (or its verified bytes); a graph it refuses is one line."""
    import onnxruntime as ort

    try:
        return ort.InferenceSession(
            graph if isinstance(graph, bytes) else str(graph), opts, providers=["CPUExecutionProvider"]
        )
    except Exception as e:  # onnxruntime's own Fail / InvalidGraph
        raise EdgekitError(
            f"{label}: ONNX Runtime cannot load it as a graph ({str(e).splitlines()[0][:200]}); "
            "export it with `edgekit export-vision`"
        ) from None
