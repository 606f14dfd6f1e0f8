"""A BatchTopK crosscoder over paired base / tuned activations at one layer, with latent scaling.

A crosscoder (Lindsey et al. 2024, *Sparse Crosscoders for Cross-Layer Features and Model Diffing*) is one sparse
dictionary over the concatenated activations of two models on the same tokens: a latent ``j`` has one decoder vector
per model, ``d_j^base`` and ``d_j^tuned``. The norm ratio ``(||d^t|| - ||d^b||) / max(||d^b||, ||d^t||)``, mapped to
[0, 1], sorts latents into base-only (~0), shared (~0.5) and tuned-only (~1).

Minder, Dumas et al. 2025 (*Overcoming Sparsity Artifacts in Crosscoders to Interpret Chat-Tuning*, arXiv
2504.02922) show that an L1 crosscoder invents tuned-only latents: *complete shrinkage* (the base decoder is pushed
to 0 although the base holds the concept) and *latent decoupling* (a tuned-only latent duplicates shared ones). They
train with BatchTopK (the ``k * batch`` largest activations of a batch are kept, weighted by the summed decoder
norms) and test each tuned-only latent by **latent scaling**: the least-squares scale ``beta`` with which
``f_j(x) d_j^tuned`` explains a target ``y(x)``, ``beta = sum_x f_j <d, y> / (||d||^2 sum_x f_j^2)``; with ``y`` the
model's reconstruction error without latent ``j`` (``nu_error = beta_base / beta_tuned``) and with ``y`` the model's
activation (``nu_recon``). A truly tuned-only latent has both ratios near 0; a ratio near 1 flags an artefact.

Why our own and not ``dictionary-learning`` or ``sae-lens`` (both on PyPI): ``sae-lens`` trains single-model SAEs on
HookedTransformer caches and has no two-model crosscoder; ``dictionary-learning``'s crosscoders live in a research
fork (science-of-finetuning/crosscoder_learning) and pull in nnsight-based activation buffers built for
Hugging Face modules, not the bridge's hook points. What is needed here (one layer, two sides, ~10^4 activations,
latent scaling read out afterwards) is ~150 lines of torch, tested against planted latents.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import pandas as pd
import torch
from jaxtyping import Float, Int
from torch import Tensor, nn
from transformer_lens.model_bridge import TransformerBridge

from workbench.config import Config, Count, Positive
from workbench.hooks import ModelSide, as_side, hook_name

__all__ = [
    "Crosscoder",
    "CrosscoderConfig",
    "CrosscoderSummary",
    "LatentClass",
    "latent_scaling",
    "paired_activations",
    "summarize",
    "train_crosscoder",
]

LatentClass = Literal["base-only", "shared", "tuned-only", "other"]


@dataclass(frozen=True)
class CrosscoderConfig(Config):
    """Training of a BatchTopK crosscoder."""

    dict_size: Count = 1024
    """Number of latents."""
    k: Count = 16
    """Active latents per activation on average (BatchTopK keeps k * batch per batch)."""
    steps: Count = 600
    """Adam steps."""
    batch_size: Count = 256
    """Paired activations per step."""
    lr: Positive = 1e-3
    """Adam learning rate."""
    seed: int = 0
    """Seed of the initialisation and the batch order."""


class Crosscoder(nn.Module):
    """Encoder over both models' activations, one decoder per model; inputs scaled to mean norm ``sqrt(d_model)``.

    Args:
        d_model: residual width.
        cfg: sizes.
        scales: per model (base, tuned), the factor bringing its activations to mean norm ``sqrt(d_model)``.
    """

    scales: Tensor
    """Per model, the factor bringing its activations to mean norm ``sqrt(d_model)`` (a buffer)."""

    def __init__(self, d_model: int, cfg: CrosscoderConfig, scales: Tensor):
        super().__init__()
        gen = torch.Generator().manual_seed(cfg.seed)
        dec = torch.randn(cfg.dict_size, 2, d_model, generator=gen)
        dec = dec / dec.norm(dim=-1, keepdim=True) * 0.1  # each model's decoder starts with norm 0.1 per latent
        self.W_dec = nn.Parameter(dec)
        self.W_enc = nn.Parameter(dec.permute(1, 2, 0).clone())  # [2 d_model dict]: tied at init
        self.b_enc = nn.Parameter(torch.zeros(cfg.dict_size))
        self.b_dec = nn.Parameter(torch.zeros(2, d_model))
        self.register_buffer("scales", scales.float().clone())
        self.k = cfg.k

    def normalize(self, x: Float[Tensor, "batch 2 d_model"]) -> Float[Tensor, "batch 2 d_model"]:
        """Activations in the crosscoder's scale."""
        return x.float() * self.scales[None, :, None]

    def encode(self, x: Float[Tensor, "batch 2 d_model"]) -> Float[Tensor, "batch dict"]:
        """Latent activations of normalised inputs: ReLU, then the batch's ``k * batch`` largest of
        ``f_j * (||d_j^base|| + ||d_j^tuned||)`` kept."""
        pre = torch.relu(torch.einsum("bmd,mdf->bf", x, self.W_enc) + self.b_enc)
        score = (pre * self.W_dec.norm(dim=-1).sum(-1)).flatten()
        keep = torch.zeros_like(score).scatter_(0, score.topk(min(self.k * x.shape[0], score.numel())).indices, 1.0)
        return pre * keep.view_as(pre)

    def decode(self, f: Float[Tensor, "batch dict"]) -> Float[Tensor, "batch 2 d_model"]:
        """Reconstruction of both models' normalised activations."""
        return torch.einsum("bf,fmd->bmd", f, self.W_dec) + self.b_dec

    def forward(self, x: Float[Tensor, "batch 2 d_model"]) -> Float[Tensor, "batch 2 d_model"]:
        """Reconstruction of normalised inputs."""
        return self.decode(self.encode(x))

    def norm_ratio(self) -> Float[Tensor, " dict"]:
        """Per latent, ``0.5 * ((||d^t|| - ||d^b||) / max(||d^b||, ||d^t||) + 1)``: 0 base-only, 0.5 shared,
        1 tuned-only."""
        norms = self.W_dec.detach().norm(dim=-1)
        return 0.5 * ((norms[:, 1] - norms[:, 0]) / norms.max(-1).values.clamp_min(1e-12) + 1)


def paired_activations(
    base: TransformerBridge | ModelSide,
    tuned: TransformerBridge | ModelSide,
    tokens: Int[Tensor, "batch pos"],
    layer: int,
    *,
    skip_first: int = 1,
    batch_size: int = 32,
) -> Float[Tensor, "n 2 d_model"]:
    """Both models' ``resid_post`` of ``layer`` on the same tokens, paired, positions from ``skip_first`` on
    (the first token's massive activations would dominate the dictionary)."""
    base, tuned = as_side(base), as_side(tuned)
    name = hook_name(base.model, "resid_post", layer)
    out = []
    for chunk in tokens.split(batch_size):
        _, acts_b = base.run(chunk, [name])
        _, acts_t = tuned.run(chunk.to(tuned.model.cfg.device), [name])
        pair = torch.stack([acts_b[name].float().cpu(), acts_t[name].float().cpu()], dim=2)  # [batch pos 2 d]
        out.append(pair[:, skip_first:].flatten(0, 1))
    return torch.cat(out)


def train_crosscoder(acts: Float[Tensor, "n 2 d_model"], cfg: CrosscoderConfig) -> tuple[Crosscoder, list[float]]:
    """Train a BatchTopK crosscoder on paired activations; returns it and the loss per step.

    The loss is the squared reconstruction error summed over both models and the width, averaged over the batch.
    """
    if acts.ndim != 3 or acts.shape[1] != 2:
        raise ValueError(f"acts must be [n, 2, d_model] (base, tuned), got shape {tuple(acts.shape)}")
    d_model = acts.shape[-1]
    scales = d_model**0.5 / acts.float().norm(dim=-1).mean(0).clamp_min(1e-12)
    torch.manual_seed(cfg.seed)
    cc = Crosscoder(d_model, cfg, scales)
    x_all = cc.normalize(acts)
    with torch.no_grad():
        cc.b_dec.copy_(x_all.mean(0))
    opt = torch.optim.Adam(cc.parameters(), lr=cfg.lr)
    gen = torch.Generator().manual_seed(cfg.seed)
    losses = []
    for _ in range(cfg.steps):
        x = x_all[torch.randint(len(x_all), (cfg.batch_size,), generator=gen)]
        loss = (cc(x) - x).pow(2).sum((1, 2)).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return cc.eval(), losses


@dataclass(frozen=True)
class LatentScaling:
    """Latent scaling ratios per latent (Minder et al. 2025): near 0 for truly tuned-only latents."""

    nu_error: Float[Tensor, " dict"]
    """``beta_base / beta_tuned`` with the reconstruction error without the latent as target (complete shrinkage)."""
    nu_recon: Float[Tensor, " dict"]
    """The same with the activation itself as target (latent decoupling)."""


def latent_scaling(cc: Crosscoder, acts: Float[Tensor, "n 2 d_model"], *, batch_size: int = 4096) -> LatentScaling:
    """Latent scaling of every latent along its tuned decoder vector, on paired activations ``acts``."""
    d_t = cc.W_dec.detach()[:, 1]
    dots = (cc.W_dec.detach() * d_t[:, None]).sum(-1)  # [dict 2]: <d^t_j, d^m_j>
    parts = torch.zeros(4, cc.W_dec.shape[0], dtype=torch.float64)  # num err base/tuned, num rec base/tuned
    fsq = torch.zeros(cc.W_dec.shape[0], dtype=torch.float64)
    with torch.no_grad():
        for chunk in acts.split(batch_size):
            x = cc.normalize(chunk)
            f = cc.encode(x)
            err = x - cc.decode(f)
            for m in range(2):
                parts[m] += ((f * (err[:, m] @ d_t.T)).sum(0) + f.pow(2).sum(0) * dots[:, m]).double()
                parts[2 + m] += (f * ((x[:, m] - cc.b_dec[m]) @ d_t.T)).sum(0).double()
            fsq += f.pow(2).sum(0).double()
    beta = parts / (d_t.pow(2).sum(-1).double() * fsq).clamp_min(1e-12)
    ratio = beta[[0, 2]] / torch.where(beta[[1, 3]].abs() > 1e-12, beta[[1, 3]], torch.nan)
    return LatentScaling(ratio[0].float(), ratio[1].float())


@dataclass(frozen=True)
class CrosscoderSummary:
    """Per latent: norm ratio, class, latent-scaling ratios and how often it fires."""

    norm_ratio: Float[Tensor, " dict"]
    """0 base-only, 0.5 shared, 1 tuned-only."""
    classes: tuple[LatentClass, ...]
    """By norm ratio: < 0.1 base-only, 0.4-0.6 shared, > 0.9 tuned-only, else other."""
    scaling: LatentScaling
    """Latent scaling ratios."""
    frequency: Float[Tensor, " dict"]
    """Fraction of the activations on which the latent fires."""
    max_nu: float
    """A tuned-only latent with both ratios below this is truly tuned-only."""

    def tuned_only(self) -> list[int]:
        """Truly tuned-only latents (class tuned-only and both ratios < ``max_nu``), most frequent first."""
        nu = torch.maximum(self.scaling.nu_error.abs(), self.scaling.nu_recon.abs())
        keep = [
            j
            for j, c in enumerate(self.classes)
            if c == "tuned-only" and bool(nu[j] < self.max_nu) and self.frequency[j] > 0
        ]
        return sorted(keep, key=lambda j: -float(self.frequency[j]))

    def artefacts(self) -> list[int]:
        """Tuned-only latents by norm ratio that latent scaling says the base also holds."""
        true = set(self.tuned_only())
        return [j for j, c in enumerate(self.classes) if c == "tuned-only" and j not in true and self.frequency[j] > 0]

    def to_frame(self) -> pd.DataFrame:
        """Columns ``latent, norm_ratio, class, nu_error, nu_recon, frequency``."""
        return pd.DataFrame(
            {
                "latent": range(len(self.classes)),
                "norm_ratio": self.norm_ratio.tolist(),
                "class": self.classes,
                "nu_error": self.scaling.nu_error.tolist(),
                "nu_recon": self.scaling.nu_recon.tolist(),
                "frequency": self.frequency.tolist(),
            }
        )


def _classify(r: float) -> LatentClass:
    if r < 0.1:
        return "base-only"
    if r > 0.9:
        return "tuned-only"
    return "shared" if 0.4 <= r <= 0.6 else "other"


def summarize(cc: Crosscoder, acts: Float[Tensor, "n 2 d_model"], *, max_nu: float = 0.3) -> CrosscoderSummary:
    """Classes, latent scaling and firing frequency of every latent on ``acts``."""
    ratio = cc.norm_ratio()
    with torch.no_grad():
        freq = torch.cat([(cc.encode(cc.normalize(c)) > 0).float() for c in acts.split(4096)]).mean(0)
    return CrosscoderSummary(ratio, tuple(_classify(float(r)) for r in ratio), latent_scaling(cc, acts), freq, max_nu)
