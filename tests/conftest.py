"""Shared fixtures: tiny random-weight bridges built from real configs, and the real default model.

Tiny models use the default model's real tokenizer, so string and token paths are the real ones.
Fixtures that other test modules need only locally belong in those modules, not here.
"""

import copy

import pytest
import torch
from transformers import AutoTokenizer, GPT2Config, LlamaConfig

from workbench.models import DEFAULT_MODEL, boot, ensure_cached, from_config, load_model


@pytest.fixture(scope="session")
def tokenizer():
    """SmolLM2's tokenizer (49152 tokens), from the cached default model."""
    return AutoTokenizer.from_pretrained(ensure_cached(DEFAULT_MODEL))


def tiny_llama_config(vocab_size: int, n_layers: int = 2) -> LlamaConfig:
    """A 2-layer Llama (RMSNorm, rotary, SwiGLU, grouped-query attention) of width 64."""
    return LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=n_layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        tie_word_embeddings=False,
    )


def tiny_gpt2_config(vocab_size: int, n_layers: int = 2) -> GPT2Config:
    """A 2-layer GPT-2 (LayerNorm, learned positions, GELU MLP) of width 64."""
    return GPT2Config(vocab_size=vocab_size, n_embd=64, n_layer=n_layers, n_head=4, n_positions=256)


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
    hf.config.architectures = [type(hf).__name__]
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
