"""Attribution patching (AtP, AtP*, GradDrop) against exact patching and hand computations on tiny models.

Tolerances: exact (1e-4) where the metric is linear in the node (``ln_final.hook_normalized`` with a
logit difference) and where the patch is a tiny perturbation (first order is then exact to O(ε²));
within 10% of the largest exact effect for attention / MLP outputs, heads and neurons on the tiny
Llama with the clean / corrupted prompts below.
"""

import pytest
import torch

from tests.helpers import without_type_checks
from workbench.analysis.attribution_patching import (
    NODE_KINDS,
    _target_pass,
    attribution_sweep,
    attribution_sweeps,
    confirm,
    fidelity,
)
from workbench.analysis.patching import SWEEPS, PatchResult, patch_sweep
from workbench.hooks import ModelSide, as_side, attach, hook_name
from workbench.metrics import LogitDiff

CLEAN = ["The cat sat on the mat and", "A dog ran in the park and"]
CORRUPT = ["The cat sat on the rug but", "A dog ran in the yard but"]


def _inputs(model):
    clean, corrupt = model.to_tokens(CLEAN), model.to_tokens(CORRUPT)
    answers = torch.tensor([[model.to_single_token(" the"), model.to_single_token(" a")]] * 2)
    return clean, corrupt, LogitDiff(answers)


def _effect(result: PatchResult) -> torch.Tensor:
    return result.values - result.baseline


@pytest.mark.parametrize("arch", ["tiny_llama", "tiny_gpt2"])
def test_linear_node_is_exact(arch, request):
    """The logit difference is linear in the final norm's output: AtP equals patching it, position by position."""
    model = request.getfixturevalue(arch)
    clean, corrupt, metric = _inputs(model)
    name = "ln_final.hook_normalized"
    result = attribution_sweep(model, model, name, metric, corrupt, clean)
    _, source = as_side(model).run(clean, [name])
    exact = []
    for pos in range(corrupt.shape[1]):

        def patch(x, hook, pos=pos):
            x = x.clone()
            x[:, pos] = source[name][:, pos]
            return x

        with torch.no_grad(), attach(model, [(name, patch)]):
            exact.append(metric(model(corrupt)).item())
    assert result.axes == ("pos",)
    torch.testing.assert_close(result.values, torch.tensor(exact), atol=1e-4, rtol=0)
    assert abs(exact[-1] - result.baseline) > 1e-3  # the last position moves the metric: the check has teeth
    checked = confirm(result, model, model, metric, corrupt, clean, k=corrupt.shape[1])
    torch.testing.assert_close(torch.tensor(checked["estimate"]), torch.tensor(checked["exact"]), atol=1e-4, rtol=0)


@pytest.mark.parametrize("direction", ["source steered", "target steered"])
def test_tiny_patch_first_order_is_exact_for_every_kind(tiny_llama, direction):
    """Between two model sides that differ by a tiny steering vector, AtP equals exact patching to O(ε²)."""
    model = tiny_llama
    tokens, _, metric = _inputs(model)
    vector = 1e-4 * torch.randn(model.cfg.d_model, generator=torch.Generator().manual_seed(0))
    steered = ModelSide(model, hooks=((hook_name(model, "resid_pre", 0), lambda x, hook: x + vector),), name="steered")
    target, source = (model, steered) if direction == "source steered" else (steered, model)
    estimates = attribution_sweeps(target, source, metric, tokens, kinds=list(SWEEPS))
    for kind in SWEEPS:
        exact = patch_sweep(target, source, kind, metric, tokens)
        scale = _effect(exact).abs().max()
        assert scale > 1e-6, kind
        torch.testing.assert_close(_effect(estimates[kind]), _effect(exact), atol=2e-2 * float(scale), rtol=0, msg=kind)


def test_estimates_track_exact_patching(tiny_llama):
    """Clean -> corrupted on the tiny Llama: outputs, heads and neurons within 10% of the largest exact effect."""
    clean, corrupt, metric = _inputs(tiny_llama)
    estimates = attribution_sweeps(tiny_llama, tiny_llama, metric, corrupt, clean)
    for kind in ("attn_out", "mlp_out", "head", "head_pos"):
        exact = patch_sweep(tiny_llama, tiny_llama, kind, metric, corrupt, clean)
        assert estimates[kind].values.shape == exact.values.shape
        scale = float(_effect(exact).abs().max())
        torch.testing.assert_close(_effect(estimates[kind]), _effect(exact), atol=0.1 * scale, rtol=0)
        assert fidelity(estimates[kind], exact)["pearson"] > 0.99
    for kind in ("neuron", "head_v"):
        checked = confirm(estimates[kind], tiny_llama, tiny_llama, metric, corrupt, clean, k=8)
        scale = checked["exact"].abs().max()
        assert scale > 1e-3
        assert (checked["estimate"] - checked["exact"]).abs().max() <= 0.1 * scale


@pytest.mark.parametrize("arch", ["tiny_llama", "tiny_gpt2"])
@pytest.mark.parametrize("kind", ["head_q", "head_k"])
def test_atp_star_is_the_exact_pattern_change_times_the_pattern_gradient(arch, kind, request):
    """AtP* for a query / key node: patch it, read the new attention pattern, dot with ∂metric/∂pattern."""
    model = request.getfixturevalue(arch)
    clean, corrupt, metric = _inputs(model)
    star = attribution_sweep(model, model, kind, metric, corrupt, clean, method="atp*")
    plain = attribution_sweep(model, model, kind, metric, corrupt, clean, method="atp")
    assert star.values.shape == plain.values.shape == (model.cfg.n_layers, corrupt.shape[1], star.values.shape[-1])
    layer = model.cfg.n_layers - 1
    node, pattern = hook_name(model, NODE_KINDS[kind][0], layer), hook_name(model, "pattern", layer)
    _, source = as_side(model).run(clean, [node])
    _, target, grads = _target_pass(as_side(model), corrupt, metric, [pattern])
    for pos, head in [(corrupt.shape[1] - 1, 0), (corrupt.shape[1] - 2, 1), (1, 1)]:

        def patch(x, hook, pos=pos, head=head):
            x = x.clone()
            x[:, pos, head] = source[node][:, pos, head]
            return x

        with torch.no_grad(), attach(model, [(node, patch)]), attach(model, [(pattern, lambda x, hook: None)]):
            _, patched = as_side(model).run(corrupt, [pattern])
        hand = (grads[pattern] * (patched[pattern] - target[pattern])).sum()
        torch.testing.assert_close(star.values[layer, pos, head] - star.baseline, hand, atol=1e-5, rtol=1e-4)


def test_graddrop_by_hand(tiny_llama):
    """2 layers: with layer 1 dropped, layer 0's MLP output reaches the metric only through the skip connection."""
    clean, corrupt, metric = _inputs(tiny_llama)
    result = attribution_sweep(tiny_llama, tiny_llama, "mlp_out", metric, corrupt, clean, graddrop=True)
    plain = attribution_sweep(tiny_llama, tiny_llama, "mlp_out", metric, corrupt, clean)
    final, node = "ln_final.hook_in", hook_name(tiny_llama, "mlp_out", 0)
    _, _, grads = _target_pass(as_side(tiny_llama), corrupt, metric, [final])
    _, source = as_side(tiny_llama).run(clean, [node])
    _, target = as_side(tiny_llama).run(corrupt, [node])
    direct = ((source[node] - target[node]) * grads[final]).sum((0, 2)).abs()
    torch.testing.assert_close(result.values[0] - result.baseline, direct, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(result.values[1] - result.baseline, (plain.values[1] - plain.baseline).abs())


def test_result_lines_up_with_exact_patching(tiny_llama):
    clean, corrupt, metric = _inputs(tiny_llama)
    estimates = attribution_sweeps(tiny_llama, tiny_llama, metric, corrupt, clean, layers=[1], positions=[-2, -1])
    exact = patch_sweep(tiny_llama, tiny_llama, "head_pos", metric, corrupt, clean, layers=[1], positions=[-2, -1])
    frame, exact_frame = estimates["head_pos"].to_frame(), exact.to_frame()
    assert list(frame.columns) == list(exact_frame.columns)
    assert frame[["layer", "pos", "head", "token"]].equals(exact_frame[["layer", "pos", "head", "token"]])
    assert (estimates["head_pos"].baseline, estimates["head_pos"].reference) == pytest.approx(
        (exact.baseline, exact.reference), abs=1e-4
    )
    neurons = estimates["neuron"].to_frame()
    assert list(neurons.columns[:3]) == ["kind", "layer", "neuron"] and len(neurons) == tiny_llama.cfg.d_mlp
    assert (
        estimates["neuron"].top(3)["neuron"].tolist() == _effect(estimates["neuron"])[0].abs().topk(3).indices.tolist()
    )


def test_fidelity_by_hand():
    def result(values):
        values = torch.tensor(values)
        return PatchResult("attn_out", ("layer", "pos"), values, 0.0, 1.0, ("a", "b"), (0,), (0, 1))

    exact = result([[1.0, -2.0], [0.5, 0.0]])
    same = fidelity(exact, exact, k=2)
    assert same == {"pearson": pytest.approx(1.0), "spearman": pytest.approx(1.0), "top2_recall": 1.0, "max_error": 0.0}
    swapped = fidelity(result([[1.0, 0.0], [0.5, -2.0]]), exact, k=1)
    assert swapped["top1_recall"] == 0.0 and swapped["max_error"] == pytest.approx(1.0)


def test_errors_name_the_fix(tiny_llama):
    clean, corrupt, metric = _inputs(tiny_llama)
    with without_type_checks(), pytest.raises(ValueError, match="'atp' or 'atp\\*'"):
        attribution_sweeps(tiny_llama, tiny_llama, metric, corrupt, clean, method="exact")
    with pytest.raises(KeyError, match="close matches"):
        attribution_sweep(tiny_llama, tiny_llama, "ln_final.hook_normalised", metric, corrupt, clean)
    with without_type_checks(), pytest.raises(ValueError, match="same token length"):
        attribution_sweeps(tiny_llama, tiny_llama, metric, corrupt, clean[:, :-1])


@pytest.mark.parametrize("kind", ["head_q", "head_k", "head_v"])
def test_confirm_equals_transformer_lens_for_query_key_value_nodes(tiny_gpt2, kind):
    """confirm() with k = every node is an exact sweep: it equals transformer_lens's q/k/v by-position sweeps."""
    import transformer_lens.patching as tlp

    clean, corrupt, metric = _inputs(tiny_gpt2)
    _, cache = tiny_gpt2.run_with_cache(clean)
    expected = getattr(tlp, f"get_act_patch_attn_{kind}_by_pos")(tiny_gpt2, corrupt, cache, metric)  # [layer pos head]
    result = attribution_sweep(tiny_gpt2, tiny_gpt2, kind, metric, corrupt, clean)
    checked = confirm(result, tiny_gpt2, tiny_gpt2, metric, corrupt, clean, k=result.values.numel())
    exact = torch.tensor(checked["exact"].tolist()) + result.baseline
    cells = expected[checked["layer"].tolist(), checked["pos"].tolist(), checked["head"].tolist()]
    torch.testing.assert_close(exact, cells, atol=1e-4, rtol=0)


def test_atp_star_raises_when_the_pattern_is_not_the_softmax_of_its_queries_and_keys(tiny_llama):
    """A pattern the queries and keys do not explain (here a hook edits it) fails loudly; plain AtP still runs."""
    from workbench.bridge_internals import BridgeInternalsError

    clean, corrupt, metric = _inputs(tiny_llama)
    name = hook_name(tiny_llama, "pattern", 1)
    edited = ModelSide(tiny_llama, hooks=((name, lambda x, hook: x.roll(1, dims=-1)),), name="edited")
    with pytest.raises(BridgeInternalsError, match="method='atp'"):
        attribution_sweep(edited, tiny_llama, "head_k", metric, corrupt, clean)
    plain = attribution_sweep(edited, tiny_llama, "head_k", metric, corrupt, clean, method="atp")
    assert plain.values.isfinite().all()
