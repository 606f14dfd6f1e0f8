"""``python -m experiments.realignments``: the experiment from command-line flags."""

import experiments.realignments as package
from experiments.cli import parse_config
from experiments.realignments.config import RealignmentsConfig
from experiments.realignments.run import main

DESCRIPTION = package.__doc__.splitlines()[0]
main(parse_config(RealignmentsConfig, description=DESCRIPTION))
