"""Counterfactual datasets: the causal models' labels checked by hand, seeding, tokenisation."""

import random

import pytest

from workbench.data.counterfactual import (
    CausalModel,
    ioi_counterfactuals,
    price_tagging_counterfactuals,
    price_tagging_model,
    sample_counterfactuals,
)
from workbench.interventions.price_tagger import price_tokenizer


def _parse(prompt: str) -> tuple[float, float, float]:
    words = prompt.replace(",", " ").split()
    nums = [float(w) for w in words if w.replace(".", "").isdigit() and "." in w]
    return nums[0], nums[1], nums[2]


@pytest.mark.parametrize("variable", ["left", "right"])
def test_price_tagging_labels_follow_the_paper_causal_model(variable):
    data = price_tagging_counterfactuals(variable, 200, seed=3)
    for base, source, label, base_label in zip(data.base, data.sources[0], data.labels, data.base_labels):
        low, high, price = _parse(base)
        s_low, s_high, s_price = _parse(source)
        assert 0 <= low < high <= 9.99
        assert base_label == (" Yes" if low <= price <= high else " No")
        left = (s_low <= s_price) if variable == "left" else (low <= price)
        right = (s_price <= s_high) if variable == "right" else (price <= high)
        assert label == (" Yes" if left and right else " No")
    frame = data.to_frame()
    assert frame["changed"].mean() == 0.5 and list(frame.columns[:3]) == ["base", "label", "base_label"]


def test_sampler_is_seeded_and_multi_source():
    a = price_tagging_counterfactuals(("left", "right"), 50, seed=1)
    b = price_tagging_counterfactuals(("left", "right"), 50, seed=1)
    c = price_tagging_counterfactuals(("left", "right"), 50, seed=2)
    assert a == b and a.base != c.base
    assert len(a.sources) == 2
    for s_left, s_right, label in zip(*a.sources, a.labels):
        (l1, _, p1), (_, h2, p2) = _parse(s_left), _parse(s_right)
        assert label == (" Yes" if l1 <= p1 and p2 <= h2 else " No")


def test_generic_causal_model_and_interventions():
    xor = CausalModel(
        sample_inputs=lambda rng: {"x": rng.random() < 0.5, "y": rng.random() < 0.5},
        mechanisms={"nx": lambda v: not v["x"], "out": lambda v: v["nx"] != v["y"]},
        output="out",
        render=lambda v: f"{int(v['x'])}{int(v['y'])}",
        verbalize=lambda o: str(int(o)),
    )
    assert xor.run({"x": True, "y": True})["out"] is True
    assert xor.run({"x": True, "y": True}, {"nx": True})["out"] is False
    data = sample_counterfactuals(xor, "nx", 40, seed=0, changed_fraction=None)
    for base, source, label in zip(data.base, data.sources[0], data.labels):
        assert label == str(int((source[0] == "0") != (base[1] == "1")))
    with pytest.raises(KeyError, match="unknown variables"):
        xor.run({"x": True, "y": True}, {"z": 1})


def test_ioi_counterfactuals(tokenizer):
    data = ioi_counterfactuals(64, seed=0)
    tensors = data.tokenize(tokenizer)
    assert tensors.base.shape == (64, 14) and tensors.sources[0].shape == (64, 14)
    for base, source, label, base_label in zip(data.base, data.sources[0], data.labels, data.base_labels):
        words = base.replace(",", " ").split()
        a, b, subject = words[1], words[3], words[8]
        assert base_label.strip() == (b if subject == a else a)
        s_words = source.replace(",", " ").split()
        io_first = s_words[8] != s_words[1]
        assert label.strip() == (a if io_first else b)


def test_tokenisation_of_prices_matches_smollm2(tokenizer):
    ours = price_tokenizer()
    prompts = price_tagging_counterfactuals("left", 20, seed=0).base
    for p in prompts:
        theirs = [tokenizer.decode([i]) for i in tokenizer(p, add_special_tokens=False)["input_ids"]]
        mine = [ours.decode([i]) for i in ours(p, add_special_tokens=False)["input_ids"]]
        assert mine == theirs and len(mine) == 36
    tensors = price_tagging_counterfactuals("left", 20, seed=0).tokenize(ours)
    assert set(tensors.labels.tolist()) <= {ours.convert_tokens_to_ids(" Yes"), ours.convert_tokens_to_ids(" No")}
    with pytest.raises(ValueError, match="different lengths"):
        from workbench.data.counterfactual import tokenize_fixed

        tokenize_fixed(ours, ["Input: 1.00", "Input: 10.00"])


def test_price_sampler_balance():
    model = price_tagging_model()
    rng = random.Random(0)
    answers = [model.run(model.sample_inputs(rng))["answer"] for _ in range(2000)]
    assert 0.45 < sum(answers) / 2000 < 0.6
