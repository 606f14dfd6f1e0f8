"""Neuron-set ablations: exact entries touched, hand-computed downstream effects, metrics, controls."""

import pytest
import torch
from jaxtyping import TypeCheckError

from tests.helpers import without_type_checks
from workbench.hooks import attach, capture
from workbench.neurons.ablation import (
    Ablation,
    ablated,
    ablation_effects,
    by_layer,
    next_token_metrics,
    random_control,
)

TOKENS = torch.tensor([[5, 17, 923, 4000, 12, 77, 3021, 9, 450, 31]])
NEURONS = {1: [0, 3, 7, 40, 41, 99, 127]}


def _run(model, spec=None, neurons=NEURONS, means=None):
    names = ["blocks.1.mlp.hook_pre", "blocks.1.mlp.hook_post", "blocks.1.hook_mlp_out"]
    if spec is None:
        with capture(model, names) as acts:
            logits = model(TOKENS)
    else:
        with ablated(model, neurons, spec, means=means), capture(model, names) as acts:
            logits = model(TOKENS)
    return logits, acts


def _orient(model, idx):
    mlp = model.blocks[1].mlp
    return torch.sign((mlp.W_gate[:, idx] * mlp.W_in[:, idx]).sum(0)).detach()


@pytest.mark.parametrize(
    "spec",
    [
        Ablation(gate="-", post="+"),
        Ablation(gate="+"),
        Ablation(post="-"),
        Ablation(gate="-", post="+", orient_post=True),
        Ablation(mode="fix", value=2.5, gate="-", post="-"),
    ],
    ids=lambda s: s.label,
)
def test_conditional_ablation_touches_only_entries_meeting_the_condition(tiny_llama, spec):
    _, clean = _run(tiny_llama)
    _, hit = _run(tiny_llama, spec)
    idx = torch.tensor(NEURONS[1])
    gate, post = clean["blocks.1.mlp.hook_pre"], clean["blocks.1.mlp.hook_post"]
    expected = torch.zeros_like(post, dtype=torch.bool)
    cond = torch.ones_like(post[..., idx], dtype=torch.bool)
    if spec.gate:
        cond &= gate[..., idx] > 0 if spec.gate == "+" else gate[..., idx] < 0
    if spec.post:
        p = post[..., idx] * (_orient(tiny_llama, idx) if spec.orient_post else 1)
        cond &= p > 0 if spec.post == "+" else p < 0
    expected[..., idx] = cond
    assert 0 < expected.sum() < expected[..., idx].numel()  # the condition is neither empty nor everything
    # the post-activation of the ablated layer: changed exactly where expected, to the right value
    new = hit["blocks.1.mlp.hook_post"]
    assert torch.equal(new[~expected], post[~expected])
    assert torch.all(new[expected] == (0.0 if spec.mode == "zero" else spec.value))
    # downstream, the MLP output moves by (new - old) @ W_out (hand computation)
    w_out = tiny_llama.blocks[1].mlp.W_out.detach()
    torch.testing.assert_close(
        hit["blocks.1.hook_mlp_out"] - clean["blocks.1.hook_mlp_out"], (new - post) @ w_out, atol=1e-5, rtol=1e-4
    )


def test_zero_ablation_equals_a_hand_written_hook(tiny_llama):
    idx = NEURONS[1]

    def zero(post, hook):
        post = post.clone()
        post[..., idx] = 0
        return post

    with attach(tiny_llama, [("blocks.1.mlp.hook_post", zero)]):
        reference = tiny_llama(TOKENS)
    logits, _ = _run(tiny_llama, Ablation())
    torch.testing.assert_close(logits, reference)
    assert not torch.allclose(logits, tiny_llama(TOKENS))


def test_multiply_by_one_is_identity_and_mean_uses_the_given_means(tiny_llama):
    clean, acts = _run(tiny_llama)
    same, _ = _run(tiny_llama, Ablation(mode="multiply", value=1.0))
    torch.testing.assert_close(same, clean, atol=0, rtol=0)
    doubled = _run(tiny_llama, Ablation(mode="multiply", value=2.0))[1]["blocks.1.mlp.hook_post"]
    idx = NEURONS[1]
    torch.testing.assert_close(doubled[..., idx], 2 * acts["blocks.1.mlp.hook_post"][..., idx])
    means = torch.randn(tiny_llama.cfg.n_layers, tiny_llama.cfg.d_mlp)
    filled = _run(tiny_llama, Ablation(mode="mean"), means=means)[1]["blocks.1.mlp.hook_post"]
    torch.testing.assert_close(filled[..., idx], means[1, idx].expand_as(filled[..., idx]))
    with pytest.raises(ValueError, match="means"):
        _run(tiny_llama, Ablation(mode="mean"))


def test_hooks_are_removed_after_the_block(tiny_llama):
    clean = tiny_llama(TOKENS)
    with ablated(tiny_llama, NEURONS, Ablation()):
        pass
    torch.testing.assert_close(tiny_llama(TOKENS), clean, atol=0, rtol=0)


def test_spec_validation_and_labels():
    with without_type_checks():  # the library's own checks, as users meet them
        with pytest.raises(ValueError, match="mode 'resample' is not a valid choice"):
            Ablation(mode="resample")
        with pytest.raises(ValueError, match="gate '<0' is not a valid choice; choose one of '\\+', '-'"):
            Ablation(gate="<0")
    with pytest.raises(TypeCheckError, match="mode"):  # the annotation, under the test run's type checks
        Ablation(mode="resample")
    assert Ablation(gate="-", post="+").label == "zero[gate-,post+]"
    assert Ablation(mode="multiply", value=3, post="+", orient_post=True).label == "multiply(3)[post~+]"


def test_gate_conditions_on_a_non_gated_model_raise(tiny_gpt2):
    with pytest.raises(ValueError, match="gated MLP"), ablated(tiny_gpt2, {0: [1]}, Ablation(gate="-")):
        pass
    with ablated(tiny_gpt2, {0: [1, 2]}, Ablation(post="+")):  # post conditions work on any MLP
        tiny_gpt2(TOKENS)


def test_by_layer_and_random_control():
    assert by_layer([(2, 5), (0, 1), (2, 3), (2, 5)]) == {0: [1], 2: [3, 5]}
    neurons = {0: [1, 2, 3], 4: [10]}
    control = random_control(neurons, d_mlp=16, seed=1, exclude={0: list(range(8)), 4: [10, 11]})
    assert {k: len(v) for k, v in control.items()} == {0: 3, 4: 1}
    assert all(n >= 8 for n in control[0]) and control[4][0] not in (10, 11)
    assert control == random_control(neurons, d_mlp=16, seed=1, exclude={0: list(range(8)), 4: [10, 11]})
    with pytest.raises(ValueError, match="outside the excluded set"):
        random_control({0: [1, 2]}, d_mlp=3)


def test_next_token_metrics_match_hand_computation_and_ignore_padding(tiny_llama):
    short, long = TOKENS[0, :4], TOKENS[0]
    together = next_token_metrics(tiny_llama, [short, long], batch_size=2)
    alone = next_token_metrics(tiny_llama, [short], batch_size=1)
    for key in together:
        torch.testing.assert_close(together[key][0], alone[key][0], atol=1e-5, rtol=1e-5)
    logp = tiny_llama(long[None]).float().log_softmax(-1)[0]
    entropy = -(logp.exp() * logp).sum(-1)
    loss = -logp[:-1].gather(-1, long[1:, None])[:, 0]
    torch.testing.assert_close(together["mean_entropy"][1], entropy[:-1].mean(), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(together["mean_loss"][1], loss.mean(), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(together["last_entropy"][1], entropy[-1], atol=1e-5, rtol=1e-5)


def test_ablation_effects_frame(tiny_llama):
    texts = ["the cat sat on the mat", "a quick brown fox jumps", "hello there my friend"]
    effects = ablation_effects(
        tiny_llama, texts, {"set": NEURONS}, Ablation(), prompts=["once upon a"], n_controls=2, seed=3
    )
    df = effects.to_frame()
    assert set(df.kind) == {"clean", "target", "control"}
    assert (df[df.kind == "control"].repeat.unique() == [0, 1]).all()
    assert (df[df.kind != "clean"].n_neurons == len(NEURONS[1])).all()
    assert len(df[(df.kind == "target") & (df.data == "corpus")]) == 2 * len(texts)
    summary = effects.summary()
    clean = summary[summary.kind == "clean"]
    assert (clean.delta == 0).all()
    target = summary[(summary.kind == "target") & (summary.metric == "entropy") & (summary.data == "corpus")].iloc[0]
    seqs = [tiny_llama.to_tokens(t)[0, :64] for t in texts]
    with ablated(tiny_llama, NEURONS, Ablation()):
        expected = next_token_metrics(tiny_llama, seqs)["mean_entropy"].mean().item()
    assert target.value == pytest.approx(expected, abs=1e-5)
