"""The Injectable Realignment Model (IRM) of *The Mysterious Case of Neuron 1512* (Smith et al., 2024).

A feed-forward network (linear layers with ReLU; the paper's: d_model -> 3·d_model (x4) -> d_model·n_layers)
reads one activation of a frozen language model at every position and returns a tensor
``(batch, pos, layer, d_model)`` whose slices are *added* into the residual stream of the write layers.
The last linear layer starts at zero, so an untrained IRM leaves the model exactly unchanged.

The read activation at a position drives the writes at that same position, so the IRM works
unchanged with KV-cached generation (each step reads and writes only the new positions).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from jaxtyping import Float
from torch import Tensor, nn
from transformer_lens.model_bridge import TransformerBridge

from workbench.hooks import HookFn, format_hook_name, hook_name
from workbench.irm.config import IRMConfig

__all__ = ["IRM", "Injection"]


class IRM(nn.Module):
    """The IRM network; :meth:`hooks` turns it into forward hooks on a model.

    Args:
        cfg: where it reads and writes, and its shape.
        d_model: the model's residual width.
        n_layers: the model's number of layers (to resolve ``cfg.layers``).
        seed: initialisation seed.
        identity: zero the last layer, so the IRM starts as an exact identity (the default); ``False`` keeps
            its random draw: the IRM at init, writing (a control for statistics of a trained IRM's output).
        dtype: parameter dtype (default float32). Given, the weights are drawn directly in it, never held in
            float32 first: the paper's IRM for Llama-2-7b (2.1 B parameters) is 4.2 GB in bfloat16, 8.5 GB in float32.
    """

    def __init__(
        self,
        cfg: IRMConfig,
        d_model: int,
        n_layers: int,
        *,
        seed: int = 0,
        identity: bool = True,
        dtype: torch.dtype | None = None,
    ):
        super().__init__()
        self.cfg = cfg
        self.d_model = d_model
        self.n_model_layers = n_layers
        self.layers = cfg.resolve_layers(n_layers)
        width = cfg.hidden_width(d_model)
        dims = [d_model] + [width] * cfg.n_hidden + [d_model * len(self.layers)]
        gen = torch.Generator().manual_seed(seed)
        linears = []
        for i, (d_in, d_out) in enumerate(itertools.pairwise(dims)):
            if dtype is None:
                lin = nn.Linear(d_in, d_out)
            else:  # skip nn.Linear's own float32 init (and its draws from the global generator)
                lin = nn.Linear(d_in, d_out, device="meta", dtype=dtype).to_empty(device="cpu")
            bound = d_in**-0.5  # PyTorch's default nn.Linear init, drawn from a seeded generator
            with torch.no_grad():
                if identity and i == len(dims) - 2:  # the last layer starts at zero (its draw would be the last)
                    lin.weight.zero_()
                    lin.bias.zero_()
                else:
                    lin.weight.uniform_(-bound, bound, generator=gen)
                    lin.bias.uniform_(-bound, bound, generator=gen)
            linears.append(lin)
        mods: list[nn.Module] = []
        for lin in linears[:-1]:
            mods += [lin, nn.ReLU()]
        self.net = nn.Sequential(*mods, linears[-1])

    @classmethod
    def for_model(
        cls,
        model: TransformerBridge,
        cfg: IRMConfig | None = None,
        *,
        seed: int = 0,
        identity: bool = True,
        dtype: torch.dtype | None = None,
    ) -> IRM:
        """An IRM shaped for ``model`` (a bridge), on the model's device (``identity``, ``dtype``: see :class:`IRM`)."""
        irm = cls(cfg or IRMConfig(), model.cfg.d_model, model.cfg.n_layers, seed=seed, identity=identity, dtype=dtype)
        return irm.to(model.cfg.device)

    def forward(self, x: Float[Tensor, "batch pos d_model"]) -> Float[Tensor, "batch pos layer d_model"]:
        """The IRM output for read activations ``x``; slice ``[:, :, i]`` goes to layer ``self.layers[i]``."""
        weight = self._first_weight
        dtype = weight.dtype if not torch.is_autocast_enabled(x.device.type) else x.dtype
        out = self.net(x.to(weight.device, dtype))  # on a model split across devices, the read may be elsewhere
        return out.view(*x.shape[:-1], len(self.layers), self.d_model)

    @property
    def _first_weight(self) -> Tensor:
        """The first linear layer's weight (the first parameter of ``net``): the IRM's device and dtype."""
        return next(self.net.parameters())

    @property
    def read_name(self) -> str:
        """TransformerLens name of the read hook."""
        return format_hook_name(self.cfg.read_hook, self.cfg.read_layer)

    @property
    def write_names(self) -> list[str]:
        """TransformerLens names of the write hooks, one per entry of ``self.layers``."""
        return [format_hook_name(self.cfg.write_hook, layer) for layer in self.layers]

    def mask_for(self, dims: Sequence[int] = (), layers: Sequence[int] = ()) -> Float[Tensor, "layer d_model"]:
        """A 0/1 mask over the IRM output that zeroes residual dimensions ``dims`` and model layers ``layers``."""
        mask = torch.ones(len(self.layers), self.d_model, device=self._first_weight.device)
        bad = [d for d in dims if not 0 <= d < self.d_model]
        if bad:
            raise IndexError(f"dimensions {bad} are out of range 0..{self.d_model - 1}")
        mask[:, list(dims)] = 0
        for layer in layers:
            if layer not in self.layers:
                raise ValueError(f"layer {layer} receives no IRM output; the IRM writes at layers {list(self.layers)}")
            mask[self.layers.index(layer)] = 0
        return mask

    def check_model(self, model: TransformerBridge) -> None:
        """Raise ``ValueError`` if the IRM was not built for a model of this shape."""
        if (model.cfg.d_model, model.cfg.n_layers) != (self.d_model, self.n_model_layers):
            raise ValueError(
                f"this IRM was built for d_model={self.d_model}, n_layers={self.n_model_layers}; the model has "
                f"d_model={model.cfg.d_model}, n_layers={model.cfg.n_layers}. "
                "Build an IRM for this model (IRM.for_model)"
            )

    def injection(
        self, model: TransformerBridge, *, record: list | None = None, mask: Tensor | None = None
    ) -> Injection:
        """The hooks that run this IRM inside ``model``, with their shared state (see :class:`Injection`)."""
        self.check_model(model)
        for name in (self.read_name, *self.write_names):
            hook_name(model, name)
        return Injection(self, record=record, mask=mask)

    def hooks(
        self, model: TransformerBridge, *, record: list | None = None, mask: Tensor | None = None
    ) -> list[tuple[str, HookFn]]:
        """Forward hooks ``[(hook_name, fn), ...]`` (read first, then writes) running this IRM in ``model``.

        Use them with :func:`workbench.hooks.attach`: ``with attach(model, irm.hooks(model)): model(tokens)``.

        Args:
            model: the bridge (checked: shape and hook names).
            record: a list that receives the (masked, detached) IRM output of every forward.
            mask: multiplies the IRM output, shape ``(layer, d_model)`` (see :meth:`mask_for`).
        """
        return self.injection(model, record=record, mask=mask).hooks


@dataclass
class Injection:
    """One attachment of an IRM: the hooks and the output of the latest forward (kept for the L1 penalty)."""

    irm: IRM
    record: list | None = None
    mask: Tensor | None = None
    output: Tensor | None = field(default=None, repr=False)
    """The (masked) IRM output of the latest forward, still attached to the autograd graph."""
    _slices: tuple[Tensor, ...] = field(default=(), repr=False)

    @property
    def hooks(self) -> list[tuple[str, HookFn]]:
        """Read hook first, then one write hook per write layer."""
        writes = [(name, self._writer(i)) for i, name in enumerate(self.irm.write_names)]
        read = self.irm.read_name
        same = [i for i, (name, _) in enumerate(writes) if name == read]
        if same:  # reading and writing at one point: the read hook also adds its own slice
            return [(read, self._reader(same[0]))] + [w for i, w in enumerate(writes) if i != same[0]]
        return [(read, self._reader(None)), *writes]

    def _reader(self, add_slice: int | None) -> HookFn:
        def read(x: Tensor, hook) -> Tensor | None:
            out = self.irm(x)
            if self.mask is not None:
                out = out * self.mask.to(out.dtype)
            self.output = out
            # one unbind, not one index per write layer: indexing's backward writes a zero tensor of the
            # full output's size per layer (n_layers times the output), unbind's stacks the slices once
            self._slices = out.unbind(2)
            if self.record is not None:
                self.record.append(out.detach())
            return None if add_slice is None else x + self._slices[add_slice].to(x.device, x.dtype)

        return read

    def _writer(self, i: int) -> HookFn:
        def write(x: Tensor, hook) -> Tensor:
            if self.output is None or self.output.shape[:2] != x.shape[:2]:
                raise RuntimeError(
                    f"the IRM write hook {hook.name} ran without a matching read at {self.irm.read_name}: "
                    "attach all hooks from irm.hooks(model) together"
                )
            return x + self._slices[i].to(x.device, x.dtype)  # each write on its layer's device

        return write
