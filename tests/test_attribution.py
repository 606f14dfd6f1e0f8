"""Direct logit attribution equals ActivationCache's decompose_resid / stack_head_results /
stack_neuron_results (apply_ln=True) projected on the logit-difference direction."""

import pytest
import torch

from workbench.analysis.attribution import head_attribution, layer_attribution, logit_diff_direction, neuron_attribution

PROMPTS = ["The cat sat on the mat and", "A dog ran in the park and"]


def _setup(model):
    tokens = model.to_tokens(PROMPTS)
    answers = torch.tensor([[model.to_single_token(" the"), model.to_single_token(" a")]] * 2)
    _, cache = model.run_with_cache(tokens)
    return tokens, answers, cache, logit_diff_direction(model, answers)


def _logit_diff(model, tokens, answers):
    logits = model(tokens)[:, -1]
    return logits.gather(1, answers[:, :1])[:, 0] - logits.gather(1, answers[:, 1:])[:, 0]


@pytest.mark.parametrize("arch", ["tiny_llama", "tiny_gpt2"])
def test_layer_attribution_equals_decompose_resid(arch, request):
    model = request.getfixturevalue(arch)
    tokens, answers, cache, direction = _setup(model)
    stack, labels = cache.decompose_resid(apply_ln=True, pos_slice=-1, return_labels=True)
    result = layer_attribution(model, tokens, answers)
    assert result.labels == tuple(labels)
    torch.testing.assert_close(result.per_prompt, torch.einsum("cbd,bd->cb", stack, direction), atol=1e-4, rtol=1e-4)
    # components add up to the logit difference (no unembedding bias)
    torch.testing.assert_close(result.per_prompt.sum(0), _logit_diff(model, tokens, answers), atol=1e-4, rtol=1e-4)
    assert set(result.to_frame()["part"]) >= {"embed", "attn", "mlp"}
    assert len(result.top(3)) == 3


@pytest.mark.parametrize("arch", ["tiny_llama", "tiny_gpt2"])
def test_head_attribution_equals_stack_head_results(arch, request):
    model = request.getfixturevalue(arch)
    tokens, answers, cache, direction = _setup(model)
    stack = cache.stack_head_results(apply_ln=True, pos_slice=-1)  # [layer*head, batch, d_model]
    expected = torch.einsum("cbd,bd->cb", stack, direction).reshape(model.cfg.n_layers, model.cfg.n_heads, -1)
    result = head_attribution(model, tokens, answers)
    torch.testing.assert_close(result.per_prompt, expected, atol=1e-4, rtol=1e-4)
    df = result.to_frame()
    assert len(df) == model.cfg.n_layers * model.cfg.n_heads and df["label"][1] == "L0H1"


@pytest.mark.parametrize("arch", ["tiny_llama", "tiny_gpt2"])
def test_neuron_attribution_equals_stack_neuron_results(arch, request):
    model = request.getfixturevalue(arch)
    tokens, answers, cache, direction = _setup(model)
    n = model.cfg.n_layers
    per_prompt = []
    for b in range(2):  # TL projects on one direction at a time
        stack = cache.stack_neuron_results(n, pos_slice=-1, apply_ln=True, project_output_onto=direction[b])
        per_prompt.append(stack[:, b])
    expected = torch.stack(per_prompt, -1).reshape(n, model.cfg.d_mlp, 2)
    result = neuron_attribution(model, tokens, answers)
    torch.testing.assert_close(result.per_prompt, expected, atol=1e-4, rtol=1e-4)
    assert result.values.shape == (n, model.cfg.d_mlp)
    # neurons of a layer add up to that layer's MLP attribution minus the bias's share
    layers = layer_attribution(model, tokens, answers)
    mlp = layers.per_prompt[list(layers.labels).index("1_mlp_out")]
    bias = getattr(model.blocks[1].mlp, "b_out", None)
    if bias is None or bias.abs().max() == 0:
        torch.testing.assert_close(result.per_prompt[1].sum(0), mlp, atol=1e-4, rtol=1e-4)
    top = result.top(5)
    assert list(top.columns) == ["model", "layer", "neuron", "label", "value"]
    assert top["value"].abs().is_monotonic_decreasing
    assert abs(top["value"][0]) == pytest.approx(float(result.values.abs().max()), rel=1e-6)
    assert len(result.to_frame()) == n * model.cfg.d_mlp
    # a direction instead of answers, and a subset of layers
    only = neuron_attribution(model, tokens, direction=direction, layers=[-1])
    torch.testing.assert_close(only.per_prompt[0], result.per_prompt[-1])


@pytest.mark.real_model
def test_attribution_on_smollm2(smollm2):
    tokens = smollm2.to_tokens("This movie was really")
    answers = torch.tensor([[smollm2.to_single_token(" bad"), smollm2.to_single_token(" good")]])
    _, cache = smollm2.run_with_cache(tokens)
    direction = logit_diff_direction(smollm2, answers)
    heads = cache.stack_head_results(apply_ln=True, pos_slice=-1)
    expected = torch.einsum("cbd,bd->cb", heads, direction).reshape(30, 9, 1)
    torch.testing.assert_close(head_attribution(smollm2, tokens, answers).per_prompt, expected, atol=1e-4, rtol=1e-4)
    layers = layer_attribution(smollm2, tokens, answers)
    torch.testing.assert_close(layers.per_prompt.sum(0), _logit_diff(smollm2, tokens, answers), atol=1e-3, rtol=1e-4)


def test_direction_or_answers(tiny_llama):
    tokens = tiny_llama.to_tokens(PROMPTS)
    with pytest.raises(ValueError, match="either"):
        neuron_attribution(tiny_llama, tokens)


def test_half_precision_model_matches_float32(tiny_llama_pair):
    """bfloat16 activations meet a float32 final-norm scale: attribution runs in float32 and agrees
    with the same weights run in float32 (up to bfloat16's rounding of the activations)."""
    half, full = tiny_llama_pair
    tokens, answers = _setup(full)[:2]
    for attribute in (layer_attribution, head_attribution, neuron_attribution):
        got, want = (attribute(m, tokens, answers).values for m in (half, full))
        assert got.dtype == torch.float32
        torch.testing.assert_close(got, want, atol=0.05 * want.abs().max().item(), rtol=0)
    assert len(neuron_attribution(half, tokens, answers).to_frame()) == half.cfg.n_layers * half.cfg.d_mlp
