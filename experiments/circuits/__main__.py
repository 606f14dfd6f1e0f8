"""``python -m experiments.circuits``: the experiment from command-line flags."""

import experiments.circuits as package
from experiments.circuits.config import CircuitsConfig
from experiments.circuits.run import main
from experiments.cli import parse_config

main(parse_config(CircuitsConfig, description=package.__doc__.splitlines()[0]))
