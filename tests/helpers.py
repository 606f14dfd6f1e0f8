"""Builders shared by test modules and the doctest namespace (fixtures live in conftest.py)."""

from collections.abc import Iterator
from contextlib import contextmanager

import jaxtyping
from transformers import GPT2Config, LlamaConfig


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
        architectures=["LlamaForCausalLM"],
    )


def tiny_gpt2_config(vocab_size: int, n_layers: int = 2) -> GPT2Config:
    """A 2-layer GPT-2 (LayerNorm, learned positions, GELU MLP) of width 64."""
    return GPT2Config(
        vocab_size=vocab_size, n_embd=64, n_layer=n_layers, n_head=4, n_positions=256, architectures=["GPT2LMHeadModel"]
    )


@contextmanager
def without_type_checks() -> Iterator[None]:
    """Run workbench as its users do, without the test run's jaxtyping + beartype checks.

    For tests of the library's own input checks on values the annotations also reject (a word outside
    a ``Literal``): under the checks the type checker raises first.
    """
    jaxtyping.config.update("jaxtyping_disable", True)
    try:
        yield
    finally:
        jaxtyping.config.update("jaxtyping_disable", False)
