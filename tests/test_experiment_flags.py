"""The config layer, driven from the config fields themselves: every numeric and list flag of every experiment set to
an out-of-range or repeated value is refused before any model work, naming the flag; ``--quick`` never replaces an
explicit value; unfinished training runs and half-written output folders never pass for finished ones."""

from __future__ import annotations

import dataclasses
import json
import shutil
import subprocess
import sys
import textwrap
import time
import typing
from pathlib import Path

import pytest

import workbench.models
from experiments.boundless_das import BoundlessDASConfig
from experiments.circuits.config import CircuitsConfig
from experiments.cli import parse_config
from experiments.common import report_header, write_outputs
from experiments.diffing.config import DiffingConfig
from experiments.fields import MODEL_LAYER, REPEATS, ExperimentConfig, flag, with_quick
from experiments.model_diff import ModelDiffConfig
from experiments.neuron1512 import Neuron1512Config, parse_args
from experiments.realignments import RealignmentsConfig
from experiments.rw_functionalities import RWConfig
from workbench.config import Range, _hints
from workbench.runstate import UnfinishedRunError, irm_checkpoint, read_run_state, unfinished_note, write_run_state

ROOT = Path(__file__).resolve().parents[1]
EXPERIMENTS = {
    "neuron1512": (Neuron1512Config, parse_args),
    "model_diff": (ModelDiffConfig, lambda argv: parse_config(ModelDiffConfig, argv)),
    "realignments": (RealignmentsConfig, lambda argv: parse_config(RealignmentsConfig, argv)),
    "rw_functionalities": (RWConfig, lambda argv: parse_config(RWConfig, argv)),
    "boundless_das": (BoundlessDASConfig, lambda argv: parse_config(BoundlessDASConfig, argv)),
    "diffing": (DiffingConfig, lambda argv: parse_config(DiffingConfig, argv)),
    "circuits": (CircuitsConfig, lambda argv: parse_config(CircuitsConfig, argv)),
}
UNBOUNDED = {"value"}
"""Numeric fields every value of which is valid (the factor or value of an ablation)."""


def _bounds(hint) -> tuple[type, Range] | None:
    """The number type and range of a numeric field (``X | None`` and ``Annotated`` unwrapped), else None."""
    extras = getattr(hint, "__metadata__", ())
    base = typing.get_args(hint)[0] if extras else hint
    args = [a for a in typing.get_args(base) if a is not type(None)]
    if args and type(None) in typing.get_args(base):
        return _bounds(args[0])
    if base not in (int, float) or base is bool:
        return None
    found = next((e for e in extras if isinstance(e, Range)), Range(ge=0) if base is int else Range())
    return base, found


def _bad_values(cls: type[ExperimentConfig], name: str) -> list[tuple[str, list[str]]]:
    """``(what, values)`` a field must refuse: below / above its range, a repeated list value, a layer past the
    model; generated from the field's type, its range and its default."""
    hint = _hints(cls)[name]
    meta = getattr(hint, "__metadata__", ())
    default = next(f for f in dataclasses.fields(cls) if f.name == name).default
    cases = []
    numeric = _bounds(hint)
    if numeric is not None:
        kind, r = numeric
        step = 1 if kind is int else 0.5
        if r.ge is not None:
            cases.append((f"below {r.ge:g}", [str(kind(r.ge - step))]))
        if r.gt is not None:
            cases.append((f"at {r.gt:g}", [str(kind(r.gt))]))
        if r.le is not None:
            cases.append((f"above {r.le:g}", [str(kind(r.le + step))]))
        if r.violated(0) is not None:
            cases.append(("zero", ["0"]))
        if kind is int and r == Range():  # an index (negative: from the end) into the model or its prompts
            cases.append(("past the model", ["99"]))
    if isinstance(default, tuple) and default and REPEATS not in meta:
        cases.append(("repeated", [str(default[0]), str(default[0])]))
    if MODEL_LAYER in meta:
        cases.append(("past the model", ["99"]))
    return cases


def _table() -> list:
    rows = []
    for exp, (cls, _) in EXPERIMENTS.items():
        for f in dataclasses.fields(cls):
            if f.name in cls.INTERNAL:
                continue
            for what, values in _bad_values(cls, f.name):
                rows.append(pytest.param(exp, f.name, values, id=f"{exp}-{f.name}-{what}"))
    return rows


TABLE = _table()


def test_the_table_covers_every_numeric_and_list_flag():
    covered = {(p.values[0], p.values[1]) for p in TABLE}
    for exp, (cls, _) in EXPERIMENTS.items():
        for f in dataclasses.fields(cls):
            hint = _hints(cls)[f.name]
            is_list = isinstance(f.default, tuple) and REPEATS not in getattr(hint, "__metadata__", ())
            if f.name in cls.INTERNAL or f.name in UNBOUNDED or not (_bounds(hint) or is_list):
                continue
            assert (exp, f.name) in covered, f"{exp} --{f.name} has no bad value in the table"
    assert len(TABLE) > 60


def _no_model_loads(*args, **kwargs):
    raise AssertionError("a model was loaded before the bad flag was refused")


@pytest.mark.parametrize(("exp", "name", "values"), TABLE)
def test_every_bad_flag_is_refused_before_work_naming_it(exp, name, values, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(workbench.models, "load_hf", _no_model_loads)
    monkeypatch.chdir(tmp_path)
    _, parse = EXPERIMENTS[exp]
    started = time.perf_counter()
    with pytest.raises(SystemExit) as info:
        parse(["--out", str(tmp_path / "out"), flag(name), *values])
    seconds = time.perf_counter() - started
    err = capsys.readouterr().err
    assert info.value.code == 2, err
    assert flag(name) in err.rsplit("error:", 1)[-1], err
    assert seconds < 10, f"took {seconds:.1f} s to refuse"
    assert not (tmp_path / "out").exists() and not (tmp_path / "runs").exists()


def test_explicit_values_win_over_quick(tmp_path):
    out = str(tmp_path / "out")
    cfg = parse_config(RealignmentsConfig, ["--quick", "--n-prompts", "20", "--samples", "4", "--out", out])
    assert (cfg.n_prompts, cfg.samples, cfg.irm_steps, cfg.png) == (20, 4, 10, False)  # the rest take --quick's
    built = with_quick(RealignmentsConfig(quick=True, n_prompts=20, out=out))
    assert (built.n_prompts, built.samples) == (20, 2)
    assert with_quick(built) == built  # applying it again changes nothing
    cfg = parse_args(["--quick", "--seeds", "0", "1", "2", "--steps", "9", "--out", out, "--ckpt-dir", out])
    assert cfg.seeds == (0, 1, 2) and cfg.n_prompts == 2 and all(p.train.steps == 9 for p in cfg.runs)


def test_config_json_records_what_ran(tmp_path):
    cfg = parse_config(ModelDiffConfig, ["--quick", "--tune-steps", "12", "--out", str(tmp_path / "md")])
    write_outputs(tmp_path / "md", cfg, summary={"x": 1})
    recorded = json.loads((tmp_path / "md" / "config.json").read_text())
    assert recorded == cfg.to_dict()
    assert recorded["tune_steps"] == 12 and recorded["evidence_samples"] == 2 and recorded["sweep_layers"] == 8


def _tiny_run(tiny_llama, out: Path):
    from workbench.irm import IRM, IRMConfig, TrainConfig, train_irm

    cfg = TrainConfig(steps=4, batch_size=2, lr=3e-3, warmup=1, eval_every=0, checkpoint_every=2, keep_checkpoints=5)
    irm = IRM.for_model(tiny_llama, IRMConfig(hidden_mult=0.5, n_hidden=2), seed=0)
    train_irm(tiny_llama, irm, [f"I hate {w} so much!" for w in ("it", "this", "rain", "work")], cfg, out_dir=out)


def test_an_unfinished_run_is_refused_then_allowed_and_said(tiny_llama, tmp_path):
    out = tmp_path / "runs" / "negative"
    _tiny_run(tiny_llama, out)
    assert read_run_state(out).state == "finished" and irm_checkpoint(out).name == "step-000004"
    # what a kill after the first checkpoint leaves: the state written at the start and the step-2 checkpoint
    shutil.rmtree(out / "checkpoints" / "step-000004")
    write_run_state(out, "running", 0, 4)
    with pytest.raises(UnfinishedRunError, match=r"reached step 2 of 4.*Resume it.*--allow-unfinished"):
        irm_checkpoint(out)
    with pytest.raises(UnfinishedRunError, match="step 2 of 4"):
        ModelDiffConfig(irm=str(out), out=str(tmp_path / "md")).preflight()
    ModelDiffConfig(irm=str(out), allow_unfinished=True, out=str(tmp_path / "md")).preflight()
    checkpoint = irm_checkpoint(out, allow_unfinished=True)
    assert checkpoint.name == "step-000002"
    note = unfinished_note(checkpoint)
    header = report_header(ModelDiffConfig(irm=str(out), allow_unfinished=True), note)
    assert (
        "step 2 of 4" in header.fields["unfinished input"] and "--allow-unfinished" in header.fields["unfinished input"]
    )
    write_run_state(out, "stopped_early", 2, 4)  # a stopping rule ended it: finished
    assert irm_checkpoint(out) == checkpoint and unfinished_note(checkpoint) == {}


def test_a_kill_during_the_writes_leaves_the_previous_complete_folder(tmp_path):
    script = textwrap.dedent(
        f"""
        import os, sys
        import experiments.common as common
        from experiments.realignments import RealignmentsConfig
        out = {str(tmp_path / "out")!r}
        common.write_outputs(out, RealignmentsConfig(seed=1, out=out), summary={{"run": 1}})
        def killed(*args, **kwargs):
            os._exit(9)
        common.write_report = killed  # run 2 dies after config.json and summary.json, before its report
        common.write_outputs(out, RealignmentsConfig(seed=2, out=out), summary={{"run": 2}})
        """
    )
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 9, done.stderr
    out = tmp_path / "out"
    assert json.loads((out / "summary.json").read_text()) == {"run": 1}
    assert json.loads((out / "config.json").read_text())["seed"] == 1
    assert (out / "report.html").is_file()
    leftovers = [p.name for p in tmp_path.iterdir() if p.name.startswith(".out.writing-")]
    assert len(leftovers) == 1  # the killed run's folder, recognisably unfinished
    assert json.loads((tmp_path / leftovers[0] / "summary.json").read_text()) == {"run": 2}
