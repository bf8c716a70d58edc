"""`edgekit export-decoder`: the text decoder (and optionally the vision tower) as llama.cpp GGUF files."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from edgekit.cli.app import app, console, progress
from edgekit.cli.options import GGUF_TYPES
from edgekit.errors import EdgekitError

MMPROJ_TYPES = ("f32", "f16", "q8_0")


@app.command("export-decoder")
def export_decoder_cmd(
    model: Annotated[Path, typer.Argument(help="Checkpoint directory (Hugging Face layout).")],
    out: Annotated[Path, typer.Option("--out", help="Output decoder GGUF file.")],
    fmt: Annotated[str, typer.Option("--format", help="Output format: gguf (llama.cpp).")] = "gguf",
    precision: Annotated[
        str,
        typer.Option(
            help="Weight type of the decoder's matrices: "
            + " | ".join(GGUF_TYPES)
            + ". Quantized types use round-to-nearest on the format's grid."
        ),
    ] = "f16",
    mmproj: Annotated[
        Optional[Path],
        typer.Option("--mmproj", help="Also write the vision tower + merger as a llama.cpp mmproj GGUF at this path."),
    ] = None,
    mmproj_precision: Annotated[
        str, typer.Option(help="Weight type of the mmproj: " + " | ".join(MMPROJ_TYPES) + ".")
    ] = "f16",
    force: Annotated[
        bool,
        typer.Option(
            "--force",
            help="Replace an existing --out / --mmproj file that edgekit did "
            "not write (never one inside the checkpoint).",
        ),
    ] = False,
) -> None:
    """Write the text decoder as a llama.cpp GGUF (metadata, tokenizer, streamed tensors); --mmproj adds the vision tower."""
    if fmt != "gguf":
        raise EdgekitError(f"--format {fmt!r}: export-decoder writes 'gguf' (llama.cpp)")
    from edgekit.export.gguf import decoder_tensor_plan, gguf_format, write_decoder_gguf
    from edgekit.export.mmproj import mmproj_format, mmproj_tensor_plan, write_mmproj_gguf
    from edgekit.model.checkpoint import open_checkpoint

    decoder_fmt = _option("--precision", precision, gguf_format)
    mmproj_fmt = _option("--mmproj-precision", mmproj_precision, mmproj_format) if mmproj is not None else None
    from edgekit.outputs import claim_file, is_edgekit_gguf

    if mmproj is not None and mmproj.resolve() == out.resolve():
        raise EdgekitError(f"--mmproj {mmproj}: must differ from --out")
    claim_file(out, [model], force=force, ours=is_edgekit_gguf)  # never over the checkpoint or a user's file
    if mmproj is not None:
        claim_file(mmproj, [model], force=force, ours=is_edgekit_gguf, flag="--mmproj")

    ckpt = open_checkpoint(model)
    n_dec = len(decoder_tensor_plan(ckpt, decoder_fmt))
    n_vis = len(mmproj_tensor_plan(ckpt, mmproj_fmt)) if mmproj_fmt is not None else 0
    ckpt.close()
    with progress() as bar:
        task = bar.add_task("decoder", total=n_dec)
        write_decoder_gguf(model, out, decoder_fmt, on_tensor=lambda p: bar.advance(task))
        if mmproj_fmt is not None:
            task = bar.add_task("mmproj", total=n_vis)
            write_mmproj_gguf(model, mmproj, mmproj_fmt, on_tensor=lambda p: bar.advance(task))
    console.print(f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB, {precision})")
    if mmproj is not None:
        console.print(f"wrote {mmproj} ({mmproj.stat().st_size / 1e6:.1f} MB, {mmproj_precision})")


def _option(flag: str, value: str, to_format):
    """A format option: one line naming the flag when the value is not a format this file can hold."""
    try:
        return to_format(value)
    except EdgekitError as e:
        raise EdgekitError(f"{flag} {value!r}: {e.message}") from None
