"""Shared fixtures: tiny random-weight bridges built from real configs, and the real default model.

Tiny models use the default model's real tokenizer, so string and token paths are the real ones.
Fixtures that other test modules need only locally belong in those modules, not here.
"""

import copy

import pytest
import torch
from transformers import AutoTokenizer

from tests.helpers import tiny_gpt2_config, tiny_llama_config
from workbench.models import DEFAULT_MODEL, boot, ensure_cached, from_config, load_model


@pytest.fixture(scope="session")
def tokenizer():
    """SmolLM2's tokenizer (49152 tokens), from the cached default model."""
    return AutoTokenizer.from_pretrained(ensure_cached(DEFAULT_MODEL))


@pytest.fixture(scope="module")
def tiny_llama(tokenizer):
    """Tiny random-weight Llama bridge in compatibility mode."""
    return from_config(tiny_llama_config(len(tokenizer)), tokenizer, seed=0, prepend_bos=False)


@pytest.fixture(scope="module")
def tiny_llama_pair(tokenizer):
    """The same tiny Llama twice: in bfloat16, and in float32 with the bfloat16 weights (exactly equal)."""
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    hf = AutoModelForCausalLM.from_config(tiny_llama_config(len(tokenizer)), attn_implementation="eager").eval()
    half = hf.to(torch.bfloat16)
    full = copy.deepcopy(half).float()
    return tuple(boot(m, tokenizer, type(m).__name__, prepend_bos=False) for m in (half, full))


@pytest.fixture(scope="module")
def tiny_gpt2(tokenizer):
    """Tiny random-weight GPT-2 bridge in compatibility mode."""
    return from_config(tiny_gpt2_config(len(tokenizer)), tokenizer, seed=0)


@pytest.fixture(scope="session")
def smollm2():
    """The real offline default model, loaded once per test session. Do not modify its weights."""
    torch.manual_seed(0)
    return load_model(DEFAULT_MODEL)


@pytest.fixture(scope="module")
def tiny_dir(tokenizer, tmp_path_factory):
    """A tiny random Llama saved as a Hugging Face folder with the default model's tokenizer (what load_model reads)."""
    from transformers import AutoModelForCausalLM

    path = tmp_path_factory.mktemp("tiny_llama_hf")
    hf = AutoModelForCausalLM.from_config(tiny_llama_config(len(tokenizer)), attn_implementation="eager")
    hf.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path
