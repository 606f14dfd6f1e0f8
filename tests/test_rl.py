"""GRPO tuning: a toy reward rises, weights move (only the last layers with last_layers), errors are clear,
an interrupted run resumes from its checkpoint to the weights of an uninterrupted one."""

import json
import logging

import pytest
import torch
from transformers import AutoModelForCausalLM

import workbench.tuning.rl as rl_module
from tests.helpers import tiny_llama_config
from workbench.sentiment import vader_negativity
from workbench.tuning import (
    RewardError,
    RLConfig,
    decoder_layers,
    load_tuned,
    paired_bootstrap,
    rl_dir,
    rl_evidence,
    rl_prompts,
    rl_tune,
)

PROMPTS = ["the cat sat", "a dog ran", "my day was", "the bird flew"]


def e_count(prompt: str, completion: str) -> float:
    """Toy reward: how many letters 'e' the completion has."""
    return float(completion.count("e"))


def counted(stop_at: int | None = None):
    """``e_count`` recording its calls (one per completion) that, like a Ctrl-C, interrupts at call ``stop_at``."""
    calls = []

    def e_count_counted(prompt: str, completion: str) -> float:
        calls.append(prompt)
        if len(calls) == stop_at:
            raise KeyboardInterrupt
        return e_count(prompt, completion)

    return e_count_counted, calls


def comparable(history: list[dict]) -> list[dict]:
    """A history without its timings and the reward's name (the per-function columns)."""
    return [{k: v for k, v in row.items() if k != "step_time" and not k.startswith("rewards/")} for row in history]


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory, tokenizer):
    # a random Llama whose unembedding is scaled up: a peaked next-token distribution, so that the
    # same tokens recur across samples and a few GRPO steps can move their probabilities
    torch.manual_seed(0)
    hf = AutoModelForCausalLM.from_config(tiny_llama_config(len(tokenizer), n_layers=3), attn_implementation="eager")
    with torch.no_grad():
        hf.lm_head.weight.mul_(20.0)
    folder = tmp_path_factory.mktemp("tiny")
    hf.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def toy_config(folder, **changes) -> RLConfig:
    base = dict(model=str(folder), steps=12, batch_size=16, num_generations=4, max_completion_length=8, lr=1e-2)
    return RLConfig(**{**base, "beta": 0.0, **changes})


@pytest.fixture(scope="module")
def tuned(tiny_folder, tmp_path_factory):
    cfg = toy_config(tiny_folder)
    return cfg, rl_tune(cfg, e_count, PROMPTS, out=tmp_path_factory.mktemp("out") / "rl")


def test_grpo_raises_the_toy_reward_and_moves_every_layer(tiny_folder, tuned):
    cfg, folder = tuned
    base = AutoModelForCausalLM.from_pretrained(tiny_folder)
    new = AutoModelForCausalLM.from_pretrained(folder)
    for i, (before, after) in enumerate(zip(decoder_layers(base), decoder_layers(new))):
        assert any(not torch.equal(p, q) for p, q in zip(before.parameters(), after.parameters())), f"layer {i}"
    evidence = rl_evidence(tiny_folder, folder, PROMPTS * 4, e_count, samples=8, max_new_tokens=8)
    assert evidence.gain_ci[0] > 0, (
        evidence.summary()
    )  # the reward rose on the training prompts, beyond resampling noise
    # the summary's numbers are the per-prompt means of the samples table
    frame = evidence.samples
    assert evidence.summary()["reward_tuned"] == pytest.approx(frame[frame.model == "tuned"].reward.mean())
    assert len(frame) == 2 * 16 * 8 and evidence.length_tuned == pytest.approx(
        frame[frame.model == "tuned"].n_tokens.mean()
    )
    assert evidence.kl_to_base > 0.1
    meta = json.loads((folder / "tuning.json").read_text())
    assert meta["method"] == "grpo" and meta["prompts"] == PROMPTS and len(meta["history"]) == cfg.steps
    assert "tuned" in load_tuned(folder).cfg.model_name


def test_kl_is_zero_for_the_base_itself(tiny_folder):
    evidence = rl_evidence(tiny_folder, tiny_folder, PROMPTS, e_count, samples=2, max_new_tokens=4)
    assert evidence.kl_to_base == pytest.approx(0.0, abs=1e-6)
    assert evidence.gain == 0.0 and evidence.gain_ci == (0.0, 0.0)  # same seed: the same samples


def test_last_layers_only_train_those(tiny_folder, tmp_path):
    folder = rl_tune(toy_config(tiny_folder, steps=2, last_layers=1, beta=0.1), e_count, PROMPTS, out=tmp_path / "rl")
    base, new = AutoModelForCausalLM.from_pretrained(tiny_folder), AutoModelForCausalLM.from_pretrained(folder)
    changed = {name for (name, p), q in zip(base.named_parameters(), new.parameters()) if not torch.equal(p, q)}
    assert changed and all(name.startswith("model.layers.2.") for name in changed), changed
    budget = json.loads((folder / "tuning.json").read_text())["budget"]
    layer = dict(new.named_parameters())
    assert budget["trainable_parameters"] == sum(p.numel() for n, p in layer.items() if n.startswith("model.layers.2."))
    cfg = toy_config(tiny_folder, steps=2)
    assert budget["steps"] == 2 and budget["completions"] == 2 * cfg.batch_size
    # every completion's prompt and completion tokens: at least one token each
    assert budget["tokens_seen"] >= 2 * cfg.batch_size * 2


def test_progress_is_one_bar_over_the_steps_with_the_reward(tiny_folder, tmp_path, capsys):
    rl_tune(toy_config(tiny_folder, steps=2), e_count, PROMPTS, out=tmp_path / "quiet")
    assert "GRPO" not in capsys.readouterr().err
    rl_tune(toy_config(tiny_folder, steps=2), e_count, PROMPTS, out=tmp_path / "shown", progress=True)
    out, err = capsys.readouterr()
    assert "GRPO" in err and "2/2" in err and "reward=" in err
    assert "'loss'" not in out + err  # not TRL's bar, which prints every step's full log
    history = json.loads((tmp_path / "shown" / "tuning.json").read_text())["history"]
    assert [row["step"] for row in history] == [1, 2]  # the log per step is still recorded


def test_a_failing_reward_names_its_prompt(tiny_folder, tmp_path):
    def picky(prompt, completion):
        if prompt == "my day was":
            raise KeyError("no score")
        return 0.0

    with pytest.raises(RewardError, match=r"picky failed on prompt 'my day was'.*KeyError"):
        rl_tune(toy_config(tiny_folder, steps=1), picky, PROMPTS, out=tmp_path / "never")
    assert not (tmp_path / "never").exists() and not (tmp_path / "never.partial").exists()  # nothing to resume


def test_an_interrupted_run_resumes_from_its_checkpoint_to_the_same_weights(tuned, tmp_path, caplog, capsys):
    cfg, uninterrupted = tuned  # 12 steps of 16 completions, never interrupted
    out, partial = tmp_path / "rl", tmp_path / "rl.partial"
    reward, calls = counted(stop_at=5 * 16 + 1)  # Ctrl-C while scoring step 6
    with pytest.raises(KeyboardInterrupt):
        rl_tune(cfg, reward, PROMPTS, out=out, checkpoint_every=2)
    assert not out.exists() and [p.name for p in partial.glob("checkpoint-*")] == ["checkpoint-4"]
    reward, calls = counted()
    with caplog.at_level(logging.WARNING, logger=rl_module.__name__):
        rl_tune(cfg, reward, PROMPTS, out=out, checkpoint_every=2, progress=True)
    assert len(calls) == (cfg.steps - 4) * 16  # steps 5-12 only
    assert "resumes at step 4 of 12" in caplog.text and "4/12" in capsys.readouterr().err
    assert (out / "tuning.json").exists() and not partial.exists()
    # exactly the uninterrupted weights and log: prompt order, sampling RNG, optimizer and scheduler restored
    # (4 prompts make one step an epoch, so this resumes at an epoch boundary, in epoch 4 of the prompt order)
    before, after = (AutoModelForCausalLM.from_pretrained(f).state_dict() for f in (uninterrupted, out))
    assert all(torch.equal(before[name], after[name]) for name in before)
    history, expected = (json.loads((f / "tuning.json").read_text())["history"] for f in (out, uninterrupted))
    assert [row["step"] for row in history] == list(range(1, 13)) and comparable(history) == comparable(expected)


def test_another_config_starts_over_instead_of_resuming(tiny_folder, tmp_path, caplog):
    out = tmp_path / "rl"
    reward, calls = counted(stop_at=16 + 1)
    with pytest.raises(KeyboardInterrupt):
        rl_tune(toy_config(tiny_folder, steps=2), reward, PROMPTS, out=out, checkpoint_every=1)
    assert (tmp_path / "rl.partial" / "checkpoint-1").is_dir()
    reward, calls = counted()
    with caplog.at_level(logging.WARNING, logger=rl_module.__name__):
        rl_tune(toy_config(tiny_folder, steps=2, lr=5e-3), reward, PROMPTS, out=out, checkpoint_every=1)
    assert len(calls) == 2 * 16 and "another config: starting over" in caplog.text  # from step 0
    meta = json.loads((out / "tuning.json").read_text())
    assert meta["config"]["lr"] == 5e-3 and [row["step"] for row in meta["history"]] == [1, 2]


def test_a_run_killed_before_its_final_folder_resumes_at_the_end(tiny_folder, tmp_path, monkeypatch):
    def killed(target):
        raise KeyboardInterrupt

    monkeypatch.setattr(rl_module, "atomic_dir", killed)
    with pytest.raises(KeyboardInterrupt):
        rl_tune(toy_config(tiny_folder, steps=2), counted()[0], PROMPTS, out=tmp_path / "rl")
    assert (tmp_path / "rl.partial" / "checkpoint-2").is_dir()  # the last step is always saved
    monkeypatch.undo()
    reward, calls = counted()
    rl_tune(toy_config(tiny_folder, steps=2), reward, PROMPTS, out=tmp_path / "rl")
    assert calls == [] and not (tmp_path / "rl.partial").exists()  # no step trained again
    assert [row["step"] for row in json.loads((tmp_path / "rl" / "tuning.json").read_text())["history"]] == [1, 2]


def test_a_half_written_checkpoint_is_not_resumed_from(tmp_path):
    partial = tmp_path / "rl.partial"
    for step, state in ((2, '{"global_step": 2}'), (4, '{"global_st'), (6, None)):  # 4, 6: saves killed midway
        (partial / f"checkpoint-{step}").mkdir(parents=True)
        if state is not None:
            (partial / f"checkpoint-{step}" / "trainer_state.json").write_text(state)
    (partial / "key.txt").write_text("abc")
    assert rl_module._resume_point(partial, "abc") == (2, partial / "checkpoint-2")
    assert [p.name for p in partial.glob("checkpoint-*")] == ["checkpoint-2"]
    assert rl_module._resume_point(partial, "xyz") is None and not any(partial.glob("checkpoint-*"))


def test_config_errors():
    with pytest.raises(ValueError, match="num_generations >= 2"):
        RLConfig(num_generations=1)
    with pytest.raises(ValueError, match="not divisible by num_generations"):
        RLConfig(batch_size=10, num_generations=4)
    with pytest.raises(ValueError, match="bf16=False on CPU"):
        RLConfig(bf16=True)
    with pytest.raises(ValueError, match="prompt_corpus"):
        RLConfig(prompt_corpus="angry")
    with pytest.raises(ValueError, match="last_layers"):
        RLConfig(last_layers=0)
    with pytest.raises(ValueError, match="checkpoint_every"):
        rl_tune(RLConfig(), checkpoint_every=0)


def test_prompts_are_short_and_held_out_apart():
    cfg = RLConfig(n_prompts=200, n_held_out=40)
    train, held = rl_prompts(cfg)
    assert len(train) == 200 and len(held) == 40 and not set(train) & set(held)
    assert all(3 <= len(p.split()) <= 5 and not any(s in p for s in ("@", "#", "http")) for p in train + held)
    assert rl_prompts(cfg) == (train, held)  # seeded
    assert rl_dir(cfg, train) == rl_dir(cfg, train) != rl_dir(cfg.replace(beta=0.1), train)
    assert rl_dir(cfg, train) != rl_dir(cfg, train, e_count)


def test_vader_negativity_and_bootstrap():
    assert vader_negativity("x", "I hate this, it is awful") > 0.5 > -0.5 > vader_negativity("x", "I love it, great")
    mean, low, high = paired_bootstrap([0.0, 0.0, 0.0, 0.0], [1.0, 2.0, 3.0, 4.0], n_boot=4000)
    assert mean == 2.5 and 1.0 <= low < 2.5 < high <= 4.0
    with pytest.raises(ValueError, match="2 paired"):
        paired_bootstrap([1.0], [2.0])
