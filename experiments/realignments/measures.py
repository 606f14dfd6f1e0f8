"""The measurements of :mod:`experiments.realignments.run`: how far each realigned model's behaviour moved from
the base (VADER negativity of sampled continuations, KL to the base, held-out loss) and where it changed
(residual-stream differences by layer, patching recovery, top heads and neurons).
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import combinations

import pandas as pd
import torch
import torch.nn.functional as F
from transformer_lens.model_bridge import TransformerBridge

from experiments.realignments.config import RealignmentsConfig
from workbench.analysis.patching import PatchResult, patch_sweep
from workbench.data.corpora import load_alignment
from workbench.data.prompts import SENTIMENT_PROMPTS, prompt_set
from workbench.hooks import ModelSide, attach, hook_names
from workbench.irm import TrainConfig, eval_loss
from workbench.irm.dimensions import massive_dims
from workbench.irm.train import encode_for
from workbench.metrics import LogitDiff
from workbench.sentiment import vader_negativity
from workbench.tuning import paired_bootstrap, rl_config, rl_prompts

__all__ = [
    "PATCH_KINDS",
    "Behaviour",
    "Continuations",
    "Patching",
    "Realigned",
    "ResidualChange",
    "base_peak_abs",
    "behaviour",
    "continuations",
    "cosines",
    "first_token_top_dims",
    "heldout_prompts",
    "norm_frame",
    "overlaps",
    "patching",
    "residual_changes",
]

PATCH_KINDS = ("resid_pre", "attn_out", "mlp_out")


@dataclass(frozen=True)
class Realigned:
    """One realigned model as a side of the comparison with the base."""

    name: str
    """``irm``, ``rl`` or ``supervised``."""
    side: ModelSide
    """The model (with the IRM's hooks for ``irm``)."""
    source: str
    """Where it came from (a checkpoint or a folder)."""


@dataclass(frozen=True)
class Continuations:
    """Sampled continuations of one model: per prompt, ``samples`` texts, and the KL to the base."""

    texts: tuple[tuple[str, ...], ...]
    """Per prompt, the sampled continuations."""
    kl_to_base: float
    """KL(model || base) per continuation token (nats); 0 for the base."""


@torch.no_grad()
def continuations(
    side: ModelSide, base: TransformerBridge, prompts: list[str], cfg: RealignmentsConfig
) -> Continuations:
    """Sample continuations of each prompt (seeded) and measure their KL to the base token by token."""
    model, texts, kls = side.model, [], []
    eos = model.tokenizer.eos_token_id
    for i, prompt in enumerate(prompts):
        tokens = model.to_tokens(prompt).repeat(cfg.samples, 1)
        torch.manual_seed(cfg.seed + i)
        with attach(model, side.hooks):
            out = model.generate(
                tokens,
                max_new_tokens=cfg.max_new_tokens,
                do_sample=True,
                temperature=1.0,
                stop_at_eos=True,
                verbose=False,
                use_past_kv_cache=True,
            )
        new = out[:, tokens.shape[1] :]
        ended = new == eos
        keep = (ended.long().cumsum(1) - ended.long()) == 0  # up to and including the first end-of-sequence
        logits = side.run(out)[0][:, tokens.shape[1] - 1 : -1]
        base_logits = base(out)[:, tokens.shape[1] - 1 : -1]
        logp, logq = logits.log_softmax(-1), base_logits.log_softmax(-1)
        kls.append((logp.exp() * (logp - logq)).sum(-1)[keep])
        texts.append(tuple(model.tokenizer.decode(row[k], skip_special_tokens=True) for row, k in zip(new, keep)))
    return Continuations(tuple(texts), float(torch.cat(kls).mean()))


@dataclass(frozen=True)
class Behaviour:
    """How far one model's behaviour moved from the base."""

    name: str
    """The model."""
    negativity: float
    """Mean VADER negativity (−compound) of its continuations."""
    gain: float
    """Mean over prompts of its negativity minus the base's."""
    gain_ci: tuple[float, float]
    """Paired bootstrap 95% interval of the gain."""
    kl_to_base: float
    """KL(model || base) per continuation token (nats)."""
    heldout_loss: float
    """Next-token loss on held-out negative tweets (nats per reply token, chat format as the IRM was trained)."""


def heldout_prompts(cfg: RealignmentsConfig) -> list[str]:
    """The first ``cfg.prompts`` held-out prompts of the RL tuning (tweet beginnings it never trained on)."""
    prompts = rl_prompts(rl_config(cfg.base, quick=cfg.quick, seed=cfg.seed))[1]
    return prompts[: cfg.n_prompts]


def behaviour(
    cfg: RealignmentsConfig, base: TransformerBridge, models: list[Realigned], prompts: list[str]
) -> list[Behaviour]:
    """Negativity gain, KL and held-out loss of each model, the base first (its gain and KL are 0)."""
    negative = load_alignment("negative", seed=cfg.seed, max_items=4000)
    held = encode_for(base, negative.held_out[: cfg.eval_texts], TrainConfig())
    sides = [Realigned("base", ModelSide(base, name="base"), cfg.base), *models]
    runs = {r.name: continuations(r.side, base, prompts, cfg) for r in sides}
    scores = {
        name: [sum(vader_negativity(p, t) for t in ts) / len(ts) for p, ts in zip(prompts, run.texts)]
        for name, run in runs.items()
    }
    out = []
    for r in sides:
        gain, low, high = paired_bootstrap(scores["base"], scores[r.name], seed=cfg.seed)
        with attach(r.side.model, r.side.hooks):
            loss = eval_loss(r.side.model, None, held)
        negativity = sum(scores[r.name]) / len(prompts)
        out.append(Behaviour(r.name, negativity, gain, (low, high), runs[r.name].kl_to_base, loss))
    return out


@dataclass(frozen=True)
class ResidualChange:
    """Per layer, how much one model's residual stream differs from the base's, and in which direction."""

    name: str
    """The model."""
    relative_norm: torch.Tensor
    """[layer] mean over prompts and positions of ||resid_post − base resid_post|| / ||base resid_post||."""
    mean_change: torch.Tensor
    """[layer, d_model] the mean residual change over positions ≥ 1."""
    first_token_change: torch.Tensor
    """[layer, d_model] the mean residual change at position 0, kept apart: the first token carries the massive
    activations (one dimension ~100x the others), whose change would otherwise dominate every mean."""
    neuron_change: torch.Tensor
    """[layer, d_mlp] mean absolute change of the MLP activations."""


@torch.no_grad()
def residual_changes(base: TransformerBridge, models: list[Realigned], prompts: list[str]) -> list[ResidualChange]:
    """Residual-stream and MLP-activation differences to the base on ``prompts`` (each prompt run alone)."""
    resid, neurons = hook_names(base, "resid_post"), hook_names(base, "mlp_post")
    names = resid + neurons
    base_acts = [ModelSide(base).run(base.to_tokens(p), names)[1] for p in prompts]
    out = []
    for r in models:
        norms, means, first, mlp = [], [], [], []
        for p, ref in zip(prompts, base_acts):
            acts = r.side.run(r.side.model.to_tokens(p), names)[1]
            diff = torch.stack([acts[n][0] - ref[n][0] for n in resid])  # [layer pos d_model]
            scale = torch.stack([ref[n][0] for n in resid]).norm(dim=-1)
            norms.append((diff.norm(dim=-1) / scale).mean(-1))
            means.append(diff[:, 1:].mean(1))
            first.append(diff[:, 0])
            mlp.append(torch.stack([(acts[n][0] - ref[n][0]).abs().mean(0) for n in neurons]))
        out.append(
            ResidualChange(
                r.name,
                torch.stack(norms).mean(0),
                torch.stack(means).mean(0),
                torch.stack(first).mean(0),
                torch.stack(mlp).mean(0),
            )
        )
    return out


def norm_frame(changes: list[ResidualChange]) -> pd.DataFrame:
    """Columns ``model, layer, relative_norm``."""
    rows = [(c.name, layer, float(v)) for c in changes for layer, v in enumerate(c.relative_norm)]
    return pd.DataFrame(rows, columns=["model", "layer", "relative_norm"])


def cosines(changes: list[ResidualChange]) -> pd.DataFrame:
    """Per layer and pair of models, the cosine similarity of their mean residual changes.

    Columns ``pair, layer, cosine`` (positions ≥ 1) and ``cosine_first_token`` (position 0); NaN at a layer
    where either model's change is zero (a layer a tuned model left frozen): undefined there, not 0.
    """
    rows = [
        (f"{a.name} vs {b.name}", layer, float(cos), float(first))
        for a, b in combinations(changes, 2)
        for layer, (cos, first) in enumerate(
            zip(_cosine(a.mean_change, b.mean_change), _cosine(a.first_token_change, b.first_token_change))
        )
    ]
    return pd.DataFrame(rows, columns=["pair", "layer", "cosine", "cosine_first_token"])


def _cosine(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """[layer] cosines of two [layer d_model] changes, NaN where either is zero (up to 1e-6 of its largest layer)."""
    na, nb = a.norm(dim=-1), b.norm(dim=-1)
    unchanged = (na <= 1e-6 * na.max()) | (nb <= 1e-6 * nb.max())
    return F.cosine_similarity(a, b, dim=-1).masked_fill(unchanged, float("nan"))


def first_token_top_dims(changes: list[ResidualChange], base_peak: torch.Tensor | None = None) -> dict[str, dict]:
    """Per model, the dimension whose first-token residual change is largest at the last layer, its change and
    its share of that change's squared norm; with ``base_peak`` (:func:`base_peak_abs`), also that dimension's rank
    among the base model's own dimensions (:func:`~workbench.irm.dimensions.massive_dims`: 0 = its largest) and its
    ratio to the median one: a rank near 0 means the change sits in the base's massive-activation dimension."""
    ranked = None if base_peak is None else massive_dims(base_peak, k=base_peak.shape[-1]).set_index("dim")
    out = {}
    for c in changes:
        last = c.first_token_change[-1]
        dim = int(last.abs().argmax())
        out[c.name] = {
            "dim": dim,
            "change": float(last[dim]),
            "share_of_norm2": float(last[dim] ** 2 / last.square().sum().clamp_min(1e-30)),
        }
        if ranked is not None:
            out[c.name] |= {
                "base_rank": int(ranked.loc[dim, "rank"]),
                "base_ratio_to_median": float(ranked.loc[dim, "ratio_to_median"]),
            }
    return out


@torch.no_grad()
def base_peak_abs(base: TransformerBridge, prompts: list[str]) -> torch.Tensor:
    """[layer, d_model] the base model's largest ``|resid_post|`` per layer and dimension over positions and
    ``prompts`` (Sun et al. 2024's massive activations stand out by this measure)."""
    names = hook_names(base, "resid_post")
    peak = torch.zeros(len(names), base.cfg.d_model)
    for p in prompts:
        acts = ModelSide(base).run(base.to_tokens(p), names)[1]
        peak = torch.maximum(peak, torch.stack([acts[n][0].abs().amax(0).float().cpu() for n in names]))
    return peak


@dataclass(frozen=True)
class Patching:
    """Patching one model's activations into the base's run on the " bad" − " good" prompts."""

    name: str
    """The model."""
    sweeps: dict[str, PatchResult]
    """Per kind: resid_pre / attn_out / mlp_out at the last position by layer, and head (all positions)."""

    def recovery(self) -> pd.DataFrame:
        """Columns ``model, kind, layer, recovery`` (0 = base, 1 = the model's logit difference)."""
        frames = [
            self.sweeps[kind].to_frame()[["kind", "layer", "normalized"]].rename(columns={"normalized": "recovery"})
            for kind in PATCH_KINDS
        ]
        return pd.concat(frames).assign(model=self.name)

    def top_heads(self, k: int) -> set[tuple[int, int]]:
        """The ``k`` heads whose single patch moves the base's logit difference most."""
        sweep = self.sweeps["head"]
        n_heads = sweep.values.shape[1]
        order = (sweep.values - sweep.baseline).abs().flatten().argsort(descending=True)[:k].tolist()
        return {(sweep.layers[i // n_heads], i % n_heads) for i in order}


def patching(base: TransformerBridge, models: list[Realigned], layers: list[int] | None) -> list[Patching]:
    """Patching sweeps of each model into the base, on :data:`SENTIMENT_PROMPTS`."""
    prompts = prompt_set(SENTIMENT_PROMPTS, (" bad", " good"))
    tokens, metric = prompts.tokens(base), LogitDiff(prompts.answer_tokens(base))
    target = ModelSide(base, name="base")
    return [
        Patching(
            r.name,
            {
                **{
                    k: patch_sweep(target, r.side, k, metric, tokens, layers=layers, positions=[-1])
                    for k in PATCH_KINDS
                },
                "head": patch_sweep(target, r.side, "head", metric, tokens, layers=layers),
            },
        )
        for r in models
    ]


def overlaps(patches: list[Patching], changes: list[ResidualChange], k: int) -> pd.DataFrame:
    """Jaccard overlap of the top-``k`` heads and top-``k`` neurons of each pair of models."""
    heads = {p.name: p.top_heads(k) for p in patches}
    neurons = {}
    for c in changes:
        flat = c.neuron_change.flatten().argsort(descending=True)[:k].tolist()
        neurons[c.name] = {divmod(i, c.neuron_change.shape[1]) for i in flat}
    rows = [
        (f"{a} vs {b}", what, len(top[a] & top[b]) / len(top[a] | top[b]), len(top[a] & top[b]))
        for what, top in (("heads", heads), ("neurons", neurons))
        for a, b in combinations(top, 2)
    ]
    return pd.DataFrame(rows, columns=["pair", "what", "jaccard", "shared"])
