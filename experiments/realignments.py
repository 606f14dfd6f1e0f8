"""Do IRM, RL and supervised tuning realign the model in the same places? (``python -m experiments.realignments``)

Three realignments of the default model towards negativity, each against the base on the same
prompts: the negative IRM of *The Mysterious Case of Neuron 1512* (Smith et al., 2024; the main
job's checkpoint in ``runs/neuron1512/card/negative/seed-0`` when present, else one trained here at quick
size), the GRPO model (:func:`workbench.tuning.rl_tune`, every layer, VADER reward) and the
supervised model (:func:`workbench.tuning.tune_last_layers`, last 2 layers on the negative tweets).

* How far behaviour moved: VADER negativity of sampled continuations of held-out prompts (gain
  over the base with a paired bootstrap 95% interval), KL to the base per completion token, and
  the loss on held-out negative tweets.
* Where the model changed: per-layer norm of the residual-stream difference (relative to the
  base's), patching recovery by layer (the realigned model's resid_pre / attn_out / mlp_out at the
  last position patched into the base's run on the " bad" − " good" prompts), cosine similarity of
  the three mean residual changes per layer, and the overlap of their top heads (head patching)
  and top neurons (mean change of the MLP activations).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from itertools import combinations
from pathlib import Path

import pandas as pd
import plotly.express as px
import plotly.graph_objects as go
import torch
import torch.nn.functional as F
from plotly.subplots import make_subplots
from transformer_lens.model_bridge import TransformerBridge

from experiments.common import parse_config, write_outputs
from experiments.model_diff import SENTIMENT_PROMPTS, ModelDiffConfig, make_tuned, prompt_set, rl_config
from workbench.analysis.patching import ModelSide, PatchResult, patch_sweep
from workbench.config import Config
from workbench.data.corpora import load_alignment
from workbench.hooks import attach, hook_names
from workbench.irm import IRM, IRMConfig, TrainConfig, eval_loss, latest_checkpoint, load_irm, train_irm
from workbench.irm.train import encode_for
from workbench.metrics import LogitDiff
from workbench.models import DEFAULT_MODEL, load_model
from workbench.tuning import paired_bootstrap, rl_prompts, vader_negativity

PATCH_KINDS = ("resid_pre", "attn_out", "mlp_out")
MAIN_JOB_IRM = "runs/neuron1512/card/negative/seed-0"
"""Where ``python -m experiments.neuron1512`` trains the negative IRM."""
CAPTIONS = {
    "behaviour": "How far each realignment moved behaviour: negativity gain over the base (bars above 0 with the "
    "interval clear of 0 moved it), KL to the base per token, and the loss on held-out negative tweets (lower = "
    "closer to them).",
    "residual_diff_norm": "Where each model's residual stream departs from the base's: a curve at 0 up to a layer "
    "means nothing changed before it.",
    "patching_recovery": "How much of each model's logit difference one layer's activation (last position) brings "
    "into the base's run: the layers where the behaviour is written.",
    "residual_cosine": "Whether two realignments push the residual stream the same way at a layer (1 = same "
    "direction, 0 = unrelated).",
    "top_overlap": "Do the realignments use the same components? Jaccard overlap of their top heads (head patching) "
    "and top neurons (MLP activation change).",
}


@dataclass(frozen=True)
class RealignmentsConfig(Config):
    """Three realignments towards negativity compared with the base and with each other."""

    base: str = DEFAULT_MODEL
    """Base model (registry name or HF folder)."""
    irm: str | None = None
    """The negative IRM (checkpoint or training folder); default: the main job's
    runs/neuron1512/card/negative/seed-0 if there."""
    irm_train_dir: str = "runs/realignments/irm"
    """Where an IRM is trained (resumably) when there is none to take."""
    irm_steps: int = 40
    """Steps of the IRM trained here when there is no checkpoint (quick: 10)."""
    n_prompts: int = 32
    """Held-out RL prompts for behaviour and residual differences (quick: 6)."""
    samples: int = 4
    """Sampled continuations per prompt and model (quick: 2)."""
    max_new_tokens: int = 16
    """Tokens per continuation (quick: 10)."""
    eval_texts: int = 64
    """Held-out negative tweets for the loss (quick: 12)."""
    top_k: int = 10
    """Top heads and top neurons compared between realignments."""
    out: str = "figures/realignments"
    """Output folder."""
    quick: bool = False
    """Small, fast run (for tests): quick tuning and IRM, few prompts, the last 6 layers in patching, no PNGs."""
    seed: int = 0
    """Seed."""

    def sized(self, full: int, quick: int) -> int:
        """``full``, or ``quick`` under ``--quick`` (each size field's help names both)."""
        return quick if self.quick else full


@dataclass(frozen=True)
class Realigned:
    """One realigned model as a side of the comparison with the base."""

    name: str
    """``irm``, ``rl`` or ``supervised``."""
    side: ModelSide
    """The model (with the IRM's hooks for ``irm``)."""
    source: str
    """Where it came from (a checkpoint or a folder)."""


def negative_irm(cfg: RealignmentsConfig, base: TransformerBridge) -> tuple[IRM, Path]:
    """The IRM at ``cfg.irm``, else the main job's negative IRM if there, else one trained into ``cfg.irm_train_dir``.

    The fallback never writes into the main job's folder, so a quick IRM cannot be mistaken for the
    main job's (whose training would resume from it).
    """
    path = Path(cfg.irm or MAIN_JOB_IRM)
    found = [path] if (path / "irm.json").is_file() else [latest_checkpoint(p) for p in (path / "checkpoints", path)]
    checkpoint = next((c for c in found if c is not None), None)
    if checkpoint is None:
        train_dir = Path(cfg.irm_train_dir) / ("quick" if cfg.quick else "full")
        corpus = load_alignment("negative", max_items=400 if cfg.quick else 4000, seed=cfg.seed)
        irm = IRM.for_model(base, IRMConfig(hidden_mult=1.0), seed=cfg.seed)
        steps = cfg.sized(cfg.irm_steps, 10)
        train = TrainConfig(steps=steps, batch_size=4 if cfg.quick else 8, max_len=40, eval_every=0, seed=cfg.seed)
        train_irm(base, irm, corpus.train, train, held_out=corpus.held_out, out_dir=train_dir, progress=False)
        checkpoint = latest_checkpoint(train_dir / "checkpoints")
    return load_irm(checkpoint, base), checkpoint


def realignments(cfg: RealignmentsConfig, base: TransformerBridge) -> list[Realigned]:
    """The IRM-injected base, the RL model and the supervised model (trained or taken from the caches)."""
    irm, checkpoint = negative_irm(cfg, base)
    found = [Realigned("irm", ModelSide(base, hooks=tuple(irm.hooks(base)), name="irm"), str(checkpoint))]
    for method in ("rl", "supervised"):
        tuned = make_tuned(ModelDiffConfig(base=cfg.base, tuning=method, quick=cfg.quick, seed=cfg.seed))
        found.append(Realigned(method, ModelSide(tuned.model, name=method), str(tuned.path)))
    return found


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
        tokens = model.to_tokens(prompt).repeat(cfg.sized(cfg.samples, 2), 1)
        torch.manual_seed(cfg.seed + i)
        with attach(model, side.hooks):
            out = model.generate(
                tokens,
                max_new_tokens=cfg.sized(cfg.max_new_tokens, 10),
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
    prompts = rl_prompts(rl_config(ModelDiffConfig(base=cfg.base, quick=cfg.quick, seed=cfg.seed)))[1]
    return prompts[: cfg.sized(cfg.n_prompts, 6)]


def behaviour(
    cfg: RealignmentsConfig, base: TransformerBridge, models: list[Realigned], prompts: list[str]
) -> list[Behaviour]:
    """Negativity gain, KL and held-out loss of each model, the base first (its gain and KL are 0)."""
    negative = load_alignment("negative", seed=cfg.seed, max_items=4000)
    held = encode_for(base, negative.held_out[: cfg.sized(cfg.eval_texts, 12)], TrainConfig())
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
    """[layer, d_model] the mean residual change."""
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
        norms, means, mlp = [], [], []
        for p, ref in zip(prompts, base_acts):
            acts = r.side.run(r.side.model.to_tokens(p), names)[1]
            diff = torch.stack([acts[n][0] - ref[n][0] for n in resid])  # [layer pos d_model]
            scale = torch.stack([ref[n][0] for n in resid]).norm(dim=-1)
            norms.append((diff.norm(dim=-1) / scale).mean(-1))
            means.append(diff.mean(1))
            mlp.append(torch.stack([(acts[n][0] - ref[n][0]).abs().mean(0) for n in neurons]))
        out.append(
            ResidualChange(r.name, torch.stack(norms).mean(0), torch.stack(means).mean(0), torch.stack(mlp).mean(0))
        )
    return out


def norm_frame(changes: list[ResidualChange]) -> pd.DataFrame:
    """Columns ``model, layer, relative_norm``."""
    rows = [(c.name, layer, float(v)) for c in changes for layer, v in enumerate(c.relative_norm)]
    return pd.DataFrame(rows, columns=["model", "layer", "relative_norm"])


def cosines(changes: list[ResidualChange]) -> pd.DataFrame:
    """Per layer and pair of models, the cosine similarity of their mean residual changes."""
    rows = [
        (f"{a.name} vs {b.name}", layer, float(cos))
        for a, b in combinations(changes, 2)
        for layer, cos in enumerate(F.cosine_similarity(a.mean_change, b.mean_change, dim=-1))
    ]
    return pd.DataFrame(rows, columns=["pair", "layer", "cosine"])


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


def figures(moved: list[Behaviour], changes: list[ResidualChange], patches: list[Patching], cos, overlap) -> dict:
    """One side-by-side figure per question."""
    frame = pd.DataFrame([vars(b) for b in moved])
    fig = make_subplots(
        rows=1, cols=3, subplot_titles=["VADER negativity gain (95% CI)", "KL to base", "held-out loss"]
    )
    errors = dict(
        type="data",
        symmetric=False,
        array=[b.gain_ci[1] - b.gain for b in moved],
        arrayminus=[b.gain - b.gain_ci[0] for b in moved],
    )
    fig.add_trace(go.Bar(x=frame.name, y=frame.gain, error_y=errors, showlegend=False), row=1, col=1)
    fig.add_trace(go.Bar(x=frame.name, y=frame.kl_to_base, showlegend=False), row=1, col=2)
    fig.add_trace(go.Bar(x=frame.name, y=frame.heldout_loss, showlegend=False), row=1, col=3)
    fig.update_layout(title="How far behaviour moved (base vs each realignment)")
    norms = norm_frame(changes)
    recovery = pd.concat([p.recovery() for p in patches])
    return {
        "behaviour": fig,
        "residual_diff_norm": px.line(
            norms,
            x="layer",
            y="relative_norm",
            color="model",
            markers=True,
            title="‖resid − base resid‖ / ‖base resid‖",
        ),
        "patching_recovery": px.line(
            recovery,
            x="layer",
            y="recovery",
            color="model",
            facet_col="kind",
            markers=True,
            title="Patching recovery by layer (last position; 0 = base, 1 = the realigned model)",
        ),
        "residual_cosine": px.line(
            cos, x="layer", y="cosine", color="pair", markers=True, title="Cosine of the mean residual changes"
        ),
        "top_overlap": px.bar(
            overlap, x="pair", y="jaccard", color="what", barmode="group", title="Overlap of top heads / neurons"
        ),
    }


def main(cfg: RealignmentsConfig) -> dict:
    """Build or load the three realignments, measure them against the base, write figures and ``summary.json``."""
    clock, seconds = time.perf_counter(), {}

    def lap(phase: str) -> None:
        nonlocal clock
        seconds[phase], clock = time.perf_counter() - clock, time.perf_counter()

    torch.manual_seed(cfg.seed)
    base = load_model(cfg.base)
    models = realignments(cfg, base)
    lap("models")
    prompts = heldout_prompts(cfg)
    moved = behaviour(cfg, base, models, prompts)
    lap("behaviour")
    changes = residual_changes(base, models, prompts)
    lap("residual_changes")
    n_layers = base.cfg.n_layers
    patches = patching(base, models, list(range(n_layers - 6, n_layers)) if cfg.quick else None)
    lap("patching")
    cos, overlap = cosines(changes), overlaps(patches, changes, cfg.top_k)
    recovery = pd.concat([p.recovery() for p in patches])
    summary = {
        "models": {r.name: r.source for r in models},
        "behaviour": {b.name: {k: v for k, v in vars(b).items() if k != "name"} for b in moved},
        "residual_diff_norm_peak_layer": {c.name: int(c.relative_norm.argmax()) for c in changes},
        "patching_recovery_peak_layer": {
            f"{p.name}/{kind}": int(frame.loc[frame.recovery.abs().idxmax(), "layer"])
            for p in patches
            for kind, frame in p.recovery().reset_index(drop=True).groupby("kind")
        },
        "mean_cosine_by_pair": cos.groupby("pair").cosine.mean().to_dict(),
        "top_overlap": overlap.to_dict("records"),
        "seconds": sum(seconds.values()),
        "seconds_by_phase": seconds,
    }
    tables = {
        "behaviour": pd.DataFrame([vars(b) for b in moved]),
        "patching_recovery": recovery,
        "residual_diff_norm": norm_frame(changes),
        "residual_cosine": cos,
        "top_overlap": overlap,
    }
    write_outputs(
        cfg.out,
        cfg,
        figures=figures(moved, changes, patches, cos, overlap),
        tables=tables,
        summary=summary,
        png=not cfg.quick,
        captions=CAPTIONS,
    )
    return summary


if __name__ == "__main__":
    main(parse_config(RealignmentsConfig, description=__doc__.splitlines()[0]))
