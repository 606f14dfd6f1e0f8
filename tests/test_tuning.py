"""Fine-tuning the last layers: only they change, loss falls, the folder loads, reruns reuse it."""

import json

import pytest
import torch
from transformers import AutoModelForCausalLM

from tests.helpers import tiny_llama_config
from workbench.tuning import TuneConfig, decoder_layers, load_tuned, tune_last_layers, tuned_dir

TEXTS = ["the cat sat on the mat", "the dog sat on the rug", "a cat ran to the mat", "the bird sat on a branch"] * 4


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory, tokenizer):
    torch.manual_seed(0)
    hf = AutoModelForCausalLM.from_config(tiny_llama_config(len(tokenizer), n_layers=3), attn_implementation="eager")
    folder = tmp_path_factory.mktemp("tiny")
    hf.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def tuned(tiny_folder, tmp_path_factory):
    cfg = TuneConfig(model=str(tiny_folder), last_layers=1, steps=12, batch_size=4, lr=3e-3)
    return cfg, tune_last_layers(cfg, TEXTS, out=tmp_path_factory.mktemp("out") / "tuned")


def test_only_the_last_layers_change_and_loss_falls(tiny_folder, tuned):
    _cfg, folder = tuned
    base = AutoModelForCausalLM.from_pretrained(tiny_folder)
    new = AutoModelForCausalLM.from_pretrained(folder)
    before, after = decoder_layers(base), decoder_layers(new)
    for i in range(3):
        same = all(torch.equal(p, q) for p, q in zip(before[i].parameters(), after[i].parameters()))
        assert same == (i < 2), f"layer {i}"
    for (name, p), q in zip(base.named_parameters(), new.parameters()):
        if "layers" not in name:
            assert torch.equal(p, q), name
    losses = json.loads((folder / "tuning.json").read_text())["losses"]
    assert len(losses) == 12 and sum(losses[-3:]) < sum(losses[:3])


def test_folder_loads_as_bridge(tuned):
    _cfg, folder = tuned
    model = load_tuned(folder)
    hf = AutoModelForCausalLM.from_pretrained(folder).eval()
    tokens = model.to_tokens("the cat sat", prepend_bos=False)
    torch.testing.assert_close(model(tokens).log_softmax(-1), hf(tokens).logits.log_softmax(-1), atol=1e-4, rtol=1e-4)
    assert "tuned" in model.cfg.model_name


def test_cache_key_and_reuse(tiny_folder, tuned, tmp_path, monkeypatch):
    cfg, folder = tuned
    monkeypatch.setenv("WORKBENCH_CACHE", str(tmp_path))
    assert tuned_dir(cfg, TEXTS) == tuned_dir(cfg, TEXTS) != tuned_dir(cfg.replace(steps=13), TEXTS)
    assert tuned_dir(cfg, TEXTS) != tuned_dir(cfg, TEXTS[:-1])
    assert str(tuned_dir(cfg, TEXTS)).startswith(str(tmp_path / "tuned"))
    # an existing folder is returned without training again
    stamp = (folder / "tuning.json").stat().st_mtime_ns
    assert tune_last_layers(cfg, TEXTS, out=folder) == folder
    assert (folder / "tuning.json").stat().st_mtime_ns == stamp


def test_errors(tiny_folder):
    with pytest.raises(ValueError, match="positive"):
        TuneConfig(last_layers=0)
    with pytest.raises(ValueError, match="batch_size"):
        tune_last_layers(TuneConfig(model=str(tiny_folder), batch_size=8), TEXTS[:3], out=tiny_folder / "never")
    with pytest.raises(FileNotFoundError, match=r"tuning\.json"):
        load_tuned(tiny_folder)


def test_trains_on_the_chat_reply_format_it_is_scored_on(tiny_folder, tmp_path):
    """The first step's loss is the base's loss on the reply tokens of the chat-wrapped texts (by hand), and
    tuning.json states the budget."""
    from transformers import AutoTokenizer

    from workbench.irm.text import encode_replies

    cfg = TuneConfig(model=str(tiny_folder), last_layers=1, steps=2, batch_size=len(TEXTS), lr=3e-3)
    folder = tune_last_layers(cfg, TEXTS, out=tmp_path / "tuned")
    meta = json.loads((folder / "tuning.json").read_text())
    tok = AutoTokenizer.from_pretrained(tiny_folder)
    encoded = encode_replies(tok, TEXTS, user_prompt="Write a tweet.", system_prompt="", max_len=48)
    prompt = tok.apply_chat_template(
        [{"role": "system", "content": ""}, {"role": "user", "content": "Write a tweet."}],
        tokenize=False,
        add_generation_prompt=True,
    )
    assert tok.decode(encoded[0].ids).startswith(prompt) and TEXTS[0] in tok.decode(encoded[0].ids)
    base = AutoModelForCausalLM.from_pretrained(tiny_folder).eval()
    total, count = 0.0, 0
    with torch.no_grad():
        for e in encoded:
            logp = base(torch.tensor([e.ids])).logits[0].log_softmax(-1)
            for t in range(1, len(e.ids)):
                if e.scored[t]:
                    total, count = total - float(logp[t - 1, e.ids[t]]), count + 1
    assert meta["losses"][0] == pytest.approx(total / count, abs=1e-4)
    assert 0 < count < sum(len(e.ids) for e in encoded)  # the prompt tokens are not scored
    layer = decoder_layers(base)[-1]
    assert meta["budget"] == {
        "steps": 2,
        "tokens_seen": 2 * sum(len(e.ids) for e in encoded),
        "scored_tokens": 2 * count,
        "trainable_parameters": sum(p.numel() for p in layer.parameters()),
    }


def test_stopping_rule_reads_held_out_loss(tiny_folder, tmp_path):
    """With patience, the held-out tenth is evaluated every eval_every steps with the tuned layers as they were
    then; the last evaluation equals the saved model's reply loss on those texts, one text at a time by hand; a run
    stops at the rule (converged) or at the ceiling (not converged), and tuning.json says which."""
    from transformers import AutoTokenizer

    from workbench.irm.text import encode_replies
    from workbench.training import StoppingRule

    texts = [f"{t} number {i}" for i, t in enumerate(TEXTS * 3)]
    cfg = TuneConfig(
        model=str(tiny_folder),
        last_layers=1,
        steps=60,
        batch_size=4,
        lr=3e-2,
        patience=2,
        min_improvement=0.2,
        eval_every=2,
    )
    folder = tune_last_layers(cfg, texts, out=tmp_path / "tuned")
    meta = json.loads((folder / "tuning.json").read_text())
    curve = meta["eval_curve"]
    steps = [s for s, _ in curve]
    assert steps == list(range(2, meta["budget"]["steps"] + 1, 2))
    assert meta["converged"] and meta["budget"]["steps"] < 60
    assert StoppingRule(2, 0.2).converged([v for _, v in curve])
    assert not StoppingRule(2, 0.2).converged([v for _, v in curve[:-1]])
    assert meta["stopping_rule"] == StoppingRule(2, 0.2).describe()
    held = texts[len(texts) - len(texts) // 10 :]
    tok = AutoTokenizer.from_pretrained(tiny_folder)
    tuned = AutoModelForCausalLM.from_pretrained(folder).eval()
    total, count = 0.0, 0
    with torch.no_grad():
        for e in encode_replies(tok, held, user_prompt="Write a tweet.", system_prompt="", max_len=48):
            logp = tuned(torch.tensor([e.ids])).logits[0].log_softmax(-1)
            for t in range(1, len(e.ids)):
                if e.scored[t]:
                    total, count = total - float(logp[t - 1, e.ids[t]]), count + 1
    assert curve[-1][1] == pytest.approx(total / count, rel=1e-5)

    ceiling = tune_last_layers(cfg.replace(steps=4, min_improvement=1e-6, patience=5), texts, out=tmp_path / "c")
    meta = json.loads((ceiling / "tuning.json").read_text())
    assert meta["budget"]["steps"] == 4 and meta["converged"] is False and len(meta["eval_curve"]) == 2
