"""Each experiment's findings: sentences whose numbers are summary.json's, and committed reports that open with them."""

import html
import json
import re
from pathlib import Path

import pytest

from experiments.boundless_das.findings import findings as das_findings
from experiments.circuits.findings import findings as circuits_findings
from experiments.diffing.findings import findings as diffing_findings
from experiments.findings import at, findings_function, num, spread
from experiments.model_diff.findings import findings as model_diff_findings
from experiments.neuron1512.findings import findings as neuron1512_findings
from experiments.realignments.findings import findings as realignments_findings
from experiments.rw_functionalities.findings import findings as rw_findings

FIGURES = Path(__file__).resolve().parents[1] / "figures"

# per committed folder: summary.json paths whose values the findings print, with the decimals they print
PRINTED = {
    "boundless_das": [(("best", "iia"), 3), (("random_rotation_iia",), 3), (("irrelevant_position", "iia"), 3)],
    "boundless_das_ioi": [(("best", "iia"), 3), (("random_rotation_iia",), 3), (("task_accuracy",), 2)],
    "model_diff": [(("logit_diff_base",), 2), (("logit_diff_tuned",), 2), (("joint_head_patch_normalized",), 2)],
    "model_diff_rl": [(("logit_diff_tuned",), 2), (("rl_evidence", "reward_base"), 2), (("rl_evidence", "gain"), 2)],
    "realignments": [
        (("behaviour", "base", "heldout_loss"), 2),
        (("behaviour", "irm", "heldout_loss"), 2),
        (("behaviour", "irm", "gain"), 2),
        (("behaviour", "supervised", "kl_to_base"), 2),
        (("first_token_top_dim", "irm", "base_ratio_to_median"), 2),
    ],
    "neuron1512": [
        (("results", "card", "negative", "heldout_loss_base", "mean"), 2),
        (("results", "card", "negative", "heldout_loss_irm", "mean"), 2),
        (("results", "card", "negative", "heldout16_loss_irm", "mean"), 2),
        (("stability_vs_controls", "card", "same_alignment", "trained"), 2),
    ],
    "circuits": [
        (("scores", "ioi", "eap-ig", "cpr"), 2),
        (("scores", "sentiment", "random", "cmd"), 2),
        (("planted", "eap-ig", "recall"), 2),
        (("diff", "jaccard"), 2),
        (("diff", "noise", "tuned_vs_other_seed"), 2),
        (("diff", "noise", "base_halves"), 2),
    ],
    "diffing": [
        (("identification", 0, "named"), 0),
        (("identification", 4, "named"), 0),
        (("identification_early", 0, "named"), 0),
        (("identification_early", 4, "named"), 0),
    ],
    "rw_functionalities": [
        (("class_counts", "orthogonal output"), 0),
        (("class_counts", "conditional strengthening"), 0),
        (("weakening", "mean_layer"), 1),
        (("class_counts_other_weights", "neurons_changing_class"), 0),
    ],
}


def _committed_reports() -> list[Path]:
    return sorted(FIGURES.glob("*/report.html"))


def _findings_text(page: str) -> str:
    body = page[page.index("<body") :]
    first = re.search(r"<h2[^>]*>(.*?)</h2>", body)
    assert first is not None and first.group(1) == "Findings", "the report's first section is not Findings"
    section = body[first.start() : body.index("</ul>", first.start())]
    return html.unescape(re.sub(r"<[^>]+>", " ", section))


def _numbers(text: str) -> set[float]:
    return {float(n.replace(",", "")) for n in re.findall(r"[-+]?\d[\d,]*(?:\.\d+)?", text)}


def test_every_committed_report_is_checked():
    assert {p.parent.name for p in _committed_reports()} == set(PRINTED)


@pytest.mark.parametrize("report", _committed_reports(), ids=lambda p: p.parent.name)
def test_committed_report_opens_with_findings_whose_numbers_are_the_summary(report):
    text = _findings_text(report.read_text(encoding="utf-8"))
    summary = json.loads((report.parent / "summary.json").read_text())
    printed = _numbers(text)
    for path, digits in PRINTED[report.parent.name]:
        value = at(summary, *path)
        assert value is not None, f"{path} is not in {report.parent.name}/summary.json"
        where = ".".join(map(str, path))
        assert round(value, digits) in printed, f"{where} = {value} is not printed in the findings: {text}"


def test_format_helpers():
    assert num(-2.071319818496704) == "-2.07" and num(0.0922, sign=True) == "+0.09"
    assert spread([4.131399, 4.192106, 4.169934], 4.164479689164595, 0.025081586135369843) == (
        "4.16 ± 0.03 over 3 seeds"
    )
    assert at({"a": {"b": None}}, "a", "b", "c", default="x") == "x"


def test_findings_functions_are_found_by_module():
    assert findings_function("experiments.realignments") is realignments_findings
    assert findings_function("tests.test_findings") is None and findings_function("") is None


def test_realignments_states_budget_and_seed_spread():
    summary = json.loads((FIGURES / "realignments" / "summary.json").read_text())
    summary["training_budget"] = {"supervised": {"steps": 40, "tokens_seen": 12800, "trainable_parameters": 1000}}
    gains = [0.1, 0.12, 0.14]
    summary["rl_gain_over_seeds"] = {"seeds": [0, 1, 2], "gains": gains, "gain_mean": 0.12, "gain_std": 0.02}
    text = "\n".join(realignments_findings(summary))
    assert "SFT: negativity gain +0.10 (95% CI [0.04, 0.16]), KL to the base 0.85, held-out loss 5.38 -> 3.98; " in text
    assert "trained 40 steps, 12,800 tokens, 1,000 trainable parameters; one seed." in text
    assert "RL negativity gain over seeds: 0.12 ± 0.02 over 3 seeds." in text
    del summary["rl_gain_over_seeds"]
    assert "RL was run with one seed: its gain has no spread over seeds." in realignments_findings(summary)


def test_realignments_flags_the_base_models_massive_dimension():
    summary = json.loads((FIGURES / "realignments" / "summary.json").read_text())
    first = summary["first_token_top_dim"] = {"irm": {"dim": 507, "change": 9.0, "share_of_norm2": 0.9}}
    assert not any("massive" in line for line in realignments_findings(summary))
    first["irm"] |= {"base_rank": 0, "base_ratio_to_median": 46.2}
    said = realignments_findings(summary)[-1]
    assert said.startswith("Dimension 507 is one of the base model's own massive-activation dimensions (rank 0 by ")
    assert "46.20x the median dimension" in said


def test_diffing_findings_on_a_hand_built_summary():
    rows = [
        {"method": "adl_lens", "named": 3, "organisms": 4, "false_positives": 1, "controls": 3},
        {"method": "blackbox", "named": 1, "organisms": 4, "false_positives": 2, "controls": 3},
    ]
    early = [r | {"named": n} for r, n in zip(rows, (1, 1), strict=True)]
    tuning = {"stopping_rule": "the rule", "ceiling": 400, "steps": {"a": 50, "b": 70, "c": 90}, "not_converged": []}
    out = diffing_findings({"identification": rows, "identification_early": early, "tuning": tuning})
    assert out[0] == "Organisms tuned to the stopping rule (the rule): every tune converged; 50-90 steps (median 70)."
    assert out[1] == (
        "ADL logit lens names the target of 3 of 4 organisms and names something for 1 of 3 controls and null pairs "
        "(false positives)."
    )
    assert "No method names the target of every organism." in out
    assert "No method is free of false positives on the controls and null pairs." in out
    assert "Most hits net of false positives: ADL logit lens (3 named, 1 false positives)." in out
    assert out[-1] == (
        "ADL logit lens 3/4 beats the black-box baseline 1/4; on the short tunes: ADL logit lens 1/4 does not beat "
        "the black-box baseline 1/4."
    )
    names = [
        {"method": "adl_lens", "point": "converged", "kind": "topic", "others": "negative food"},
        {"method": "adl_lens", "point": "early", "kind": "topic", "others": "school"},
        {"method": "adl_lens", "point": "converged", "kind": "control", "others": "music"},
        {"method": "steering", "point": "converged", "kind": "topic", "others": "music"},
    ]
    said = diffing_findings({"identification": rows, "names": names})
    assert "ADL logit lens also names a target other than the organism's for 1 of 4 organisms (food, negative)" in (
        " ".join(said)
    )
    tuning["not_converged"] = ["c"]
    assert diffing_findings({"identification": rows, "tuning": tuning})[0].startswith(
        "Organisms tuned to the stopping rule (the rule): NOT converged: c reached the ceiling of 400 steps"
    )


def test_circuits_findings_on_a_hand_built_summary():
    scores = {
        "eap": {"cpr": 0.81, "cmd": 0.2},
        "eap-ig": {"cpr": 0.3, "cmd": 0.15},
        "random": {"cpr": 0.45, "cmd": 0.9},
        "m_full": 2.5,
        "m_empty": 0.1,
    }
    diff = {"task": "ioi", "tuned": "self", "n": 12, "kept": 12, "gained": 0, "lost": 0, "jaccard": 1.0}
    out = circuits_findings({"edges": 1234, "scores": {"ioi": scores}, "diff": diff})
    assert out[0] == (
        "ioi over 1234 edges: EAP-IG CPR 0.30, CMD 0.15; EAP CPR 0.81, CMD 0.20; random ranking CPR 0.45, CMD 0.90 "
        "(logit difference: whole model 2.50, empty circuit 0.10); higher CPR and lower CMD are better."
    )
    assert out[1] == (
        "On ioi, EAP-IG's signed ranking is no better than a random one: CPR 0.30 against 0.45 (no better: under 1.1x "
        "random)."
    )
    assert out[2] == "Circuit diff on ioi (top 12 edges), base vs itself: 12 kept, 0 gained, 0 lost, Jaccard 1.00."
    assert len(out) == 3  # EAP (0.81) is clear of random; no false difference of the model with itself
    planted = {"edges": 110, "size": 2, "accuracy": 1.0, "random": {"recall": 2 / 110}}
    planted |= {m: {"recall": r} for m, r in (("eap-ig", 0.5), ("eap", 1.0), ("exact", 1.0))}
    out = circuits_findings({"planted": planted})
    assert out[0] == (
        "Planted circuit (2 of 110 edges, task accuracy 1.00): recall of the top 2 edges, EAP-IG 0.50, EAP 1.00, "
        "exact patching 1.00 (a random ranking: 0.02 expected)."
    )
    assert out[1].startswith("EAP-IG misses part of the planted circuit")
    diff |= {"gained": 2, "lost": 2, "kept": 10, "jaccard": 0.71}
    assert "false positive" in circuits_findings({"diff": diff})[-1]


def test_circuit_diff_is_weighed_against_seed_and_prompt_noise():
    diff = {"task": "sentiment", "tuned": "supervised", "n": 12, "kept": 6, "gained": 6, "lost": 6, "jaccard": 0.4}
    diff["noise"] = {"tuned_vs_other_seed": 0.8, "base_vs_other_seed": 0.5, "base_halves": 0.7}
    diff["noise"]["base_vs_tuned_halves"] = 0.4
    out = circuits_findings({"diff": diff})
    assert out[1] == (
        "Against tuning noise: the two tuning seeds' circuits have Jaccard 0.80 with each other, and 0.40 and 0.50 "
        "with the base's."
    )
    assert out[2] == (
        "Against prompt noise: on half of the prompts each, the base's circuit has Jaccard 0.70 with its circuit on "
        "the other half and 0.40 with the tuned model's on the same half."
    )
    assert out[3] == (  # seeds: (1 - 0.5) / (1 - 0.8) = 2.5 (the closer seed); prompts: 0.6 / 0.3 = 2
        "The diff is larger than the noise: its distance (1 - Jaccard) is 2.50x the tuning seeds' and 2.00x the "
        "prompt halves' (larger needs 1.5x each; for the seeds, the seed closer to the base counts)."
    )
    diff["noise"] |= {"base_vs_other_seed": 0.75}  # one seed as close to the base as to the other seed
    assert circuits_findings({"diff": diff})[3].startswith(
        "The diff is within the noise: its distance (1 - Jaccard) is 1.25x the tuning seeds' and 2.00x"
    )


def test_neuron1512_states_heldout_loss_over_seeds():
    summary = json.loads((FIGURES / "neuron1512" / "summary.json").read_text())
    r = summary["results"]["card"]["negative"]
    base, irm = r["heldout_loss_base"]["mean"], r["heldout_loss_irm"]
    loss = f"{base:.2f} (base) -> {irm['mean']:.2f} ± {irm['std']:.2f} over 3 seeds with the IRM"
    said = neuron1512_findings(summary)
    assert any(line.startswith(f"card/negative: held-out loss {loss}") for line in said), said
    assert said[0].startswith("card/negative: every seed converged")


def test_neuron1512_says_plainly_when_a_seed_did_not_converge():
    summary = json.loads((FIGURES / "neuron1512" / "summary.json").read_text())
    training = summary["results"]["card"]["negative"]["training"]
    training["per_seed"]["1"] |= {"converged": False, "steps": 1000}
    said = neuron1512_findings(summary)[0]
    assert said.startswith("card/negative: NOT converged: seed 1 reached the step ceiling") and "1000" in said


@pytest.mark.parametrize(
    "state",
    [das_findings, model_diff_findings, realignments_findings, rw_findings, diffing_findings, circuits_findings,
     neuron1512_findings],
)  # fmt: skip
def test_findings_of_an_empty_summary_are_empty(state):
    assert state({}) == []


def test_findings_survive_missing_optional_keys():
    das = json.loads((FIGURES / "boundless_das" / "summary.json").read_text())
    for key in ("ground_truth", "irrelevant_position", "sweep", "d_model", "task_accuracy"):
        das.pop(key)
    assert das_findings(das)[0].startswith("'left' is best found at layer 1, position 35")
    diff = json.loads((FIGURES / "model_diff" / "summary.json").read_text())
    for key in ("top_patching", "irm", "top_head_attribution_differences", "answers"):
        diff.pop(key)
    first = "Mean logit difference over 8 prompts: base -2.07, the supervised model -1.21 (one tuning seed)."
    assert model_diff_findings(diff)[0] == first
