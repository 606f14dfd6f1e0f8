"""Comparison models made by fine-tuning: supervised (last N layers, :mod:`.supervised`) and, later, RL.

Each function trains a plain Hugging Face model and caches it as an ordinary HF folder keyed by its
config, so the tuned copy loads like any model (``load_tuned`` / ``load_model``).
"""

from workbench.tuning.supervised import TuneConfig, decoder_layers, load_tuned, tune_last_layers, tuned_dir

__all__ = ["TuneConfig", "decoder_layers", "load_tuned", "tune_last_layers", "tuned_dir"]
