"""``python -m experiments.boundless_das``: the experiment from command-line flags."""

import experiments.boundless_das as package
from experiments.boundless_das.config import BoundlessDASConfig
from experiments.boundless_das.run import main
from experiments.cli import parse_config

DESCRIPTION = package.__doc__.splitlines()[0]
main(parse_config(BoundlessDASConfig, description=DESCRIPTION))
