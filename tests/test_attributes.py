"""The attributes rate (RW functionalities, section 4): its word matching and summary checked by hand, the knowns
set from countryinfo, and greedy continuations against the bridge's own generate."""

import numpy as np
import pandas as pd
import pytest

from workbench.data.knowns import Known, country_facts, greedy_continuations, known_facts
from workbench.neurons.ablation import Ablation, ablated
from workbench.neurons.attributes import AttributesRate, attribute_hits, attributes_rate_effects, bootstrap_interval

ATTRS = ("Paris", "Western Europe", "Europe", "Lyon", "French", "Papeetē")


def test_attribute_hits_on_a_hand_built_continuation():
    text = " a country in western Europe. Its capital, Paris, lies on the Seine; Parisians speak FRENCH."
    assert attribute_hits(text, ATTRS) == ("Paris", "Western Europe", "Europe", "French")
    assert attribute_hits(" home of the Parisian Lyonnaise cuisine", ATTRS) == ()  # whole words only
    assert attribute_hits(" its capital is Papeete.", ATTRS) == ("Papeetē",)  # diacritics ignored
    assert attribute_hits("", ATTRS) == ()


def _frame(stated: dict[tuple[str, str, int], list[int]]) -> pd.DataFrame:
    rows = []
    for (name, kind, repeat), values in stated.items():
        for i, v in enumerate(values):
            rows.append(dict(set=name, kind=kind, repeat=repeat, n_neurons=0 if name == "clean" else 2, subject=f"s{i}",
                             stated=bool(v)))  # fmt: skip
    return pd.DataFrame(rows)


def test_summary_rates_and_intervals_by_hand():
    effects = AttributesRate(
        _frame(
            {
                ("clean", "clean", 0): [1, 1, 1, 0],
                ("weakening", "target", 0): [0, 1, 0, 0],
                ("weakening", "control", 0): [1, 1, 1, 0],
                ("weakening", "control", 1): [1, 0, 1, 0],
            }
        )
    )
    table = effects.summary(n_boot=2000, seed=1).set_index("set")
    assert table.loc["clean", "rate"] == 0.75 and np.isnan(table.loc["clean", "control_rate"])
    row = table.loc["weakening"]
    assert (row.rate, row.control_rate, row.delta) == (0.25, 0.625, -0.375)  # controls per subject: 1, .5, 1, 0
    assert row.n_subjects == 4 and row.n_neurons == 2
    for mid, low, high in (("rate", "rate_low", "rate_high"), ("delta", "delta_low", "delta_high")):
        assert row[low] <= row[mid] <= row[high]
    # the paired differences per subject are -1, 0.5, -1, 0: the interval stays within their range
    assert -1 <= row.delta_low < row.delta_high <= 0.5
    assert bootstrap_interval(np.full(5, 0.4)) == pytest.approx((0.4, 0.4))


def test_country_facts_and_their_attributes():
    facts = {f.subject: f for f in country_facts()}
    assert len(facts) > 200
    france = facts["France"]
    assert (france.prompt, france.answer) == ("The capital of France is", "Paris")
    for word in ("Paris", "Europe", "Western Europe", "French", "Belgium", "Germany", "Spain"):
        assert word in france.attributes
    assert not any("france" in a.lower() for a in france.attributes)  # e.g. the province Ile-de-France


def test_greedy_continuations_equal_generate_and_follow_ablations(tiny_llama):
    prompts = ["The capital of France is", "Hello", "The capital of Peru is"]  # two token lengths
    got = greedy_continuations(tiny_llama, prompts, max_new_tokens=4)
    for prompt, text in zip(prompts, got):
        tokens = tiny_llama.to_tokens(prompt)
        out = tiny_llama.generate(tokens, max_new_tokens=4, do_sample=False, verbose=False)
        assert text == tiny_llama.tokenizer.decode(out[0, tokens.shape[1] :])
    knowns = [Known("France", "", "Paris", (got[0].split()[0],)), Known("Peru", "", "Lima", ("Lima",))]
    neurons = {0: list(range(tiny_llama.cfg.d_mlp)), 1: list(range(tiny_llama.cfg.d_mlp))}
    effects = attributes_rate_effects(
        tiny_llama, knowns, {"all": neurons}, Ablation(), template="The capital of {subject} is", n_controls=0,
        max_new_tokens=4,
    )  # fmt: skip
    frame = effects.to_frame().set_index(["set", "subject"])
    assert frame.loc[("clean", "France"), "continuation"] == got[0] and frame.loc[("clean", "France"), "stated"]
    with ablated(tiny_llama, neurons, Ablation()):
        assert frame.loc[("all", "France"), "continuation"] == greedy_continuations(tiny_llama, prompts[:1], 4)[0]
    with pytest.raises(ValueError, match="subject"):
        attributes_rate_effects(tiny_llama, knowns, {}, Ablation(), template="no field")


@pytest.mark.real_model
def test_default_model_knows_some_capitals(smollm2):
    facts = {f.subject: f for f in country_facts()}
    chosen = [facts[s] for s in ("France", "Japan", "Germany", "Italy", "Tuvalu", "Nauru")]
    known = {f.subject for f in known_facts(smollm2, chosen)}
    assert {"France", "Japan"} <= known and len(known) < len(chosen)


def test_experiment_summary_is_strict_json_with_the_knowns_source():
    import json

    from experiments.rw_functionalities.attributes import AttributesStudy

    effects = AttributesRate(_frame({("clean", "clean", 0): [1, 0], ("weakening", "target", 0): [0, 0],
                                     ("weakening", "control", 0): [1, 0]}))  # fmt: skip
    study = AttributesStudy(250, 2, "{subject} is", "zero", effects, effects.summary())
    table = json.loads(json.dumps(study.summary(), allow_nan=False))["attributes_rate"]
    assert table["knowns"]["source"].startswith("countryinfo==") and table["knowns"]["n_used"] == 2
    assert table["sets"]["clean"] == {"n_neurons": 0, "n_subjects": 2, "rate": 0.5, "rate_low": 0.0, "rate_high": 1.0}
    assert table["sets"]["weakening"]["delta"] == -0.5
