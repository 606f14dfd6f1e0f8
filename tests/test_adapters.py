"""Bring your own fine-tune: a LoRA fine-tune written by plain peft + transformers (not the workbench's tuning code),
as an adapter folder and as a merged folder, loaded, compared with its base, and refused when the pair differs."""

import json
import shutil

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

import experiments.model_diff.run as model_diff
import workbench.models
from experiments.model_diff import ModelDiffConfig, compare
from tests.helpers import tiny_llama_config
from workbench.data.prompts import SENTIMENT_PROMPTS, prompt_set
from workbench.hooks import ModelSide
from workbench.models import load_model
from workbench.pairs import PairMismatch, check_pair, share_weights
from workbench.tuning import make_tuned

TEXT = "This movie was really bad, and the food was worse."


@pytest.fixture(scope="module")
def byo(tokenizer, tmp_path_factory):
    """A tiny 8-layer Llama base folder, a LoRA fine-tune of it (adapter and merged folders), the merged HF model."""
    from peft import LoraConfig, get_peft_model

    root = tmp_path_factory.mktemp("byo")
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(tiny_llama_config(len(tokenizer), n_layers=8)).save_pretrained(root / "base")
    tokenizer.save_pretrained(root / "base")
    # what a user's script does: load the base, wrap it with LoRA, train a few steps, save the adapter, merge, save
    hf = AutoModelForCausalLM.from_pretrained(root / "base")
    lora = LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, target_modules=["q_proj", "v_proj", "down_proj"])
    tuned = get_peft_model(hf, lora)
    optimizer = torch.optim.AdamW([p for p in tuned.parameters() if p.requires_grad], lr=1e-2)
    batch = tokenizer(list(SENTIMENT_PROMPTS[:4]), return_tensors="pt")
    for _ in range(6):
        tuned(**batch, labels=batch["input_ids"]).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    tuned.save_pretrained(root / "adapter")
    merged = tuned.merge_and_unload().eval()
    merged.save_pretrained(root / "merged")
    tokenizer.save_pretrained(root / "merged")
    shutil.copytree(root / "base", root / "copy")
    return root, merged


def test_adapter_and_merged_folders_give_the_hf_logits(byo, tokenizer):
    root, merged = byo
    assert json.loads((root / "adapter" / "adapter_config.json").read_text())["base_model_name_or_path"] == str(
        root / "base"
    )
    tokens = torch.tensor([tokenizer(TEXT)["input_ids"]])
    with torch.no_grad():
        expected = merged(tokens).logits
        base = AutoModelForCausalLM.from_pretrained(root / "base")(tokens).logits
        assert (base - expected).abs().max() > 1e-2  # the fine-tune changed the model
        for folder in ("adapter", "merged"):
            raw = load_model(root / folder, compat=False)
            assert (raw(tokens) - expected).abs().max() < 1e-4
            compat = load_model(root / folder)  # centred unembedding: logits move by a constant per position
            assert (compat(tokens).log_softmax(-1) - expected.log_softmax(-1)).abs().max() < 1e-4
            assert compat.to_tokens(TEXT).tolist() == tokens.tolist()


def test_adapter_base_can_be_named_and_must_fit(byo, tokenizer, tmp_path):
    root, merged = byo
    tokens = torch.tensor([tokenizer(TEXT)["input_ids"]])
    with torch.no_grad():
        moved = load_model(root / "adapter", base=root / "copy", compat=False)(tokens)
        assert (moved - merged(tokens).logits).abs().max() < 1e-4
    AutoModelForCausalLM.from_config(tiny_llama_config(len(tokenizer), n_layers=2)).save_pretrained(tmp_path / "other")
    tokenizer.save_pretrained(tmp_path / "other")
    with pytest.raises(ValueError, match=r"does not fit the base .*other: 36 adapter weights have no place .*base="):
        load_model(root / "adapter", base=tmp_path / "other")  # LoRA of layers 2..7: 3 modules, A and B each
    (tmp_path / "empty").mkdir()
    shutil.copy(root / "adapter" / "adapter_config.json", tmp_path / "empty")
    with pytest.raises(FileNotFoundError, match="no adapter weights"):
        load_model(tmp_path / "empty")
    with pytest.raises(ValueError, match="base= only goes with an adapter folder"):
        load_model(root / "merged", base=root / "base")


def test_share_weights_keeps_one_copy_of_what_tuning_left(byo):
    root, _ = byo
    base, tuned = load_model(root / "base"), load_model(root / "adapter")
    tokens = base.to_tokens(TEXT)
    with torch.no_grad():
        before = tuned(tokens)
        saved = share_weights(base, tuned)
        assert torch.equal(tuned(tokens), before)
    params = dict(base.named_parameters())
    same = {n for n, p in tuned.named_parameters() if p is params.get(n)}
    assert saved == sum(params[n].numel() * params[n].element_size() for n in same)
    # LoRA trained q, v and down projections: those stay the tuned model's own; k, o, up, gate, embeddings are shared
    assert any("k_proj" in n or ".k." in n for n in same) and any("embed" in n for n in same)
    assert not any(token in n for n in same for token in ("q_proj", "v_proj", "down_proj", ".q.", ".v."))


def _compare(root, tuned):
    """What ``python -m experiments.model_diff --base BASE --tuned FOLDER`` computes, without writing the report."""
    cfg = ModelDiffConfig(base=str(root / "base"), tuned=str(root / tuned), quick=True, progress=False)
    base, other = load_model(cfg.base), make_tuned("supervised", folder=cfg.tuned).model
    check_pair(base, other)
    prompts = prompt_set(cfg.prompts, cfg.answers)
    return compare(ModelSide(base, name="base"), ModelSide(other, name="tuned"), prompts, top_heads=2)


def test_model_diff_of_a_foreign_fine_tune(byo):
    """Adapter and merged folder give the same per-layer numbers; the base against a copy of itself differs nowhere."""
    root, _ = byo
    adapter, merged = _compare(root, "adapter"), _compare(root, "merged")
    gaps = adapter.summary()["logit_lens_gap_by_point"]
    assert max(abs(v) for v in gaps.values()) > 1e-3  # the fine-tune moved the logit lens somewhere
    assert merged.summary()["logit_lens_gap_by_point"] == pytest.approx(gaps, abs=1e-5)
    torch.testing.assert_close(merged.attributions.layer_diff, adapter.attributions.layer_diff, atol=1e-5, rtol=0)
    assert set(adapter.sweeps) == {"resid_pre", "attn_out", "mlp_out", "head"}
    for kind, sweep in adapter.sweeps.items():
        torch.testing.assert_close(merged.sweeps[kind].values, sweep.values, atol=1e-5, rtol=0)
    null = _compare(root, "copy")
    summary = null.summary()
    assert summary["logit_diff_tuned"] == summary["logit_diff_base"]
    assert set(summary["logit_lens_gap_by_point"].values()) == {0.0}
    assert not null.attributions.layer_diff.any() and not null.attributions.head_diff.any()
    assert all(torch.equal(s.values, torch.full_like(s.values, s.baseline)) for s in null.sweeps.values())
    assert summary["joint_head_patch_normalized"] is None and "patch_head" in null.figures()


@pytest.mark.parametrize("change", ["bos", "vocab"])
def test_a_pair_that_tokenizes_differently_is_refused_before_model_work(byo, tmp_path, monkeypatch, change):
    root, _ = byo
    shutil.copytree(root / "merged", tmp_path / "tuned")
    tok = AutoTokenizer.from_pretrained(root / "merged", add_bos_token=change == "bos")
    if change == "vocab":
        tok.add_tokens(["<|new_token|>"], special_tokens=True)
    tok.save_pretrained(tmp_path / "tuned")

    def no_weights(*args, **kwargs):
        raise AssertionError("weights loaded before the pair was checked")

    monkeypatch.setattr(workbench.models, "load_hf", no_weights)
    monkeypatch.setattr(model_diff, "load_model", no_weights)
    expected = {"bos": r"BOS convention: --base prepends no BOS, --tuned prepends BOS", "vocab": r"vocabulary: .*49153"}
    with pytest.raises(PairMismatch, match=expected[change]) as err:
        model_diff.main(ModelDiffConfig(base=str(root / "base"), tuned=str(tmp_path / "tuned"), out=str(tmp_path)))
    assert "save_pretrained" in str(err.value) or "base it was tuned from" in str(err.value)
    if change == "vocab":
        assert "'<|new_token|>'" in str(err.value) and "special tokens" in str(err.value)


def test_check_pair_on_bridges_and_what_it_reports(tiny_llama, tokenizer):
    shared = check_pair(tiny_llama, tokenizer)
    assert shared == check_pair(tokenizer, tiny_llama)
    assert shared.to_dict()["description"].startswith("49152-token vocabulary")
    assert "no BOS prepended to raw text" in shared.describe() and "bos=<|im_start|>" in shared.describe()
    with_bos = workbench.models.from_config(tiny_llama_config(len(tokenizer)), tokenizer, prepend_bos=True)
    with pytest.raises(PairMismatch, match="BOS convention: base prepends no BOS, tuned prepends BOS"):
        check_pair(tiny_llama, with_bos)
    other = AutoTokenizer.from_pretrained(workbench.models.ensure_cached(workbench.models.DEFAULT_MODEL))
    other.chat_template = "{{ messages[0]['content'] }}"
    assert check_pair(tokenizer, other) == shared
    with pytest.raises(PairMismatch, match="chat template"):
        check_pair(tokenizer, other, chat=True)


@pytest.mark.real_model
@pytest.mark.slow
def test_quick_model_diff_of_a_lora_adapter_of_the_default_model(tmp_path):
    """``python -m experiments.model_diff --quick --tuned FOLDER``: a peft adapter of SmolLM2 and its merged folder."""
    from peft import LoraConfig, get_peft_model

    from experiments.cli import parse_config
    from workbench.models import DEFAULT_MODEL, REGISTRY, ensure_cached

    folder = ensure_cached(DEFAULT_MODEL)
    tok = AutoTokenizer.from_pretrained(folder)
    torch.manual_seed(0)
    lora = LoraConfig(r=8, lora_alpha=16, lora_dropout=0.0, target_modules=["q_proj", "v_proj", "o_proj"])
    tuned = get_peft_model(AutoModelForCausalLM.from_pretrained(folder), lora)
    optimizer = torch.optim.AdamW([p for p in tuned.parameters() if p.requires_grad], lr=3e-3)
    batch = tok(["This movie was really bad", "The food was really bad"], return_tensors="pt")
    for _ in range(4):
        tuned(**batch, labels=batch["input_ids"]).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    tuned.save_pretrained(tmp_path / "adapter")
    config = json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())  # as if tuned on the hub model
    config["base_model_name_or_path"] = REGISTRY[DEFAULT_MODEL].hf_id
    (tmp_path / "adapter" / "adapter_config.json").write_text(json.dumps(config))
    tuned.merge_and_unload().save_pretrained(tmp_path / "merged")
    tok.save_pretrained(tmp_path / "merged")

    runs = {
        name: model_diff.main(
            parse_config(
                ModelDiffConfig, ["--quick", "--tuned", str(tmp_path / name), "--out", str(tmp_path / f"o-{name}")]
            )
        )
        for name in ("adapter", "merged")
    }
    adapter, merged = runs["adapter"], runs["merged"]
    assert adapter["logit_diff_tuned"] > adapter["logit_diff_base"] + 0.1  # tuned towards " bad"
    assert merged["logit_lens_gap_by_point"] == pytest.approx(adapter["logit_lens_gap_by_point"], abs=1e-4)
    assert merged["top_heads"] == adapter["top_heads"]
    assert merged["tokenization"] == adapter["tokenization"] and adapter["tokenization"]["prepend_bos"] is False
    assert adapter["weights_shared_mb"] > 100  # embeddings, MLPs, k projections: one copy for both models
