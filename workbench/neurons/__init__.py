"""The neuron weight-functionality study (Gerstner & Schütze, 2025): RW classes from weight cosines,
class ablations (conditional ones too), activation frequencies, and per-neuron / per-dimension profiles.

General analyses (patching, attribution, logit lens) live in :mod:`workbench.analysis`; this package
holds one paper's study built on them.
"""
