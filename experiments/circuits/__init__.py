"""Which edges carry a behaviour, how faithful the circuits of each ranking are (MIB's CPR / CMD), and how the
circuit changes when the model is tuned.

Per task (IOI; sentiment: "I loved it." vs "I hated it." before the model-diff sentiment prompts, " good" vs
" bad"; capitals: "The capital of France is" vs another country, the two capitals): EAP, EAP-IG and a random
ranking of all edges, their faithfulness curves at MIB's circuit sizes, CPR (signed ranking) and CMD (absolute
ranking). Exact edge patching of every edge is out of reach on a CPU (~8 days for 123k edges, see
``benchmarks/edges.py``), so it enters as the fidelity check of the benchmark, not as a ranking here. Then the
sentiment circuit of the base model against the cached supervised model (last 2 layers tuned on negative
tweets; ``experiments.model_diff``): edges gained and lost, with both scores.
"""

from experiments.circuits.config import CircuitsConfig
from experiments.circuits.run import main

__all__ = ["CircuitsConfig", "main"]
