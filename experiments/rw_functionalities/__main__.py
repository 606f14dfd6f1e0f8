"""``python -m experiments.rw_functionalities``: the experiment from command-line flags."""

import experiments.rw_functionalities as package
from experiments.cli import parse_config
from experiments.rw_functionalities.config import RWConfig
from experiments.rw_functionalities.run import main

DESCRIPTION = package.__doc__.splitlines()[0]
config = parse_config(RWConfig, description=DESCRIPTION)
result = main(config)
print(f"wrote {config.out}; class counts: {result['class_counts']}")
