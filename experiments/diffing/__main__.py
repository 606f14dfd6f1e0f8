"""``python -m experiments.diffing [--quick]``: see :mod:`experiments.diffing`."""

from experiments.cli import parse_config
from experiments.diffing.config import DiffingConfig
from experiments.diffing.run import main

main(parse_config(DiffingConfig, description="Does model diffing name what a tune changed?"))
