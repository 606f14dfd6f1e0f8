"""IRM training on tiny random models: frozen LM, learning a toy realignment, resume, NaN, logs, checkpoints."""

import math
import re

import pandas as pd
import pytest
import torch

from tests.helpers import tiny_llama_config
from workbench.irm import IRM, IRMConfig, TrainConfig, eval_loss, train_irm
from workbench.irm.text import encode_replies
from workbench.irm.train import encode_for
from workbench.models import from_config

SMALL = IRMConfig(hidden_mult=0.5, n_hidden=2)
TOY = [f"I love {w} so much!" for w in ("it", "this", "today", "you", "them", "flying", "rain", "work")]


def test_reply_tokens_are_scored(tokenizer):
    enc = encode_replies(tokenizer, ["I love it"], user_prompt="Write a tweet.")[0]
    scored = [tokenizer.decode([i]) for i, s in zip(enc.ids, enc.scored) if s]
    assert scored == ["I", " love", " it", "<|im_end|>"]
    assert tokenizer.decode(list(enc.ids)).startswith(
        "<|im_start|>system\n<|im_end|>\n<|im_start|>user\nWrite a tweet."
    )


@pytest.fixture(scope="module")
def toy_llama(tokenizer):
    """A tiny Llama whose weights are large enough (init std 1) that its logits can move by many nats.

    The shared tiny model (init std 0.02) has logits within about +-1 of each other after the final
    RMSNorm, so no residual edit could teach it a text.
    """
    config = tiny_llama_config(len(tokenizer))
    config.initializer_range = 1.0
    return from_config(config, tokenizer, seed=0, prepend_bos=False)


def test_lm_frozen_and_toy_realignment_learned(toy_llama, tmp_path):
    model = toy_llama
    before = {k: v.clone() for k, v in model.state_dict().items()}
    flags = [p.requires_grad for p in model.parameters()]
    irm = IRM.for_model(model, SMALL)
    cfg = TrainConfig(steps=30, batch_size=4, lr=3e-3, warmup=1, eval_every=10, eval_texts=4)
    seen = []
    result = train_irm(
        model,
        irm,
        TOY,
        cfg,
        held_out=TOY[:4],
        out_dir=tmp_path,
        progress=False,
        callback=lambda row: seen.append(any(p.requires_grad for p in model.parameters())),
    )
    assert seen and not any(seen)  # frozen during training
    assert [p.requires_grad for p in model.parameters()] == flags  # flags restored after
    assert all(p.grad is None for p in model.parameters())
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k
    df = result.to_frame()
    data = encode_for(model, TOY, cfg)
    base, trained = eval_loss(model, None, data), eval_loss(model, irm, data)
    # the random model is far from the toy texts; the IRM must cut the loss by more than half
    assert base > 9 and trained < 0.5 * base, (base, trained)
    assert df.lm_loss.iloc[-1] < 0.5 * df.lm_loss.iloc[0]
    log = pd.read_csv(tmp_path / "train_log.csv")
    assert list(log.step) == list(range(1, 31)) and log.eval_loss.notna().sum() == 3
    assert [p.name for p in sorted((tmp_path / "checkpoints").iterdir())] == ["step-000030"]


def test_resume_equals_uninterrupted(tiny_llama, tmp_path):
    cfg = TrainConfig(steps=6, batch_size=3, grad_accum=2, lr=3e-3, warmup=2, l1=1e-3, checkpoint_every=3, eval_every=0)
    straight = IRM.for_model(tiny_llama, SMALL, seed=5)
    train_irm(tiny_llama, straight, TOY, cfg, out_dir=tmp_path / "a", progress=False)

    class Interrupt(Exception):
        pass

    def stop(row):
        if row["step"] == 4:
            raise Interrupt

    first = IRM.for_model(tiny_llama, SMALL, seed=5)
    with pytest.raises(Interrupt):
        train_irm(tiny_llama, first, TOY, cfg, out_dir=tmp_path / "b", progress=False, callback=stop)
    resumed = IRM.for_model(tiny_llama, SMALL, seed=5)
    result = train_irm(tiny_llama, resumed, TOY, cfg, out_dir=tmp_path / "b", progress=False)
    assert result.resumed_from == 3
    for a, b in zip(straight.state_dict().values(), resumed.state_dict().values()):
        assert torch.equal(a, b)
    log = pd.read_csv(tmp_path / "b" / "train_log.csv")
    assert list(log.step) == list(range(1, 7))  # the interrupted step 4 is not duplicated
    reference = pd.read_csv(tmp_path / "a" / "train_log.csv")
    assert (log.loss - reference.loss).abs().max() == 0


def test_resume_refuses_another_irm_config(tiny_llama, tmp_path):
    cfg = TrainConfig(steps=2, batch_size=2, eval_every=0)
    train_irm(tiny_llama, IRM.for_model(tiny_llama, SMALL), TOY, cfg, out_dir=tmp_path, progress=False)
    with pytest.raises(ValueError, match="another model or IRM config"):
        train_irm(
            tiny_llama, IRM.for_model(tiny_llama, SMALL.replace(n_hidden=1)), TOY, cfg, out_dir=tmp_path, progress=False
        )


def test_nan_loss_stops_naming_the_step(tiny_llama):
    irm = IRM.for_model(tiny_llama, SMALL)
    cfg = TrainConfig(steps=5, batch_size=2, eval_every=0, lr=1e-3)
    calls = []

    def poison(row):
        calls.append(row["step"])
        if row["step"] == 2:
            with torch.no_grad():
                irm.net[0].weight[0, 0] = math.nan

    with pytest.raises(FloatingPointError, match=r"stopped at step 3: .*after the update of step 2.*learning rate"):
        train_irm(tiny_llama, irm, TOY, cfg, progress=False, callback=poison)
    assert calls == [1, 2]


def test_nan_from_the_data_blames_the_data_not_the_learning_rate(tokenizer):
    model = from_config(tiny_llama_config(len(tokenizer)), tokenizer, seed=0, prepend_bos=False)
    (rain,) = tokenizer(" rain", add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        model.embed.W_E[rain] = math.nan  # the frozen model returns NaN on texts with " rain"
    texts = [*TOY[:6], "I love rain so much!"]
    cfg = TrainConfig(steps=8, batch_size=2, eval_every=0)
    with pytest.raises(FloatingPointError) as err:
        train_irm(model, IRM.for_model(model, SMALL), texts, cfg, progress=False)
    message = str(err.value)
    assert "learning rate is not the cause" in message and re.search(r"items \[[^\]]*\b6\b", message), message


@pytest.mark.parametrize("name", ["tiny_llama", "tiny_gpt2"])
def test_shared_prompt_batch_equals_single_unpadded_texts(name, request, tokenizer):
    """The prompt run once per batch and the replies on its cache: the loss and IRM gradients of one text at a time."""
    from workbench.hooks import attach
    from workbench.irm.loss import batch_nll, reply_nll, shared_prefix_len
    from workbench.models import frozen

    model = request.getfixturevalue(name)
    texts = ["I love it", "Rain again, what a day for a walk in the park", "ok", "Flying home tomorrow!"]
    data = encode_for(model, texts, TrainConfig(max_len=40))
    turns = [{"role": "system", "content": ""}, {"role": "user", "content": "Write a tweet."}]
    prompt = tokenizer.apply_chat_template(turns, tokenize=False, add_generation_prompt=True)
    assert shared_prefix_len(data) == len(tokenizer(prompt, add_special_tokens=False)["input_ids"])
    irm = IRM.for_model(model, SMALL, seed=1, identity=False)

    def loss_and_grads(fn):
        irm.zero_grad()
        with frozen(model), attach(model, irm.hooks(model)):
            loss = fn()
        loss.backward()
        return loss.item(), [p.grad.clone() for p in irm.parameters()]

    batched, g_batched = loss_and_grads(lambda: batch_nll(model, data)[0])

    def one_at_a_time():
        total = 0
        for e in data:
            tokens, scored = torch.tensor([e.ids]), torch.tensor([e.scored])
            total = total + reply_nll(model(tokens), tokens, scored)[0]
        return total

    single, g_single = loss_and_grads(one_at_a_time)
    assert batched == pytest.approx(single, rel=1e-5)
    for a, b in zip(g_batched, g_single):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)
    assert batch_nll(model, data)[1] == sum(sum(e.scored) for e in data)


def test_shared_prefix_stops_at_the_first_scored_or_differing_token(tokenizer):
    from workbench.irm.loss import shared_prefix_len
    from workbench.irm.text import Encoded

    a = Encoded((1, 2, 3, 4, 5), (False, False, False, True, True))
    b = Encoded((1, 2, 3, 9), (False, False, False, True))
    c = Encoded((1, 2, 7, 9), (False, False, False, True))
    assert shared_prefix_len([a, b]) == 3  # positions 0-2 shared, position 3 scored
    assert shared_prefix_len([a, c]) == 2  # position 2 differs
    assert (
        shared_prefix_len([a, Encoded((1, 2, 3), (False, True, True))]) == 0
    )  # scored from position 1: nothing shared
