"""The Boundless DAS experiment's config: the price taggers searched, the tasks and the flags."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated, Any, ClassVar, Literal

from experiments.fields import Check, ExperimentConfig, OutDir, model_config
from workbench.config import Count, Index, NonNegative, Positive
from workbench.data.counterfactual import ioi_counterfactuals, price_tagging_counterfactuals
from workbench.hooks import HOOK_KINDS
from workbench.interventions.price_tagger import PLAIN_TAGGER, QUICK_TAGGER, TAGGER, PriceTaggerConfig, price_tokenizer
from workbench.models import DEFAULT_MODEL

__all__ = ["PLAIN_TAGGER", "QUICK_TAGGER", "TAGGER", "TASKS", "BoundlessDASConfig"]


TASKS = {
    # positions: candidate positions of the sweep; irrelevant: a position that cannot carry the variable
    "price_tagging": {
        "variable": "left",
        "positions": (2, 31, 32, 33, 34, 35),
        "irrelevant": 2,
        "method": "boundless",
        "hook": "resid_post",
    },
    "ioi": {"variable": "io_first", "positions": (13,), "irrelevant": 2, "method": "low_rank", "hook": "resid_post"},
}


def _check_hook(flag: str, kind: str) -> None:
    if kind not in HOOK_KINDS:
        raise ValueError(f"{flag} {kind!r} is not a hook kind; choose one of {', '.join(HOOK_KINDS)}")


@dataclass(frozen=True)
class BoundlessDASConfig(ExperimentConfig):
    """Boundless DAS layer x position search with controls."""

    QUICK: ClassVar[Mapping[str, Any]] = {"n_train": 128, "n_test": 64, "steps": 20}

    task: Literal["price_tagging", "ioi"] = "price_tagging"
    """price_tagging (small model trained here, with ground truth) or ioi (SmolLM2-135M-Instruct)."""
    variable: str = ""
    """Causal variable to align (default: left for price_tagging, io_first for ioi)."""
    planted: bool = True
    """price_tagging: search the tagger whose variables IIT planted at a known place (false: the plainly trained
    one)."""
    layer: Index | None = None
    """Only this layer (default: every layer for price_tagging; for ioi 18, 20, 22, where swapping the whole
    last-position residual starts to move the answer)."""
    position: Index | None = None
    """Only this position (default: the task's candidate positions)."""
    hook: Annotated[str, Check(_check_hook)] = ""
    """Hook kind intervened on (default: resid_post, where the price tagger's variables are planted)."""
    method: Literal["", "boundless", "low_rank"] = ""
    """boundless or low_rank (default: boundless for price_tagging; low_rank, cheaper, for ioi on SmolLM2)."""
    rank: Count = 1
    """Subspace dimension of low_rank DAS."""
    n_train: Count = 1024
    """Counterfactual training examples."""
    n_test: Count = 512
    """Held-out counterfactual examples for IIA."""
    steps: Count = 400
    """Training steps per (layer, position) (200 reach the IIA; the boundary needs 400 to shrink to the variable's
    dims)."""
    batch_size: Count = 64
    """Examples per step."""
    lr: Positive = 5e-3
    """Learning rate of the rotation (the boundary's is 1e-2, as in the paper)."""
    boundary_penalty: NonNegative = 0.1
    """Weight of the boundary size in the loss (favours small subspaces)."""
    seed: int = 0
    """Seed of data, rotations and batch order."""
    quick: bool = False
    """Tiny model (price tagging), few examples and steps: for tests."""
    out: OutDir = "figures/boundless_das"
    """Output folder."""
    png: bool = True
    """Also write PNG figures."""

    def tagger(self) -> PriceTaggerConfig:
        """The price tagger searched (``--quick``: the small one; ``--no-planted``: the one trained on the task)."""
        return QUICK_TAGGER if self.quick else TAGGER if self.planted else PLAIN_TAGGER

    def check(self) -> None:
        """The variable against the task, ``--layer`` against the task's model, ``--position`` against its prompts
        (the model's config and tokenizer are read without weights; the price tagger's from its config)."""
        variables = {"price_tagging": ("left", "right"), "ioi": ("io_first",)}[self.task]
        if self.variable and self.variable not in variables:
            raise ValueError(f"--variable {self.variable!r}: the {self.task} task has {', '.join(variables)}")
        if self.task == "price_tagging":
            n_layers, tokenizer = self.tagger().n_layers, price_tokenizer()
            prompt = price_tagging_counterfactuals(self.variable or "left", 1, seed=0).base[0]
        else:
            hf = model_config(DEFAULT_MODEL)
            if hf is None:
                return
            from transformers import AutoTokenizer

            from workbench.models import local_model_dir

            n_layers, tokenizer = hf.num_hidden_layers, AutoTokenizer.from_pretrained(local_model_dir(DEFAULT_MODEL))
            prompt = ioi_counterfactuals(1, seed=0).base[0]
        if self.layer is not None and not -n_layers <= self.layer < n_layers:
            raise IndexError(
                f"--layer {self.layer}: out of range, the {self.task} model has layers 0..{n_layers - 1}; "
                "pass one of those (or leave --layer out to search all)"
            )
        n_pos = len(tokenizer(prompt, add_special_tokens=False)["input_ids"])
        if self.position is not None and not -n_pos <= self.position < n_pos:
            raise IndexError(
                f"--position {self.position}: out of range, the {self.task} prompts have {n_pos} tokens "
                f"(positions 0..{n_pos - 1}); pass one of those"
            )
