"""The shared training loop on a toy regression: hand-computed steps, accumulation, clipping, NaN causes,
history, resume, the progress bar, and data-parallel runs under ``accelerate launch`` (2 gloo processes)."""

import math
import os
import socket
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch

from workbench.training import Batch, LoopConfig, Term, adamw, batch_order, train_loop

N, D = 10, 3
X = torch.linspace(-1, 1, N * D).reshape(N, D)
Y = X @ torch.tensor([1.0, -2.0, 0.5]) + 0.1
WEIGHT = torch.tensor([1.0 + i % 3 for i in range(N)])  # items count 1-3 times (like texts of 1-3 tokens)


def toy_step(module, batch_size):
    """Weighted squared error; an item of weight c counts as c items, so per-process counts differ."""

    def step(batch: Batch) -> dict[str, Term]:
        i = batch.indices(N, batch_size)
        err = (module(X[i]).squeeze(-1) - Y[i]) ** 2
        return {
            "mse": Term((WEIGHT[i] * err).sum(), float(WEIGHT[i].sum())),
            "l2": Term(module.weight.square().sum(), 1, 0.1),
        }

    return step


def linear(seed=0):
    torch.manual_seed(seed)
    return torch.nn.Linear(D, 1)


def run(cfg, lr=0.1, batch_size=4, module=None, **kwargs):
    module = module or linear()
    opt = torch.optim.SGD(module.parameters(), lr=lr)
    result = train_loop(module, opt, toy_step(module, batch_size), cfg, progress=False, **kwargs)
    return module, result


def test_batch_order_is_a_function_of_seed_and_micro_and_shards_partition_it():
    first = [batch_order(10, m, 4, seed=1) for m in range(5)]
    assert first == [batch_order(10, m, 4, seed=1) for m in range(5)]
    flat = [i for order in first for i in order]
    assert sorted(flat[:10]) == list(range(10)) and sorted(flat[10:20]) == list(range(10))  # epochs
    assert first != [batch_order(10, m, 4, seed=2) for m in range(5)]
    shards = [Batch(1, 3, 1, rank, 3).indices(10, 4) for rank in range(3)]
    assert sorted(i for s in shards for i in s) == sorted(batch_order(10, 3, 4, 1)) and [len(s) for s in shards] == [
        2,
        1,
        1,
    ]
    with pytest.raises(ValueError, match="cannot be shared by 3 processes"):
        Batch(1, 0, 0, 0, 3).indices(10, 2)


def test_one_step_equals_the_hand_computed_gradient():
    module, result = run(LoopConfig(steps=1))
    start = linear()
    i = batch_order(N, 0, 4, 0)
    err = (start(X[i]).squeeze(-1) - Y[i]) ** 2
    loss = (WEIGHT[i] * err).sum() / WEIGHT[i].sum() + 0.1 * start.weight.square().sum()
    loss.backward()
    torch.testing.assert_close(module.weight, start.weight - 0.1 * start.weight.grad)
    torch.testing.assert_close(module.bias, start.bias - 0.1 * start.bias.grad)
    assert result.history[0]["loss"] == pytest.approx(loss.item())
    assert result.history[0]["mse"] == pytest.approx(((WEIGHT[i] * err).sum() / WEIGHT[i].sum()).item())


def test_another_accelerator_in_the_process_does_not_rescale_the_loss():
    from accelerate import Accelerator

    reference, _ = run(LoopConfig(steps=2))
    Accelerator(gradient_accumulation_steps=4)  # e.g. made by a TRL trainer; its state is process-wide
    try:
        module, _ = run(LoopConfig(steps=2))
    finally:
        Accelerator(gradient_accumulation_steps=1)
    torch.testing.assert_close(module.weight, reference.weight, atol=0, rtol=0)


def test_accumulation_of_two_halves_equals_the_whole_batch_of_equal_counts():
    global WEIGHT
    saved, WEIGHT = WEIGHT, torch.ones(N)  # equal counts per half: the mean of the halves' means is the mean
    try:
        whole, _ = run(LoopConfig(steps=5), batch_size=4)
        halves, result = run(LoopConfig(steps=5, grad_accum=2), batch_size=2)
    finally:
        WEIGHT = saved
    torch.testing.assert_close(whole.weight, halves.weight)
    assert len(result.history) == 5


def test_clipping_bounds_the_update():
    start = linear()
    clipped, _ = run(LoopConfig(steps=1, max_grad_norm=0.01), lr=1.0)
    step = torch.cat([(clipped.weight - start.weight).flatten(), clipped.bias - start.bias]).detach()
    assert float(step.norm()) == pytest.approx(0.01, rel=1e-4)


def test_nan_stop_names_the_learning_rate_when_the_weights_broke():
    module = linear()

    def poison(row):
        if row["step"] == 2:
            with torch.no_grad():
                module.weight[0, 0] = math.inf

    with pytest.raises(
        FloatingPointError, match=r"stopped at step 3: mse .* after the update of step 2.*learning rate"
    ):
        run(LoopConfig(steps=5, desc="toy"), module=module, callback=poison)


def test_nan_stop_names_the_data_when_the_weights_are_finite():
    module = linear()

    def step(batch):
        i = batch.indices(N, 4)
        x = X[i].clone()
        x[0, 0] = math.nan if batch.step == 2 else x[0, 0]
        return {"mse": Term(((module(x).squeeze(-1) - Y[i]) ** 2).sum(), len(i))}

    opt = torch.optim.SGD(module.parameters(), lr=0.1)
    with pytest.raises(FloatingPointError) as err:
        train_loop(module, opt, step, LoopConfig(steps=3), progress=False)
    message = str(err.value)
    assert "step 2" in message and "learning rate is not the cause" in message
    assert f"items {batch_order(N, 1, 4, 0)}" in message


def test_a_nan_term_weight_is_refused_before_any_update():
    module = linear()
    before = module.weight.clone()

    def step(batch):
        i = batch.indices(N, 4)
        return {
            "mse": Term(((module(X[i]).squeeze(-1) - Y[i]) ** 2).sum(), len(i)),
            "l1": Term(module.weight.abs().sum(), 1, math.nan),
        }

    with pytest.raises(ValueError, match="'l1' has weight nan"):
        train_loop(module, torch.optim.SGD(module.parameters(), lr=0.1), step, LoopConfig(steps=2), progress=False)
    assert torch.equal(module.weight, before)


class FileCheckpoints:
    """Checkpoints of a toy module as ``step-N.pt`` files (a minimal implementation of the protocol)."""

    def __init__(self, folder, module):
        self.folder, self.module = Path(folder), module
        self.folder.mkdir(parents=True, exist_ok=True)

    def prepare(self, resume):
        if not resume:
            for f in self.folder.glob("step-*.pt"):
                f.unlink()

    def save(self, step, state):
        torch.save(
            {"weights": self.module.state_dict(), "state": state, "step": step}, self.folder / f"step-{step:04d}.pt"
        )

    def latest(self):
        files = sorted(self.folder.glob("step-*.pt"))
        if not files:
            return None
        saved = torch.load(files[-1], weights_only=False)
        self.module.load_state_dict(saved["weights"])
        return saved["step"], saved["state"]


def test_resume_equals_uninterrupted_and_the_csv_history_has_each_step_once(tmp_path):
    cfg = LoopConfig(steps=6, checkpoint_every=2, eval_every=3)
    straight, _ = run(cfg, evaluate=lambda: 1.5, log_path=tmp_path / "a.csv")

    class Interrupt(Exception):
        pass

    def stop(row):
        if row["step"] == 5:
            raise Interrupt

    first = linear()
    with pytest.raises(Interrupt):
        run(
            cfg,
            module=first,
            checkpoints=FileCheckpoints(tmp_path / "ck", first),
            log_path=tmp_path / "b.csv",
            callback=stop,
        )
    resumed = linear()
    result = run(
        cfg,
        module=resumed,
        checkpoints=FileCheckpoints(tmp_path / "ck", resumed),
        evaluate=lambda: 1.5,
        log_path=tmp_path / "b.csv",
    )[1]
    assert result.resumed_from == 4
    assert torch.equal(straight.weight, resumed.weight) and torch.equal(straight.bias, resumed.bias)
    log, ref = pd.read_csv(tmp_path / "b.csv"), pd.read_csv(tmp_path / "a.csv")
    assert list(log.step) == list(range(1, 7)) and list(log.columns) == [
        "step",
        "loss",
        "mse",
        "l2",
        "lr",
        "eval_loss",
        "seconds",
    ]
    assert (log.loss - ref.loss).abs().max() == 0 and list(ref.eval_loss.notna()) == [
        False,
        False,
        True,
        False,
        False,
        True,
    ]
    # not resuming starts over: the old checkpoints go
    fresh = linear()
    again = run(cfg, module=fresh, checkpoints=FileCheckpoints(tmp_path / "ck", fresh), resume=False)[1]
    assert again.resumed_from == 0 and torch.equal(fresh.weight, straight.weight)


def test_the_bar_shows_the_latest_eval_loss_not_nan(capsys):
    module = linear()
    opt = torch.optim.SGD(module.parameters(), lr=0.1)
    values = iter([0.25, 0.125])
    train_loop(module, opt, toy_step(module, 4), LoopConfig(steps=4, eval_every=2), evaluate=lambda: next(values))
    bar = capsys.readouterr().err
    assert "nan" not in bar and "eval=0.250" in bar.split("3/4")[-1].split("4/4")[0] and "eval=0.125" in bar


DDP_SCRIPT = """
import sys, torch
sys.path.insert(0, {tests!r})
from test_training import FileCheckpoints, linear, toy_step
from workbench.training import LoopConfig, accelerator, train_loop

steps, stop_at, out = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
module = linear()
class Stop(Exception):
    pass
def stop(row):
    if row["step"] == stop_at:
        raise Stop
try:
    train_loop(module, torch.optim.SGD(module.parameters(), lr=0.1), toy_step(module, 4),
               LoopConfig(steps=steps, checkpoint_every=2), checkpoints=FileCheckpoints(out, module), progress=False,
               callback=stop)
except Stop:
    pass
acc = accelerator()
if acc.is_main_process:
    torch.save(module.state_dict(), out + "/final.pt")
print("world", acc.num_processes)
"""


@pytest.mark.slow
def test_two_processes_equal_one_and_their_checkpoint_resumes_in_one(tmp_path):
    script = tmp_path / "ddp.py"
    script.write_text(DDP_SCRIPT.format(tests=str(Path(__file__).parent)))
    with socket.socket() as sock:  # a free port for the process group
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2"]
    launch += ["--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(port)]
    env = {**os.environ, "ACCELERATE_USE_CPU": "1", "OMP_NUM_THREADS": "1"}  # gloo processes on the CPU
    two = subprocess.run(
        [*launch, str(script), "6", "5", str(tmp_path / "two")], capture_output=True, text=True, timeout=300, env=env
    )
    assert two.returncode == 0 and "world 2" in two.stdout, two.stderr[-3000:]
    # uninterrupted, one process (the global batch is the same: 4 items split 2 + 2)
    reference, _ = run(LoopConfig(steps=6))
    # the 2-process run stopped after step 4's checkpoint; finish it in this process
    resumed = linear()
    result = run(LoopConfig(steps=6), module=resumed, checkpoints=FileCheckpoints(tmp_path / "two", resumed))[1]
    assert result.resumed_from == 4
    torch.testing.assert_close(resumed.weight, reference.weight, atol=1e-6, rtol=0)
    # and 4 steps on two processes equal 4 steps on one
    two_at_4 = torch.load(tmp_path / "two" / "step-0004.pt", weights_only=False)["weights"]
    four, _ = run(LoopConfig(steps=4))
    torch.testing.assert_close(two_at_4["weight"], four.weight, atol=1e-6, rtol=0)


def test_adamw_is_fused_on_cpu_and_agrees_with_the_loop():
    torch.manual_seed(0)
    start = [torch.randn(40, 30), torch.randn(30)]
    runs = []
    for make in (
        lambda ps: adamw(ps, lr=1e-2, weight_decay=0.1),
        lambda ps: torch.optim.AdamW(ps, lr=1e-2, weight_decay=0.1),
    ):
        params = [torch.nn.Parameter(t.clone()) for t in start]
        opt = make([{"params": params[:1]}, {"params": params[1:]}])
        gen = torch.Generator().manual_seed(1)
        for _ in range(20):
            for p in params:
                p.grad = torch.randn(p.shape, generator=gen)
            opt.step()
        runs.append((opt, params))
    (fused, got), (loop, want) = runs
    assert fused.defaults["fused"] is True and not loop.defaults.get("fused")
    for a, b in zip(got, want):
        assert not torch.equal(a, start[0] if a.dim() == 2 else start[1])
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6)


def _scripted_run(curve, steps, rule):
    """A loop whose evaluation returns ``curve`` one value per evaluation (every 10 steps)."""
    w = torch.nn.Linear(1, 1, bias=False)
    values = iter(curve)

    def step(batch):
        return {"mse": Term((w(torch.ones(1, 1)) ** 2).sum(), 1)}

    cfg = LoopConfig(steps=steps, eval_every=10, stop=rule)
    return train_loop(
        w, torch.optim.SGD(w.parameters(), lr=0.0), step, cfg, evaluate=lambda: next(values), progress=False
    )


def test_stopping_rule_stops_on_a_hand_built_curve():
    from workbench.training import StoppingRule

    rule = StoppingRule(patience=3, min_improvement=0.01)
    # best 4.0 at the 3rd evaluation; the next three improve it by 0.5% in all (< 1%): converged at the 6th
    curve = [5.0, 4.5, 4.0, 3.99, 3.985, 3.98, 3.0, 2.0]
    result = _scripted_run(curve, 1000, rule)
    assert (result.converged, result.steps) == (True, 60)
    assert [loss for _, loss in result.eval_curve] == curve[:6]


def test_stopping_rule_at_the_ceiling_is_not_converged():
    from workbench.training import StoppingRule

    result = _scripted_run([5.0, 4.0, 3.0, 2.0, 1.0], 50, StoppingRule(patience=2, min_improvement=0.01))
    assert (result.converged, result.steps) == (False, 50)
    no_rule = _scripted_run([5.0, 5.0, 5.0, 5.0, 5.0], 50, None)
    assert (no_rule.converged, no_rule.steps) == (False, 50)


def test_stopping_rule_checks_its_fields():
    from workbench.training import StoppingRule

    with pytest.raises(ValueError, match="patience"):
        StoppingRule(patience=0)
    with pytest.raises(ValueError, match="fraction"):
        StoppingRule(min_improvement=5)
    with pytest.raises(ValueError, match="eval_every"):
        LoopConfig(steps=10, stop=StoppingRule())
