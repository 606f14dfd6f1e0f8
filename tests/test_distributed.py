"""Sharded sweeps in 2 processes (gloo on CPU) equal the one-process results; a failing process stops the run.

The 2-process runs launch this file as a script under ``torchrun`` (``python test_distributed.py CASE OUT``).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from workbench.analysis.attribution import head_attribution, layer_attribution, neuron_attribution
from workbench.analysis.logit_lens import logit_lens
from workbench.analysis.patching import patch_sweep
from workbench.data.counterfactual import CounterfactualTensors
from workbench.distributed import (
    ShardError,
    dist_state,
    process_device,
    shard_map,
    shard_rows,
    sharded_attribution,
    sharded_logit_lens,
    sharded_patch_sweep,
)
from workbench.hooks import attach
from workbench.interventions import AlignmentConfig, InterventionSet, RotatedSpaceIntervention, train_interventions
from workbench.interventions.spec import spec_at
from workbench.irm import IRM, IRMConfig, TrainConfig, train_irm
from workbench.metrics import LogitDiff
from workbench.models import load_model

ROOT = Path(__file__).resolve().parents[1]
N_PROMPTS = 5  # uneven over 2 processes: blocks of 3 and 2
ATTRIBUTIONS = {"layer": layer_attribution, "head": head_attribution, "neuron": neuron_attribution}


def _inputs(vocab: int):
    gen = torch.Generator().manual_seed(1)
    clean = torch.randint(0, vocab, (N_PROMPTS, 6), generator=gen)
    corrupted = torch.randint(0, vocab, (N_PROMPTS, 6), generator=gen)
    answers = torch.randint(0, vocab, (N_PROMPTS, 2), generator=gen)
    return clean, corrupted, answers


def _sweeps(model, sharded: bool) -> dict[str, torch.Tensor]:
    """Every sharded analysis (or its one-process original) on the same prompts, as tensors."""
    clean, corrupted, answers = _inputs(model.cfg.d_vocab)
    out = {}
    for kind in ("resid_pre", "head"):
        if sharded:
            res = sharded_patch_sweep(
                model, model, kind, lambda rows: LogitDiff(answers[rows.start : rows.stop]), corrupted, clean
            )
        else:
            res = patch_sweep(model, model, kind, LogitDiff(answers), corrupted, clean)
        out[f"patch_{kind}"] = torch.cat([res.values.flatten(), torch.tensor([res.baseline, res.reference])])
    for name, fn in ATTRIBUTIONS.items():
        res = sharded_attribution(fn, model, clean, answers) if sharded else fn(model, clean, answers)
        out[f"dla_{name}"] = res.per_prompt
    lens = sharded_logit_lens(model, clean, answers, k=5) if sharded else logit_lens(model, clean, answers, k=5)
    out["lens"] = lens.per_prompt
    out["lens_top_logits"] = lens.top_logits
    out["lens_top_tokens"] = lens.top_tokens
    return out


TEXTS = [f"tweet {i}: the weather is {w} today" for i, w in enumerate(["fine", "awful", "grey", "warm", "cold"] * 2)]
IRM_CFG = IRMConfig(hidden_mult=1.0, n_hidden=1)


def _train_cfg(steps: int) -> TrainConfig:
    """4 texts per step (2 per process in the 2-process run); AdamW at lr 1e-3, since Adam turns float noise
    in near-zero gradients into weight noise of order lr·1e-3."""
    return TrainConfig(steps=steps, batch_size=4, lr=1e-3, warmup=1, max_len=24, eval_every=0, checkpoint_every=2)


def _train(model, steps: int, out_dir=None) -> dict[str, torch.Tensor]:
    irm = IRM.for_model(model, IRM_CFG, seed=0)
    train_irm(model, irm, TEXTS, _train_cfg(steps), out_dir=out_dir, progress=False)
    return {k: v.detach().clone() for k, v in irm.state_dict().items()}


def _das(model) -> InterventionSet:
    return InterventionSet([(spec_at(model, "resid_post", 1, 4), RotatedSpaceIntervention(64, 4, seed=0))])


def _projector(interventions: InterventionSet) -> torch.Tensor:
    """The projector on the swapped subspace: what the intervention does. (The rotation's parameters are
    not comparable: entries that only turn within or outside the subspace have gradients of float noise,
    which Adam turns into steps of order lr.)"""
    basis = interventions.interventions[0].subspace()
    return basis @ basis.T


def _train_das(model) -> torch.Tensor:
    """The swapped subspace's projector of a rank-4 rotation at layer 1's last position after 3 Adam steps
    on 8 random counterfactual examples."""
    gen = torch.Generator().manual_seed(2)
    base, source = torch.randint(0, 1000, (2, 8, 5), generator=gen)
    labels, base_labels = torch.randint(0, 1000, (2, 8), generator=gen)
    data = CounterfactualTensors(base, (source,), labels, base_labels)
    interventions = _das(model)
    train_interventions(model, interventions, data, AlignmentConfig(steps=3, batch_size=4, lr=1e-3))
    return _projector(interventions)


def _tiny_model():
    from transformers import AutoTokenizer

    from tests.helpers import tiny_llama_config
    from workbench.models import DEFAULT_MODEL, ensure_cached, from_config

    tok = AutoTokenizer.from_pretrained(ensure_cached(DEFAULT_MODEL))
    return from_config(tiny_llama_config(len(tok)), tok, seed=0, prepend_bos=False)


def _worker(case: str, out: Path) -> None:
    state = dist_state()
    if case == "train":
        model = _tiny_model()
        weights = _train(model, 3)
        _train(model, 2, out_dir=out / "run")  # stops after step 2, checkpointed; resumed in one process
        das = _train_das(model)
        if state.is_main_process:
            torch.save({"weights": weights, "das": das, "world": state.num_processes}, out / "dp.pt")
    elif case == "sweeps":
        model = _tiny_model()
        results = _sweeps(model, sharded=True)
        results["rows"] = list(shard_rows(N_PROMPTS, state))
        results["devices"] = [process_device(d) for d in ("cuda", "cuda:0", "cpu")]
        results["items"] = shard_map(lambda x: x * x, list(range(7)))
        torch.save(results, out / f"rank{state.process_index}.pt")
    elif case == "raise_in_shard":
        shard_map(lambda x: 1 / 0 if x == 3 else x, list(range(4)))  # item 3 is on rank 1
    elif case == "raise_outside":
        if state.process_index == 1:
            raise ValueError("rank 1 fails before the collective")
        shard_map(lambda x: x, list(range(4)))  # rank 0 waits for rank 1 here
    state.destroy_process_group()


def _launch(
    case: str, out: Path, timeout: float = 300, group_timeout: int = 60
) -> tuple[subprocess.CompletedProcess, float]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "WORKBENCH_DIST_TIMEOUT": str(group_timeout)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    start = time.perf_counter()
    proc = subprocess.run(
        [*cmd, __file__, case, str(out)], env=env, capture_output=True, text=True, timeout=timeout, cwd=ROOT
    )
    return proc, time.perf_counter() - start


@pytest.mark.slow
def test_sharded_sweeps_in_two_processes_equal_one_process(tiny_llama, tmp_path):
    proc, _ = _launch("sweeps", tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in (0, 1)]
    assert ranks[0]["rows"] == [0, 1, 2] and ranks[1]["rows"] == [3, 4]
    assert [r["devices"] for r in ranks] == [["cuda:0", "cuda:0", "cpu"], ["cuda:1", "cuda:0", "cpu"]]
    assert ranks[0]["items"] == ranks[1]["items"] == [x * x for x in range(7)]
    expected = _sweeps(tiny_llama, sharded=False)
    for rank in ranks:
        for key, want in expected.items():
            if key == "lens_top_tokens":
                assert rank[key] == want
            else:
                torch.testing.assert_close(rank[key], want, atol=1e-5, rtol=1e-5, msg=key)


@pytest.mark.slow
def test_irm_training_in_two_processes_equals_one_and_resumes_in_one(tiny_llama, tmp_path):
    """Same global batch (4 texts: 2 + 2): the IRM after 3 steps equals the 1-process IRM; the 2-process
    checkpoint of step 2 resumes in this process to the weights of an uninterrupted 3-step run; a DAS
    rotation trained on 2 processes swaps the subspace the 1-process one swaps."""
    proc, _ = _launch("train", tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    two = torch.load(tmp_path / "dp.pt", weights_only=False)
    assert two["world"] == 2
    one = _train(tiny_llama, 3)
    assert any(v.abs().max() > 0 for k, v in one.items() if k.startswith("net.2")), "the last layer left zero"
    for key in one:
        torch.testing.assert_close(two["weights"][key], one[key], atol=1e-5, rtol=0, msg=key)
    resumed = _train(tiny_llama, 3, out_dir=tmp_path / "run")
    for key in one:
        torch.testing.assert_close(resumed[key], one[key], atol=1e-5, rtol=0, msg=key)
    das = _train_das(tiny_llama)
    assert (das - _projector(_das(tiny_llama))).abs().max() > 1e-3, "DAS did not move"
    torch.testing.assert_close(two["das"], das, atol=1e-5, rtol=0)


def test_sharded_functions_in_one_process_equal_originals(tiny_llama):
    got, want = _sweeps(tiny_llama, sharded=True), _sweeps(tiny_llama, sharded=False)
    assert got.keys() == want.keys()
    for key in want:
        if key == "lens_top_tokens":
            assert got[key] == want[key]
        else:
            torch.testing.assert_close(got[key], want[key], atol=1e-5, rtol=1e-5, msg=key)


def test_shard_error_names_the_failing_item():
    with pytest.raises(ShardError, match="ZeroDivisionError"):
        shard_map(lambda x: 1 / x, [1, 0])
    assert shard_map(str, range(3)) == ["0", "1", "2"]
    assert process_device("cuda") == "cuda" and process_device("cpu") == "cpu"  # one process


@pytest.mark.slow
def test_a_process_that_raises_stops_both(tmp_path):
    proc, _ = _launch("raise_in_shard", tmp_path)
    assert proc.returncode != 0
    assert "process 1 of 2 failed" in proc.stderr and "ZeroDivisionError" in proc.stderr
    proc, seconds = _launch("raise_outside", tmp_path, timeout=400, group_timeout=600)
    assert proc.returncode != 0
    assert "rank 1 fails before the collective" in proc.stderr
    assert seconds < 300, "the waiting process should be stopped by the launcher, not by the 600 s group timeout"


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory, tokenizer):
    """A tiny random Llama saved as a Hugging Face folder (what load_model reads)."""
    from transformers import AutoModelForCausalLM

    from tests.helpers import tiny_llama_config

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("tiny_llama")
    AutoModelForCausalLM.from_config(tiny_llama_config(len(tokenizer), n_layers=3)).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def _irm_logits(model, tokens):
    irm = IRM.for_model(model, IRMConfig(layers=(0, 2), hidden_mult=1.0, n_hidden=1), seed=0)
    with torch.no_grad():
        irm.net[-1].weight.normal_(0, 0.1, generator=torch.Generator().manual_seed(0))
        with attach(model, irm.hooks(model)):
            return model(tokens)


@pytest.mark.parametrize("device_map", ["auto", {"": "cpu"}])
def test_device_map_load_and_irm_equal_one_device(tiny_dir, device_map):
    """On a CPU-only machine every device map lands on the CPU: same logits, same IRM-injected logits."""
    tokens = torch.tensor([[5, 17, 300, 2, 41]])
    plain, mapped = load_model(tiny_dir), load_model(tiny_dir, device_map=device_map)
    assert mapped.cfg.device == "cpu"
    torch.testing.assert_close(mapped(tokens), plain(tokens), atol=0, rtol=0)
    torch.testing.assert_close(_irm_logits(mapped, tokens), _irm_logits(plain, tokens), atol=0, rtol=0)
    assert not torch.equal(_irm_logits(plain, tokens), plain(tokens))


def test_placement_arguments_are_checked(tiny_dir):
    with pytest.raises(ValueError, match="not both"):
        load_model(tiny_dir, device_map="auto", n_devices=2)
    with pytest.raises(ValueError, match="n_devices must be >= 1"):
        load_model(tiny_dir, n_devices=0)
    if torch.cuda.device_count() < 2:
        with pytest.raises(ValueError, match="Load on one device instead"):
            load_model(tiny_dir, n_devices=2)


if __name__ == "__main__":
    _worker(sys.argv[1], Path(sys.argv[2]))
