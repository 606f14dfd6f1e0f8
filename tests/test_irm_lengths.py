"""The training-length control: snapshot steps, snapshots that survive a resume, findings per training length."""

import pytest
import torch

from workbench.irm import IRM, IRMConfig, TrainConfig, train_irm
from workbench.irm.dimensions import MaskingResult
from workbench.irm.lengths import Snapshot, SnapshotRecorder, at_lengths, load_snapshots, snapshot_steps
from workbench.irm.train import encode_for

TEXTS = [f"I love {w} so much!" for w in ("it", "this", "today", "you", "them", "flying", "rain", "work")]


def test_snapshot_steps_are_log_spaced():
    assert snapshot_steps(3000) == (30, 100, 300, 1000, 3000)
    assert snapshot_steps(99) == (30,)
    assert snapshot_steps(10, first=1) == (1, 3, 10)


def _snap(step, spike, value=0.2, removed=0.5):
    share = torch.full((20,), (1 - value) / 19)
    share[spike] = value
    rows = ({"k": 1, "kind": "top", "draw": 0, "dims": str(spike), "loss": 1.0, "removed": removed},)
    return Snapshot(step, share, {1: value, 10: value + 9 * (1 - value) / 19}, MaskingResult(2.0, 1.0, rows))


def test_findings_at_each_length_by_hand():
    # seed 0 and 1 of one alignment: dimension 3 stands out from step 100 on in both; seed 1 stopped at 100
    runs = {
        ("negative", 0): [_snap(30, 3, value=0.04), _snap(100, 3), _snap(300, 3, value=0.3), _snap(420, 3, 0.25)],
        ("negative", 1): [_snap(30, 7), _snap(100, 3)],
    }
    section = at_lengths(runs, (30, 100, 300, 1000), z=3.0)
    steps = [p["step"] for p in section["points"]]
    assert steps == [30, 100, 300, "final"]  # both runs stopped before 1000: that point would repeat "final"
    at30, at100, at300, final = (p["alignments"]["negative"] for p in section["points"])
    assert at30["dominant_dims"] == []  # seed 0's spike at 30 is small (0.04 vs 0.05 elsewhere): not dominant
    assert [d["dim"] for d in at100["dominant_dims"]] == [3]
    # at 300 seed 1 enters with its final IRM (it stopped at step 100); at the end seed 0 has its step-420 one
    assert at300["steps"] == [300, 100] and final["steps"] == [420, 100]
    assert at300["top1_share"] == pytest.approx((0.3 + 0.2) / 2)
    assert final["top1_share"] == pytest.approx((0.25 + 0.2) / 2)
    assert at100["masking"]["1"]["top_removed"] == pytest.approx(0.5)
    assert section["points"][1]["spearman"]["same_alignment"] == pytest.approx(1.0)


def test_snapshots_are_files_a_resumed_run_keeps(tiny_llama, tmp_path):
    model = tiny_llama
    cfg = TrainConfig(steps=4, batch_size=4, warmup=1, eval_every=2, eval_texts=4, checkpoint_every=2)
    probe = encode_for(model, TEXTS[:4], cfg)
    out = tmp_path / "run"

    def run(steps):
        irm = IRM.for_model(model, IRMConfig(hidden_mult=0.5, n_hidden=1))
        rec = SnapshotRecorder(model, irm, probe, (1, 2, 3), out / "snapshots", ks=(1,), n_random=1)
        train_irm(
            model, irm, TEXTS, cfg.replace(steps=steps), held_out=TEXTS, out_dir=out, progress=False, callback=rec
        )
        return rec

    run(2)  # "killed" after step 2: snapshots 1 and 2 on disk
    first = {s.step: s.share for s in load_snapshots(out / "snapshots")}
    rec = run(4)  # resumed from step 2: only step 3 is new
    loaded = rec.load()
    assert [s.step for s in loaded] == [1, 2, 3]
    torch.testing.assert_close(loaded[0].share, first[1])
    assert all(abs(float(s.share.sum()) - 1) < 1e-5 for s in loaded)


def test_training_records_its_state_last(tiny_llama, tmp_path):
    from workbench.runstate import read_run_state

    cfg = TrainConfig(steps=3, batch_size=4, warmup=1, eval_every=1, eval_texts=4)
    irm = IRM.for_model(tiny_llama, IRMConfig(hidden_mult=0.5, n_hidden=1))
    train_irm(tiny_llama, irm, TEXTS, cfg, held_out=TEXTS, out_dir=tmp_path, progress=False)
    state = read_run_state(tmp_path)
    assert (state.state, state.step, state.steps) == ("finished", 3, 3)
    # a rule that must fire: 1 evaluation of patience with a 99% bar stops at the second evaluation
    irm = IRM.for_model(tiny_llama, IRMConfig(hidden_mult=0.5, n_hidden=1))
    rule = cfg.replace(steps=50, patience=1, min_improvement=0.99)
    result = train_irm(tiny_llama, irm, TEXTS, rule, held_out=TEXTS, out_dir=tmp_path / "early", progress=False)
    state = read_run_state(tmp_path / "early")
    assert result.converged and (state.state, state.step, state.steps) == ("stopped_early", 2, 50)
    assert state.done
