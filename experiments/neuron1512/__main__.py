"""``python -m experiments.neuron1512``: run the main job from command-line flags and print its summary."""

from experiments.neuron1512.config import parse_args
from experiments.neuron1512.run import main
from experiments.neuron1512.summary import report

print(report(main(parse_args())))
