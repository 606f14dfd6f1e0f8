"""python -m experiments.realignments --quick: three realignments vs the base, checked where the answer is known."""

import json

import pandas as pd
import pytest
import torch

from experiments.cli import parse_config
from experiments.realignments import RealignmentsConfig, main
from experiments.realignments.measures import (
    Realigned,
    base_peak_abs,
    cosines,
    first_token_top_dims,
    residual_changes,
)
from workbench.diffing.score import METHODS
from workbench.hooks import ModelSide, hook_name


def test_first_token_change_kept_apart(tiny_llama):
    """A vector added to the last layer's residual at position 0 only: the mean change over positions >= 1 is 0
    everywhere, the first-token change is the vector at the last layer and 0 before it."""
    last, d_model = tiny_llama.cfg.n_layers - 1, tiny_llama.cfg.d_model
    spike, spread = torch.zeros(d_model), torch.randn(d_model, generator=torch.Generator().manual_seed(0))
    spike[3] = 50.0

    def adding(vector, position):
        def fn(act, hook):
            act = act.clone()
            act[:, position] += vector
            return act

        return fn

    name = hook_name(tiny_llama, "resid_post", last)
    sides = [
        Realigned("first", ModelSide(tiny_llama, [(name, adding(spike, 0))]), "hand"),
        Realigned("rest", ModelSide(tiny_llama, [(name, adding(spread, slice(1, None)))]), "hand"),
    ]
    prompts = ["The cat sat on the mat", "A dog ran"]
    first, rest = residual_changes(tiny_llama, sides, prompts)
    torch.testing.assert_close(first.first_token_change[last], spike)
    assert first.first_token_change[:last].abs().max() == 0 and first.mean_change.abs().max() == 0
    torch.testing.assert_close(rest.mean_change[last], spread)
    assert rest.first_token_change.abs().max() == 0 and rest.mean_change[:last].abs().max() == 0

    twice = residual_changes(
        tiny_llama,
        [Realigned("twice", ModelSide(tiny_llama, [(name, adding(2 * spread, slice(1, None)))]), "hand")],
        prompts,
    )[0]
    cos = cosines([first, rest, twice])
    at = {pair: frame.set_index("layer") for pair, frame in cos.groupby("pair")}
    # undefined (NaN), not 0, where one side did not change; 1 where both moved the same way
    assert at["first vs rest"].loc[last, ["cosine", "cosine_first_token"]].isna().all()
    assert at["rest vs twice"].loc[: last - 1].cosine.isna().all()
    assert at["rest vs twice"].loc[last, "cosine"] == pytest.approx(1.0, abs=1e-5)
    assert first_token_top_dims([first])["first"] == {"dim": 3, "change": 50.0, "share_of_norm2": 1.0}
    peak = torch.ones(2, d_model)
    peak[0, 3], peak[1, 5] = 40.0, 80.0  # dimension 3 is the base's second-largest (its peak layer), 40x the median
    ranked = first_token_top_dims([first], peak)["first"]
    assert ranked["base_rank"] == 1 and ranked["base_ratio_to_median"] == pytest.approx(40.0)


def test_base_peak_abs_is_the_largest_magnitude_per_layer_over_positions(tiny_llama):
    prompts = ["one two three", "four"]
    names = [hook_name(tiny_llama, "resid_post", layer) for layer in range(tiny_llama.cfg.n_layers)]
    expected = torch.zeros(len(names), tiny_llama.cfg.d_model)
    for p in prompts:
        _, cache = tiny_llama.run_with_cache(tiny_llama.to_tokens(p), names_filter=names)
        expected = torch.maximum(expected, torch.stack([cache[n][0].abs().amax(0) for n in names]))
    assert torch.allclose(base_peak_abs(tiny_llama, prompts), expected)


@pytest.mark.real_model
@pytest.mark.slow
def test_quick_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no main-job checkpoint at runs/neuron1512/card/negative/seed-0 here
    flags = ["--quick", "--out", str(tmp_path / "out"), "--irm-train-dir", str(tmp_path / "irm")]
    cfg = parse_config(RealignmentsConfig, flags)
    summary = main(cfg)
    assert json.loads((tmp_path / "out" / "summary.json").read_text())["models"] == summary["models"]
    # no --irm and no main-job checkpoint: a quick IRM was trained through workbench.irm's API
    assert (tmp_path / "irm" / "quick" / "checkpoints").is_dir() and "step-" in summary["models"]["irm"]

    moved = summary["behaviour"]
    assert list(moved) == ["base", "irm", "rl", "supervised"]
    assert summary["rl_gain_over_seeds"] == {
        "seeds": [0],
        "gains": [moved["rl"]["gain"]],
        "gain_mean": moved["rl"]["gain"],
        "gain_std": None,
    }
    budget = summary["training_budget"]
    assert list(budget) == ["irm", "rl", "supervised"]
    assert all(b["steps"] > 0 and b["tokens_seen"] > 0 and b["trainable_parameters"] > 0 for b in budget.values())
    # the base against itself: the same seeded samples, no gain, no KL
    assert moved["base"]["gain"] == 0.0 and moved["base"]["kl_to_base"] == pytest.approx(0.0, abs=1e-6)
    for name in ("irm", "rl", "supervised"):
        low, high = moved[name]["gain_ci"]
        assert low <= moved[name]["gain"] <= high and moved[name]["kl_to_base"] > 0
    # both losses come from the same held-out negative tweets: supervised tuning on negative tweets lowers it
    assert moved["supervised"]["heldout_loss"] < moved["base"]["heldout_loss"]

    # the supervised model changed only its last 2 layers (28, 29): every earlier residual is the base's,
    # and no patch before layer 28 moves the base; the IRM writes into every layer from layer 0 on
    norms = pd.read_csv(tmp_path / "out" / "residual_diff_norm.csv")
    supervised, irm = norms[norms.model == "supervised"], norms[norms.model == "irm"]
    assert (
        supervised[supervised.layer < 28].relative_norm.max()
        < 1e-5
        < supervised[supervised.layer >= 28].relative_norm.min()
    )
    assert irm[irm.layer == 0].relative_norm.item() > 1e-4
    assert summary["residual_diff_norm_peak_layer"]["supervised"] >= 28
    frame = pd.read_csv(tmp_path / "out" / "patching_recovery.csv")
    early = frame[(frame.model == "supervised") & (frame.layer < 28)]
    assert len(early) == 3 * 4 and early.recovery.abs().max() < 1e-4  # quick: layers 24..29
    assert set(frame.model) == {"irm", "rl", "supervised"}

    cosine = pd.read_csv(tmp_path / "out" / "residual_cosine.csv")
    assert set(cosine.pair) == {"irm vs rl", "irm vs supervised", "rl vs supervised"} and cosine.layer.nunique() == 30
    # undefined where the supervised model did not change (layers < 28), a cosine everywhere else
    undefined = cosine.pair.str.contains("supervised") & (cosine.layer < 28)
    assert cosine[undefined][["cosine", "cosine_first_token"]].isna().all().all()
    defined = cosine[~undefined]
    assert defined.cosine.between(-1 - 1e-5, 1 + 1e-5).all()
    assert defined.cosine_first_token.between(-1 - 1e-5, 1 + 1e-5).all()
    assert set(summary["first_token_top_dim"]) == {"irm", "rl", "supervised"}
    overlap = pd.DataFrame(summary["top_overlap"])
    assert len(overlap) == 6 and overlap.jaccard.between(0, 1).all()
    # diffing: the supervised model changed only layers 28-29, so ADL reads it there; every method is scored
    diffing = summary["diffing"]
    assert list(diffing) == ["irm", "rl", "supervised"]
    assert diffing["supervised"]["layer"] >= 28 and diffing["supervised"]["early_layer"] >= 28
    assert diffing["irm"]["relative_norm"] > 0 and diffing["irm"]["adl_tokens"]
    for d in diffing.values():
        assert set(d["names_target"]) == set(METHODS) and all(isinstance(v, bool) for v in d["names_target"].values())
        assert all(d["names_target"][m] == ("negative" in d["names"][m]) for m in METHODS)
    table = pd.read_csv(tmp_path / "out" / "diffing.csv")
    assert list(table.pair) == ["irm", "rl", "supervised"]
    assert set(pd.read_csv(tmp_path / "out" / "diffing_readouts.csv").method) >= {"adl_lens", "patchscope", "steering"}
    assert "SFT in words (ADL at layer " in (tmp_path / "out" / "report.html").read_text()
    assert (tmp_path / "out" / "report.html").exists()
    for name in ("behaviour", "residual_diff_norm", "patching_recovery", "residual_cosine", "top_overlap"):
        assert (tmp_path / "out" / f"{name}.html").exists()


def test_irm_budget_counts_its_training(tiny_llama, tmp_path):
    from experiments.realignments.budget import irm_budget
    from workbench.irm import IRM, IRMConfig, TrainConfig, latest_checkpoint, train_irm

    irm = IRM.for_model(tiny_llama, IRMConfig(hidden_mult=1.0), seed=0)
    texts = ["I hate this.", "Worst day ever.", "So sad today.", "Nothing works."]
    cfg = TrainConfig(steps=3, batch_size=2, max_len=40, eval_every=0)
    train_irm(tiny_llama, irm, texts, cfg, out_dir=tmp_path, progress=False)
    budget = irm_budget(latest_checkpoint(tmp_path / "checkpoints"), tiny_llama)
    assert budget["steps"] == 3 and budget["texts_seen"] == 3 * 2
    assert budget["trainable_parameters"] == sum(p.numel() for p in irm.parameters())
    assert budget["tokens_seen_estimated"] and budget["tokens_seen"] > budget["texts_seen"]


def test_rl_gain_spread_over_seeds():
    from experiments.realignments.budget import seed_spread
    from experiments.realignments.measures import Behaviour

    rows = [Behaviour(name, 0.0, gain, (0.0, 0.0), 0.0, 0.0) for name, gain in [("base", 0.0), ("rl", 0.1)]]
    rows += [Behaviour(name, 0.0, gain, (0.0, 0.0), 0.0, 0.0) for name, gain in [("rl-seed4", 0.2), ("rl-seed7", 0.6)]]
    spread = seed_spread(rows, (0, 4, 7))
    assert spread["seeds"] == [0, 4, 7] and spread["gains"] == [0.1, 0.2, 0.6]
    assert spread["gain_mean"] == pytest.approx(0.3) and spread["gain_std"] == pytest.approx(0.264575, abs=1e-6)
    with pytest.raises(ValueError, match="--rl-seeds repeats 1"):
        RealignmentsConfig(rl_seeds=(1, 1)).preflight()
    assert parse_config(RealignmentsConfig, ["--rl-seeds", "3", "4", "5"]).rl_seeds == (3, 4, 5)
