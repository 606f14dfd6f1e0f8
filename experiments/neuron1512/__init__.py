"""The main job: reproduce *The Mysterious Case of Neuron 1512* (Smith et al., 2024) on a model, and explain it.

For each preset (where the IRM reads and writes, how it trains), alignment (negative / neutral /
positive tweets) and seed (IRM init and data order): train an IRM (the LM frozen), measure the
realignment (held-out loss and VADER sentiment of replies, IRM on vs off), record the IRM output per
token, layer and residual dimension, and test its top dimensions causally (mask the top-k vs k random
dimensions). Across seeds: the dimensions that dominate in every seed, and whether the dimension
shares agree between seeds of one alignment, alignments of one seed, or neither (a property of the
model vs of the init). Per alignment: where the IRM changes the prediction (logit lens, DLA of its
writes, patching injected -> base), which neurons carry it, and the top dimension's profile.
Writes figures, CSV tables and ``summary.json`` under ``--out``. The package: the config, presets and
command line (:mod:`.config`), :func:`main` (:mod:`.run`), one unit, one IRM trained and measured
(:mod:`.unit`), the results across units (:mod:`.summary`).

    python -m experiments.neuron1512 --quick
    python -m experiments.neuron1512 --presets paper --alignments negative --seeds 0 1 2
    python -m experiments.neuron1512 --model llama-2-7b-chat --device cuda --hidden-mult 3
"""

from experiments.neuron1512.config import PRESETS, QUICK, QUICK_TRAIN, Neuron1512Config, Preset, parse_args, resolve
from experiments.neuron1512.run import main
from experiments.neuron1512.summary import captions, group_summary, report, summarise
from experiments.neuron1512.unit import Context, Unit, run_unit

__all__ = [
    "PRESETS",
    "QUICK",
    "QUICK_TRAIN",
    "Context",
    "Neuron1512Config",
    "Preset",
    "Unit",
    "captions",
    "group_summary",
    "main",
    "parse_args",
    "report",
    "resolve",
    "run_unit",
    "summarise",
]
