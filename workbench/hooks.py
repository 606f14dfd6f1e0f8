"""Hook names, checked against the model, and hooks that never outlive their ``with`` block.

Names follow TransformerLens's HookedTransformer convention (the bridge's compatibility mode):
``hook_name(model, "resid_post", 3) == "blocks.3.hook_resid_post"``. Every name is checked against
``model.hook_dict``; a typo raises :class:`KeyError` listing the closest real names, a layer out of
range raises :class:`IndexError` naming the valid range.

A :class:`ModelSide` is a bridge with hooks kept attached while it runs (e.g. base + an injected IRM):
one side of every comparison (patching, logit lens, attribution patching, diffing, views).
"""

from __future__ import annotations

import difflib
import weakref
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Literal, Protocol, runtime_checkable

import torch
from transformer_lens.hook_points import HookPoint
from transformer_lens.model_bridge import TransformerBridge

__all__ = [
    "HOOK_KINDS",
    "HookFn",
    "HookKind",
    "ModelSide",
    "as_side",
    "attach",
    "capture",
    "check_hook_name",
    "check_layer",
    "format_hook_name",
    "hook_name",
    "hook_names",
]

HookKind = Literal[
    "resid_pre",
    "resid_mid",
    "resid_post",
    "attn_out",
    "mlp_out",
    "z",
    "pattern",
    "q",
    "k",
    "v",
    "mlp_pre",
    "mlp_pre_linear",
    "mlp_post",
]
"""Short names of per-layer hook points (the keys of :data:`HOOK_KINDS`)."""

HOOK_KINDS: dict[HookKind, str] = {
    "resid_pre": "blocks.{layer}.hook_resid_pre",
    "resid_mid": "blocks.{layer}.hook_resid_mid",
    "resid_post": "blocks.{layer}.hook_resid_post",
    "attn_out": "blocks.{layer}.hook_attn_out",
    "mlp_out": "blocks.{layer}.hook_mlp_out",
    "z": "blocks.{layer}.attn.hook_z",
    "pattern": "blocks.{layer}.attn.hook_pattern",
    "q": "blocks.{layer}.attn.hook_q",
    "k": "blocks.{layer}.attn.hook_k",
    "v": "blocks.{layer}.attn.hook_v",
    "mlp_pre": "blocks.{layer}.mlp.hook_pre",
    "mlp_pre_linear": "blocks.{layer}.mlp.hook_pre_linear",
    "mlp_post": "blocks.{layer}.mlp.hook_post",
}
"""Short names of per-layer hook points and the full TransformerLens name they stand for."""


@runtime_checkable
class HookFn(Protocol):
    """A TransformerLens hook function: ``fn(activation, hook)`` returns a replacement activation or ``None``."""

    def __call__(self, activation: torch.Tensor, /, hook: HookPoint) -> torch.Tensor | None: ...


def format_hook_name(kind: HookKind, layer: int) -> str:
    """The TransformerLens name of hook point ``kind`` at ``layer``, not yet checked against a model.

    For objects that name their points before they see a model (an IRM, a config's messages);
    :func:`hook_name` formats and checks.

    >>> format_hook_name("resid_post", 3)
    'blocks.3.hook_resid_post'
    """
    return HOOK_KINDS[kind].format(layer=layer)


def check_layer(model: TransformerBridge, layer: int) -> int:
    """Return ``layer`` (negative counts from the end) or raise ``IndexError`` naming the range."""
    n = model.cfg.n_layers
    if not isinstance(layer, int) or not -n <= layer < n:
        raise IndexError(f"layer {layer} is out of range: this model has layers 0..{n - 1} (n_layers={n})")
    return layer % n


_HOOK_NAMES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
"""Per model, the hook names last read from ``model.hook_dict`` (which the bridge rebuilds, ~1 ms, on every read)."""


def check_hook_name(model: TransformerBridge, name: str) -> str:
    """Return ``name`` if the model has that hook point, else raise ``KeyError`` with close matches."""
    if name in _HOOK_NAMES.get(model, ()):
        return name
    _HOOK_NAMES[model] = frozenset(model.hook_dict)  # a miss re-reads them: hook points added since count
    if name in _HOOK_NAMES[model]:
        return name
    close = difflib.get_close_matches(name, list(_HOOK_NAMES[model]), n=5, cutoff=0.6)
    hint = f"; close matches: {', '.join(close)}" if close else ""
    raise KeyError(f"unknown hook name {name!r}{hint}. model.hook_dict lists every hook point")


def hook_name(model: TransformerBridge, kind: HookKind | str, layer: int | None = None) -> str:
    """Build and check a hook name.

    Args:
        model: the bridge.
        kind: a short name from :data:`HOOK_KINDS` (then ``layer`` is required) or a full hook name.
        layer: layer index; negative counts from the end.
    """
    if kind in HOOK_KINDS:
        if layer is None:
            raise ValueError(f"hook kind {kind!r} needs a layer")
        return check_hook_name(model, format_hook_name(kind, check_layer(model, layer)))
    if layer is not None:
        raise KeyError(
            f"unknown hook kind {kind!r}; kinds: {', '.join(HOOK_KINDS)} (or pass a full hook name without layer)"
        )
    return check_hook_name(model, kind)


def hook_names(model: TransformerBridge, kind: HookKind, layers: Iterable[int] | None = None) -> list[str]:
    """Hook names of one kind for several layers (all layers by default)."""
    layers = range(model.cfg.n_layers) if layers is None else layers
    return [hook_name(model, kind, layer) for layer in layers]


@contextmanager
def attach(
    model: TransformerBridge, fwd: Sequence[tuple[str, HookFn]] = (), bwd: Sequence[tuple[str, HookFn]] = ()
) -> Iterator:
    """Attach forward (and backward) hooks for the duration of a ``with`` block.

    Hook functions take ``(activation, hook)`` and return a replacement or ``None``, as in
    TransformerLens. Names are checked first, so nothing is attached when one is wrong; the hooks
    are removed when the block ends, also when it raises.

    Example:
        >>> with attach(model, [(hook_name(model, "resid_post", 3), lambda x, hook: x * 0)]):
        ...     logits = model(tokens)
    """
    for name, _ in (*fwd, *bwd):
        check_hook_name(model, name)
    with model.hooks(fwd_hooks=list(fwd), bwd_hooks=list(bwd)):
        yield model


@contextmanager
def capture(
    model: TransformerBridge, names: Iterable[str], *, detach: bool = True
) -> Iterator[dict[str, torch.Tensor]]:
    """Record the activations at ``names`` (keyed as given) into a dict filled as the model runs in the block."""
    store: dict[str, torch.Tensor] = {}

    def saver(name: str) -> HookFn:
        def save(x: torch.Tensor, hook) -> None:
            store[name] = x.detach() if detach else x

        return save

    with attach(model, [(n, saver(n)) for n in names]):
        yield store


@dataclass(frozen=True)
class ModelSide:
    """A model as one side of a comparison: a bridge plus forward hooks kept attached while it runs."""

    model: TransformerBridge
    """The bridge."""
    hooks: Sequence[tuple[str, HookFn]] = ()
    """``(hook name, fn)`` pairs attached during every run of this side (e.g. an injected module's)."""
    stateless_hooks: bool = False
    """The hooks act on each position of their own activation alone (e.g. adding a steering vector),
    so a patched run may start mid-way; leave False for hooks carrying state across layers."""
    name: str = ""
    """Label used in tables and figures (default: the model's name)."""

    @property
    def label(self) -> str:
        """The side's name for tables."""
        return self.name or str(self.model.cfg.model_name)

    @property
    def fast(self) -> bool:
        """Whether patched runs of this side may start at the patched layer and position."""
        return not self.hooks or self.stateless_hooks

    def run(self, tokens: torch.Tensor, names: Sequence[str] = ()) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Logits and the activations at ``names`` on ``tokens``, with this side's hooks on."""
        with torch.no_grad(), attach(self.model, self.hooks), capture(self.model, names) as acts:
            logits = self.model(tokens)
        return logits, dict(acts)


def as_side(model_or_side: TransformerBridge | ModelSide) -> ModelSide:
    """A :class:`ModelSide` from a bridge (no hooks) or a side."""
    return model_or_side if isinstance(model_or_side, ModelSide) else ModelSide(model_or_side)
