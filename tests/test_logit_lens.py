"""Logit lens equals ActivationCache.accumulated_resid / apply_ln_to_stack on the bridge's cache."""

import pytest
import torch
from jaxtyping import TypeCheckError

from tests.helpers import without_type_checks
from workbench.analysis.logit_lens import logit_lens
from workbench.hooks import ModelSide

PROMPTS = ["The cat sat on the mat and", "A dog ran in the park and"]


def _answers(model):
    return torch.tensor([[model.to_single_token(" the"), model.to_single_token(" a")]] * 2)


def _direction(model, answers):
    return (model.W_U[:, answers[:, 0]] - model.W_U[:, answers[:, 1]]).T


@pytest.mark.parametrize("arch", ["tiny_llama", "tiny_gpt2"])
def test_own_scale_equals_accumulated_resid(arch, request):
    model = request.getfixturevalue(arch)
    tokens, answers = model.to_tokens(PROMPTS), _answers(model)
    _, cache = model.run_with_cache(tokens)
    stack, labels = cache.accumulated_resid(incl_mid=True, apply_ln=True, pos_slice=-1, return_labels=True)
    expected = torch.einsum("pbd,bd->pb", stack, _direction(model, answers))
    lens = logit_lens(model, tokens, answers)
    assert lens.labels == tuple(labels)
    torch.testing.assert_close(lens.per_prompt, expected, atol=1e-4, rtol=1e-4)
    # the last point is the model's own logit difference (no unembedding bias here)
    logits = model(tokens)[:, -1]
    actual = logits.gather(1, answers[:, :1])[:, 0] - logits.gather(1, answers[:, 1:])[:, 0]
    torch.testing.assert_close(lens.per_prompt[-1], actual, atol=1e-4, rtol=1e-4)
    # top tokens of the last point are the model's top tokens (batch-mean logits)
    top = (stack[-1].mean(0) @ model.W_U).topk(5).indices
    assert lens.top_tokens[-1] == tuple(model.to_str_tokens(top))


@pytest.mark.parametrize("arch", ["tiny_llama", "tiny_gpt2"])
def test_final_scale_equals_apply_ln_to_stack(arch, request):
    model = request.getfixturevalue(arch)
    tokens, answers = model.to_tokens(PROMPTS), _answers(model)
    _, cache = model.run_with_cache(tokens)
    stack = cache.accumulated_resid(incl_mid=False, pos_slice=-1)
    scaled = cache.apply_ln_to_stack(stack, layer=-1, pos_slice=-1)
    expected = torch.einsum("pbd,bd->pb", scaled, _direction(model, answers))
    lens = logit_lens(model, tokens, answers, incl_mid=False, scale="final")
    torch.testing.assert_close(lens.per_prompt, expected, atol=1e-4, rtol=1e-4)
    df = lens.to_frame()
    assert list(df.columns) == ["model", "point", "label", "logit_diff"] and len(df) == model.cfg.n_layers + 1
    assert len(lens.tokens_frame()) == 5 * (model.cfg.n_layers + 1)


def test_side_hooks_change_the_lens_after_their_layer(tiny_llama):
    tokens, answers = tiny_llama.to_tokens(PROMPTS), _answers(tiny_llama)
    vector = torch.randn(tiny_llama.cfg.d_model)
    steered = ModelSide(tiny_llama, hooks=(("blocks.1.hook_resid_pre", lambda x, hook: x + vector),), name="steered")
    plain, moved = logit_lens(tiny_llama, tokens, answers), logit_lens(steered, tokens, answers)
    n_before = plain.labels.index("1_pre")
    torch.testing.assert_close(moved.per_prompt[:n_before], plain.per_prompt[:n_before])
    assert (moved.per_prompt[n_before:] - plain.per_prompt[n_before:]).abs().min() > 1e-6
    assert moved.model == "steered"


def test_unknown_scale(tiny_llama):
    tokens, answers = tiny_llama.to_tokens(PROMPTS), _answers(tiny_llama)
    with without_type_checks(), pytest.raises(ValueError, match="own"):
        logit_lens(tiny_llama, tokens, answers, scale="mine")
    with pytest.raises(TypeCheckError, match="scale"):
        logit_lens(tiny_llama, tokens, answers, scale="mine")


@pytest.mark.parametrize("scale", ["own", "final"])
def test_half_precision_model_matches_float32(tiny_llama_pair, scale):
    half, full = tiny_llama_pair
    tokens = full.to_tokens(["The cat sat on the mat and", "A dog ran in the park and"])
    answers = torch.tensor([[full.to_single_token(" the"), full.to_single_token(" a")]] * 2)
    got, want = (logit_lens(m, tokens, answers, scale=scale).logit_diff for m in (half, full))
    torch.testing.assert_close(got.float(), want, atol=0.05 * want.abs().max().item(), rtol=0)
