"""experiments.model_diff: its units on tiny models against hand computations, and quick runs on the real model."""

import json

import pandas as pd
import pytest
import torch

from experiments.cli import parse_config
from experiments.model_diff import ModelDiffConfig, compare, main
from tests.helpers import tiny_llama_config
from workbench.data.prompts import SENTIMENT_PROMPTS, prompt_set
from workbench.hooks import ModelSide, attach
from workbench.irm import IRM, IRMConfig, save_irm
from workbench.metrics import LogitDiff
from workbench.models import DEFAULT_MODEL, from_config, load_model


@pytest.mark.real_model
@pytest.mark.slow
def test_quick_run(tmp_path):
    # an IRM with a known effect: it adds one fixed vector to the last layer's resid_post only
    model = load_model()
    irm = IRM.for_model(model, IRMConfig(layers=(29,), hidden_mult=0.25, n_hidden=1))
    prompts = prompt_set(SENTIMENT_PROMPTS, (" bad", " good"))
    tokens, answers = prompts.tokens(model), prompts.answer_tokens(model)
    vector = 5.0 * (model.W_U[:, answers[0, 0]] - model.W_U[:, answers[0, 1]]).detach()
    with torch.no_grad():
        irm.net[-1].bias.copy_(vector)
    save_irm(tmp_path / "irm_ckpt", irm, model=model)
    with torch.no_grad(), attach(model, [("blocks.29.hook_resid_post", lambda x, hook: x + vector)]):
        by_hand = LogitDiff(answers)(model(tokens)).item()

    cfg = parse_config(ModelDiffConfig, ["--quick", "--out", str(tmp_path), "--irm", str(tmp_path / "irm_ckpt")])
    summary = main(cfg)
    assert json.loads((tmp_path / "summary.json").read_text())["top_heads"] == summary["top_heads"]
    base, tuned = summary["logit_diff_base"], summary["logit_diff_tuned"]
    assert base < 0  # SmolLM2-Instruct prefers " good" after "This movie was really" and its kin
    assert tuned > base + 0.5  # tuning on negative tweets moves it towards " bad"
    # only the last two layers were tuned: the lens agrees up to layer 28's input, and the
    # final point is the logit difference itself
    gaps = summary["logit_lens_gap_by_point"]
    assert max(abs(gaps[f"{layer}_pre"]) for layer in range(29)) < 1e-4
    assert gaps["final_post"] == pytest.approx(tuned - base, abs=1e-3)
    # (layers before 28 differ only through the final norm's scale, which can put one of them third)
    assert all(key.startswith(("28_", "29_")) for key in list(summary["top_attribution_differences"])[:2])
    assert len(summary["top_heads"]) == 2 and all(h.startswith(("L28", "L29")) for h in summary["top_heads"])
    norm = summary["joint_head_patch_normalized"]
    assert norm == pytest.approx((summary["joint_head_patch_logit_diff"] - base) / (tuned - base))
    assert summary["joint_head_patch_flips_base"] == (summary["joint_head_patch_logit_diff"] > 0)
    for name in [
        "logit_lens",
        "layer_attribution",
        "head_attribution_diff",
        "patch_resid_pre",
        "patch_head",
        "joint_head_patch",
    ]:
        assert (tmp_path / f"{name}.html").exists()
    for name in ["logit_diff", "patch_mlp_out", "head_attribution", "logit_lens_tokens"]:
        assert (tmp_path / f"{name}.csv").exists()
    # the report shows the top heads' attention, base and tuned side by side (one circuitsvis view each)
    report = (tmp_path / "report.html").read_text()
    assert report.count("CircuitsVis.render(") == 2 and all(h in report for h in summary["top_heads"])

    injected = summary["irm"]
    assert injected["logit_diff_base"] == pytest.approx(base, abs=1e-5)
    assert injected["logit_diff_irm"] == pytest.approx(by_hand, abs=1e-4)
    assert injected["logit_diff_irm"] > base + 0.5
    # the IRM writes after block 29 only: no earlier lens point moves, no resid_pre patch does anything
    assert (
        max(abs(v) for k, v in injected["logit_lens_gap_by_point"].items() if k != "final_post" and k != "29_post")
        < 1e-4
    )
    resid = json.loads((tmp_path / "irm" / "summary.json").read_text())["top_patching"]["resid_pre"]
    assert all(abs(row["value"] - base) < 1e-4 for row in resid)
    assert (tmp_path / "irm" / "patch_head.html").exists()


def test_compare_units_match_hand_computations(tiny_llama, tokenizer):

    other_model = from_config(tiny_llama_config(len(tokenizer)), tokenizer, seed=1, prepend_bos=False)
    prompts = prompt_set(SENTIMENT_PROMPTS[:4], (" bad", " good"))
    base, other = ModelSide(tiny_llama, name="base"), ModelSide(other_model, name="other")
    comparison = compare(base, other, prompts, top_heads=3)
    tokens, answers = prompts.tokens(tiny_llama), prompts.answer_tokens(tiny_llama)
    with torch.no_grad():
        by_hand = [LogitDiff(answers, per_prompt=True)(m(tokens)) for m in (tiny_llama, other_model)]
    torch.testing.assert_close(comparison.diffs.base, by_hand[0])
    torch.testing.assert_close(comparison.diffs.other, by_hand[1])
    summary = comparison.summary()
    base_ld, other_ld = summary["logit_diff_base"], summary["logit_diff_other"]
    assert base_ld == pytest.approx(float(by_hand[0].mean()), abs=1e-5)
    assert summary["logit_lens_gap_by_point"]["final_post"] == pytest.approx(other_ld - base_ld, abs=1e-4)
    joint = comparison.joint
    assert len(joint.heads) == 3 and (joint.base, joint.other) == (pytest.approx(base_ld), pytest.approx(other_ld))
    assert summary["joint_head_patch_normalized"] == pytest.approx((joint.joint - base_ld) / (other_ld - base_ld))
    # the heads chosen are those whose single patch moved the base most towards the other model
    sweep = comparison.sweeps["head"]
    toward = (sweep.values - sweep.baseline) * (1 if other_ld > base_ld else -1)
    assert {sweep.values.shape[1] * layer + head for layer, head in joint.heads} == set(
        toward.flatten().topk(3).indices.tolist()
    )
    frame = comparison.tables()["logit_diff"]
    assert list(frame.model.unique()) == ["base", "other"] and len(frame) == 8
    assert set(comparison.figures()) >= {"logit_lens", "joint_head_patch", "patch_head", "patch_resid_pre"}


@pytest.mark.real_model
@pytest.mark.slow
def test_quick_rl_run(tmp_path):
    summary = main(parse_config(ModelDiffConfig, ["--quick", "--tuning", "rl", "--out", str(tmp_path)]))
    assert summary["method"] == "rl" and "/rl/" in summary["tuned"]
    # GRPO trained every layer: the residual streams part before the last two layers (unlike the supervised model)
    gaps = summary["logit_lens_gap_by_point"]
    assert max(abs(gaps[f"{layer}_pre"]) for layer in range(1, 28)) > 1e-5
    assert gaps["final_post"] == pytest.approx(summary["logit_diff_tuned"] - summary["logit_diff_base"], abs=1e-3)
    evidence = summary["rl_evidence"]
    low, high = evidence["gain_ci95"]
    assert evidence["n_prompts"] == 12 and low <= evidence["gain"] <= high and evidence["kl_to_base"] > 0
    samples = pd.read_csv(tmp_path / "rl_samples.csv")
    assert len(samples) == 2 * 12 * 2 and set(samples.model) == {"base", "tuned"}
    assert evidence["reward_tuned"] == pytest.approx(samples[samples.model == "tuned"].reward.mean())
    for name in (
        "rl_sample_table.csv",
        "rl_history.csv",
        "rl_training.html",
        "rl_heldout_reward.html",
        "patch_head.html",
    ):
        assert (tmp_path / name).exists(), name


@pytest.mark.parametrize("tuning", ["rl", "supervised"])
def test_making_the_tuned_model_says_so_and_shows_progress(tmp_path, monkeypatch, capsys, tuning, tiny_llama):
    from workbench.tuning import recipes

    calls = []

    def fake_tune(cfg, *args, progress=False, **kwargs):
        calls.append((type(cfg).__name__, progress))
        return tmp_path

    monkeypatch.setattr(recipes, "rl_tune", fake_tune)
    monkeypatch.setattr(recipes, "tune_last_layers", fake_tune)
    monkeypatch.setattr(recipes, "load_tuned", lambda path: tiny_llama)
    phase = {"rl": "RL model: GRPO, 6 steps", "supervised": "supervised model: tuning"}
    recipe = {
        "tune": recipes.tune_config(DEFAULT_MODEL, quick=True),
        "rl": recipes.rl_config(DEFAULT_MODEL, quick=True),
    }
    said = []
    tuned = recipes.make_tuned(tuning, **recipe, say=said.append)
    assert tuned.model is tiny_llama and calls == [({"rl": "RLConfig"}.get(tuning, "TuneConfig"), True)]
    assert said[0].startswith(phase[tuning])
    recipes.make_tuned(tuning, **recipe, progress=False)
    assert calls[-1][1] is False and capsys.readouterr().err == ""
