"""Model diffing speed: crosscoder training throughput (paired activations per second) and ADL wall time.

* Crosscoder: :func:`workbench.diffing.train_crosscoder` on paired activations of SmolLM2's width (576, so 1152 inputs)
  at the experiment's dictionary (1024 latents, k = 16, batches of 256), timed in CPU seconds of this process (what
  other load on a shared machine distorts least) and wall seconds.
* ADL: :func:`workbench.diffing.activation_difference` of the default model against a copy of itself with a steering
  hook (a stand-in tuned model: the same forward cost), on 64 unrelated texts x 5 positions, and the logit-lens
  read-out of every position at one layer.

Run with ``OMP_WAIT_POLICY=PASSIVE`` on a shared machine; numbers from one run.
"""

from __future__ import annotations

import time

import torch

from workbench.analysis.patching import ModelSide
from workbench.diffing import CrosscoderConfig, activation_difference, lens_tokens, neutral_tokens, steering_hooks
from workbench.diffing.crosscoder import train_crosscoder
from workbench.diffing.organisms import unrelated_texts
from workbench.models import load_model


def _timed(fn):
    wall, cpu = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - wall, time.process_time() - cpu


def crosscoder_throughput(n: int = 8192, d_model: int = 576, steps: int = 50) -> dict[str, float]:
    """Activations per second (wall and CPU) of crosscoder training on random paired activations."""
    acts = torch.randn(n, 2, d_model)
    cfg = CrosscoderConfig(dict_size=1024, k=16, steps=steps, batch_size=256)
    _, wall, cpu = _timed(lambda: train_crosscoder(acts, cfg))
    seen = steps * cfg.batch_size
    return {"activations_per_s_wall": seen / wall, "activations_per_s_cpu": seen / cpu, "wall_s": wall}


def adl_wall_time(n_texts: int = 64, k: int = 5) -> dict[str, float]:
    """Seconds of ADL's difference (both models, every layer) and of one layer's logit-lens read-out."""
    base = load_model()
    tokens = neutral_tokens(base, unrelated_texts(n_texts), k)
    layer = base.cfg.n_layers - 1
    tuned = ModelSide(base, hooks=tuple(steering_hooks(base, torch.randn(base.cfg.d_model), layer, 1.0)))
    diff, wall, cpu = _timed(lambda: activation_difference(base, tuned, tokens))
    _, lens_wall, _ = _timed(lambda: [lens_tokens(base, diff.delta[layer, p]) for p in range(k)])
    return {"adl_wall_s": wall, "adl_cpu_s": cpu, "lens_wall_s": lens_wall, "texts": n_texts, "k": k}


def main() -> None:
    """Print both measurements."""
    cc = crosscoder_throughput()
    print(
        f"crosscoder (1152 -> 1024 latents, k=16, batch 256): {cc['activations_per_s_wall']:,.0f} activations/s wall, "
        f"{cc['activations_per_s_cpu']:,.0f} per CPU second"
    )
    adl = adl_wall_time()
    print(
        f"ADL ({adl['texts']} texts x {adl['k']} positions, 30 layers, both models): {adl['adl_wall_s']:.2f} s wall "
        f"({adl['adl_cpu_s']:.2f} CPU s); logit lens of {adl['k']} positions: {adl['lens_wall_s']:.3f} s"
    )


if __name__ == "__main__":
    main()
