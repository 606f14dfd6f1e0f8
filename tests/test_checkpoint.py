"""IRM checkpoints: the documented folder forms, resume refused under another config, damaged files,
leftovers of killed writes, and crash safety (SIGKILL mid-run, then resume equals an uninterrupted run)."""

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from workbench.irm import IRM, IRMConfig, TrainConfig, load_irm, train_irm
from workbench.irm.checkpoint import CheckpointError, latest_checkpoint, save_irm

SMALL = IRMConfig(hidden_mult=0.5, n_hidden=2)
TOY = [f"I hate {w} so much!" for w in ("it", "this", "today", "you", "them", "flying", "rain", "work")]
CFG = TrainConfig(steps=4, batch_size=2, lr=3e-3, warmup=1, eval_every=0, checkpoint_every=2)


def train(model, out, cfg=CFG, texts=TOY, **kwargs):
    irm = IRM.for_model(model, SMALL, seed=cfg.seed)
    return irm, train_irm(model, irm, texts, cfg, out_dir=out, progress=False, **kwargs)


@pytest.fixture(scope="module")
def trained(tiny_llama, tmp_path_factory):
    """A finished run in ``runs/negative`` (the folder form ``model_diff --irm`` documents)."""
    out = tmp_path_factory.mktemp("runs") / "negative"
    irm, _ = train(tiny_llama, out)
    return out, irm


def test_latest_checkpoint_accepts_the_training_folder_and_its_checkpoints_folder(tiny_llama, trained):
    from workbench.runstate import irm_checkpoint

    out, irm = trained
    step4 = out / "checkpoints" / "step-000004"
    assert latest_checkpoint(out) == step4 == latest_checkpoint(out / "checkpoints")
    assert irm_checkpoint(out) == step4 and irm_checkpoint(step4) == step4
    loaded = load_irm(out / "checkpoints" / "step-000004", tiny_llama)
    assert all(torch.equal(a, b) for a, b in zip(irm.state_dict().values(), loaded.state_dict().values()))
    assert latest_checkpoint(out.parent) is None  # one folder too high: nothing


def _copy(src: Path, dst: Path) -> Path:
    dst.mkdir(parents=True)
    for f in src.iterdir():
        (dst / f.name).write_bytes(f.read_bytes())
    return dst


def _truncate(file: Path) -> None:
    file.write_bytes(file.read_bytes()[: len(file.read_bytes()) // 2])


def _other_shape(folder: Path) -> None:
    other = IRM(SMALL.replace(hidden_mult=1.0), 64, 2)
    save_file({k: v.contiguous() for k, v in other.state_dict().items()}, folder / "irm.safetensors")


def _drop_field(folder: Path) -> None:
    meta = json.loads((folder / "irm.json").read_text())
    del meta["irm_config"]
    (folder / "irm.json").write_text(json.dumps(meta))


DAMAGE = {
    # case: (how the checkpoint is damaged, the file the error names, what it says)
    "truncated weights": (lambda f: _truncate(f / "irm.safetensors"), "irm.safetensors", "not a readable safetensors"),
    "garbage weights": (
        lambda f: (f / "irm.safetensors").write_bytes(b"\x00garbage" * 9),
        "irm.safetensors",
        "safetensors",
    ),
    "weights of another shape": (_other_shape, "irm.safetensors", "other shapes"),
    "truncated irm.json": (lambda f: _truncate(f / "irm.json"), "irm.json", "not valid JSON"),
    "irm.json without a field": (_drop_field, "irm.json", "no irm_config"),
    "truncated train_state.pt": (lambda f: _truncate(f / "train_state.pt"), "train_state.pt", "damaged"),
}


@pytest.mark.parametrize("case", list(DAMAGE))
def test_damaged_files_name_the_path_and_the_fix(tiny_llama, trained, tmp_path, case):
    damage, file, says = DAMAGE[case]
    out = tmp_path / "negative"
    folder = _copy(trained[0] / "checkpoints" / "step-000004", out / "checkpoints" / "step-000004")
    damage(folder)
    attempts = [lambda: train(tiny_llama, out)]  # resuming reads all three files
    if file != "train_state.pt":
        attempts.append(lambda: load_irm(folder, tiny_llama))
    for attempt in attempts:
        with pytest.raises(CheckpointError) as err:
            attempt()
        message = str(err.value)
        assert str(folder / file) in message and says in message, message
        assert "Delete the checkpoint folder" in message or "Delete the folder" in message, message


def test_resume_with_another_training_config_is_refused_naming_the_fields(tiny_llama, trained, tmp_path):
    out = _copy_run(trained[0], tmp_path)
    with pytest.raises(ValueError) as err:
        train(tiny_llama, out, CFG.replace(lr=1e-2, seed=3))
    message = str(err.value)
    assert "lr 0.003 -> 0.01" in message and "seed 0 -> 3" in message
    assert "--ckpt-dir" in message and "--no-resume" in message
    with pytest.raises(ValueError, match="trained on other texts"):
        train(tiny_llama, out, texts=TOY[:-1])
    with pytest.raises(ValueError, match="at step 4, past steps=3"):
        train(tiny_llama, out, CFG.replace(steps=3))
    # what does not change the weights may change
    _, result = train(tiny_llama, out, CFG.replace(eval_every=1, checkpoint_every=4))
    assert result.resumed_from == 4 and len(result.history) == 4


def _copy_run(src: Path, tmp_path: Path) -> Path:
    out = tmp_path / "run"
    for f in src.rglob("*"):
        if f.is_file():
            (out / f.relative_to(src)).parent.mkdir(parents=True, exist_ok=True)
            (out / f.relative_to(src)).write_bytes(f.read_bytes())
    return out


def test_more_steps_continue_and_say_so_and_equal_a_longer_run(tiny_llama, trained, tmp_path):
    out = _copy_run(trained[0], tmp_path)
    with pytest.warns(UserWarning, match="continuing to steps=6"):
        continued, result = train(tiny_llama, out, CFG.replace(steps=6))
    assert result.resumed_from == 4 and [r["step"] for r in result.history] == list(range(1, 7))
    longer, _ = train(tiny_llama, tmp_path / "longer", CFG.replace(steps=6))
    for a, b in zip(continued.state_dict().values(), longer.state_dict().values()):
        assert torch.equal(a, b)


def test_no_resume_starts_over_and_removes_the_old_checkpoints(tiny_llama, trained, tmp_path):
    out = _copy_run(trained[0], tmp_path)
    _, result = train(tiny_llama, out, CFG.replace(steps=2, lr=1e-2), resume=False)
    assert result.resumed_from == 0
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step-000002"]
    assert latest_checkpoint(out) == out / "checkpoints" / "step-000002"


def test_stale_temporary_folders_are_cleaned_at_the_next_start(tiny_llama, trained, tmp_path):
    out = _copy_run(trained[0], tmp_path)
    ckpts = out / "checkpoints"
    for stale in (".step-000006.tmp-x1y2", ".step-000004.old-z3"):
        (ckpts / stale).mkdir()
        (ckpts / stale / "irm.safetensors").write_bytes(b"\x00" * 1000)
    train(tiny_llama, out)
    assert sorted(p.name for p in ckpts.iterdir()) == ["step-000002", "step-000004"]


def test_save_irm_leaves_no_temporary_folder(tiny_llama, tmp_path):
    save_irm(tmp_path / "a", IRM.for_model(tiny_llama, SMALL), model=tiny_llama)
    save_irm(tmp_path / "a", IRM.for_model(tiny_llama, SMALL), model=tiny_llama)  # replace
    assert [p.name for p in tmp_path.iterdir()] == ["a"]


KILLED_RUN = """
import sys, time
sys.path.insert(0, {tests!r})
from tests.helpers import tiny_llama_config
from transformers import AutoTokenizer
from test_checkpoint import CFG, SMALL, TOY
from workbench.irm import IRM, train_irm
from workbench.models import DEFAULT_MODEL, ensure_cached, from_config

tok = AutoTokenizer.from_pretrained(ensure_cached(DEFAULT_MODEL))
model = from_config(tiny_llama_config(len(tok)), tok, seed=0, prepend_bos=False)
irm = IRM.for_model(model, SMALL, seed=0)
train_irm(model, irm, TOY, CFG.replace(steps=8), out_dir=sys.argv[1], progress=False,
          callback=lambda row: (print(row["step"], flush=True), time.sleep(0.5)))
"""


@pytest.mark.slow
def test_sigkill_mid_run_then_resume_equals_an_uninterrupted_run(tiny_llama, tmp_path):
    script = tmp_path / "run.py"
    script.write_text(textwrap.dedent(KILLED_RUN.format(tests=str(Path(__file__).parent))))
    out = tmp_path / "killed"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])}
    proc = subprocess.Popen([sys.executable, str(script), str(out)], stdout=subprocess.PIPE, text=True, env=env)
    try:
        for line in proc.stdout:
            if int(line) == 5:  # step 4's checkpoint is written, step 6's not yet
                break
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == -signal.SIGKILL
    assert latest_checkpoint(out) == out / "checkpoints" / "step-000004"
    # the killed run is no finished IRM: --irm refuses it naming the step and both ways on, unless allowed
    from workbench.runstate import UnfinishedRunError, irm_checkpoint, unfinished_note

    with pytest.raises(UnfinishedRunError, match=r"reached step 4 of 8 .*Resume it.*--allow-unfinished"):
        irm_checkpoint(out)
    allowed = irm_checkpoint(out, allow_unfinished=True)
    assert allowed == out / "checkpoints" / "step-000004" and "step 4 of 8" in unfinished_note(allowed)["unfinished"]
    resumed, result = train(tiny_llama, out, CFG.replace(steps=8))
    assert irm_checkpoint(out) == out / "checkpoints" / "step-000008"  # resumed to the end: finished
    straight, _ = train(tiny_llama, tmp_path / "straight", CFG.replace(steps=8))
    assert result.resumed_from == 4
    for a, b in zip(resumed.state_dict().values(), straight.state_dict().values()):
        assert torch.equal(a, b)
