"""The main job end to end at a tiny size: a tiny random Llama saved as a HF folder, real tweet corpora."""

import json

import pytest
from transformers import AutoModelForCausalLM

from experiments.common import parse_config
from experiments.neuron1512 import Neuron1512Config, main, report, resolve
from tests.helpers import tiny_llama_config


@pytest.fixture(scope="module")
def tiny_dir(tokenizer, tmp_path_factory):
    path = tmp_path_factory.mktemp("tiny_llama_hf")
    hf = AutoModelForCausalLM.from_config(tiny_llama_config(len(tokenizer)), attn_implementation="eager")
    hf.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def test_flags_and_quick_resolution():
    cfg = parse_config(
        Neuron1512Config,
        [
            "--quick",
            "--alignments",
            "negative",
            "positive",
            "--layers",
            "1",
            "2",
            "--read-hook",
            "resid_mid",
            "--write-hook",
            "resid_mid",
            "--steps",
            "7",
            "--device",
            "cpu",
            "--model",
            "gpt2",
            "--out",
            "x",
        ],
    )
    assert cfg.alignments == ("negative", "positive") and cfg.layers == (1, 2) and cfg.read_hook == "resid_mid"
    quick = resolve(cfg)
    assert quick.steps == 7 and quick.eval_texts == 12 and quick.hidden_mult == 1.0  # explicit flags win over --quick
    assert resolve(Neuron1512Config(device="cuda")).hidden_mult == 3.0


def test_main_writes_sane_outputs(tiny_dir, tmp_path):
    cfg = Neuron1512Config(
        model=str(tiny_dir),
        alignments=("negative", "positive"),
        quick=True,
        steps=4,
        max_items=80,
        eval_texts=8,
        n_prompts=2,
        max_new_tokens=4,
        mask_ks=(1, 5),
        n_random=2,
        out=str(tmp_path / "out"),
        ckpt_dir=str(tmp_path / "ck"),
        png=False,
        progress=False,
    )
    summary = main(cfg)
    assert json.loads((tmp_path / "out" / "summary.json").read_text())["alignments"].keys() == {"negative", "positive"}
    for name, a in summary["alignments"].items():
        # four steps of an IRM on a random model: the losses are finite and near log(vocab);
        # the IRM lowers the training loss
        assert 5 < a["heldout_loss_irm"] < 12 and 5 < a["heldout_loss_base"] < 12
        assert a["train_loss_irm"] < a["train_loss_base"]
        assert -1 <= a["vader_on"] <= 1 and -1 <= a["vader_off"] <= 1
        assert a["vader_corpus"] < 0 if name == "negative" else a["vader_corpus"] > 0  # VADER agrees with the labels
        dims, shares = zip(*a["top10"])
        assert (
            all(0 <= d < 64 for d in dims)
            and list(shares) == sorted(shares, reverse=True)
            and 0 < sum(shares) <= 1 + 1e-6
        )
        assert 1 / 64 <= a["top_share"][1] <= a["top_share"][10] <= 1 + 1e-6
        assert set(a["masking"]) == {"1", "5"}
    assert len(summary["overlap"]) == 1 and 0 <= summary["overlap"][0]["jaccard"] <= 1
    files = {p.name for p in (tmp_path / "out").iterdir()}
    assert {
        "summary.json",
        "config.json",
        "generations.csv",
        "masking.csv",
        "dimensions.csv",
        "heatmap_negative.html",
        "heatmap_tokens_positive.html",
        "training_curves.html",
        "massive_vs_irm.html",
    } <= files
    assert (tmp_path / "ck" / "negative" / "checkpoints" / "step-000004" / "irm.safetensors").is_file()
    assert "same top dimension" in report(summary)
