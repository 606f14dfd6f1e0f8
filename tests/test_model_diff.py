"""python -m experiments.model_diff at quick size: outputs exist and the numbers are consistent."""

import json

import pytest
import torch

from experiments.common import parse_config
from experiments.model_diff import ModelDiffConfig, main
from workbench.data.prompts import MOVIE_SENTIMENT
from workbench.hooks import attach
from workbench.irm import IRM, IRMConfig, save_irm
from workbench.metrics import LogitDiff
from workbench.models import load_model


@pytest.mark.real_model
@pytest.mark.slow
def test_quick_run(tmp_path):
    # an IRM with a known effect: it adds one fixed vector to the last layer's resid_post only
    model = load_model()
    irm = IRM.for_model(model, IRMConfig(layers=(29,), hidden_mult=0.25, n_hidden=1))
    tokens, answers = MOVIE_SENTIMENT.tokens(model), MOVIE_SENTIMENT.answer_tokens(model)
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
    assert base < 0  # SmolLM2-Instruct prefers " good" after "This movie was really"
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
