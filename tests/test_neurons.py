"""Activation statistics against a hand count over cached activations; profiles and their joins."""

import numpy as np
import pytest
import torch

from workbench.analysis.attribution import neuron_attribution
from workbench.hooks import capture
from workbench.neurons.ablation import tokenize_texts
from workbench.neurons.activations import (
    SIGN_COMBOS,
    activation_stats,
    dimension_neurons,
    frequency_by_class,
    neuron_profile,
    neuron_tokens,
)
from workbench.neurons.weights import classify, mlp_weights, weight_cosines

TEXTS = ["the cat sat on the mat", "a quick brown fox jumps over it", "hello", "hi there my old friend, how are you?"]


def _hand_stats(model, texts, large):
    """Count the same statistics text by text from captured activations (no padding involved)."""
    gated = model.cfg.gated_mlp
    out_norm = mlp_weights(model).W_out.norm(dim=-1)
    acc = {}
    n = 0
    for tokens in tokenize_texts(model, texts):
        names = {}
        for layer in range(model.cfg.n_layers):
            names.update(
                {
                    (layer, "pre"): f"blocks.{layer}.mlp.hook_pre",
                    (layer, "post"): f"blocks.{layer}.mlp.hook_post",
                    (layer, "resid"): f"blocks.{layer}.hook_resid_mid",
                }
            )
            if gated:
                names[(layer, "in")] = f"blocks.{layer}.mlp.hook_pre_linear"
        with capture(model, names.values()) as cache:
            model(tokens[None])
        n += len(tokens)
        for layer in range(model.cfg.n_layers):
            pre, post = cache[names[(layer, "pre")]][0], cache[names[(layer, "post")]][0]
            write = post.abs() * out_norm[layer]
            resid = cache[names[(layer, "resid")]][0].norm(dim=-1)
            parts = {
                "gate": pre > 0,
                "post": post > 0,
                "mean": post,
                "write": write,
                "large": write > large * resid[:, None],
            }
            if gated:
                g, i = pre > 0, cache[names[(layer, "in")]][0] > 0
                parts.update(zip(SIGN_COMBOS, (g & i, g & ~i, ~g & i, ~g & ~i)))
            for key, value in parts.items():
                acc.setdefault(key, torch.zeros(model.cfg.n_layers, model.cfg.d_mlp, dtype=torch.float64))[layer] += (
                    value.double().sum(0)
                )
    return {k: v / n for k, v in acc.items()}, n


@pytest.mark.parametrize("fixture", ["tiny_llama", "tiny_gpt2"])
def test_activation_stats_equal_a_hand_count(fixture, request):
    model = request.getfixturevalue(fixture)
    stats = activation_stats(model, TEXTS, large=0.05, batch_size=3)  # batches mix lengths: padding must not count
    hand, n = _hand_stats(model, TEXTS, 0.05)
    assert stats.n_tokens == n
    for name, key in [
        ("freq_gate_pos", "gate"),
        ("freq_post_pos", "post"),
        ("mean_post", "mean"),
        ("mean_write", "write"),
        ("freq_large", "large"),
    ]:
        torch.testing.assert_close(getattr(stats, name).double(), hand[key], atol=1e-5, rtol=1e-4, msg=name)
    if model.cfg.gated_mlp:
        for combo in SIGN_COMBOS:
            torch.testing.assert_close(stats.freq_combos[combo].double(), hand[combo], atol=1e-6, rtol=0)
        torch.testing.assert_close(sum(stats.freq_combos.values()), torch.ones_like(stats.mean_post))
        assert 0 < stats.freq_large.mean() < 1
    else:
        assert stats.freq_combos == {}
    frame = stats.to_frame()
    assert len(frame) == model.cfg.n_layers * model.cfg.d_mlp


def test_frequency_by_class_and_profile_join(tiny_llama):
    cos = weight_cosines(tiny_llama)
    classes = classify(cos, threshold=0.1)  # random weights: a low threshold gives several classes
    stats = activation_stats(tiny_llama, TEXTS)
    freq = frequency_by_class(stats, classes)
    assert (freq.groupby("layer").n_neurons.sum() == tiny_llama.cfg.d_mlp).all()
    row = freq.iloc[0]
    members = [n for layer, n in classes.neurons(row.rw_class) if layer == row.layer]
    assert row.freq_gate_pos == pytest.approx(stats.freq_gate_pos[row.layer, members].mean().item(), abs=1e-6)

    profile = neuron_profile(tiny_llama, cos, classes, stats)
    assert len(profile) == tiny_llama.cfg.n_layers * tiny_llama.cfg.d_mlp
    assert not profile.duplicated(["layer", "neuron"]).any()
    r = profile[(profile.layer == 1) & (profile.neuron == 5)].iloc[0]
    w = mlp_weights(tiny_llama)
    assert r.norm_out == pytest.approx(w.W_out[1, 5].norm().item(), rel=1e-5)
    assert r.cos_in_out == pytest.approx(cos.in_out[1, 5].item(), abs=1e-6)
    assert r.rw_class == classes.label(1, 5)
    assert r.freq_post_pos == pytest.approx(stats.freq_post_pos[1, 5].item(), abs=1e-6)


def test_profile_joins_neuron_attribution_by_hand(tiny_llama):
    """The profile's ``dla`` column is post · (w_out · direction) / final-norm scale, computed here by hand."""
    tokens = tiny_llama.to_tokens("The movie was really")
    answers = torch.tensor([[11, 42]])
    profile = neuron_profile(tiny_llama, attribution=neuron_attribution(tiny_llama, tokens, answers))
    _, cache = tiny_llama.run_with_cache(tokens)
    direction = tiny_llama.W_U[:, 11] - tiny_llama.W_U[:, 42]
    post = cache["blocks.1.mlp.hook_post"][0, -1, 7]
    scale = cache["ln_final.hook_scale"][0, -1, 0]
    w_out = tiny_llama.W_out[1, 7]
    expected = post * (w_out @ direction) / scale  # RMSNorm: no mean removed
    got = profile[(profile.layer == 1) & (profile.neuron == 7)].dla.item()
    assert got == pytest.approx(expected.item(), rel=1e-4, abs=1e-7)
    assert profile.dla.notna().all()


def test_neuron_tokens_read_weights_through_the_unembedding(tiny_llama):
    table = neuron_tokens(tiny_llama, 1, 9, k=3)
    assert set(table.vector) == {"w_out", "-w_out", "w_in", "-w_in", "w_gate", "-w_gate"}
    scores = mlp_weights(tiny_llama).W_out[1, 9] @ tiny_llama.W_U.detach()
    top = table[(table.vector == "-w_out") & (table["rank"] == 0)].iloc[0]
    assert top.score == pytest.approx(-scores.min().item(), rel=1e-5)
    assert top.token == tiny_llama.tokenizer.decode([int(scores.argmin())])
    with pytest.raises(IndexError, match="d_mlp"):
        neuron_tokens(tiny_llama, 0, 10_000)


def test_dimension_neurons_finds_the_largest_weights(tiny_llama):
    w = mlp_weights(tiny_llama)
    table = dimension_neurons(tiny_llama, 7, k=4)
    top = table[(table.vector == "w_out") & (table["rank"] == 0)].iloc[0]
    col = w.W_out[..., 7]
    layer, neuron = np.unravel_index(int(col.abs().argmax()), col.shape)
    assert (top.layer, top.neuron) == (layer, neuron)
    assert top.share == pytest.approx((col[layer, neuron] ** 2 / (w.W_out[layer, neuron] ** 2).sum()).item(), rel=1e-5)
    assert (table.groupby("vector").size() == 4).all()
    with pytest.raises(IndexError, match="d_model"):
        dimension_neurons(tiny_llama, 64)
