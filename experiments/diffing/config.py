"""The config of ``python -m experiments.diffing``: organisms, read-outs, sizes under ``--quick``."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Annotated, ClassVar

from experiments.fields import ExperimentConfig, ModelName, OutDir, Seeds
from workbench.config import Count, Positive, Range
from workbench.diffing import TOPICS, DiffConfig, make_organisms
from workbench.diffing.organisms import Organism
from workbench.models import DEFAULT_MODEL
from workbench.tuning import TuneConfig

__all__ = ["DiffingConfig"]


@dataclass(frozen=True)
class DiffingConfig(ExperimentConfig):
    """Organisms with known targets, diffed against the base and scored."""

    MODEL_FIELD: ClassVar[str] = "base"

    base: ModelName = DEFAULT_MODEL
    """Base model (registry name or HF folder); the organisms are tunes of it."""
    topics: tuple[str, ...] = ("music", "food", "school", "weather", "phone", "church")
    """Topic organisms (keys of workbench.diffing.TOPICS) (quick: music, weather)."""
    sentiments: tuple[str, ...] = ("negative", "positive")
    """Sentiment organisms (quick: negative)."""
    seeds: Seeds = (0, 1)
    """Seeds of each organism (corpus sample and tune) (quick: 0)."""
    controls: Annotated[int, Range(ge=0)] = 2
    """Random-mix control tunes (quick: 1); the null pair (base vs base) is always added."""
    last_layers: Count = 2
    """Decoder layers each organism tunes (the last ones)."""
    tune_steps: Count = 400
    """Step ceiling of each organism's tune; it stops earlier by the stopping rule (quick: 6)."""
    tune_patience: Count = 3
    """Stopping rule: converged once the best held-out loss (the organism's own held-out tenth) improved by less
    than 0.5% over this many evaluations (quick: 1)."""
    tune_eval_every: Count = 10
    """Steps between held-out evaluations of the tunes (quick: 3)."""
    early_steps: Count = 30
    """The training-length control: each organism is also tuned for this many steps and read the same way
    (quick: 3)."""
    tune_lr: Positive = 1e-3
    """Learning rate of the tunes."""
    tune_texts: Count = 300
    """Tweets per organism's training set."""
    n_texts: Count = 64
    """Unrelated texts for ADL (quick: 16)."""
    cc_steps: Count = 300
    """Crosscoder steps per pair (quick: 30)."""
    samples: Count = 8
    """Unprompted samples per model for the black-box baseline (quick: 2)."""
    out: OutDir = "figures/diffing"
    """Output folder."""
    quick: bool = False
    """Small, fast run (for tests): few organisms, short tunes and read-outs, no PNGs."""
    progress: bool = True
    """Say which organism runs."""
    seed: Annotated[int, Range(ge=0)] = 0
    """Sampling seed of the read-outs."""

    def __post_init__(self):
        unknown = [t for t in self.topics if t not in TOPICS]
        if unknown:
            raise ValueError(f"unknown topics {unknown}; topics: {', '.join(TOPICS)}")
        bad = [s for s in self.sentiments if s not in ("negative", "positive")]
        if bad:
            raise ValueError(f"sentiments are 'negative' or 'positive', got {bad}")

    def sized(self, full, quick):
        """``full``, or ``quick`` under ``--quick``."""
        return quick if self.quick else full

    def organisms(self) -> list[Organism]:
        """The organisms of this run (topic, sentiment, controls, the null pair)."""
        return make_organisms(
            self.sized(self.topics, ("music", "weather")),
            self.sized(self.sentiments, ("negative",)),
            self.sized(self.seeds, (0,)),
            controls=self.sized(self.controls, 1),
        )

    def tune(self, point: str = "converged") -> TuneConfig:
        """How each organism is tuned (its seed replaces ``seed``): to the stopping rule (``converged``), or for
        :attr:`early_steps` steps (``early``, the training-length control)."""
        tune = TuneConfig(
            model=self.base,
            last_layers=self.last_layers,
            steps=self.sized(self.tune_steps, 6),
            batch_size=8,
            max_length=32,
            lr=self.tune_lr,
            patience=self.sized(self.tune_patience, 1),
            eval_every=self.sized(self.tune_eval_every, 3),
        )
        if point == "early":
            return replace(tune, steps=self.sized(self.early_steps, 3), patience=0)
        if point != "converged":
            raise ValueError(f"point is 'early' or 'converged', got {point!r}")
        return tune

    def readout(self) -> DiffConfig:
        """How each pair is read."""
        return DiffConfig.sized(
            quick=self.quick,
            n_texts=self.sized(self.n_texts, 16),
            cc_steps=self.sized(self.cc_steps, 30),
            samples=self.sized(self.samples, 2),
            seed=self.seed,
        )
