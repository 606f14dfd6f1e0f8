"""The main job end to end at a tiny size: a tiny random Llama saved as a HF folder, real tweet corpora."""

import json

import pandas as pd
import pytest

from experiments.neuron1512 import PRESETS, QUICK, Neuron1512Config, main, parse_args, report, resolve
from workbench.irm.stability import PAIR_KINDS
from workbench.neurons.weights import CLASS_NAMES


def test_flags_presets_and_quick(capsys):
    flags = "--quick --alignments negative neutral --layers 1 2 --read-hook resid_mid --steps 7 --seeds 3 4 5 --out x"
    cfg = parse_args(flags.split())
    card, paper = cfg.runs
    assert (card.name, paper.name) == ("card", "paper") and card.alignments == ("negative", "neutral")
    assert paper.alignments == ("negative",) and cfg.seeds == (3, 4, 5)  # explicit flags win over --quick
    # flags override every preset; the rest stays the preset's
    assert card.irm.layers == paper.irm.layers == (1, 2) and card.irm.read_hook == paper.irm.read_hook == "resid_mid"
    assert card.irm.write_hook == "resid_post" and paper.irm.write_hook == "resid_mid"
    assert card.train.steps == paper.train.steps == 7 and card.train.eval_texts == 8  # --quick's size, not the flag's
    assert (paper.train.lr, paper.train.batch_size, paper.irm.hidden_mult) == (1e-4, 8, 3.0)
    assert cfg.max_items == QUICK["max_items"] and "--steps 7" in cfg.command
    # the resolved config round-trips through config.json
    assert Neuron1512Config.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    # no flags: the full study's defaults
    full = parse_args([])
    assert len(full.seeds) >= 3 and [p.name for p in full.runs] == ["card", "paper"]
    assert full.runs[0].irm == PRESETS["card"][1] and full.runs[1].train == PRESETS["paper"][2]
    with pytest.raises(SystemExit):
        parse_args(["--help"])
    helptext = capsys.readouterr().out
    assert "card:" in helptext and "paper:" in helptext and "--lr" in helptext and "--seeds" in helptext
    # programmatic use: --quick's sizes for the fields left at their defaults
    quick = resolve(Neuron1512Config(quick=True, n_prompts=5))
    assert quick.seeds == QUICK["seeds"] and quick.n_prompts == 5 and quick.runs[0].train.steps == 6
    assert parse_args(["--quick", "--seeds", "0", "1", "2"]).seeds == (0, 1, 2)  # a flag equal to the default wins
    with pytest.raises(SystemExit):  # checked before any work starts
        parse_args(["--alignments", "angry"])
    assert "angry" in capsys.readouterr().err
    with pytest.raises(KeyError, match="unknown presets"):
        resolve(Neuron1512Config(presets=("mine",)))


def test_main_writes_sane_outputs(tiny_dir, tmp_path):
    cfg = Neuron1512Config(
        model=str(tiny_dir),
        quick=True,
        **QUICK | dict(max_items=80, n_prompts=1, max_new_tokens=4, probe_texts=4, k_neurons=3, n_char_tokens=10),
        out=str(tmp_path / "out"),
        ckpt_dir=str(tmp_path / "ck"),
        png=False,
        progress=False,
    )
    cfg = resolve(cfg, train=dict(steps=3, eval_every=1, eval_texts=6, patience=4))
    summary = main(cfg)
    # training to the stopping rule: 3 evaluations cannot show 4 without improvement, so the ceiling is hit
    training = summary["results"]["card"]["negative"]["training"]
    assert training["stopping_rule"].startswith("stop when the best held-out loss improved by less than 0.5%")
    assert not training["all_converged"]
    for run in training["per_seed"].values():
        assert (run["steps"], run["converged"]) == (3, False) and [s for s, _ in run["heldout_loss_curve"]] == [1, 2, 3]
    # the training-length control: snapshot_steps(3, first=1) is (1, 3); every run stopped at 3, so the step-3
    # point would repeat the final one and is left out
    lengths = summary["training_length"]["card"]
    assert [p["step"] for p in lengths["points"]] == [1, "final"]
    for point in lengths["points"]:
        neg = point["alignments"]["negative"]
        assert neg["n_seeds"] == 2 and 0 < neg["top1_share"] <= neg["top10_share"] <= 1
        assert set(neg["masking"]) == {"1"} and set(point["spearman"]) == set(PAIR_KINDS)
    final = lengths["points"][-1]["alignments"]["negative"]
    assert final["top1_share"] == pytest.approx(
        sum(summary["results"]["card"]["negative"]["top_share_per_seed"][s][1] for s in (0, 1)) / 2
    )
    table = pd.read_csv(tmp_path / "out" / "training_length.csv")
    assert len(table) == 2 * 3  # points x (card/negative, card/positive, paper/negative)
    assert json.loads((tmp_path / "out" / "summary.json").read_text()).keys() == summary.keys()
    written = json.loads((tmp_path / "out" / "config.json").read_text())
    assert written["wall_seconds"] > 0 and len(written["runs"]) == 2  # the resolved presets and the wall time
    assert set(summary["presets"]) == {"card", "paper"}
    # one IRM off/on token view per explained (preset, alignment): two replies each, in the report
    page = (tmp_path / "out" / "report.html").read_text()
    assert page.count('id="view-irm_tokens_') == 3 and page.count("CircuitsVis.render(") == 6
    assert summary["presets"]["paper"]["read"] == "blocks.0.hook_resid_mid"
    assert set(summary["results"]["card"]) == {"negative", "positive"} and set(summary["results"]["paper"]) == {
        "negative"
    }
    n_layers, d_model, d_mlp = 2, 64, 128
    for preset, results in summary["results"].items():
        for name, r in results.items():
            # three steps of an IRM on a random model: finite losses near log(vocab); the IRM lowers the train loss
            assert 5 < r["heldout_loss_irm"]["mean"] < 12 and len(r["heldout_loss_irm"]["values"]) == 2
            # --quick evaluates 8 texts: the first 16 are all of them, so the two losses agree
            assert r["heldout16_loss_irm"]["values"] == r["heldout_loss_irm"]["values"]
            assert r["train_loss_irm"]["mean"] < r["train_loss_base"]["mean"]
            assert -1 <= r["vader_on"]["mean"] <= 1 and r["vader_on"]["std"] >= 0
            assert r["vader_corpus"]["mean"] < 0 if name == "negative" else r["vader_corpus"]["mean"] > 0
            dims = [d for d, *_ in r["top10_mean_share"]]
            assert all(0 <= d < d_model for d in dims) and set(r["masking"]) == {"1"}
            assert summary["dominant_dims"][preset][name] == [d["dim"] for d in r["dominant_dims"]]
            e = r["explanation"]
            assert len(e["logit_lens_kl_by_layer"]) == n_layers + 1 and e["logit_lens_kl_by_layer"]["0_pre"] == 0
            assert all(v >= 0 for v in e["logit_lens_kl_by_layer"].values())
            assert set(e["irm_dla_by_layer"]) == set(range(n_layers))
            assert set(e["patching_by_layer"]) == {"resid_pre", "attn_out", "mlp_out"}
            assert all(set(v) == set(range(n_layers)) for v in e["patching_by_layer"].values())
            assert len(e["top_neurons"]) == 3
            for neuron in e["top_neurons"]:
                assert 0 <= neuron["neuron"] < d_mlp and isinstance(neuron["realignment_share"], float)
                assert neuron["rw_class"] in CLASS_NAMES
            abl = e["neuron_ablation"]
            assert abl["k"] == 3 and len(abl["random_removed"]) == QUICK["n_random"]
            assert 0 <= e["dimension_profile"]["dim"] < d_model
    # the stability statistics: three kinds for card (2 alignments x 2 seeds), one for paper (1 alignment)
    card = summary["stability"]["card"]
    assert [card[k]["n_pairs"] for k in PAIR_KINDS] == [2, 2, 2]
    assert all(-1 <= v <= 1 for k in PAIR_KINDS for v in card[k]["spearman"])
    assert summary["stability"]["paper"]["same_seed"]["n_pairs"] == 0
    # beside them, the controls: the same statistics of each seed's untrained IRM (at init, writing) and of
    # the trained shares with their dimensions shuffled, and each run's correlation with the base's profile
    untrained = card["control"]["untrained"]
    assert [untrained[k]["n_pairs"] for k in PAIR_KINDS] == [2, 2, 2]
    # one seed's untrained IRM is the same network on both alignments' texts: its ranking hardly moves
    assert untrained["same_seed"]["spearman_mean"] > 0.9 > untrained["same_alignment"]["spearman_mean"]
    assert all(-1 <= v["mean"] <= 1 for v in card["control"]["base_profile"].values())
    kinds = pd.read_csv(tmp_path / "out" / "stability_kinds.csv")
    assert len(kinds) == 2 * 3 * 3 and set(kinds.irm) == {"trained", "untrained", "shuffled"}
    row = kinds[(kinds.preset == "card") & (kinds.irm == "untrained") & (kinds.kind == "same_seed")].iloc[0]
    assert row.spearman_mean == pytest.approx(untrained["same_seed"]["spearman_mean"])
    assert set(pd.read_csv(tmp_path / "out" / "stability_pairs.csv").irm) == {"trained", "untrained"}
    # the report shows them side by side (the full control block is longer than a report table)
    view = summary["stability_vs_controls"]["card"]
    assert view["same_seed"] == {
        "trained": card["same_seed"]["spearman_mean"],
        "untrained": untrained["same_seed"]["spearman_mean"],
        "shuffled": card["control"]["shuffled"]["same_seed"]["spearman_mean"],
    }
    assert "<h3>Stability vs controls</h3>" in page and "<th>Same alignment › untrained</th>" in page
    assert '<h2 id="findings">Findings</h2>' in page and "card/negative: held-out loss " in page
    assert isinstance(summary["dominant_dims"]["shared_by_all_presets"], list)
    both = summary["presets_compare"]["negative: card vs paper"]  # the one alignment both presets trained
    assert (
        -1 <= both["spearman"] <= 1
        and 0 <= both["top_jaccard"] <= 1
        and list(summary["presets_compare"]) == ["negative: card vs paper"]
    )
    files = {p.name for p in (tmp_path / "out").iterdir()}
    assert {
        "summary.json",
        "config.json",
        "stability.html",
        "stability_pairs.csv",
        "explanation_card.html",
        "explain_neurons.csv",
        "heatmap_tokens_card_positive.html",
        "masking.html",
        "report.html",
    } <= files
    assert (tmp_path / "ck" / "paper" / "negative" / "seed-1" / "checkpoints" / "step-000003").is_dir()
    text = report(summary)
    assert "Spearman of dimension shares" in text and "dominant in every seed" in text and "untrained" in text


@pytest.mark.slow
def test_workers_run_units_elsewhere_with_the_same_results(tiny_dir, tmp_path, monkeypatch):
    import experiments.neuron1512.run as job

    def run(workers: int) -> dict:
        cfg = Neuron1512Config(
            model=str(tiny_dir),
            quick=True,
            **QUICK
            | dict(alignments=("negative",), max_items=80, n_prompts=1, max_new_tokens=4, probe_texts=4, k_neurons=3),
            presets=("card",),
            n_char_tokens=10,
            workers=workers,
            out=str(tmp_path / f"out{workers}"),
            ckpt_dir=str(tmp_path / f"ck{workers}"),
            png=False,
            progress=False,
        )
        return main(resolve(cfg, train=dict(steps=3, eval_every=1, eval_texts=6)))

    one = run(1)

    def here(*args, **kwargs):
        raise AssertionError("with --workers 2 no unit runs in this process")

    monkeypatch.setattr(job, "run_unit", here)
    two = run(2)
    assert json.loads((tmp_path / "out2" / "config.json").read_text())["workers"] == 2
    a, b = one["results"]["card"]["negative"], two["results"]["card"]["negative"]
    for key in ("heldout_loss_irm", "train_loss_irm", "heldout_loss_base"):
        assert b[key]["values"] == pytest.approx(a[key]["values"], rel=1e-4)
    assert [d for d, *_ in b["top10_mean_share"]] == [d for d, *_ in a["top10_mean_share"]]
    assert [s for _, s, _ in b["top10_mean_share"]] == pytest.approx([s for _, s, _ in a["top10_mean_share"]], rel=1e-3)
    assert b["explanation"]["neuron_ablation"]["top_removed"] == pytest.approx(
        a["explanation"]["neuron_ablation"]["top_removed"], rel=1e-3, abs=1e-6
    )
