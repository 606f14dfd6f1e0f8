"""Edge circuits: graph sizes, EAP / EAP-IG against exact edge patching, faithfulness, CPR / CMD."""

import pytest
import torch
from transformers import AutoModelForCausalLM

from tests.helpers import tiny_llama_config
from workbench.circuits.attribute import attribute
from workbench.circuits.exact import exact_scores
from workbench.circuits.faithfulness import Curve, area, cmd, cpr, patched_metric, prune
from workbench.circuits.graph import Graph, edge_model
from workbench.circuits.tasks import EdgeTask
from workbench.metrics import LogitDiff
from workbench.models import boot


def _task(seed: int = 0, batch: int = 4, seq: int = 6) -> EdgeTask:
    g = torch.Generator().manual_seed(seed)
    clean = torch.randint(0, 1000, (batch, seq), generator=g)
    corrupt = torch.randint(0, 1000, (batch, seq), generator=g)
    return EdgeTask("random", clean, corrupt, torch.randint(0, 1000, (batch, 2), generator=g))


@pytest.fixture(scope="module")
def tiny_edges(tiny_llama):
    return edge_model(tiny_llama)


@pytest.fixture(scope="module")
def linear_edges(tokenizer):
    """A tiny Llama where every edge's effect is linear: RMSNorm made the identity (eps 1e12, weight 1e6),
    MLP gate a constant 1 with a linear activation, queries zero (uniform attention, so q/k edges do nothing)."""
    cfg = tiny_llama_config(len(tokenizer))
    cfg.rms_norm_eps, cfg.mlp_bias, cfg.hidden_act = 1e12, True, "linear"
    torch.manual_seed(0)
    hf = AutoModelForCausalLM.from_config(cfg, attn_implementation="eager").eval()
    with torch.no_grad():
        for mod in hf.modules():
            if type(mod).__name__ == "LlamaRMSNorm":
                mod.weight.fill_(1e6)
        for layer in hf.model.layers:
            layer.self_attn.q_proj.weight.zero_()
            layer.mlp.gate_proj.weight.zero_()
            layer.mlp.gate_proj.bias.fill_(1.0)
    return edge_model(boot(hf, tokenizer, "linear", prepend_bos=False))


def test_subset_keeps_the_rows_and_the_metric_position():
    task = _task(batch=5)
    task = EdgeTask(task.name, task.clean, task.corrupt, task.answers, pos=3)
    part = task.subset(slice(1, 3))
    assert len(part) == 2 and part.pos == 3 and part.name == "random"
    assert torch.equal(part.clean, task.clean[1:3]) and torch.equal(part.corrupt, task.corrupt[1:3])
    assert torch.equal(part.answers, task.answers[1:3])


def test_edge_counts_match_hand_counts():
    # 2 layers x 4 heads: layer 0 q/k/v 12 x 1 input, MLP 0 1 + 4, layer 1 q/k/v 12 x 6, MLP 1 1 + 5 + 4, logits 11
    assert Graph(2, 4).n_edges == 12 + 5 + 72 + 10 + 11
    assert Graph(30, 9).n_edges == 123211  # SmolLM2-135M, as EAP-IG counts it


def test_ungrouped_copy_computes_the_model(tiny_llama, tiny_edges):
    tokens = _task().clean
    torch.testing.assert_close(tiny_edges.model(tokens), tiny_llama(tokens), atol=1e-4, rtol=1e-4)
    assert tiny_llama.blocks[0].attn.W_K.shape[0] == 2  # grouped: 2 key/value heads for 4 query heads
    assert tiny_edges.model.blocks[0].attn.W_K.shape[0] == 4  # ungrouped: one per query head


def test_eap_ig_with_one_step_is_eap(tiny_edges):
    task = _task()
    eap = attribute(tiny_edges, task, "eap")
    ig = attribute(tiny_edges, task, "eap-ig", steps=1)
    torch.testing.assert_close(ig.scores, eap.scores, atol=0, rtol=0)
    assert eap.flat().abs().max() > 1e-4
    assert not torch.allclose(attribute(tiny_edges, task, "eap-ig", steps=3).scores, eap.scores)


def test_scores_equal_exact_edge_patching_in_a_linear_model(linear_edges):
    task = _task(1)
    exact = exact_scores(linear_edges, task).flat()
    assert exact.abs().max() > 1e-3
    for method, steps in (("eap", 1), ("eap-ig", 5)):
        est = attribute(linear_edges, task, method, steps=steps).flat()
        assert (est - exact).abs().max() < 1e-4


def test_exact_edge_patching_matches_a_hand_patched_forward(tiny_llama, tiny_edges):
    """The input -> logits edge: the final residual gets the counterfactual embedding minus the clean one."""
    task = _task(2)
    g = tiny_edges.graph
    score = exact_scores(tiny_edges, task, torch.tensor([[0, g.down_logits]])).scores[0, g.down_logits]
    names = ["blocks.0.hook_resid_pre", "ln_final.hook_in"]
    _, clean = tiny_llama.run_with_cache(task.clean, names_filter=lambda n: n in names)
    _, corrupt = tiny_llama.run_with_cache(task.corrupt, names_filter=lambda n: n in names)
    final = clean["ln_final.hook_in"] + corrupt["blocks.0.hook_resid_pre"] - clean["blocks.0.hook_resid_pre"]
    metric = LogitDiff(task.answers, per_prompt=True)
    patched = metric(tiny_llama.unembed(tiny_llama.ln_final(final)))
    base = metric(tiny_llama.unembed(tiny_llama.ln_final(clean["ln_final.hook_in"])))
    assert score.item() == pytest.approx((base - patched).mean().item(), abs=1e-5)


def test_full_and_empty_circuits_are_the_clean_and_counterfactual_runs(tiny_llama, tiny_edges):
    task = _task(3)
    g = tiny_edges.graph
    values = patched_metric(tiny_edges, task, torch.stack([g.mask, torch.zeros_like(g.mask)]), max_rows=8)
    metric = LogitDiff(task.answers, per_prompt=True)
    with torch.no_grad():
        clean, corrupt = metric(tiny_llama(task.clean)).mean(), metric(tiny_llama(task.corrupt)).mean()
    assert values[0].item() == pytest.approx(clean.item(), abs=1e-4)
    assert values[1].item() == pytest.approx(corrupt.item(), abs=1e-4)
    # a circuit of half the edges lies elsewhere: the patch is not a no-op
    half = g.mask & (torch.rand(g.mask.shape, generator=torch.Generator().manual_seed(0)) < 0.5)
    middle = patched_metric(tiny_edges, task, half[None])[0]
    assert abs(middle - values[0]) > 1e-5 and abs(middle - values[1]) > 1e-5


def test_cpr_and_cmd_on_a_hand_built_curve():
    curve = Curve("hand", "t", False, (0, 50, 100), (0, 5, 10), (0.0, 1.5, 1.0), 2.0, 0.0)
    assert cpr(curve) == pytest.approx(0.5 * 0.75 + 0.5 * 1.25)  # trapezoids (0, 1.5) and (1.5, 1)
    assert cmd(curve) == pytest.approx(0.5 * 0.75 + 0.5 * 0.25)  # |1 - f| = 1, 0.5, 0
    assert area([0.001, 0.002, 1.0], [1, 1, 1]) == pytest.approx(0.999)


def test_prune_keeps_only_paths_from_input_to_logits():
    g = Graph(2, 4)
    edges = torch.zeros(g.n_up, g.n_down, dtype=torch.bool)
    q = g.down_qkv(1, 0).start  # a1.h0's query input
    edges[0, q] = True  # input -> a1.h0<q>, but a1.h0 feeds nothing
    edges[g.up_head(0, 1), g.down_logits] = True  # a0.h1 -> logits, but nothing feeds a0.h1
    assert not prune(g, edges).any()
    edges[g.up_head(1, 0), g.down_logits] = True  # a1.h0 -> logits completes input -> a1.h0 -> logits
    kept = prune(g, edges)
    assert kept.sum() == 2 and kept[0, q] and kept[g.up_head(1, 0), g.down_logits]


@pytest.fixture(scope="module")
def planted():
    from workbench.circuits.planted import planted_circuit
    from workbench.interventions.price_tagger import price_tokenizer

    return planted_circuit(price_tokenizer())


def test_eap_ig_recovers_the_planted_circuit_and_random_edges_do_not(planted):
    from workbench.circuits.planted import planted_task

    assert planted.accuracy > 0.95
    em = edge_model(planted.model)
    g = em.graph
    truth = g.flat(planted.edges)
    size = int(truth.sum())
    task = planted_task(len(planted.model.tokenizer))
    ig = attribute(em, task, "eap-ig").flat()
    recall = float(truth[ig.topk(size).indices].float().mean())
    assert recall >= 0.9
    gen = torch.Generator().manual_seed(0)
    random_recall = [float(truth[torch.randperm(g.n_edges, generator=gen)[:size]].float().mean()) for _ in range(50)]
    assert sum(random_recall) / 50 < 0.2


def test_circuit_diff_counts_gained_and_lost_edges_by_hand():
    from workbench.circuits.attribute import EdgeScores
    from workbench.circuits.diff import circuit_diff

    g = Graph(2, 4)
    a1, logits = g.up_head(1, 0), g.down_logits
    v = g.down_qkv(1, 2).start  # a1.h0<v>
    base = torch.zeros(g.n_up, g.n_down)
    base[0, v], base[a1, logits], base[0, logits] = 3.0, 2.0, 1.0  # input -> a1.h0 -> logits, input -> logits
    tuned = base.clone()
    tuned[0, logits] = 0.0
    tuned[g.up_mlp(1), logits], tuned[0, g.down_mlp(1)] = 5.0, 4.0  # input -> m1 -> logits replaces input -> logits
    diff = circuit_diff(EdgeScores(g, base, "hand", "t"), EdgeScores(g, tuned, "hand", "t"), 3)
    # tuned top 3: m1 -> logits, input -> m1, input -> a1.h0<v>; the last is pruned (a1.h0 -> logits fell out)
    assert diff.counts() == {"base_edges": 3, "tuned_edges": 2, "kept": 0, "gained": 2, "lost": 3, "jaccard": 0.0}
    frame = diff.to_frame().set_index(["upstream", "downstream"])
    assert frame.loc[("input", "logits"), "status"] == frame.loc[("input", "a1.h0<v>"), "status"] == "lost"
    assert frame.loc[("m1", "logits"), "status"] == "gained"
    assert frame.loc[("m1", "logits"), "change"] == 5.0
    null = circuit_diff(EdgeScores(g, base, "hand", "t"), EdgeScores(g, base, "hand", "t"), 3)
    assert null.counts()["gained"] == null.counts()["lost"] == 0


def test_recovery_counts_the_planted_edges_in_each_top_k_by_hand():
    from workbench.circuits.planted import recovery

    truth = torch.tensor([False, True, False, True, False])
    scores = torch.tensor([0.5, 3.0, 2.0, -1.0, 0.1])  # ranked: 1 (planted), 2, 0, 4, 3 (planted)
    rows = recovery(truth, scores, [1, 2, 5])
    assert rows == [
        {"k": 1, "precision": 1.0, "recall": 0.5},
        {"k": 2, "precision": 0.5, "recall": 0.5},
        {"k": 5, "precision": 0.4, "recall": 1.0},
    ]
    with pytest.raises(ValueError, match="size 6"):
        recovery(truth, scores, [6])
