"""The circuits experiment at quick size, on a tiny random Llama saved as an HF folder."""

import json

import pytest

from experiments.circuits import CircuitsConfig, main


@pytest.mark.slow
def test_quick_run_writes_cpr_cmd_and_a_null_diff(tiny_dir, tmp_path):
    summary = main(CircuitsConfig(model=str(tiny_dir), quick=True, out=str(tmp_path), progress=False))
    saved = json.loads((tmp_path / "summary.json").read_text())
    scores = saved["scores"]["ioi"]
    assert set(scores) >= {"eap", "eap-ig", "random", "m_full", "m_empty"}
    assert scores["m_full"] != scores["m_empty"]
    for method in ("eap", "eap-ig", "random"):
        assert scores[method]["cmd"] >= 0
        assert scores[method]["cpr"] == pytest.approx(summary["scores"]["ioi"][method]["cpr"])
    assert saved["diff"]["gained"] == saved["diff"]["lost"] == 0  # a model against itself: nothing changes
    noise = saved["diff"]["noise"]  # no tuned model, so no second seed; one prompt per half
    assert set(noise) == {"base_halves", "base_vs_tuned_halves"}
    assert noise["base_vs_tuned_halves"] == 1.0  # the "tuned" model is the base: the same circuit on the same half
    planted = saved["planted"]
    assert planted["size"] == 2 and planted["accuracy"] > 0.95
    assert planted["exact"]["recall"] == planted["eap-ig"]["recall"] == 1.0  # the known answer, found
    assert planted["random"]["recall"] == pytest.approx(2 / planted["edges"])
    assert (tmp_path / "planted_recovery.csv").exists()
    assert (tmp_path / "report.html").exists() and (tmp_path / "curves.csv").exists()
