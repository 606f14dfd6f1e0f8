"""python -m experiments.model_diff at quick size: outputs exist and the numbers are consistent."""

import json

import pytest

from experiments.common import parse_config
from experiments.model_diff import ModelDiffConfig, main


@pytest.mark.real_model
@pytest.mark.slow
def test_quick_run(tmp_path):
    cfg = parse_config(ModelDiffConfig, ["--quick", "--out", str(tmp_path)])
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
    assert all(key.startswith(("28_", "29_")) for key in list(summary["top_attribution_differences"])[:3])
    assert len(summary["top_heads"]) == 2 and all(h.startswith(("L28", "L29")) for h in summary["top_heads"])
    norm = summary["joint_head_patch_normalized"]
    assert norm == pytest.approx((summary["joint_head_patch_logit_diff"] - base) / (tuned - base))
    assert summary["joint_head_patch_flips_base"] == (summary["joint_head_patch_logit_diff"] > 0)
    for name in ["logit_lens", "layer_attribution", "head_attribution_diff", "patch_resid_pre", "patch_head", "joint_head_patch"]:
        assert (tmp_path / f"{name}.html").exists()
    for name in ["logit_diff", "patch_mlp_out", "head_attribution", "logit_lens_tokens"]:
        assert (tmp_path / f"{name}.csv").exists()
