"""The RW functionalities experiment at quick size on the real default model, and its condition parser."""

import json

import pytest

from experiments.rw_functionalities import RWConfig, main, parse_condition
from workbench.neurons.ablation import Ablation


def test_parse_condition():
    assert parse_condition("all", "zero", 0.0) == Ablation()
    assert parse_condition("gate-post+", "zero", 0.0, orient_post=True) == Ablation(
        gate="-", post="+", orient_post=True
    )
    assert parse_condition("gate+", "fix", 1.5, orient_post=True) == Ablation(mode="fix", value=1.5, gate="+")
    assert parse_condition("post-", "zero", 0.0) == Ablation(post="-")
    for bad in ("gate", "gate*", "post+gate-", "gate-x"):
        with pytest.raises(ValueError, match="condition"):
            parse_condition(bad, "zero", 0.0)
    with pytest.raises(ValueError, match="weights"):
        RWConfig(weights="hf")


@pytest.mark.real_model
@pytest.mark.slow
def test_quick_run_writes_sane_outputs(tmp_path):
    out = tmp_path / "rw"
    summary = main(RWConfig(quick=True, out=str(out)))
    saved = json.loads((out / "summary.json").read_text())
    assert saved["class_counts"] == summary["class_counts"]
    n_layers, d_mlp = saved["n_layers"], saved["d_mlp"]
    assert (n_layers, d_mlp) == (30, 1536)
    assert sum(saved["class_counts"].values()) == n_layers * d_mlp
    assert all(sum(col) == d_mlp for col in zip(*saved["class_counts_by_layer"].values()))
    # most neurons are orthogonal; a few hundred at most are (typical) weakening, and they sit late
    assert saved["class_counts"]["orthogonal output"] > 0.5 * n_layers * d_mlp
    assert 0 < saved["weakening"]["count"] < 1000
    assert saved["weakening"]["mean_layer"] > saved["conditional_strengthening"]["mean_layer"]
    low, high = saved["beta_randomness_region"]
    assert low == pytest.approx(-high) and high == pytest.approx(0.0816, abs=5e-4)  # d_model = 576
    for pair in ("in_out", "gate_out", "gate_in"):
        assert 0.05 < saved["empirical_randomness_region"][pair]["high"] < 0.2
    freq = saved["activation_frequency_by_class"]
    assert all(0 <= v["freq_gate_pos"] <= 1 for v in freq.values())
    assert saved["ablated_sets"] and all(n == saved["weakening"]["count"] for n in saved["ablated_sets"].values())
    for _label, metrics in saved["ablation"].items():
        for entry in metrics.values():
            assert 0 < entry["clean"] < 11  # nats, below log(vocab)
            for set_name, effect in entry.items():
                if set_name != "clean":
                    assert abs(effect["delta"]) < 5 and abs(effect["control_delta"]) < 5
    dla = saved["dla"]
    assert len(dla["top10"]) == 10 and sum(dla["top50_class_counts"].values()) == 50
    assert all(entry["rw_class"] in saved["class_counts"] for entry in dla["top10"])
    values = [abs(entry["dla"]) for entry in dla["top10"]]
    assert values == sorted(values, reverse=True) and values[0] > 0
    for name in ("class_fractions", "cosine_distributions", "ablation_entropy", "activation_frequency"):
        assert (out / f"{name}.html").exists()
    for name in ("class_counts", "ablation_summary", "frequency_by_class", "randomness_regions", "top_dla_neurons"):
        assert (out / f"{name}.csv").stat().st_size > 100
