"""The circuits experiment at quick size, on a tiny random Llama saved as an HF folder."""

import json

import pytest
from transformers import AutoModelForCausalLM

from experiments.circuits import CircuitsConfig, main
from tests.helpers import tiny_llama_config


@pytest.fixture(scope="module")
def tiny_dir(tokenizer, tmp_path_factory):
    path = tmp_path_factory.mktemp("tiny_llama_hf")
    hf = AutoModelForCausalLM.from_config(tiny_llama_config(len(tokenizer)), attn_implementation="eager")
    hf.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


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
    assert (tmp_path / "report.html").exists() and (tmp_path / "curves.csv").exists()
