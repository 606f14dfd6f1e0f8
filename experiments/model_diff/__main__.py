"""``python -m experiments.model_diff``: the experiment from command-line flags."""

import experiments.model_diff as package
from experiments.cli import parse_config
from experiments.model_diff.config import ModelDiffConfig
from experiments.model_diff.run import main

DESCRIPTION = package.__doc__.splitlines()[0]
main(parse_config(ModelDiffConfig, description=DESCRIPTION))
