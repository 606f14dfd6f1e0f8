"""An offline knowns set of country facts, filtered to what a model knows, with attribute sets per subject.

Stands in for ROME's ``known_1000`` (Meng et al., 2022) and the Wikipedia paragraphs of the attributes rate
(Geva et al., 2023; used by Gerstner & Schütze, arXiv:2505.17936, section 4), neither of which is reachable
offline. The source is the PyPI package ``countryinfo`` (MIT; data from the REST Countries project): for
each country with a capital and a region, the fact *the capital of S is C*, and as attributes of S its
capital, region, subregion, demonym, the names of the countries it borders and its provinces.

How it differs from the paper's set: one relation (capital of) over ~250 countries instead of ~1,000 facts
over many relations and subject types; attribute sets from structured fields instead of the words of the
subject's Wikipedia paragraph (fewer words, all of them facts, no generic text); the filter is the same
(the model's greedy continuation of the fact's prompt contains the answer).
"""

from __future__ import annotations

import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from importlib.metadata import version

import torch
from transformer_lens.model_bridge import TransformerBridge

__all__ = ["SOURCE", "Known", "country_facts", "greedy_continuations", "known_facts", "plain", "source_label"]

SOURCE = "countryinfo"
"""The PyPI package the facts come from."""
PROMPT = "The capital of {subject} is"
"""The fact's prompt (its answer is the capital)."""


@dataclass(frozen=True)
class Known:
    """One fact: ``prompt`` (about ``subject``) completed by ``answer``, and the subject's attributes."""

    subject: str
    prompt: str
    answer: str
    attributes: tuple[str, ...]
    """Words and phrases true of the subject (the answer among them), none containing the subject's name."""


def plain(text: str) -> str:
    """Lower case without diacritics (``"Papeetē"`` -> ``"papeete"``), for matching words."""
    return "".join(c for c in unicodedata.normalize("NFKD", text) if not unicodedata.combining(c)).lower()


def source_label() -> str:
    """``countryinfo==VERSION``."""
    return f"{SOURCE}=={version(SOURCE)}"


def country_facts() -> list[Known]:
    """Every country of ``countryinfo`` with a capital and a region, sorted by name.

    Raises:
        ModuleNotFoundError: ``countryinfo`` is not installed (``pip install countryinfo``).
    """
    try:
        from countryinfo import all_countries
    except ModuleNotFoundError as err:
        raise ModuleNotFoundError("the knowns set needs the countryinfo package: pip install countryinfo") from err
    infos = [c.info() for c in all_countries()]
    names = {i["ISO"]["alpha3"]: i["name"] for i in infos if i.get("ISO")}
    facts = []
    for info in infos:
        subject, capital = info.get("name"), info.get("capital")
        if not isinstance(subject, str) or not isinstance(capital, str) or not capital or not info.get("region"):
            continue
        words = [capital, info["region"], info.get("subregion"), info.get("demonym")]
        words += [names[c] for c in info.get("borders") or [] if c in names]
        words += list(info.get("provinces") or [])
        flat = [x for w in words for x in (w if isinstance(w, list) else [w]) if isinstance(x, str) and x]
        kept = tuple(dict.fromkeys(w for w in flat if plain(subject) not in plain(w)))
        if capital in kept:
            facts.append(Known(subject, PROMPT.format(subject=subject), capital, kept))
    return sorted(facts, key=lambda k: k.subject)


@torch.no_grad()
def greedy_continuations(model: TransformerBridge, prompts: Sequence[str], max_new_tokens: int = 8) -> list[str]:
    """The model's greedy continuation of each prompt (hooks attached to ``model`` apply), decoded.

    Prompts of equal token length run as one batch, each step a full forward (no cache, no padding).
    """
    encoded = [model.to_tokens(p)[0].cpu() for p in prompts]
    out: list[str] = [""] * len(prompts)
    groups: dict[int, list[int]] = {}
    for i, ids in enumerate(encoded):
        groups.setdefault(len(ids), []).append(i)
    for rows in groups.values():
        tokens = torch.stack([encoded[i] for i in rows]).to(model.cfg.device)
        for _ in range(max_new_tokens):
            tokens = torch.cat([tokens, model(tokens)[:, -1].argmax(-1, keepdim=True)], dim=1)
        n_prompt = len(encoded[rows[0]])
        for i, ids in zip(rows, tokens[:, n_prompt:].cpu()):
            out[i] = model.tokenizer.decode(ids, skip_special_tokens=True)
    return out


def known_facts(model: TransformerBridge, facts: Sequence[Known], *, max_new_tokens: int = 8) -> list[Known]:
    """The facts whose answer the model's greedy continuation of the prompt contains (the paper's filter)."""
    texts = greedy_continuations(model, [f.prompt for f in facts], max_new_tokens)
    return [f for f, text in zip(facts, texts) if plain(f.answer) in plain(text)]
