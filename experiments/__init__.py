"""Experiments: ``python -m experiments.NAME``; each composes library calls and writes figures/NAME/."""
