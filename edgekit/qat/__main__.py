"""`torchrun --nproc-per-node N -m edgekit.qat MODEL --format ... --out QAT_DIR`: `edgekit qat` in every process."""

import sys

from edgekit.cli import main

sys.exit(main(["qat", *sys.argv[1:]]))
