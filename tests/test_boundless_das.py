"""Training interventions (Boundless DAS) on bridges, and the experiment at quick size."""

import json

import pytest
import torch

from experiments.boundless_das import BoundlessDASConfig, main
from tests.helpers import tiny_llama_config
from workbench.data.counterfactual import CounterfactualTensors
from workbench.hooks import hook_name
from workbench.interventions.apply import InterventionSet, run_interventions
from workbench.interventions.evaluate import interchange_intervention_accuracy
from workbench.interventions.modules import BoundlessRotatedSpaceIntervention, InterchangeIntervention
from workbench.interventions.price_tagger import price_tokenizer
from workbench.interventions.spec import InterventionSpec
from workbench.interventions.train import AlignmentConfig, train_interventions
from workbench.models import from_config, frozen


@pytest.fixture(scope="module")
def small_vocab_llama():
    """A tiny random Llama over the 35-token price vocabulary (cheap unembedding: fast training)."""
    tok = price_tokenizer()
    return from_config(tiny_llama_config(len(tok)), tok, seed=0, prepend_bos=False)


def _source_prediction_task(model, n=96, seed=0):
    """Counterfactual label = the model's own prediction on the source: a full swap of the last
    position's final residual is a perfect alignment (IIA 1), so a trained subspace must get close."""
    g = torch.Generator().manual_seed(seed)
    base, source = torch.randint(4, 35, (n, 6), generator=g), torch.randint(4, 35, (n, 6), generator=g)
    with torch.no_grad():
        labels, base_labels = model(source)[:, -1].argmax(-1), model(base)[:, -1].argmax(-1)
    return CounterfactualTensors(base, (source,), labels, base_labels)


def test_boundless_das_learns_a_known_alignment(small_vocab_llama):
    model = small_vocab_llama
    data = _source_prediction_task(model)
    spec = InterventionSpec(hook_name(model, "resid_post", 1), positions=(-1,))
    full = InterventionSet([(spec, InterchangeIntervention())])
    assert interchange_intervention_accuracy(model, full, data) == 1.0

    before = {k: v.clone() for k, v in model.state_dict().items()}
    module = BoundlessRotatedSpaceIntervention(model.cfg.d_model, init_width=0.1, seed=0)
    das = InterventionSet([(spec, module)])
    start = interchange_intervention_accuracy(model, das, data)
    cfg = AlignmentConfig(
        steps=120, batch_size=32, lr=2e-2, boundary_lr=1e-2, boundary_penalty=0.0, temperature_start=5.0
    )
    history = train_interventions(model, das, data, cfg)
    end = interchange_intervention_accuracy(model, das, data)
    # near-flat logits of a random model keep the loss high, but the argmax follows the source
    assert start < 0.5 and end >= 0.85 and module.width > 6
    assert sum(history.loss[-20:]) < sum(history.loss[:20])
    assert not das.training and history.temperature[-1] == pytest.approx(0.1)
    assert len(history.to_frame()) == 120 * 3
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # the model is untouched
    assert all(p.requires_grad for p in model.parameters()) and all(p.grad is None for p in model.parameters())


def test_frozen_restores_flags_on_error(tiny_llama):
    flags = [p.requires_grad for p in tiny_llama.parameters()]
    with pytest.raises(RuntimeError), frozen(tiny_llama):
        assert not any(p.requires_grad for p in tiny_llama.parameters())
        raise RuntimeError
    assert [p.requires_grad for p in tiny_llama.parameters()] == flags


def test_train_needs_trainable_weights(tiny_llama):
    data = _source_prediction_task(tiny_llama, n=8)
    static = InterventionSet([(InterventionSpec(hook_name(tiny_llama, "resid_post", 0)), InterchangeIntervention())])
    with pytest.raises(ValueError, match="no trainable weights"):
        train_interventions(tiny_llama, static, data, AlignmentConfig(steps=1))


@pytest.mark.real_model
def test_interchange_with_source_equal_base_on_smollm2(smollm2):
    tokens = smollm2.to_tokens(["When Mary and John went to the store, John gave a drink to"])
    clean = smollm2(tokens)
    d = smollm2.cfg.d_model
    same = InterventionSet(
        [
            (
                InterventionSpec(hook_name(smollm2, "resid_post", 10), positions=(-1,)),
                BoundlessRotatedSpaceIntervention(d),
            ),
            (InterventionSpec(hook_name(smollm2, "z", 20)), InterchangeIntervention()),
        ]
    )
    assert torch.equal(run_interventions(smollm2, same, tokens, tokens).logits, clean)
    assert all(not h.fwd_hooks for h in smollm2.hook_dict.values() if hasattr(h, "fwd_hooks"))


@pytest.mark.slow
def test_experiment_quick(tmp_path):
    summary = main(BoundlessDASConfig(quick=True, out=str(tmp_path)))
    saved = json.loads((tmp_path / "summary.json").read_text())
    assert saved["best"] == summary["best"]
    assert summary["noop_iia"] == 0.5
    for value in (
        summary["task_accuracy"],
        summary["best"]["iia"],
        summary["random_rotation_iia"],
        summary["irrelevant_position"]["iia"],
    ):
        assert 0.0 <= value <= 1.0
    assert summary["best"]["iia"] == max(row["iia"] for row in summary["sweep"])
    assert all(0 <= row["iia_full_swap"] <= 1 for row in summary["sweep"])
    assert 0 <= summary["best"]["width"] <= summary["d_model"]
    assert summary["irrelevant_position"]["token"] == " yes"
    truth = summary["ground_truth"]  # the quick tagger plants its variables after layer 0, at the last position
    assert (truth["layer"], truth["position"], truth["dims"]) == (0, 35, 4)
    assert truth["best_is_planted"] == ((summary["best"]["layer"], summary["best"]["position"]) == (0, 35))
    assert set(truth["overlap_at_planted"]) == {"left", "right"} and all(
        0 <= v <= 1 + 1e-9 for v in truth["overlap_at_planted"].values()
    )
    assert truth["overlap_chance"] == truth["width_at_planted"] / summary["d_model"]
    assert 1_000 < summary["bundle_bytes"] < 100_000
    for name in ("iia_heatmap", "training_curves", "boundary_width"):
        assert (tmp_path / f"{name}.html").exists() and (tmp_path / f"{name}.png").exists()
    assert (tmp_path / "bundle" / "weights.safetensors").exists()
