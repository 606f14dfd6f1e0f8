"""Where and how an IRM changes the model: the library's analyses run on base vs base + IRM.

The realignment of *The Mysterious Case of Neuron 1512* (Smith et al., 2024) is a change of the
next-token distribution. An alignment's *characteristic tokens* (those most over-represented in its
corpus against the other corpora, :func:`characteristic_tokens`) give it a direction in vocabulary
space: :class:`TokenSetLogProb` is the log-probability mass on them, the metric of every analysis here.
On a probe batch (the user prompt plus the first reply tokens of held-out texts, read at the last
position), :func:`explain` measures, layer by layer:

* logit lens (nostalgebraist, 2020): KL(base + IRM || base) of the lens distributions at each layer,
  on held-out texts: where the change of prediction first appears;
* direct logit attribution (Elhage et al., 2021) of each layer's IRM write (the final norm's scale of
  the injected run, the characteristic direction), beside the change in each model component's DLA;
* activation patching (Vig et al., 2020; Heimersheim & Nanda, 2024), injected run -> base run, per
  layer for ``resid_pre``, ``attn_out`` and ``mlp_out`` (0 = base, 1 = the injected run's metric);
* per-neuron attribution: the change of each MLP neuron's DLA (= activation change × its readout),
  the top neurons with their RW class (Gerstner & Schütze, *Weakening Neurons*) and weight cosines
  with the IRM's top residual dimensions, and how much of the realignment setting them to their
  base-run activations (or to zero) in the injected run removes, against random neurons of the same layers;
* the profile of the IRM's top dimension in the base model (:func:`workbench.irm.dimensions.dimension_profile`).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from jaxtyping import Float, Int
from torch import Tensor
from transformer_lens.model_bridge import TransformerBridge

from workbench.analysis.attribution import layer_attribution, neuron_attribution
from workbench.analysis.patching import PatchResult, SweepKind, patch_sweep
from workbench.data.padding import pad_id, right_pad
from workbench.hooks import HookFn, ModelSide, attach, capture, hook_name, hook_names
from workbench.irm.dimensions import DimensionProfile, dimension_profile
from workbench.irm.loss import model_device
from workbench.irm.module import IRM
from workbench.irm.text import Encoded
from workbench.metrics import kl_divergence
from workbench.neurons.ablation import Ablation, ablated, by_layer, mlp_width, random_control
from workbench.neurons.weights import NeuronClasses, mlp_weights

__all__ = [
    "PATCH_KINDS",
    "Explanation",
    "TokenSetLogProb",
    "characteristic_tokens",
    "explain",
    "probe_tokens",
    "token_direction",
]

PATCH_KINDS: tuple[SweepKind, ...] = ("resid_pre", "attn_out", "mlp_out")
"""Activation kinds patched from the injected run into the base run."""


def characteristic_tokens(
    tokenizer, corpora: Mapping[str, Sequence[str]], *, k: int = 20, min_count: int = 5
) -> dict[str, pd.DataFrame]:
    """The tokens most over-represented in each corpus against all the others together.

    Score: log of the smoothed rate (add-one) of the token in the corpus over its rate in the other
    corpora. Tokens seen fewer than ``min_count`` times in the corpus are left out.

    Returns:
        Per corpus, a frame ``token_id, token, count, rate, other_rate, log_ratio`` of the top ``k``.
    """
    if len(corpora) < 2:
        raise ValueError("characteristic tokens compare corpora: give at least two (e.g. negative and positive)")
    counts = {
        name: Counter(t for text in texts for t in tokenizer(text, add_special_tokens=False)["input_ids"])
        for name, texts in corpora.items()
    }
    vocab = set().union(*counts.values())
    out = {}
    for name, own in counts.items():
        other = sum((c for n, c in counts.items() if n != name), Counter())
        n_own, n_other = sum(own.values()), sum(other.values())
        rows = []
        for t, c in own.items():
            if c < min_count:
                continue
            rate = (c + 1) / (n_own + len(vocab))
            other_rate = (other[t] + 1) / (n_other + len(vocab))
            rows.append((t, tokenizer.decode([t]), c, rate, other_rate, float(np.log(rate / other_rate))))
        df = pd.DataFrame(rows, columns=["token_id", "token", "count", "rate", "other_rate", "log_ratio"])
        out[name] = df.sort_values(["log_ratio", "token_id"], ascending=[False, True]).head(k).reset_index(drop=True)
    return out


class TokenSetLogProb:
    """Log of the next-token probability mass on a token set at ``pos``, mean over the batch (a patching metric)."""

    def __init__(self, token_ids: Sequence[int], pos: int = -1):
        if not len(token_ids):
            raise ValueError("the token set is empty: give at least one token id")
        self.ids = torch.as_tensor(list(token_ids), dtype=torch.long)
        self.pos = pos

    @property
    def positions(self) -> tuple[int, ...]:
        """The positions of the logits this metric reads."""
        return (self.pos,)

    def on_positions(self, logits: Float[Tensor, "batch n d_vocab"]) -> Tensor:
        """The metric from the logits at :attr:`positions` only."""
        logp = logits[:, 0].float().log_softmax(-1)
        return logp[:, self.ids.to(logp.device)].logsumexp(-1).mean()

    def __call__(self, logits: Float[Tensor, "batch pos d_vocab"]) -> Tensor:
        return self.on_positions(logits[:, [self.pos]])


def token_direction(model: TransformerBridge, token_ids: Sequence[int]) -> Float[Tensor, " d_model"]:
    """Mean unembedding of the token set minus the mean unembedding of the vocabulary (the DLA direction)."""
    w_u = model.W_U.detach().float()
    return (w_u[:, list(token_ids)].mean(1) - w_u.mean(1)).cpu()


def probe_tokens(data: Sequence[Encoded], n_reply: int = 3, n: int = 16) -> Int[Tensor, "batch pos"]:
    """Equal-length probe prompts: each text's prompt plus its first ``n_reply`` reply tokens.

    Texts with fewer reply tokens are skipped; at most ``n`` prompts are returned.
    """
    rows = []
    for e in data:
        if True not in e.scored:
            continue
        length = e.scored.index(True) + n_reply
        if len(e.ids) >= length:
            rows.append(e.ids[:length])
    lengths = {len(r) for r in rows}
    if not rows or len(lengths) != 1:
        raise ValueError(
            f"need held-out texts with >= {n_reply} reply tokens after one common prompt; got prompt lengths {lengths}"
        )
    return torch.tensor(rows[:n])


@dataclass(frozen=True)
class Explanation:
    """The per-layer and per-neuron account of one IRM's realignment (see the module docstring)."""

    tokens: pd.DataFrame
    """The characteristic tokens of the metric."""
    metric_base: float
    """Log-probability mass on the characteristic tokens, base model (probe batch, last position)."""
    metric_irm: float
    """The same with the IRM injected."""
    lens_kl: pd.DataFrame
    """``point, label, kl``: KL(base + IRM || base) of the logit-lens distributions, mean over held-out tokens."""
    dla: pd.DataFrame
    """``layer, irm, attn_change, mlp_change``: DLA of each layer's IRM write; change of each component's DLA."""
    dla_embed_change: float
    """Change of the embeddings' DLA (the embeddings are equal; the final norm's scale is not)."""
    dla_total_change: float
    """Change of the direction's (final-norm-scaled) logit between the runs: the sum of all DLA terms."""
    patching: pd.DataFrame
    """``kind, layer, value, normalized``: injected activation patched into the base run."""
    neurons: pd.DataFrame
    """Top neurons by DLA change, with activations, ``realignment_share``, ``rw_class`` and weight cosines."""
    ablation: pd.DataFrame
    """``kind (top/random), draw, mode, metric, removed``: the top neurons (or random ones of the same layers) in
    the injected run set to their base-run activations (``mode="base"``: removes exactly the change the IRM
    causes through them) or to zero (``mode="zero"``: also removes what they did in the base model)."""
    profile: DimensionProfile
    """The base model's view of the IRM's top dimension."""

    def summary(self) -> dict:
        """The numbers ``summary.json`` keeps."""
        abl = self.ablation
        dla = self.dla.set_index("layer")
        return {
            "characteristic_tokens": self.tokens.token.tolist(),
            "metric_base": self.metric_base,
            "metric_irm": self.metric_irm,
            "logit_lens_kl_by_layer": dict(zip(self.lens_kl.label, self.lens_kl.kl.round(6))),
            "irm_dla_by_layer": {int(k): round(float(v), 6) for k, v in zip(dla.index, dla.irm)},
            "component_dla_change_by_layer": {
                int(k): {"attn": round(float(attn), 6), "mlp": round(float(mlp), 6)}
                for k, attn, mlp in zip(dla.index, dla.attn_change, dla.mlp_change)
            },
            "dla_embed_change": self.dla_embed_change,
            "dla_total_change": self.dla_total_change,
            "patching_by_layer": {
                kind: {int(layer): round(float(value), 6) for layer, value in zip(g.layer, g.normalized)}
                for kind, g in self.patching.groupby("kind", sort=False)
            },
            "top_neurons": self.neurons.to_dict("records"),
            "neuron_ablation": {
                "k": len(self.neurons),
                "mode": "base activation",
                **_removed(abl[abl["mode"] == "base"]),
                "zero": _removed(abl[abl["mode"] == "zero"]),
            },
            "dimension_profile": self.profile.summary(),
        }


def _removed(abl: pd.DataFrame) -> dict:
    rand = abl[abl.kind == "random"].removed
    return {
        "top_removed": float(abl[abl.kind == "top"].removed.iloc[0]),
        "random_removed_mean": float(rand.mean()),
        "random_removed_std": float(rand.std(ddof=0)),
        "random_removed": rand.round(6).tolist(),
    }


def _lens_kl(model: TransformerBridge, irm: IRM, data: Sequence[Encoded], max_tokens: int) -> pd.DataFrame:
    n = model.cfg.n_layers
    names = [*hook_names(model, "resid_pre"), hook_name(model, "resid_post", n - 1)]
    labels = [f"{layer}_pre" for layer in range(n)] + ["final_post"]
    tokens, scored = right_pad(
        [e.ids for e in data], pad_id(model.tokenizer), marks=[e.scored for e in data], device=model_device(model)
    )
    runs = []
    for hooks in ([], irm.hooks(model)):
        with torch.no_grad(), attach(model, hooks), capture(model, names) as acts:
            model(tokens)
        runs.append({name: act[scored][:max_tokens] for name, act in acts.items()})
    rows = []
    with torch.no_grad():
        for i, name in enumerate(names):
            base, inj = (model.ln_final(r[name][None])[0, :, None] @ model.W_U.detach() for r in runs)
            rows.append((i, labels[i], float(kl_divergence(base, inj, pos=0))))
    return pd.DataFrame(rows, columns=["point", "label", "kl"])


def _patching(result: PatchResult) -> pd.DataFrame:
    df = result.to_frame()
    if "normalized" not in df:  # the IRM does not move the metric: nothing to normalise by
        df["normalized"] = float("nan")
    return df[["kind", "layer", "value", "normalized"]]


def _last(model: TransformerBridge, tokens: Tensor, names: list[str], hooks) -> dict[str, Tensor]:
    with torch.no_grad(), attach(model, hooks), capture(model, names) as acts:
        model(tokens)
    return {name: act[:, -1].float().cpu() for name, act in acts.items()}


def _project(model: TransformerBridge, x: Tensor, scale: Tensor, direction: Tensor) -> Tensor:
    """``x / scale · direction`` (centred first for LayerNorm models), as direct logit attribution projects."""
    if model.cfg.normalization_type in ("LN", "LNPre") and not getattr(model.cfg, "final_rms", False):
        x = x - x.mean(-1, keepdim=True)
    return (x / scale) @ direction


def _irm_dla(model: TransformerBridge, irm: IRM, probe: Tensor, direction: Tensor) -> tuple[Tensor, float]:
    """DLA of each layer's IRM write and the total change of the direction's logit (mean over the probe batch)."""
    final = hook_name(model, "resid_post", model.cfg.n_layers - 1)
    names = [final, "ln_final.hook_scale"]
    base = _last(model, probe, names, [])
    record: list[Tensor] = []
    inj = _last(model, probe, names, irm.hooks(model, record=record))
    out = record[-1][:, -1].float().cpu()  # batch layer d_model
    per_layer = _project(model, out, inj["ln_final.hook_scale"][:, None], direction).mean(0)
    total = _project(model, inj[final], inj["ln_final.hook_scale"], direction) - _project(
        model, base[final], base["ln_final.hook_scale"], direction
    )
    return per_layer, float(total.mean())


def _neurons(
    model: TransformerBridge,
    irm: IRM,
    probe: Tensor,
    direction: Tensor,
    total: float,
    classes: NeuronClasses,
    dims: Sequence[int],
    k: int,
) -> pd.DataFrame:
    posts = hook_names(model, "mlp_post")
    act_base = torch.stack(list(_last(model, probe, posts, []).values())).mean(1)  # layer d_mlp
    act_inj = torch.stack(list(_last(model, probe, posts, irm.hooks(model)).values())).mean(1)
    base = neuron_attribution(model, probe, direction=direction).values
    with attach(model, irm.hooks(model)):
        inj = neuron_attribution(model, probe, direction=direction).values
    change = inj - base
    sign = 1.0 if total >= 0 else -1.0
    order = (change * sign).flatten().argsort(descending=True)[:k].tolist()
    w = mlp_weights(model)
    d_mlp = change.shape[1]
    rows = []
    for i in order:
        layer, neuron = divmod(i, d_mlp)
        w_out, w_in = w.W_out[layer, neuron], w.W_in[layer, neuron]
        row = {
            "layer": layer,
            "neuron": neuron,
            "label": f"L{layer}N{neuron}",
            "act_base": float(act_base[layer, neuron]),
            "act_irm": float(act_inj[layer, neuron]),
            "dla_base": float(base[layer, neuron]),
            "dla_change": float(change[layer, neuron]),
            "realignment_share": float(change[layer, neuron]) / total if total else float("nan"),
            "rw_class": classes.label(layer, neuron),
        }
        for d in dims:
            row[f"cos_out_d{d}"] = float(w_out[d] / w_out.norm())
            row[f"cos_in_d{d}"] = float(w_in[d] / w_in.norm())
        rows.append(row)
    return pd.DataFrame(rows)


def _to_base(
    model: TransformerBridge, neurons: Mapping[int, list[int]], base_posts: Mapping[str, Tensor]
) -> list[tuple[str, HookFn]]:
    """Hooks that set ``neurons`` to their activations in the base run (every position)."""

    def make(name: str, idx: list[int]) -> HookFn:
        def hook(post: Tensor, hook) -> Tensor:
            post = post.clone()
            post[..., idx] = base_posts[name][..., idx].to(post.dtype)
            return post

        return hook

    return [
        (hook_name(model, "mlp_post", layer), make(hook_name(model, "mlp_post", layer), ns))
        for layer, ns in neurons.items()
    ]


def _ablation(
    model: TransformerBridge,
    irm: IRM,
    probe: Tensor,
    metric: TokenSetLogProb,
    neurons: pd.DataFrame,
    base: float,
    full: float,
    **kw,
) -> pd.DataFrame:
    top = by_layer(list(zip(neurons.layer.tolist(), neurons.neuron.tolist())))
    sets = [("top", 0, top)]
    sets += [("random", i, random_control(top, mlp_width(model), seed=kw["seed"] + i)) for i in range(kw["n_random"])]
    with torch.no_grad(), capture(model, hook_names(model, "mlp_post")) as base_posts:
        model(probe)
    rows = []
    for kind, draw, ns in sets:
        for mode in ("base", "zero"):
            with torch.no_grad(), attach(model, irm.hooks(model)):
                edit = (
                    ablated(model, ns, Ablation("zero"))
                    if mode == "zero"
                    else attach(model, _to_base(model, ns, base_posts))
                )
                with edit:
                    value = float(metric(model(probe)))
            removed = (full - value) / (full - base) if full != base else float("nan")
            rows.append((kind, draw, mode, value, removed))
    return pd.DataFrame(rows, columns=["kind", "draw", "mode", "metric", "removed"])


def explain(
    model: TransformerBridge,
    irm: IRM,
    *,
    tokens: pd.DataFrame,
    held_out: Sequence[Encoded],
    probe: Int[Tensor, "batch pos"],
    classes: NeuronClasses,
    dims: Sequence[int],
    k_neurons: int = 10,
    n_random: int = 3,
    seed: int = 0,
    lens_tokens: int = 64,
) -> Explanation:
    """Explain one IRM's realignment (module docstring).

    Args:
        model: the bridge.
        irm: the trained IRM.
        tokens: the alignment's characteristic tokens (a frame from :func:`characteristic_tokens`).
        held_out: held-out texts of the alignment (logit lens, dimension profile).
        probe: probe prompts from :func:`probe_tokens` (DLA, patching, neurons, ablation; last position).
        classes: RW classes of the model's neurons (:func:`workbench.neurons.weights.classify`).
        dims: the IRM's top residual dimensions (the first is profiled; weight cosines with each).
        k_neurons: neurons in the top table and the ablation.
        n_random: random neuron sets in the ablation control.
        seed: seed of the random neuron sets.
        lens_tokens: held-out tokens the logit lens averages over.
    """
    ids = tokens.token_id.tolist()
    metric = TokenSetLogProb(ids)
    direction = token_direction(model, ids)
    probe = probe.to(model.cfg.device)
    base_side = ModelSide(model, name="base")
    inj_side = ModelSide(model, hooks=tuple(irm.hooks(model)), name="irm")
    with torch.no_grad():
        m_base = float(metric(base_side.run(probe)[0]))
        m_irm = float(metric(inj_side.run(probe)[0]))
    irm_dla, total = _irm_dla(model, irm, probe, direction)
    base_attr = layer_attribution(model, probe, direction=direction).to_frame()
    with attach(model, irm.hooks(model)):
        inj_attr = layer_attribution(model, probe, direction=direction).to_frame()
    change = inj_attr.assign(change=inj_attr.value - base_attr.value)
    dla = pd.DataFrame({"layer": list(irm.layers), "irm": irm_dla.tolist()}).merge(
        change[change.layer >= 0].pivot(index="layer", columns="part", values="change").reset_index(), how="right"
    )
    dla = dla.rename(columns={"attn": "attn_change", "mlp": "mlp_change"}).fillna({"irm": 0.0})
    patching = pd.concat(
        [_patching(patch_sweep(base_side, inj_side, kind, metric, probe, positions=[-1])) for kind in PATCH_KINDS],
        ignore_index=True,
    )
    neurons = _neurons(model, irm, probe, direction, total, classes, dims, k_neurons)
    ablation = _ablation(model, irm, probe, metric, neurons, m_base, m_irm, seed=seed, n_random=n_random)
    return Explanation(
        tokens=tokens,
        metric_base=m_base,
        metric_irm=m_irm,
        lens_kl=_lens_kl(model, irm, held_out[:16], lens_tokens),
        dla=dla[["layer", "irm", "attn_change", "mlp_change"]],
        dla_embed_change=float(change[change.layer < 0].change.sum()),
        dla_total_change=total,
        patching=patching,
        neurons=neurons,
        ablation=ablation,
        profile=dimension_profile(model, held_out, dims[0]),
    )
