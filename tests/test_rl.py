"""GRPO tuning: a toy reward rises, weights move (only the last layers with last_layers), errors are clear."""

import json

import pytest
import torch
from transformers import AutoModelForCausalLM

from tests.helpers import tiny_llama_config
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
    vader_negativity,
)

PROMPTS = ["the cat sat", "a dog ran", "my day was", "the bird flew"]


def e_count(prompt: str, completion: str) -> float:
    """Toy reward: how many letters 'e' the completion has."""
    return float(completion.count("e"))


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory, tokenizer):
    # a random Llama whose unembedding is scaled up: a peaked next-token distribution, so that the
    # same tokens recur across samples and a few GRPO steps can move their probabilities
    torch.manual_seed(0)
    hf = AutoModelForCausalLM.from_config(tiny_llama_config(len(tokenizer), n_layers=3), attn_implementation="eager")
    hf.config.architectures = [type(hf).__name__]
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
    assert not (tmp_path / "never").exists()


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
