"""Token-level views drawn by circuitsvis (Cooney & Nanda, *CircuitsVis*, 2023): tokens coloured by a
value per token, and attention patterns of chosen heads, one model beside another.

A :class:`View` is data (a circuitsvis component and its props); it renders to HTML that calls the
circuitsvis bundle, which :func:`circuitsvis_js` returns so that a page (the experiment report,
:mod:`workbench.report`) embeds it once however many views it holds. In a notebook a view shows
itself self-contained (the bundle inline), so it opens offline.

    >>> view = token_values(["The", " movie"], {"|IRM output|": [0.5, 2.0]})
    >>> view.element, view.props["values"]
    ('ColoredTokens', [0.5, 2.0])
"""

from __future__ import annotations

import html
import json
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import circuitsvis
import torch
from jaxtyping import Float
from torch import Tensor
from transformer_lens.model_bridge import TransformerBridge

from workbench.hooks import ModelSide, as_side, hook_name
from workbench.irm.generate import Generation
from workbench.irm.inject import inject
from workbench.irm.module import IRM
from workbench.irm.text import encode_prompt

__all__ = [
    "Row",
    "View",
    "attention_comparison",
    "attention_view",
    "circuitsvis_js",
    "head_patterns",
    "irm_on_off_view",
    "irm_outputs_on_reply",
    "irm_token_view",
    "side_by_side",
    "token_strings",
    "token_values",
]


@cache
def circuitsvis_js() -> str:
    """The circuitsvis browser bundle (defines the global ``CircuitsVis``), safe to inline in ``<script>``."""
    path = Path(circuitsvis.__file__).parent / "dist" / "cdn" / "iife.js"
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: reinstall circuitsvis (pip install --force-reinstall circuitsvis)")
    lines = path.read_text(encoding="utf-8").replace("</script>", "<\\/script>").splitlines()
    return "\n".join(line for line in lines if not line.startswith("//# sourceMappingURL="))


def _save_page(path: str | Path, title: str, body: str) -> Path:
    path = Path(path).with_suffix(".html")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
        f'<script>{circuitsvis_js()}</script></head><body style="font-family:sans-serif">{body}</body></html>\n',
        encoding="utf-8",
    )
    return path


def _plain(value):
    if isinstance(value, Tensor):
        return value.detach().float().cpu().tolist()
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


@dataclass(frozen=True)
class View:
    """One circuitsvis component with its props, and a title shown above it."""

    element: str
    """The circuitsvis React component (``ColoredTokens``, ``ColoredTokensMulti``, ``AttentionHeads``)."""
    props: dict = field(default_factory=dict)
    """The component's props (JSON-serialisable)."""
    title: str = ""
    """Heading shown above the view."""

    def html(self) -> str:
        """HTML that renders the view; the page must have loaded :func:`circuitsvis_js` before it."""
        div = f"cv-{uuid.uuid4().hex[:12]}"
        props = json.dumps(self.props).replace("</", "<\\/")
        title = f'<div class="view-title">{html.escape(self.title)}</div>' if self.title else ""
        return (
            f'<div class="cv-view">{title}<div id="{div}" class="cv-target"></div>'
            f'<script>CircuitsVis.render("{div}", CircuitsVis.{self.element}, {props});</script></div>'
        )

    def _repr_html_(self) -> str:
        return f"<script>{circuitsvis_js()}</script>{self.html()}"

    def save(self, path: str | Path) -> Path:
        """Write the view as a page that opens offline (the circuitsvis bundle inline, ~1.3 MB) to
        ``path`` (suffix ``.html``); returns its path."""
        return _save_page(path, self.title or self.element, self.html())


@dataclass(frozen=True)
class Row:
    """Views side by side (wrapping to the next line on a narrow page)."""

    views: tuple[View, ...]
    title: str = ""

    def html(self) -> str:
        """HTML of the row; the page must have loaded :func:`circuitsvis_js` before it."""
        cells = "".join(f'<div class="cv-cell">{v.html()}</div>' for v in self.views)
        title = f"<h4>{html.escape(self.title)}</h4>" if self.title else ""
        return f'{title}<div class="cv-row" style="display:flex;flex-wrap:wrap;gap:24px">{cells}</div>'

    def _repr_html_(self) -> str:
        return f"<script>{circuitsvis_js()}</script>{self.html()}"

    def save(self, path: str | Path) -> Path:
        """Write the row as a page that opens offline (see :meth:`View.save`); returns its path."""
        return _save_page(path, self.title or "token views", self.html())


def side_by_side(views: Mapping[str, View], title: str = "") -> Row:
    """Views next to each other, each titled by its key (e.g. ``{"IRM off": ..., "IRM on": ...}``)."""
    if not views:
        raise ValueError("side_by_side needs at least one view")
    return Row(tuple(View(v.element, v.props, label) for label, v in views.items()), title)


def token_strings(tokenizer, ids: Sequence[int]) -> list[str]:
    """One display string per token id. A character split over several byte-level tokens (an emoji) decodes
    to U+FFFD piece by piece: its first token shows the whole character and the rest show nothing."""
    out: list[str] = []
    group: list[int] = []
    for i in ids:
        group.append(int(i))
        text = tokenizer.decode(group)
        if "\ufffd" in text and len(group) < 4:  # UTF-8 characters span at most 4 bytes
            continue
        out += [text] + [""] * (len(group) - 1)
        group = []
    if group:
        out += [tokenizer.decode([t]) for t in group]
    return out


def token_values(tokens: Sequence[str], values: Mapping[str, Sequence[float] | Tensor], title: str = "") -> View:
    """Tokens coloured by one value per token; with several named values, buttons switch between them.

    Args:
        tokens: the token strings.
        values: name -> one value per token (e.g. ``{"|IRM output|": ..., "dim 1512": ...}``).
        title: heading of the view.
    """
    tokens = [str(t) for t in tokens]
    columns = {name: _plain(v) for name, v in values.items()}
    if not columns:
        raise ValueError("token_values needs at least one named sequence of values")
    for name, col in columns.items():
        if len(col) != len(tokens):
            raise ValueError(f"values {name!r} has {len(col)} entries for {len(tokens)} tokens: give one per token")
    if len(columns) == 1:
        return View("ColoredTokens", {"tokens": tokens, "values": next(iter(columns.values()))}, title)
    matrix = [list(row) for row in zip(*columns.values())]  # [token, value kind]
    return View("ColoredTokensMulti", {"tokens": tokens, "values": matrix, "labels": list(columns)}, title)


def irm_token_view(
    tokens: Sequence[str], irm_out: Float[Tensor, "token layer d_model"], dim: int, title: str = ""
) -> View:
    """A reply's tokens coloured by the IRM's output: its mean |output| over layers and dimensions, and
    what it adds to dimension ``dim`` summed over the layers it writes (signed).

    ``irm_out`` is :attr:`workbench.irm.generate.Generation.irm_out` (one row per generated token).
    """
    if irm_out.ndim != 3 or irm_out.shape[0] != len(tokens):
        raise ValueError(
            f"irm_out must be [token, layer, d_model] with {len(tokens)} tokens; got {tuple(irm_out.shape)}"
        )
    if not 0 <= dim < irm_out.shape[-1]:
        raise ValueError(f"dim {dim} is outside the residual stream (d_model {irm_out.shape[-1]})")
    out = irm_out.float()
    return token_values(
        tokens, {"mean |IRM output|": out.abs().mean((1, 2)), f"IRM output, dim {dim}": out[:, :, dim].sum(1)}, title
    )


@torch.no_grad()
def irm_outputs_on_reply(
    model: TransformerBridge, irm: IRM, generation: Generation, *, system_prompt: str | None = ""
) -> Float[Tensor, "token layer d_model"]:
    """What ``irm`` writes at the positions that produce each token of ``generation``'s reply, on that reply
    read in one forward (teacher-forced): for a reply generated with the IRM off, what the IRM would have
    added. For a reply generated with it on this equals the recorded ``generation.irm_out``.

    Args:
        system_prompt: the one the reply was generated with (:func:`~workbench.irm.generate.generate_one`'s).
    """
    prompt = encode_prompt(model.tokenizer, generation.prompt, system_prompt=system_prompt)
    reply = torch.tensor([generation.tokens], dtype=prompt.dtype)
    tokens = torch.cat([prompt, reply], 1).to(model.cfg.device)
    record: list[Tensor] = []
    with inject(model, irm, record=record):
        model(tokens)
    start = prompt.shape[1] - 1  # the prompt's last position produced the reply's first token
    return record[0][0, start : start + len(generation.tokens)].float().cpu()


def irm_on_off_view(
    model: TransformerBridge, irm: IRM, off: Generation, on: Generation, dim: int, title: str = ""
) -> Row:
    """The replies with the IRM off and on side by side, each token coloured by the IRM's output there
    (:func:`irm_token_view`; for the off reply, what the IRM would have added: :func:`irm_outputs_on_reply`)."""
    strings = lambda g: token_strings(model.tokenizer, g.tokens)
    off_out = irm_outputs_on_reply(model, irm, off)
    on_out = on.irm_out if on.irm_out is not None else irm_outputs_on_reply(model, irm, on)
    return side_by_side(
        {
            "IRM off (what the IRM would add)": irm_token_view(strings(off), off_out, dim),
            "IRM on": irm_token_view(strings(on), on_out, dim),
        },
        title,
    )


def head_patterns(
    model_or_side, tokens: Tensor, heads: Sequence[tuple[int, int]]
) -> Float[Tensor, "head dest_pos src_pos"]:
    """Attention patterns of ``heads`` (``(layer, head)`` pairs) on one prompt, with a side's hooks on.

    Args:
        model_or_side: a bridge or a :class:`~workbench.hooks.ModelSide` (e.g. with an IRM injected).
        tokens: ``[1, pos]`` or ``[pos]`` token ids.
        heads: the heads to read.
    """
    side: ModelSide = as_side(model_or_side)
    heads = [(int(layer), int(head)) for layer, head in heads]  # numpy / tensor indices from tables
    tokens = tokens.reshape(1, -1) if tokens.ndim == 1 else tokens
    if tokens.shape[0] != 1:
        raise ValueError(f"head_patterns reads one prompt; got a batch of {tokens.shape[0]}: pass tokens[i : i + 1]")
    n_heads = side.model.cfg.n_heads
    for layer, head in heads:
        if not 0 <= head < n_heads:
            raise ValueError(f"head {head} of layer {layer} does not exist (the model has {n_heads} heads per layer)")
    names = sorted({hook_name(side.model, "pattern", layer) for layer, _ in heads})
    _, acts = side.run(tokens, names)
    return torch.stack([acts[hook_name(side.model, "pattern", layer)][0, head] for layer, head in heads]).float()


def attention_view(model_or_side, tokens: Tensor, heads: Sequence[tuple[int, int]], title: str = "") -> View:
    """The attention patterns of ``heads`` on one prompt (circuitsvis ``AttentionHeads``: click a head to enlarge)."""
    side = as_side(model_or_side)
    patterns = head_patterns(side, tokens, heads)
    strings = token_strings(side.model.tokenizer, tokens.reshape(-1).tolist())
    names = [f"L{layer}H{head}" for layer, head in heads]
    return View(
        "AttentionHeads",
        {
            "attention": _plain(patterns),
            "tokens": strings,
            "attentionHeadNames": names,
            "maxValue": 1.0,
            "minValue": 0.0,
        },
        title,
    )


def attention_comparison(
    sides: Mapping[str, object], tokens: Tensor, heads: Sequence[tuple[int, int]], title: str = ""
) -> Row:
    """The same heads on the same prompt in several models side by side (e.g. ``{"base": b, "tuned": t}``)."""
    return side_by_side({name: attention_view(m, tokens, heads) for name, m in sides.items()}, title)
