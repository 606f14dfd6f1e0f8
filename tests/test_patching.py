"""Batched patching equals transformer_lens.patching; between-models mode checked by hand."""

import pandas as pd
import pytest
import torch
import transformer_lens.patching as tlp
from jaxtyping import TypeCheckError

from tests.helpers import tiny_llama_config, without_type_checks
from workbench.analysis.patching import patch_heads, patch_sweep
from workbench.hooks import ModelSide
from workbench.metrics import LogitDiff
from workbench.models import from_config

TL_SWEEPS = {
    "resid_pre": tlp.get_act_patch_resid_pre,
    "resid_mid": tlp.get_act_patch_resid_mid,
    "attn_out": tlp.get_act_patch_attn_out,
    "mlp_out": tlp.get_act_patch_mlp_out,
    "head": tlp.get_act_patch_attn_head_out_all_pos,
    "head_pos": tlp.get_act_patch_attn_head_out_by_pos,
}
CLEAN = ["The cat sat on the mat and", "A dog ran in the park and"]
CORRUPT = ["The cat sat on the rug but", "A dog ran in the yard but"]


def _inputs(model):
    clean, corrupt = model.to_tokens(CLEAN), model.to_tokens(CORRUPT)
    assert clean.shape == corrupt.shape
    answers = torch.tensor([[model.to_single_token(" the"), model.to_single_token(" a")]] * 2)
    return clean, corrupt, LogitDiff(answers)


@pytest.mark.parametrize("kind", list(TL_SWEEPS))
@pytest.mark.parametrize("arch", ["tiny_llama", "tiny_gpt2"])
def test_sweeps_equal_transformer_lens(kind, arch, request):
    model = request.getfixturevalue(arch)
    clean, corrupt, metric = _inputs(model)
    _, cache = model.run_with_cache(clean)
    expected = TL_SWEEPS[kind](model, corrupt, cache, metric)
    result = patch_sweep(model, model, kind, metric, corrupt, clean, max_rows=6)
    assert result.values.shape == expected.shape
    torch.testing.assert_close(result.values, expected, atol=1e-4, rtol=0)
    assert abs(result.baseline - metric(model(corrupt)).item()) < 1e-4
    assert abs(result.reference - metric(model(clean)).item()) < 1e-4
    # full-forward path: same numbers
    slow = patch_sweep(model, model, kind, metric, corrupt, clean, fast=False, max_rows=6)
    torch.testing.assert_close(slow.values, expected, atol=1e-4, rtol=0)


@pytest.mark.real_model
@pytest.mark.parametrize("kind", ["resid_pre", "attn_out", "mlp_out", "head"])
def test_sweeps_equal_transformer_lens_on_smollm2(smollm2, kind):
    """TL's generic patcher with its own setters, on three layers only (a full TL sweep takes minutes)."""
    clean, corrupt = smollm2.to_tokens(["This movie was good"]), smollm2.to_tokens(["This film was bad"])
    metric = LogitDiff(torch.tensor([[smollm2.to_single_token("."), smollm2.to_single_token("!")]]))
    _, cache = smollm2.run_with_cache(clean)
    layers = [0, 14, 29]
    if kind == "head":
        axes, setter, act, width = ("layer", "head"), tlp.layer_head_vector_patch_setter, "z", smollm2.cfg.n_heads
    else:
        axes, setter, act, width = ("layer", "pos"), tlp.layer_pos_patch_setter, kind, corrupt.shape[1]
    index = pd.DataFrame([(layer, i) for layer in layers for i in range(width)], columns=list(axes))
    expected = tlp.generic_activation_patch(smollm2, corrupt, cache, metric, setter, act, index_df=index)
    result = patch_sweep(smollm2, smollm2, kind, metric, corrupt, clean, layers=layers)
    torch.testing.assert_close(result.values.flatten(), expected, atol=1e-4, rtol=0)


@pytest.fixture(scope="module")
def other_llama(tokenizer):
    """A second tiny Llama of the same shape, different weights."""
    return from_config(tiny_llama_config(len(tokenizer)), tokenizer, seed=1, prepend_bos=False)


@pytest.mark.parametrize("kind", ["resid_pre", "mlp_out", "head", "head_pos"])
def test_between_two_models_equals_transformer_lens_with_the_other_cache(tiny_llama, other_llama, kind):
    tokens = tiny_llama.to_tokens(CLEAN)
    metric = _inputs(tiny_llama)[2]
    for target, source in [(tiny_llama, other_llama), (other_llama, tiny_llama)]:
        _, cache = source.run_with_cache(tokens)
        expected = TL_SWEEPS[kind](target, tokens, cache, metric)
        result = patch_sweep(target, source, kind, metric, tokens)
        torch.testing.assert_close(result.values, expected, atol=1e-4, rtol=0)
        assert abs(result.reference - float(metric(source(tokens)))) < 1e-4


def test_between_two_models_last_mlp_by_hand(tiny_llama, other_llama):
    tokens = tiny_llama.to_tokens(CLEAN)
    metric = _inputs(tiny_llama)[2]
    _, cache_a = tiny_llama.run_with_cache(tokens)
    _, cache_b = other_llama.run_with_cache(tokens)
    last = tiny_llama.cfg.n_layers - 1
    resid = cache_a[f"blocks.{last}.hook_resid_post"].clone()
    resid[:, -1] += cache_b[f"blocks.{last}.hook_mlp_out"][:, -1] - cache_a[f"blocks.{last}.hook_mlp_out"][:, -1]
    by_hand = metric(tiny_llama.unembed(tiny_llama.ln_final(resid)))
    result = patch_sweep(tiny_llama, other_llama, "mlp_out", metric, tokens, layers=[last])
    assert abs(float(result.values[0, -1]) - float(by_hand)) < 1e-4


@pytest.mark.parametrize("stateless", [True, False])
@pytest.mark.parametrize("positional_metric", [True, False])
def test_steering_hook_as_model_b(tiny_llama, stateless, positional_metric):
    """B = A + a vector added to resid_pre 0. Read at position 0, patching position 0 of any
    resid_pre from B into A gives B's value, other positions change nothing; and back."""
    torch.manual_seed(0)
    vector = torch.randn(tiny_llama.cfg.d_model)
    steer = ("blocks.0.hook_resid_pre", lambda x, hook: x + vector)
    a = ModelSide(tiny_llama, name="A")
    b = ModelSide(tiny_llama, hooks=(steer,), stateless_hooks=stateless, name="B")
    tokens = tiny_llama.to_tokens(CLEAN)
    answers = _inputs(tiny_llama)[2].answers
    ld = LogitDiff(answers, pos=0)
    metric = ld if positional_metric else (lambda logits: ld(logits))
    value_a, value_b = float(metric(a.run(tokens)[0])), float(metric(b.run(tokens)[0]))
    assert abs(value_a - value_b) > 1e-3
    for target, source, base, ref in [(a, b, value_a, value_b), (b, a, value_b, value_a)]:
        result = patch_sweep(target, source, "resid_pre", metric, tokens)
        expected = torch.full_like(result.values, base)
        expected[:, 0] = ref
        torch.testing.assert_close(result.values, expected, atol=1e-4, rtol=0)
        assert (result.baseline, result.reference) == pytest.approx((base, ref), abs=1e-5)


def test_joint_head_patch_by_hand(tiny_llama, other_llama):
    tokens = tiny_llama.to_tokens(CLEAN)
    metric = _inputs(tiny_llama)[2]
    heads = [(0, 1), (1, 2), (1, 3)]
    _, cache_b = other_llama.run_with_cache(tokens)

    def hook(z, hook):
        layer = int(hook.name.split(".")[1])
        for i, h in heads:
            if i == layer:
                z[:, :, h] = cache_b[f"blocks.{i}.attn.hook_z"][:, :, h]
        return z

    expected = metric(tiny_llama.run_with_hooks(tokens, fwd_hooks=[(f"blocks.{i}.attn.hook_z", hook) for i in (0, 1)]))
    assert abs(patch_heads(tiny_llama, other_llama, heads, metric, tokens) - float(expected)) < 1e-5
    # all heads of every layer from B into B's own run change nothing
    all_heads = [(i, h) for i in range(2) for h in range(4)]
    assert (
        abs(patch_heads(other_llama, other_llama, all_heads, metric, tokens) - float(metric(other_llama(tokens))))
        < 1e-5
    )


def test_errors_name_the_fix(tiny_llama, tiny_gpt2):
    clean, corrupt, metric = _inputs(tiny_llama)
    with pytest.raises(ValueError, match="same token length"):
        patch_sweep(tiny_llama, tiny_llama, "resid_pre", metric, corrupt, clean[:, :-1])
    with without_type_checks(), pytest.raises(KeyError, match="kinds"):
        patch_sweep(tiny_llama, tiny_llama, "resid", metric, corrupt, clean)
    with pytest.raises(TypeCheckError, match="kind"):
        patch_sweep(tiny_llama, tiny_llama, "resid", metric, corrupt, clean)
    with pytest.raises(ValueError, match="scalar"):
        patch_sweep(tiny_llama, tiny_llama, "resid_pre", LogitDiff(metric.answers, per_prompt=True), corrupt, clean)


def test_result_frame_and_subsets(tiny_llama):
    clean, corrupt, metric = _inputs(tiny_llama)
    full = patch_sweep(tiny_llama, tiny_llama, "resid_pre", metric, corrupt, clean)
    part = patch_sweep(tiny_llama, tiny_llama, "resid_pre", metric, corrupt, clean, layers=[1], positions=[-1, 2])
    torch.testing.assert_close(part.values, full.values[[1]][:, [corrupt.shape[1] - 1, 2]])
    df = part.to_frame()
    assert list(df.columns) == ["kind", "layer", "pos", "token", "value", "normalized"]
    assert df["layer"].tolist() == [1, 1] and df["pos"].tolist() == [corrupt.shape[1] - 1, 2]
    assert df["token"].tolist() == [full.tokens[-1], full.tokens[2]]
    torch.testing.assert_close(
        torch.tensor(df["normalized"].tolist()),
        (part.values.flatten() - full.baseline) / (full.reference - full.baseline),
    )
    top = full.top(3)
    assert (top["value"] - full.baseline).abs().is_monotonic_decreasing


@pytest.mark.parametrize("fast", [True, False])
def test_all_of_resid_pre_0_from_the_other_side_gives_its_logits(tiny_llama, fast):
    """B = A + a steering vector at resid_pre 0: patching all of one side's resid_pre 0 into the
    other gives exactly the first side's logits, both directions (the engine, one joint patch)."""
    from workbench.analysis.patch_engine import Patch, run_full, run_staircase, trace
    from workbench.hooks import attach

    torch.manual_seed(0)
    vector = torch.randn(tiny_llama.cfg.d_model)
    name = "blocks.0.hook_resid_pre"
    a = ModelSide(tiny_llama, name="A")
    b = ModelSide(tiny_llama, hooks=((name, lambda x, hook: x + vector),), stateless_hooks=True, name="B")
    tokens = tiny_llama.to_tokens(CLEAN)
    for target, source in [(a, b), (b, a)]:
        source_logits, acts = source.run(tokens, [name])
        target_logits = target.run(tokens)[0]
        metric = lambda logits, reference=source_logits: (logits - reference).abs().max()
        assert metric(target_logits) > 1e-2
        with torch.no_grad(), attach(tiny_llama, target.hooks):
            if fast:
                results = run_staircase(tiny_llama, trace(tiny_llama, tokens), acts, [Patch(0, name)], metric, 64)
            else:
                results = run_full(tiny_llama, tokens, acts, [Patch(0, name)], metric, 64)
        assert float(results[Patch(0, name)]) < 1e-5


def test_staircase_is_checked_against_a_full_forward(tiny_llama, monkeypatch):
    """If blocks stopped reading the cached keys/values (a library upgrade), the sweep raises instead of being wrong."""
    from workbench.analysis import patch_engine
    from workbench.bridge_internals import BridgeInternalsError, PrefixKV

    class IgnoredCache(PrefixKV):
        def update(self, k, v, layer_idx, *args, **kwargs):
            if self.prefix is None:
                return super().update(k, v, layer_idx)
            return k, v

    clean, corrupt, metric = _inputs(tiny_llama)
    patch_sweep(tiny_llama, tiny_llama, "resid_pre", metric, corrupt, clean)  # the check passes as things are
    monkeypatch.setattr(patch_engine, "PrefixKV", IgnoredCache)
    with pytest.raises(BridgeInternalsError, match="fast=False"):
        patch_sweep(tiny_llama, tiny_llama, "resid_pre", metric, corrupt, clean)
    slow = patch_sweep(tiny_llama, tiny_llama, "resid_pre", metric, corrupt, clean, fast=False)
    assert slow.values.shape == (tiny_llama.cfg.n_layers, corrupt.shape[1])


@pytest.mark.parametrize("same_prompts", [False, True])
def test_trace_is_checked_against_the_models_forward(tiny_llama, monkeypatch, same_prompts):
    """If driving the blocks one by one drifted from the model's forward, the sweep raises; also when every patch is
    pruned (nothing differs) and only the baseline comes from the trace."""
    from workbench.analysis import patch_engine
    from workbench.bridge_internals import BridgeInternalsError, block_output

    clean, corrupt, metric = _inputs(tiny_llama)
    source = corrupt if same_prompts else clean
    monkeypatch.setattr(patch_engine, "block_output", lambda out: block_output(out) * 1.01)
    with pytest.raises(BridgeInternalsError, match="does not reproduce its forward"):
        patch_sweep(tiny_llama, tiny_llama, "resid_pre", metric, corrupt, source)


def test_chunks_merge_neighbouring_first_positions_within_the_work_bound():
    from workbench.analysis.patch_engine import Patch, _chunks

    patches = [Patch(layer, "h", pos=pos) for pos in range(4) for layer in (1, 0)]
    starts = [[p.start for p in chunk] for chunk in _chunks(patches, size=8, seq=4, merge=1.6)]
    assert starts == [[0, 1, 0, 1], [2, 2], [3, 3]]  # 4 positions for start 1's 3: within 1.6x; 4 for 2's 2: not
    assert all([p.layer for p in chunk] == sorted(p.layer for p in chunk) for chunk in _chunks(patches, 8, 4, 1.6))
    assert [len(c) for c in _chunks(patches, size=5, seq=4, merge=100)] == [4, 4]  # whole groups only
    assert [len(c) for c in _chunks(patches, size=8, seq=4, merge=1.0)] == [2, 2, 2, 2]


@pytest.mark.parametrize("arch", ["tiny_llama", "tiny_gpt2"])
def test_unembed_columns_equals_the_full_unembedding(arch, request):
    from workbench.bridge_internals import unembed_columns

    model = request.getfixturevalue(arch)
    torch.manual_seed(0)
    resid = torch.randn(3, 2, model.cfg.d_model)
    vocab = torch.tensor([0, 5, 17, model.cfg.d_vocab - 1])
    with torch.no_grad():
        full = model.unembed(model.ln_final(resid))
        torch.testing.assert_close(unembed_columns(model, resid, vocab), full[..., vocab])


def test_narrow_unembedding_is_checked_against_a_full_forward(tiny_llama, monkeypatch):
    """The logit-difference sweep unembeds two tokens per row; if those logits drifted from the model's, it raises."""
    from workbench.analysis import patch_engine
    from workbench.bridge_internals import BridgeInternalsError, unembed_columns

    clean, corrupt, metric = _inputs(tiny_llama)

    def shifted(*args):  # each column's logit off by a different amount: the logit difference moves by 1
        logits = unembed_columns(*args)
        return logits + torch.arange(logits.shape[-1])

    monkeypatch.setattr(patch_engine, "unembed_columns", shifted)
    with pytest.raises(BridgeInternalsError, match="fast=False"):
        patch_sweep(tiny_llama, tiny_llama, "resid_pre", metric, corrupt, clean)
