"""Run every benchmark module in this folder: python -m benchmarks."""

import importlib
import pkgutil
from pathlib import Path

for info in pkgutil.iter_modules([str(Path(__file__).parent)]):
    if not info.name.startswith("_"):
        print(f"== benchmarks.{info.name}")
        importlib.import_module(f"benchmarks.{info.name}").main()
