"""python -m experiments.diffing --quick: organisms tuned, read and scored; checked where the answer is known."""

import json

import pandas as pd
import pytest

from experiments.cli import parse_config
from experiments.diffing import DiffingConfig, main
from experiments.diffing.run import identification, score_organism
from workbench.diffing import Organism


def test_identification_counts_hits_and_false_positives():
    names = {"adl_lens": ["music"], "patchscope": [], "steering": ["food"], "crosscoder": [], "blackbox": ["music"]}
    rows = score_organism(Organism("topic", "music"), names) + score_organism(Organism("control"), names)
    rows += score_organism(Organism("null"), {key: [] for key in names})
    table = identification(pd.DataFrame(rows)).set_index("method")
    assert table.loc["adl_lens", "named"] == 1 and table.loc["adl_lens", "organisms"] == 1
    assert table.loc["steering", "named"] == 0  # named another topic, not the target
    assert table.loc["adl_lens", "false_positives"] == 1 and table.loc["adl_lens", "controls"] == 2
    assert table.loc["patchscope", "false_positives"] == 0


def test_bad_topic_is_refused():
    with pytest.raises(ValueError, match="unknown topics"):
        DiffingConfig(topics=("cooking",))


@pytest.mark.real_model
@pytest.mark.slow
def test_quick_run(tmp_path):
    cfg = parse_config(DiffingConfig, ["--quick", "--out", str(tmp_path / "out"), "--no-progress"])
    summary = main(cfg)
    assert summary["organisms"] == [
        "topic:music:s0",
        "topic:weather:s0",
        "sentiment:negative:s0",
        "control:-:s0",
        "null:-:s0",
    ]
    for key in ("identification", "identification_early"):
        table = pd.DataFrame(summary[key]).set_index("method")
        assert list(table.index) == ["adl_lens", "patchscope", "steering", "crosscoder", "blackbox"]
        assert (table.organisms == 3).all() and (table.controls == 2).all()
    # every tuned organism records its steps to the stopping rule (ceiling 6 at quick size) and its short tune's
    tuning = summary["tuning"]
    assert set(tuning["steps"]) == set(tuning["early_steps"]) == set(summary["organisms"][:-1])
    assert all(1 <= s <= 6 for s in tuning["steps"].values())
    assert all(e <= max(1, s // 2) for e, s in zip(tuning["early_steps"].values(), tuning["steps"].values()))
    assert set(tuning["not_converged"]) <= set(tuning["steps"]) and "0.5%" in tuning["stopping_rule"]
    names = pd.read_csv(tmp_path / "out" / "names.csv", keep_default_na=False)
    # the base against itself: ADL's difference is exactly 0, so its read-outs name nothing
    null = names[(names.organism == "null:-:s0") & (names.point == "converged")].set_index("method")
    assert null.loc["adl_lens", "others"] == "" and null.loc["patchscope", "others"] == ""
    assert summary["tune_seconds_median"] >= 0 and summary["crosscoder_throughput_median"] > 0
    assert json.loads((tmp_path / "out" / "summary.json").read_text())["organisms"] == summary["organisms"]
    assert (tmp_path / "out" / "report.html").exists() and (tmp_path / "out" / "identification.html").exists()
