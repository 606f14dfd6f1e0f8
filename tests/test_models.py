import time

import pytest
import torch

import workbench.models as models
from tests.helpers import tiny_llama_config
from workbench.models import REGISTRY, boot, load_hf, load_model


@pytest.mark.real_model
def test_default_model_completes_offline(smollm2, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    text = smollm2.generate("The capital of France is", max_new_tokens=8, do_sample=False, verbose=False)
    assert "Paris" in text


@pytest.mark.real_model
def test_bridge_generate_equals_hf_greedy(smollm2):
    hf, tok, _, _ = load_hf("smollm2-135m-instruct")
    ids = tok("The capital of France is", return_tensors="pt").input_ids
    ref = hf.generate(ids, max_new_tokens=10, do_sample=False)
    ours = smollm2.generate(ids, max_new_tokens=10, do_sample=False, verbose=False)
    assert torch.equal(ours, ref)
    assert torch.equal(smollm2.to_tokens("The capital of France is"), ids)  # no <|im_start|> BOS


@pytest.mark.real_model
def test_bridge_logits_equal_hf_logits():
    hf, tok, hf_id, spec = load_hf("smollm2-135m-instruct")
    ids = tok("Interpretability is the study of", return_tensors="pt").input_ids
    with torch.no_grad():
        ref = hf(ids).logits  # before the bridge folds norms into the HF weights
    raw = boot(hf, tok, hf_id, compat=False)
    with torch.no_grad():
        assert (raw(ids) - ref).abs().max() <= 1e-4
    hf, tok, hf_id, spec = load_hf("smollm2-135m-instruct")
    compat = boot(hf, tok, hf_id, prepend_bos=spec.prepend_bos)
    with torch.no_grad():
        got = compat(ids)
    # compatibility mode centres the unembedding: logits move by a constant per position
    assert (got.log_softmax(-1) - ref.log_softmax(-1)).abs().max() <= 1e-4


@pytest.mark.real_model
@pytest.mark.slow
def test_second_load_comes_from_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("WORKBENCH_CACHE", str(tmp_path))
    target = models.cached_model_dir("smollm2-135m-instruct")
    assert not target.exists()
    t0 = time.perf_counter()
    first = load_model("smollm2-135m-instruct")
    t_first = time.perf_counter() - t0
    assert (target / "config.json").exists() and any(target.glob("*.safetensors"))
    assert not [p for p in tmp_path.joinpath("models").iterdir() if p.name.startswith(".")]  # no temp dirs left

    def no_dequantize(*args, **kwargs):
        raise AssertionError("the second load de-quantised the GGUF instead of reading the cache")

    monkeypatch.setattr(models, "_dequantize_gguf", no_dequantize)
    t0 = time.perf_counter()
    second = load_model("smollm2-135m-instruct")
    t_second = time.perf_counter() - t0
    tokens = torch.tensor([[504, 3575, 282, 4649, 314]])
    with torch.no_grad():
        assert torch.allclose(first(tokens), second(tokens), atol=1e-5)
    print(f"SmolLM2 load: first {t_first:.1f} s, cached {t_second:.1f} s")


def test_unknown_name_lists_known_names():
    with pytest.raises(ValueError, match="Known names: smollm2-135m-instruct") as err:
        load_model("smollm2-135m-instrct")
    assert "Did you mean 'smollm2-135m-instruct'" in str(err.value)


def test_missing_path_raises(tmp_path):
    with pytest.raises(FileNotFoundError, match="no model directory"):
        load_model(str(tmp_path / "nope"))
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_model("llama-2-7b-chat", local_dir=tmp_path / "nope")


def test_hub_unreachable_names_the_fix(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv(REGISTRY["llama-2-7b-chat"].env_var, raising=False)
    with pytest.raises(OSError, match=r"no network.*local directory.*WORKBENCH_MODEL_DIR_LLAMA_2_7B_CHAT_HF"):
        load_model("llama-2-7b-chat")


def test_local_directory_loads_through_the_real_path(tokenizer, tmp_path, monkeypatch):
    """A Llama saved as an HF folder loads by path and by registry name + env var, like Llama-2-7b."""
    from transformers import LlamaForCausalLM

    torch.manual_seed(3)
    hf = LlamaForCausalLM(tiny_llama_config(len(tokenizer))).eval()
    hf.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    tokens = torch.tensor([[5, 17, 300, 42]])
    with torch.no_grad():
        expected = hf(tokens).logits.log_softmax(-1)
        by_path = load_model(tmp_path)
        assert (by_path(tokens).log_softmax(-1) - expected).abs().max() < 1e-5
        monkeypatch.setenv(REGISTRY["llama-2-7b-chat"].env_var, str(tmp_path))
        by_name = load_model("llama-2-7b-chat")
        assert (by_name(tokens).log_softmax(-1) - expected).abs().max() < 1e-5
    assert by_name.cfg.model_name == "meta-llama/Llama-2-7b-chat-hf"


def test_unsupported_architecture(tokenizer):
    from transformers import AutoModelForSequenceClassification, BertConfig

    hf = AutoModelForSequenceClassification.from_config(
        BertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64)
    )
    hf.config.architectures = ["MyOwnArchitecture"]
    with pytest.raises(ValueError, match="unsupported architecture 'MyOwnArchitecture'"):
        boot(hf, tokenizer, "mine")


def test_atomic_dir_never_leaves_half_written_folders(tmp_path):
    target = tmp_path / "out"
    with pytest.raises(RuntimeError), models.atomic_dir(target) as tmp:
        (tmp / "a.txt").write_text("partial")
        raise RuntimeError("interrupted")
    assert list(tmp_path.iterdir()) == []
    with models.atomic_dir(target) as tmp:
        (tmp / "a.txt").write_text("first")
    with models.atomic_dir(target) as tmp:  # a concurrent writer finished first: theirs stays
        (tmp / "a.txt").write_text("second")
    assert (target / "a.txt").read_text() == "first"
    with models.atomic_dir(target, replace=True) as tmp:
        (tmp / "a.txt").write_text("third")
    assert (target / "a.txt").read_text() == "third" and [p.name for p in tmp_path.iterdir()] == ["out"]


def test_frozen_restores_flags_even_on_error(tiny_llama):
    params = list(tiny_llama.parameters())
    params[0].requires_grad_(False)
    before = [p.requires_grad for p in params]
    with pytest.raises(RuntimeError), models.frozen(tiny_llama):
        assert not any(p.requires_grad for p in tiny_llama.parameters())
        raise RuntimeError("boom")
    assert [p.requires_grad for p in params] == before
    params[0].requires_grad_(True)


TEXTS = ("The cat sat on the mat.", " This movie was really bad", "Hello,\nworld")


@pytest.fixture(scope="module")
def bos_folders(tokenizer, tmp_path_factory):
    """The same tiny Llama saved twice: with a tokenizer that adds BOS to raw text, and with one that adds none."""
    from transformers import AutoTokenizer, LlamaForCausalLM

    root = tmp_path_factory.mktemp("bos")
    torch.manual_seed(3)
    hf = LlamaForCausalLM(tiny_llama_config(len(tokenizer))).eval()
    folders = {}
    for adds in (True, False):
        folders[adds] = root / f"adds-bos-{adds}"
        hf.save_pretrained(folders[adds])
        AutoTokenizer.from_pretrained(models.ensure_cached(models.DEFAULT_MODEL), add_bos_token=adds).save_pretrained(
            folders[adds]
        )
    return folders


@pytest.mark.parametrize("adds_bos", [True, False])
def test_raw_text_tokens_are_the_tokenizers_own(bos_folders, monkeypatch, adds_bos):
    """Folder, registry (hub model from a local folder) and from_config loads all encode text as HF's tokenizer does."""
    from transformers import AutoTokenizer

    folder = bos_folders[adds_bos]
    hf_tok = AutoTokenizer.from_pretrained(folder)
    expected = [hf_tok(text)["input_ids"] for text in TEXTS]
    assert [ids[0] == hf_tok.bos_token_id for ids in expected] == [adds_bos] * len(TEXTS)
    monkeypatch.setenv(REGISTRY["llama-2-7b-chat"].env_var, str(folder))
    by_path, by_name = load_model(folder), load_model("llama-2-7b-chat")
    built = models.from_config(tiny_llama_config(len(hf_tok)), hf_tok)
    for model in (by_path, by_name, built):
        assert model.cfg.default_prepend_bos is adds_bos
        assert [model.to_tokens(text)[0].tolist() for text in TEXTS] == expected
        assert model.tokenizer.chat_template == hf_tok.chat_template
    assert models.tokenizer_prepends_bos(models.load_tokenizer(folder)) is adds_bos


def test_an_explicit_prepend_bos_still_wins(tokenizer):
    model = models.from_config(tiny_llama_config(len(tokenizer)), tokenizer, prepend_bos=True)
    assert model.to_tokens("a b")[0].tolist() == [tokenizer.bos_token_id, *tokenizer("a b")["input_ids"]]


@pytest.mark.real_model
def test_a_saved_copy_of_the_default_model_tokenizes_as_the_default(smollm2, tmp_path):
    hf, tok, _, _ = load_hf(models.DEFAULT_MODEL)
    hf.save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    copy = load_model(tmp_path)
    for text in TEXTS:
        assert copy.to_tokens(text).tolist() == smollm2.to_tokens(text).tolist() == [tok(text)["input_ids"]]
    assert copy.cfg.default_prepend_bos is smollm2.cfg.default_prepend_bos is False
    assert copy.tokenizer.chat_template == smollm2.tokenizer.chat_template == tok.chat_template
