"""The main job under 2 gloo processes writes its outputs once (rank 0), equal to a one-process run.

The 2-process run launches this file as a script under ``torchrun`` (``python test_write_once.py MODEL_DIR OUT``).
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
from transformers import AutoModelForCausalLM

from tests.helpers import tiny_llama_config
from workbench.distributed import ShardError, on_main

ROOT = Path(__file__).resolve().parents[1]
TIMING = {"seconds", "wall_seconds", "seconds_by_phase"}


def _cfg(model_dir: Path, out: Path):
    from experiments.neuron1512 import QUICK, Neuron1512Config, resolve

    cfg = Neuron1512Config(
        model=str(model_dir),
        quick=True,
        presets=("card",),
        # no snapshot before the end (first at step 1000): the shares of an IRM one update from its init are equal up
        # to the data-parallel float noise, so their ranking is noise; the final IRM's are compared
        **QUICK
        | dict(max_items=80, n_prompts=1, max_new_tokens=4, probe_texts=4, k_neurons=3, n_char_tokens=10)
        | dict(snapshot_first=1000),
        out=str(out / "out"),
        ckpt_dir=str(out / "ck"),
        png=False,
        progress=False,
    )
    return resolve(cfg, train=dict(steps=2, batch_size=4, eval_every=2, eval_texts=4))


def _worker(model_dir: Path, out: Path) -> None:
    """Run the job, logging the rank of every ``summary.json`` write to ``out/writes.log``."""
    from experiments.neuron1512 import main
    from workbench.distributed import dist_state

    state = dist_state()
    write_text, replace = Path.write_text, os.replace

    def log_if_summary(path) -> None:
        if Path(path).name == "summary.json":
            with open(out / "writes.log", "a") as log:
                log.write(f"{state.process_index}\n")

    def logged_write(self: Path, *args, **kwargs):
        log_if_summary(self)
        return write_text(self, *args, **kwargs)

    def logged_replace(src, dst, *args, **kwargs):  # an atomic write renames its temporary file into place
        log_if_summary(dst)
        return replace(src, dst, *args, **kwargs)

    Path.write_text, os.replace = logged_write, logged_replace
    main(_cfg(model_dir, out))
    state.destroy_process_group()


def _close(a, b, path: str = "") -> list[str]:
    """Where two JSON values differ; floats to 1e-2 relative: the data-parallel gradients sum in another order, and
    AdamW turns that float noise in near-zero gradients into weight noise of order lr·1e-3 (see
    tests/test_distributed.py), which the masking and ablation numbers of the summary carry at ~1e-3."""
    if isinstance(a, dict) and isinstance(b, dict):
        if a.keys() != b.keys():
            return [f"{path}: keys {sorted(a.keys() ^ b.keys())}"]
        return [d for k in a if k not in TIMING for d in _close(a[k], b[k], f"{path}.{k}")]
    if isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            return [f"{path}: lengths {len(a)} vs {len(b)}"]
        return [d for i, (x, y) in enumerate(zip(a, b)) for d in _close(x, y, f"{path}[{i}]")]
    if isinstance(a, float) and isinstance(b, float | int):
        # a "removed" value is a share of the IRM's effect: its noise is absolute, in units of that effect (a random
        # control's share near zero, e.g. -0.0087 vs -0.0084, carries the same noise as one near 1)
        abs_tol = 1e-3 if "removed" in path else 1e-4
        same = (math.isnan(a) and math.isnan(b)) or math.isclose(a, b, rel_tol=1e-2, abs_tol=abs_tol)
        return [] if same else [f"{path}: {a} vs {b}"]
    return [] if a == b else [f"{path}: {a!r} vs {b!r}"]


def test_on_main_in_one_process_calls_once_and_raises_shard_error_on_failure():
    calls = []
    assert on_main(lambda: calls.append(1) or 7) == 7 and calls == [1]
    with pytest.raises(ZeroDivisionError):  # one process: the error itself
        on_main(lambda: 1 / 0)
    assert issubclass(ShardError, RuntimeError)


def test_close_finds_differences():
    assert _close({"a": [1.0, "x"], "seconds": 3}, {"a": [1.001, "x"], "seconds": 9}) == []
    assert _close({"a": [1.0]}, {"a": [1.1]}) == [".a[0]: 1.0 vs 1.1"]
    assert _close({"a": 1}, {"b": 1}) == [": keys ['a', 'b']"]
    assert _close({"random_removed": [-0.0087]}, {"random_removed": [-0.0084]}) == []  # 0.03% of the effect
    assert _close({"random_removed": [-0.0087]}, {"random_removed": [-0.0067]}) != []  # 0.2% of it


@pytest.mark.slow
def test_main_job_in_two_processes_writes_once_and_equals_one_process(tokenizer, tmp_path):
    model_dir = tmp_path / "tiny"
    hf = AutoModelForCausalLM.from_config(tiny_llama_config(len(tokenizer)), attn_implementation="eager")
    hf.save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)
    two, one = tmp_path / "two", tmp_path / "one"
    two.mkdir()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "WORKBENCH_DIST_TIMEOUT": "600"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", __file__]
    proc = subprocess.run(
        [*cmd, str(model_dir), str(two)], env=env, capture_output=True, text=True, timeout=1800, cwd=ROOT
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]
    # write_outputs writes summary.json (into the folder it then swaps into place), then main rewrites it atomically
    # with the wall time: twice, both by rank 0
    assert (two / "writes.log").read_text().split() == ["0", "0"]
    from experiments.neuron1512 import main

    main(_cfg(model_dir, one))
    got = json.loads((two / "out" / "summary.json").read_text().replace(str(two), str(one)))
    want = json.loads((one / "out" / "summary.json").read_text())
    differences = _close(got, want)
    assert differences == [], "\n".join(differences)
    assert sorted(p.name for p in (two / "out").iterdir()) == sorted(p.name for p in (one / "out").iterdir())


if __name__ == "__main__":
    _worker(Path(sys.argv[1]), Path(sys.argv[2]))
