"""Builders shared by test modules and the doctest namespace (fixtures live in conftest.py)."""

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
    )


def tiny_gpt2_config(vocab_size: int, n_layers: int = 2) -> GPT2Config:
    """A 2-layer GPT-2 (LayerNorm, learned positions, GELU MLP) of width 64."""
    return GPT2Config(vocab_size=vocab_size, n_embd=64, n_layer=n_layers, n_head=4, n_positions=256)
