"""The explanation of an IRM's realignment, on a tiny random Llama with an IRM that does something."""

import math

import pytest
import torch

from tests.test_irm_module import randomize_last
from workbench.analysis.attribution import neuron_attribution
from workbench.hooks import attach, capture, hook_name
from workbench.irm import IRM, IRMConfig
from workbench.irm.dimensions import base_magnitudes, dimension_profile
from workbench.irm.explain import (
    TokenSetLogProb,
    _to_base,
    characteristic_tokens,
    explain,
    probe_tokens,
    token_direction,
)
from workbench.irm.text import Encoded
from workbench.neurons.weights import classify, weight_cosines

CFG = IRMConfig(read_hook="attn_out", write_hook="resid_post", hidden_mult=0.5, n_hidden=1)


def test_characteristic_tokens_by_hand(tokenizer):
    corpora = {"a": ["cat cat dog"] * 4, "b": ["dog bird"] * 4}
    out = characteristic_tokens(tokenizer, corpora, k=5, min_count=2)
    ids = {t: tokenizer(t, add_special_tokens=False)["input_ids"] for t in ("cat cat dog", "dog bird")}
    counts_a, counts_b = ids["cat cat dog"], ids["dog bird"]
    vocab = len(set(counts_a) | set(counts_b))
    top = out["a"].iloc[0]
    assert top.token_id not in counts_b  # only in corpus a: the most over-represented there
    n_a, n_b = 4 * len(counts_a), 4 * len(counts_b)
    c = 4 * counts_a.count(top.token_id)
    assert top.log_ratio == pytest.approx(math.log(((c + 1) / (n_a + vocab)) / (1 / (n_b + vocab))))
    assert (out["a"].log_ratio.diff().dropna() <= 0).all() and (out["a"]["count"] >= 2).all()
    with pytest.raises(ValueError, match="at least two"):
        characteristic_tokens(tokenizer, {"a": ["x"]})


def test_token_set_log_prob_by_hand():
    logits = torch.randn(3, 5, 11, generator=torch.Generator().manual_seed(0))
    metric = TokenSetLogProb([2, 7])
    p = logits[:, -1].softmax(-1)
    assert float(metric(logits)) == pytest.approx(float((p[:, 2] + p[:, 7]).log().mean()), rel=1e-5)
    assert metric.positions == (-1,)


def test_probe_tokens_cut_each_text_after_its_prompt():
    data = [Encoded((1, 2, 3, 4, 5), (False, False, True, True, True)), Encoded((1, 2, 9), (False, False, True))]
    data.append(Encoded((1, 2, 6, 7), (False, False, True, True)))
    assert probe_tokens(data, n_reply=2).tolist() == [[1, 2, 3, 4], [1, 2, 6, 7]]  # the 1-token reply is skipped
    with pytest.raises(ValueError, match="reply tokens"):
        probe_tokens(data, n_reply=5)


@pytest.fixture(scope="module")
def setup(tiny_llama):
    model = tiny_llama
    irm = randomize_last(IRM.for_model(model, CFG, seed=2), scale=2.0)
    gen = torch.Generator().manual_seed(0)
    held = [
        Encoded((5, 6, 7, *torch.randint(100, 5000, (n,), generator=gen).tolist()), (False,) * 3 + (True,) * n)
        for n in (6, 8, 7, 9)
    ]
    tokens = characteristic_tokens(
        model.tokenizer, {"a": ["happy happy day"] * 3, "b": ["sad night"] * 3}, k=3, min_count=1
    )["a"]
    classes = classify(weight_cosines(model))
    e = explain(
        model, irm, tokens=tokens, held_out=held, probe=probe_tokens(held, 3), classes=classes, dims=[4, 9], k_neurons=4
    )
    return model, irm, held, tokens, e


def test_dla_terms_add_up_to_the_total_change(setup):
    model, irm, held, tokens, e = setup
    dla = e.dla
    assert list(dla.layer) == [0, 1] and e.dla_total_change != 0
    parts = dla.irm.sum() + dla.attn_change.sum() + dla.mlp_change.sum() + e.dla_embed_change
    assert parts == pytest.approx(e.dla_total_change, rel=1e-4, abs=1e-5)
    # the neuron table's DLA changes are those of the library's neuron attribution, largest first
    probe = probe_tokens(held, 3)
    direction = token_direction(model, tokens.token_id.tolist())
    base = neuron_attribution(model, probe, direction=direction).values
    with irm_on(model, irm):
        inj = neuron_attribution(model, probe, direction=direction).values
    change = (inj - base) * (1 if e.dla_total_change >= 0 else -1)
    top = change.flatten().topk(4)
    assert [(r.layer * 128 + r.neuron) for r in e.neurons.itertuples()] == top.indices.tolist()
    assert e.neurons.realignment_share.tolist() == pytest.approx(
        [c / e.dla_total_change for c in e.neurons.dla_change], rel=1e-6
    )
    assert set(e.neurons.columns) >= {"rw_class", "cos_out_d4", "cos_in_d9", "act_base", "act_irm"}


def irm_on(model, irm):
    from workbench.hooks import attach

    return attach(model, irm.hooks(model))


def test_lens_patching_and_ablation(setup):
    e = setup[-1]
    kl = e.lens_kl.set_index("label").kl
    assert list(kl.index) == ["0_pre", "1_pre", "final_post"]
    assert kl["0_pre"] == pytest.approx(0, abs=1e-6) and kl["1_pre"] > 0 and kl["final_post"] > 0
    p = e.patching.set_index(["kind", "layer"]).normalized
    assert p[("resid_pre", 0)] == pytest.approx(0, abs=1e-5)  # nothing differs before the IRM's first write
    assert e.metric_irm != e.metric_base
    abl = e.ablation
    assert list(abl.kind) == ["top"] * 2 + ["random"] * 6 and list(abl["mode"]) == ["base", "zero"] * 4
    removed = (e.metric_irm - abl.metric) / (e.metric_irm - e.metric_base)
    assert abl.removed.tolist() == pytest.approx(removed.tolist())
    s = e.summary()
    assert s["neuron_ablation"]["k"] == 4 and len(s["top_neurons"]) == 4
    assert s["neuron_ablation"]["top_removed"] == pytest.approx(float(abl.removed.iloc[0]))
    assert s["neuron_ablation"]["zero"]["random_removed"] == pytest.approx(abl.removed.iloc[3::2].tolist(), abs=1e-6)
    assert set(s["patching_by_layer"]) == {"resid_pre", "attn_out", "mlp_out"}


def test_to_base_sets_exactly_the_chosen_neurons_to_the_base_run(setup):
    model, irm, held, _, _ = setup
    probe = probe_tokens(held, 3).to(model.cfg.device)
    name, idx = hook_name(model, "mlp_post", 1), [0, 5, 7]
    with torch.no_grad(), capture(model, [name]) as base:
        model(probe)
    with torch.no_grad(), attach(model, irm.hooks(model)), capture(model, [name]) as injected:
        model(probe)
    hooks = _to_base(model, {1: idx}, base)
    with torch.no_grad(), attach(model, irm.hooks(model)), attach(model, hooks), capture(model, [name]) as patched:
        model(probe)
    rest = [n for n in range(model.cfg.d_mlp) if n not in idx]
    assert not torch.allclose(base[name], injected[name])  # the IRM (writing at layer 0) moves layer 1's neurons
    assert torch.equal(patched[name][..., idx], base[name][..., idx])
    assert torch.equal(patched[name][..., rest], injected[name][..., rest])


def test_dimension_profile_matches_base_magnitudes(setup):
    model, _, held, _, _ = setup
    prof = dimension_profile(model, held, 4, min_count=1)
    mags = base_magnitudes(model, held)
    assert prof.by_layer.mean_abs.tolist() == pytest.approx(mags[:, 4].tolist(), rel=1e-5)
    ratio = mags[:, 4] / mags.median(-1).values
    assert prof.by_layer.ratio_to_median.tolist() == pytest.approx(ratio.tolist(), rel=1e-5)
    assert prof.peak_layer == int(ratio.argmax())
    assert (prof.writers.vector == "w_out").all() and len(prof.tokens) > 0
    with pytest.raises(IndexError, match="out of range"):
        dimension_profile(model, held, 64)
