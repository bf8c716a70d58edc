"""`edgekit export-decoder`: the text decoder (and optionally the vision tower) as llama.cpp GGUF files."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from edgekit.cli_app import app, console, progress
from edgekit.errors import EdgekitError

DECODER_PRECISIONS = ("f32", "f16", "bf16", "q8_0", "q4_0", "q4_1", "q4_k", "q5_k", "q6_k")
MMPROJ_PRECISIONS = ("f32", "f16", "q8_0")


@app.command("export-decoder")
def export_decoder_cmd(
    model: Annotated[Path, typer.Argument(help="Checkpoint directory (Hugging Face layout).")],
    out: Annotated[Path, typer.Option("--out", help="Output decoder GGUF file.")],
    fmt: Annotated[str, typer.Option("--format", help="Output format: gguf (llama.cpp).")] = "gguf",
    precision: Annotated[str, typer.Option(help="Weight type of the decoder's matrices: " + " | ".join(DECODER_PRECISIONS)
                                           + ". Quantized types use round-to-nearest on the format's grid.")] = "f16",
    mmproj: Annotated[Optional[Path], typer.Option("--mmproj", help="Also write the vision tower + merger as a "
                                                   "llama.cpp mmproj GGUF at this path.")] = None,
    mmproj_precision: Annotated[str, typer.Option(help="Weight type of the mmproj: " + " | ".join(MMPROJ_PRECISIONS) + ".")] = "f16",
) -> None:
    """Write the text decoder as a llama.cpp GGUF (metadata, tokenizer, streamed tensors); --mmproj adds the vision tower."""
    if fmt != "gguf":
        raise EdgekitError(f"--format {fmt!r}: export-decoder writes 'gguf' (llama.cpp)")
    if precision not in DECODER_PRECISIONS:
        raise EdgekitError(f"--precision {precision!r}: choose one of {', '.join(DECODER_PRECISIONS)}")
    if mmproj is not None and mmproj_precision not in MMPROJ_PRECISIONS:
        raise EdgekitError(f"--mmproj-precision {mmproj_precision!r}: choose one of {', '.join(MMPROJ_PRECISIONS)}")
    if mmproj is not None and mmproj.resolve() == out.resolve():
        raise EdgekitError(f"--mmproj {mmproj}: must differ from --out")

    from edgekit.export.gguf import decoder_tensor_plan, write_decoder_gguf
    from edgekit.export.mmproj import mmproj_tensor_plan, write_mmproj_gguf
    from edgekit.model.checkpoint import open_checkpoint

    ckpt = open_checkpoint(model)
    n_dec = len(decoder_tensor_plan(ckpt, precision))
    n_vis = len(mmproj_tensor_plan(ckpt, mmproj_precision)) if mmproj is not None else 0
    ckpt.close()
    with progress() as bar:
        task = bar.add_task("decoder", total=n_dec)
        write_decoder_gguf(model, out, precision, on_tensor=lambda p: bar.advance(task))
        if mmproj is not None:
            task = bar.add_task("mmproj", total=n_vis)
            write_mmproj_gguf(model, mmproj, mmproj_precision, on_tensor=lambda p: bar.advance(task))
    console.print(f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB, {precision})")
    if mmproj is not None:
        console.print(f"wrote {mmproj} ({mmproj.stat().st_size / 1e6:.1f} MB, {mmproj_precision})")
