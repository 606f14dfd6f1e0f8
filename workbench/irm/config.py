"""Configuration of the Injectable Realignment Model (IRM) and of its training.

The IRM of *The Mysterious Case of Neuron 1512* (Smith et al., 2024) reads one activation of a frozen
language model and adds its output into the residual stream of several layers. Where it reads and
where it writes are hook points named by kind and layer; a write point that runs before the read
point could never see the IRM's output, so the config refuses it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

from workbench.config import Config, Count, NonNegative, Positive
from workbench.hooks import format_hook_name
from workbench.training import StoppingRule

__all__ = ["READ_KINDS", "WRITE_KINDS", "IRMConfig", "ReadKind", "TrainConfig", "WriteKind", "point_rank"]

# Order of the hook points inside one block; a block's points all run after the previous block's.
ReadKind = Literal["resid_pre", "attn_out", "resid_mid", "mlp_out", "resid_post"]
"""Hook kinds the IRM may read (one per forward), in the order they run inside a block."""
WriteKind = Literal["resid_pre", "resid_mid", "resid_post"]
"""Hook kinds the IRM may add into (residual-stream points)."""
READ_KINDS: tuple[ReadKind, ...] = get_args(ReadKind)
WRITE_KINDS: tuple[WriteKind, ...] = get_args(WriteKind)
_STAGE = {kind: i for i, kind in enumerate(READ_KINDS)}


def point_rank(kind: ReadKind, layer: int) -> tuple[int, int]:
    """Position of a hook point in the forward pass: later points compare greater."""
    return (layer, _STAGE[kind])


@dataclass(frozen=True)
class IRMConfig(Config):
    """Where the IRM reads and writes, and its shape (the paper's: 5 linear layers, width 3·d_model)."""

    read_hook: ReadKind = "attn_out"
    """Hook kind the IRM reads: attn_out (default) or resid_mid (the original code), resid_pre, mlp_out, resid_post."""
    read_layer: int = 0
    """Layer of the read hook."""
    write_hook: WriteKind = "resid_post"
    """Hook kind the IRM output is added into: resid_post (default), resid_mid or resid_pre."""
    layers: tuple[int, ...] = ()
    """Layers whose write hook receives a slice of the IRM output; empty = every layer."""
    hidden_mult: Positive = 3.0
    """Hidden width as a multiple of d_model (paper: 3)."""
    n_hidden: int = 4
    """Number of hidden layers (paper: 4, i.e. 5 linear layers)."""

    def __post_init__(self) -> None:
        if self.read_hook not in READ_KINDS:
            raise ValueError(
                f"read_hook {self.read_hook!r} is not a readable hook kind; choose one of {', '.join(READ_KINDS)}"
            )
        if self.write_hook not in WRITE_KINDS:
            raise ValueError(
                f"write_hook {self.write_hook!r} is not a residual-stream point; choose one of {', '.join(WRITE_KINDS)}"
            )
        if self.read_layer < 0 or any(layer < 0 for layer in self.layers):
            raise ValueError("layers must be given as non-negative indices (the config does not know n_layers)")
        if len(set(self.layers)) != len(self.layers):
            raise ValueError(f"layers {self.layers} repeat a layer; list each once")
        if self.hidden_mult <= 0 or self.n_hidden < 0:
            raise ValueError("hidden_mult must be > 0 and n_hidden >= 0")
        first = min(self.layers) if self.layers else 0
        if point_rank(self.write_hook, first) < point_rank(self.read_hook, self.read_layer):
            raise ValueError(
                f"configuration error: the IRM writes at {format_hook_name(self.write_hook, first)}, which runs "
                f"before its read point {format_hook_name(self.read_hook, self.read_layer)}, so the write would "
                f"never see the IRM's output. Write only at layers whose {self.write_hook} comes after the read "
                f"(e.g. layers >= {self.read_layer + 1}) or read earlier."
            )

    def resolve_layers(self, n_layers: int) -> tuple[int, ...]:
        """The write layers for a model with ``n_layers`` layers (checked against the range)."""
        layers = self.layers or tuple(range(n_layers))
        bad = [layer for layer in (*layers, self.read_layer) if layer >= n_layers]
        if bad:
            raise IndexError(f"layers {bad} are out of range: the model has layers 0..{n_layers - 1}")
        return tuple(sorted(layers))

    def hidden_width(self, d_model: int) -> int:
        """Hidden width for a model of width ``d_model``."""
        return max(1, round(self.hidden_mult * d_model))


@dataclass(frozen=True)
class TrainConfig(Config):
    """How an IRM is trained: AdamW on next-token loss of the realigned model, the LM frozen."""

    steps: Count = 200
    """Most optimizer steps: the ceiling when patience > 0 (training stops earlier once held-out loss converged)."""
    batch_size: Count = 8
    """Texts per micro-batch."""
    grad_accum: Count = 1
    """Micro-batches per optimizer step."""
    lr: Positive = 1e-3
    """AdamW learning rate (constant after warm-up)."""
    warmup: int = 10
    """Linear learning-rate warm-up steps."""
    weight_decay: NonNegative = 0.0
    """AdamW weight decay."""
    l1: NonNegative = 0.0
    """Coefficient of the L1 penalty on the IRM output (mean absolute value per token, layer and dimension)."""
    max_grad_norm: NonNegative = 1.0
    """Gradient-norm clip (0 = none)."""
    max_len: Count = 48
    """Longest training sequence in tokens (prompt + reply); longer ones are cut."""
    user_prompt: str = "Write a tweet."
    """Chat models see each text as the assistant's reply to this user message."""
    system_prompt: str = ""
    """System turn of the chat format ("" = an empty one; the template's default costs ~17 tokens per text)."""
    chat: bool = True
    """Wrap texts in the tokenizer's chat template when it has one (loss on the reply tokens only)."""
    eval_every: int = 50
    """Held-out evaluation every this many steps (0 = only at the end)."""
    eval_texts: Count = 64
    """Held-out texts used by the evaluations during training."""
    patience: int = 0
    """Stopping rule: stop once the best held-out loss improved by less than min_improvement over the last
    patience evaluations (0 = no rule: train all steps)."""
    min_improvement: NonNegative = 0.005
    """Stopping rule: relative improvement of the best held-out loss below which training has converged."""
    checkpoint_every: int = 0
    """Checkpoint every this many steps (0 = only at the end; needs an output folder)."""
    keep_checkpoints: Count = 2
    """Most recent checkpoints kept."""
    amp: bool = True
    """bf16 autocast on CUDA (ignored on CPU)."""
    seed: int = 0
    """Seed of the IRM initialisation and the data order."""

    def __post_init__(self) -> None:
        if min(self.steps, self.batch_size, self.grad_accum, self.max_len) < 1:
            raise ValueError("steps, batch_size, grad_accum and max_len must be >= 1")
        if self.lr <= 0 or self.l1 < 0:
            raise ValueError("lr must be > 0 and l1 >= 0")
        if self.patience < 0:
            raise ValueError(f"patience={self.patience} must be >= 0 (0 turns the stopping rule off)")
        if self.patience and self.eval_every < 1:
            raise ValueError("the stopping rule (patience > 0) reads held-out evaluations: set eval_every >= 1")
        self.stopping_rule  # noqa: B018 (building the rule checks min_improvement now, not when training starts)

    @property
    def stopping_rule(self) -> StoppingRule | None:
        """The convergence rule these fields set (``None`` when patience is 0)."""
        return StoppingRule(self.patience, self.min_improvement) if self.patience else None
