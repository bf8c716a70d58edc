"""CLI command modules. Every module in this package is imported by `edgekit.cli` and
registers its commands on `edgekit.cli.app.app`. Keep imports at module top light."""

import importlib
import pkgutil


def load_all() -> None:
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        importlib.import_module(f"{__name__}.{info.name}")
