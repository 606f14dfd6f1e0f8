"""benchmarks/gpu_check.py in --dry-run: every part but CUDA runs on the CPU and prints one valid JSON."""

import json

import pytest

from benchmarks.gpu_check import DRY_RUN_LLAMA, main


def test_gpu_check_dry_run_prints_one_json(capsys, tmp_path):
    report = main(["--dry-run", "--out", str(tmp_path / "check.json")])
    printed = json.loads(capsys.readouterr().out)  # stdout holds the JSON and nothing else
    assert printed == json.loads((tmp_path / "check.json").read_text())
    assert printed["dry_run"] and printed["ok"], json.dumps(printed, indent=1)
    for name in ("llama", "gpt2"):
        assert printed["equality"][name]["logits"] == 0.0  # the CPU against itself
    big = report["llama_2_7b_shaped"]
    d, width, layers = (
        DRY_RUN_LLAMA["hidden_size"],
        3 * DRY_RUN_LLAMA["hidden_size"],
        DRY_RUN_LLAMA["num_hidden_layers"],
    )
    # the paper's IRM: d -> 3d, 4 hidden layers (3 of 3d -> 3d), 3d -> d * layers, with biases
    assert big["irm"]["parameters"] == (d + 1) * width + 3 * (width + 1) * width + (width + 1) * d * layers
    assert big["irm"]["finite_loss"] and big["forward"]["tokens_per_s"] > 0
    assert big["patching"]["patches"] == layers * big["patching"]["seq"]
    assert big["patching"]["max_abs_diff_bf16"] < 0.1  # bf16 sweep vs transformer_lens.patching
    assert "skipped" in report["split_across_gpus"]


def test_scaling_exponents_recover_a_power_law():
    import pandas as pd

    from benchmarks.scaling import OPS, exponents, markdown

    rows = []
    for axis, power in (("seq", 2.0), ("batch", 1.0), ("depth", 0.5)):
        for x in (2, 4, 8, 16):
            fixed = {"seq": 32, "batch": 4, "depth": 4, axis: x}
            rows += [{"op": op, "axis": axis, "x": x, **fixed, "seconds": 0.01 * x**power} for op in OPS]
    df = pd.DataFrame(rows)
    fits = exponents(df)
    assert fits.loc["IRM step", "seq"] == pytest.approx(2.0) and fits.loc["DAS step", "depth"] == pytest.approx(0.5)
    assert exponents(df, last=2).loc["patching sweep", "batch"] == pytest.approx(1.0)
    assert "| patching sweep | 1.00 | 0.50 | 2.00 |" in markdown(df, fits)
