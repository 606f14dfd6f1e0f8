"""RW weight analysis: cosines and classes against a hand-built tiny Llama, randomness baselines."""

import copy

import numpy as np
import pytest
import torch
from transformers import AutoModelForCausalLM

from tests.helpers import tiny_llama_config
from workbench.hooks import capture
from workbench.models import boot
from workbench.neurons.weights import (
    CLASS_NAMES,
    VANILLA_CLASS_NAMES,
    beta_randomness_region,
    classify,
    cosine_quantile,
    empirical_randomness_region,
    mlp_weights,
    weight_cosines,
)

# Target (cos(w_in,w_out), cos(w_gate,w_out), cos(w_gate,w_in)) for one neuron of each class;
# each triple is a valid Gram matrix, so three unit vectors with exactly these cosines exist.
HAND = [
    ("strengthening", (0.8, 0.8, 0.8)),
    ("atypical strengthening", (0.6, 0.6, 0.0)),
    ("conditional strengthening", (0.8, 0.0, 0.0)),
    ("atypical conditional strengthening", (0.8, 0.1, 0.6)),
    ("proportional change", (0.0, 0.8, 0.0)),
    ("atypical proportional change", (0.1, 0.8, 0.6)),
    ("orthogonal output", (0.1, -0.2, 0.7)),
    ("weakening", (-0.8, 0.8, -0.8)),
    ("atypical weakening", (-0.6, 0.6, 0.0)),
    ("conditional weakening", (-0.8, 0.0, 0.0)),
    ("atypical conditional weakening", (-0.8, 0.1, -0.6)),
    ("weakening", (-0.8, -0.8, 0.8)),  # gate reads -w_out: |approx cos(w_gate, w_out)| = 1
    ("strengthening", (0.8, -0.8, -0.8)),
    ("orthogonal output", (0.0, 0.0, 0.0)),
]


def _vectors(io, go, gi, d, gen):
    """Unit vectors out, in, gate with the given cosines, randomly rotated and scaled."""
    gram = torch.tensor([[1, io, go], [io, 1, gi], [go, gi, 1]], dtype=torch.float64)
    chol = torch.linalg.cholesky(gram)  # rows: coordinates of out, in, gate
    rot, _ = torch.linalg.qr(torch.randn(d, d, generator=gen, dtype=torch.float64))
    vecs = chol @ rot[:3]
    scales = torch.rand(3, 1, generator=gen, dtype=torch.float64) * 2 + 0.1
    return (vecs * scales).float()


@pytest.fixture(scope="module")
def hand_llama(tokenizer):
    """A tiny Llama whose layer-1 neurons 0..13 are set by hand to the cosines in HAND; random RMSNorm gains."""
    torch.manual_seed(0)
    hf = AutoModelForCausalLM.from_config(tiny_llama_config(len(tokenizer)), attn_implementation="eager").eval()
    gen = torch.Generator().manual_seed(1)
    mlp = hf.model.layers[1].mlp
    with torch.no_grad():
        for n, (_, (io, go, gi)) in enumerate(HAND):
            out, w_in, gate = _vectors(io, go, gi, hf.config.hidden_size, gen)
            mlp.down_proj.weight[:, n] = out
            mlp.up_proj.weight[n] = w_in
            mlp.gate_proj.weight[n] = gate
    raw = copy.deepcopy(hf)
    with torch.no_grad():
        for layer in hf.model.layers:  # gains != 1 so that folding changes W_in/W_gate
            layer.post_attention_layernorm.weight.uniform_(0.5, 1.5)
    gains = torch.stack([layer.post_attention_layernorm.weight.detach().clone() for layer in hf.model.layers])
    raw_with_gain = copy.deepcopy(hf)
    folded_bridge = boot(hf, tokenizer, "LlamaForCausalLM", compat=True, prepend_bos=False)
    raw_bridge = boot(raw_with_gain, tokenizer, "LlamaForCausalLM", compat=False, prepend_bos=False)
    return {"raw_hf": raw, "gains": gains, "folded": folded_bridge, "raw": raw_bridge}


def _np_cos(a, b):
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return (a * b).sum(-1) / np.linalg.norm(a, axis=-1) / np.linalg.norm(b, axis=-1)


def test_hand_set_neurons_land_in_their_class(hand_llama):
    cos = weight_cosines(hand_llama["raw"])
    classes = classify(cos)
    for n, (name, (io, go, gi)) in enumerate(HAND):
        got = (cos.in_out[1, n].item(), cos.gate_out[1, n].item(), cos.gate_in[1, n].item())
        np.testing.assert_allclose(got, (io, go, gi), atol=1e-5, err_msg=name)
        assert classes.label(1, n) == name


def test_cosines_equal_hand_computation_on_raw_weights(hand_llama):
    hf = hand_llama["raw_hf"]
    cos = weight_cosines(hand_llama["raw"])
    for layer, block in enumerate(hf.model.layers):
        w_in, w_gate = block.mlp.up_proj.weight.detach(), block.mlp.gate_proj.weight.detach()
        w_out = block.mlp.down_proj.weight.detach().T
        np.testing.assert_allclose(cos.in_out[layer], _np_cos(w_in, w_out), atol=1e-5)
        np.testing.assert_allclose(cos.gate_out[layer], _np_cos(w_gate, w_out), atol=1e-5)
        np.testing.assert_allclose(cos.gate_in[layer], _np_cos(w_gate, w_in), atol=1e-5)


def test_folded_weights_include_the_rmsnorm_gain(hand_llama):
    hf, gains = hand_llama["raw_hf"], hand_llama["gains"]
    cos = weight_cosines(hand_llama["folded"])
    for layer, block in enumerate(hf.model.layers):
        g = gains[layer]
        w_in, w_gate = block.mlp.up_proj.weight.detach() * g, block.mlp.gate_proj.weight.detach() * g
        w_out = block.mlp.down_proj.weight.detach().T
        np.testing.assert_allclose(cos.in_out[layer], _np_cos(w_in, w_out), atol=1e-5)
        np.testing.assert_allclose(cos.gate_in[layer], _np_cos(w_gate, w_in), atol=1e-5)
    assert not torch.allclose(cos.in_out, weight_cosines(hand_llama["raw"]).in_out, atol=1e-3)


def test_hook_semantics_of_the_gated_mlp(hand_llama, tokenizer):
    """hook_pre = gate projection, hook_pre_linear = up projection, hook_post = silu(gate) * up."""
    model = hand_llama["folded"]
    w = mlp_weights(model)
    names = [
        "blocks.1.ln2.hook_normalized",
        "blocks.1.mlp.hook_pre",
        "blocks.1.mlp.hook_pre_linear",
        "blocks.1.mlp.hook_post",
    ]
    with capture(model, names) as acts:
        model(torch.tensor([[5, 17, 923, 4000, 12]]))
    x = acts[names[0]]
    torch.testing.assert_close(acts[names[1]], x @ w.W_gate[1].T, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(acts[names[2]], x @ w.W_in[1].T, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(
        acts[names[3]], torch.nn.functional.silu(acts[names[1]]) * acts[names[2]], atol=1e-6, rtol=1e-6
    )


def test_class_frames_and_counts(hand_llama):
    classes = classify(weight_cosines(hand_llama["raw"]))
    d_mlp = classes.index.shape[1]
    counts = classes.counts_by_layer()
    assert set(counts.rw_class) == set(CLASS_NAMES)
    assert (counts.groupby("layer")["count"].sum() == d_mlp).all()
    frame = classes.to_frame()
    weak = classes.neurons("weakening")
    assert (1, 7) in weak and (1, 11) in weak
    assert len(weak) == (frame.rw_class == "weakening").sum()
    with pytest.raises(KeyError, match="classes"):
        classes.neurons("enrichment")


def test_threshold_is_strict_and_validated():
    from workbench.neurons.weights import WeightCosines

    t = torch.tensor
    cos = WeightCosines(
        in_out=t([[0.5, 0.51, -0.5, -0.51]]), gate_out=t([[0.0] * 4]), gate_in=t([[0.0] * 4]), d_model=8
    )
    labels = [classify(cos).label(0, n) for n in range(4)]
    assert labels == ["orthogonal output", "conditional strengthening", "orthogonal output", "conditional weakening"]
    with pytest.raises(ValueError, match="threshold"):
        classify(cos, threshold=1.5)


def test_non_gated_model_gets_the_three_vanilla_classes(tiny_gpt2):
    cos = weight_cosines(tiny_gpt2)
    assert not cos.gated and cos.gate_out is None
    w_in, w_out = tiny_gpt2.W_in.detach().transpose(1, 2), tiny_gpt2.W_out.detach()
    np.testing.assert_allclose(cos.in_out, _np_cos(w_in, w_out), atol=1e-5)
    classes = classify(cos)
    assert classes.names == VANILLA_CLASS_NAMES
    expected = np.where(cos.in_out > 0.5, 0, np.where(cos.in_out < -0.5, 2, 1))
    np.testing.assert_array_equal(classes.index, expected)
    assert cos.to_frame()["cos_gate_out"].isna().all()
    assert set(empirical_randomness_region(tiny_gpt2, n_sample=64).pair) == {"in_out"}


@pytest.mark.parametrize("d", [3, 20, 576])
def test_beta_region_matches_monte_carlo(d):
    # By rotation invariance, the cosine of two random directions is distributed as that of one random
    # direction with a fixed axis: its first coordinate after normalising.
    gen = torch.Generator().manual_seed(d)
    x = torch.randn(100_000, d, generator=gen)
    cos = (x[:, 0] / x.norm(dim=-1)).double()
    low, high = beta_randomness_region(d)
    mc_low, mc_high = torch.quantile(cos, torch.tensor([0.025, 0.975], dtype=torch.float64)).tolist()
    assert low == pytest.approx(-high, abs=1e-6)
    assert low == pytest.approx(mc_low, abs=0.01 if d < 100 else 0.002)
    assert high == pytest.approx(mc_high, abs=0.01 if d < 100 else 0.002)
    inside = ((cos >= low) & (cos <= high)).double().mean().item()
    assert inside == pytest.approx(0.95, abs=0.003)


def test_beta_quantile_known_values():
    # d = 3: cos is uniform on [-1, 1]; d = 2: cos of a uniform angle, quantile q is -cos(pi q).
    assert cosine_quantile(3, 0.975).item() == pytest.approx(0.95, abs=1e-5)
    assert cosine_quantile(2, 0.25).item() == pytest.approx(-np.cos(np.pi * 0.25), abs=1e-4)
    with pytest.raises(ValueError, match="d >= 2"):
        cosine_quantile(1, 0.5)


def test_empirical_region_equals_hand_quantiles(tiny_llama):
    w = mlp_weights(tiny_llama)
    region = empirical_randomness_region(w, n_sample=None)
    a = torch.nn.functional.normalize(w.W_in[0], dim=-1)
    b = torch.nn.functional.normalize(w.W_out[0], dim=-1)
    cos = (a @ b.T)[~torch.eye(a.shape[0], dtype=torch.bool)]
    row = region[(region.layer == 0) & (region.pair == "in_out")].iloc[0]
    low, high = torch.quantile(cos, torch.tensor([0.025, 0.975])).tolist()
    assert (row.low, row.high) == pytest.approx((low, high), abs=1e-6)
    gate_in = region[(region.layer == 0) & (region.pair == "gate_in")].iloc[0]
    assert gate_in.high > 0 and gate_in.low == -gate_in.high
