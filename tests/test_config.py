import re
from dataclasses import dataclass
from typing import Literal

import pandas as pd
import plotly.graph_objects as go
import pytest

from experiments.cli import parse_config
from experiments.common import write_outputs
from tests.helpers import without_type_checks
from workbench.config import Config, ConfigError, Count, Fraction, Index, Positive, field_docs
from workbench.interventions.price_tagger import PriceTaggerConfig
from workbench.interventions.spec import InterventionSpec
from workbench.irm import IRMConfig, TrainConfig


@dataclass(frozen=True)
class Inner(Config):
    width: int = 4
    """Hidden width."""


@dataclass(frozen=True)
class Outer(Config):
    model: str = "smollm2-135m-instruct"
    """Model to load."""
    layers: tuple[int, ...] = (0, 1)
    """Layers to inject into."""
    lr: float = 1e-3
    """Learning rate."""
    quick: bool = False
    """Small run."""
    seed: int | None = None
    """Random seed."""
    inner: Inner = Inner()
    """Nested config."""


def test_round_trip_and_unknown_keys(tmp_path):
    cfg = Outer(layers=(2, 3), inner=Inner(8), seed=1)
    assert cfg.to_dict() == {
        "model": "smollm2-135m-instruct",
        "layers": [2, 3],
        "lr": 1e-3,
        "quick": False,
        "seed": 1,
        "inner": {"width": 8},
    }
    cfg.save_json(tmp_path / "c.json")
    assert Outer.load_json(tmp_path / "c.json") == cfg
    with pytest.raises(KeyError, match="unknown Outer fields \\['layer'\\]"):
        Outer.from_dict({"layer": [1]})


def test_field_docs_and_cli():
    assert field_docs(Outer)["layers"] == "Layers to inject into."
    cfg = parse_config(Outer, ["--layers", "0", "3", "5", "--lr", "0.5", "--quick", "--seed", "7"])
    assert cfg == Outer(layers=(0, 3, 5), lr=0.5, quick=True, seed=7)


@dataclass(frozen=True)
class Words(Config):
    mode: Literal["zero", "mean"] = "zero"
    """How to ablate: zero or mean; a docstring that wraps
    over two lines."""
    hook: Literal["resid_pre", "resid_post"] | None = None
    """Where (default: the task's)."""
    kinds: tuple[Literal["a", "b", "c"], ...] = ("a",)
    """Several words."""


def test_literal_fields_are_cli_choices(capsys):
    assert field_docs(Words)["mode"] == "How to ablate: zero or mean; a docstring that wraps over two lines."
    assert parse_config(Words, ["--mode", "mean", "--hook", "resid_post", "--kinds", "b", "c"]) == Words(
        "mean", "resid_post", ("b", "c")
    )
    with pytest.raises(SystemExit):
        parse_config(Words, ["--help"])
    help_text = capsys.readouterr().out
    assert "--mode {zero,mean}" in help_text and "--hook {resid_pre,resid_post}" in help_text
    assert "--kinds [{a,b,c} ...]" in help_text
    for bad in (["--mode", "max"], ["--hook", "z"], ["--kinds", "a", "d"]):
        with pytest.raises(SystemExit):
            parse_config(Words, bad)
        assert "invalid choice" in capsys.readouterr().err


def test_write_outputs(tmp_path):
    write_outputs(
        tmp_path / "exp",
        Outer(),
        figures={"fig": go.Figure(go.Bar(y=[1, 2]))},
        tables={"t": pd.DataFrame({"a": [1]})},
        summary={"x": 1.5},
    )
    names = sorted(p.name for p in (tmp_path / "exp").iterdir())
    assert names == [
        "config.json",
        "fig.html",
        "fig.plotly.json",
        "fig.png",
        "plotly.min.js",
        "report.html",
        "report.json",
        "summary.json",
        "t.csv",
    ]
    assert Outer.load_json(tmp_path / "exp" / "config.json") == Outer()


@dataclass(frozen=True)
class Ranged(Config):
    steps: Count = 3
    """A count."""
    warmup: int = 0
    """A plain int: >= 0."""
    position: Index = -1
    """Any integer."""
    lr: Positive = 0.1
    """A positive float."""
    scale: float = -2.0
    """A plain float: any finite value."""
    share: Fraction = 0.5
    """In [0, 1]."""
    ks: tuple[int, ...] = (1, 2)
    """Counts."""
    seed: int | None = None
    """Optional."""
    on: bool = True
    """A flag."""
    kind: Literal["a", "b"] = "a"
    """A word from a fixed set."""

    def __post_init__(self):
        if self.kind == "b" and self.steps < 2:
            raise ValueError("kind b needs steps >= 2")


@dataclass(frozen=True)
class RangedChild(Ranged):
    extra: Count = 1
    """Inherited checks still run."""


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"steps": 0}, "Ranged.steps must be >= 1, got 0"),
        ({"steps": 2.5}, "Ranged.steps must be a whole number"),
        ({"steps": True}, "Ranged.steps must be a whole number"),
        ({"warmup": -1}, "Ranged.warmup must be >= 0, got -1"),
        ({"lr": float("nan")}, "Ranged.lr must be a finite number, got nan"),
        ({"lr": float("inf")}, "Ranged.lr must be a finite number, got inf"),
        ({"lr": 0.0}, "Ranged.lr must be > 0, got 0.0"),
        ({"lr": "0.1"}, "Ranged.lr must be a number, got str '0.1'"),
        ({"scale": float("-inf")}, "Ranged.scale must be a finite number"),
        ({"share": 1.5}, "Ranged.share must be <= 1, got 1.5"),
        ({"ks": (1, -4)}, "Ranged.ks[1] must be >= 0, got -4"),
        ({"ks": {1: 2}}, "Ranged.ks must be a tuple, got dict"),
        ({"ks": [1, -2]}, "Ranged.ks[1] must be >= 0, got -2"),
        ({"seed": 1.5}, "Ranged.seed must be a whole number"),
        ({"on": 1}, "Ranged.on must be True or False, got 1"),
        ({"kind": "c"}, "Ranged.kind 'c' is not a valid choice; choose one of 'a', 'b'"),
    ],
)
def test_fields_are_checked_at_construction(changes, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        Ranged(**changes)
    with pytest.raises(ConfigError, match=re.escape(message.replace("Ranged", "RangedChild"))):
        RangedChild(**changes)
    with pytest.raises(ConfigError, match=re.escape(message)):  # replace builds a new config: checked too
        Ranged().replace(**changes)


def test_valid_values_pass_and_own_checks_run_after_the_field_checks():
    cfg = Ranged(steps=5, warmup=0, position=-7, lr=2, scale=-1e9, share=0.0, ks=(), seed=3, on=False, kind="b")
    assert cfg.position == -7 and cfg.lr == 2
    assert Ranged(ks=[3, 4]).ks == (3, 4)  # a list for a tuple field is stored as a tuple (hashable, frozen)
    assert Ranged.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="kind b needs steps >= 2"):
        Ranged(kind="b", steps=1)
    with pytest.raises(ConfigError, match=r"RangedChild\.extra must be >= 1"):
        RangedChild(extra=0)


def test_library_configs_refuse_the_reported_inputs():
    with pytest.raises(ConfigError, match=r"TrainConfig\.lr must be a finite number, got nan"):
        TrainConfig(lr=float("nan"))
    with without_type_checks(), pytest.raises(ConfigError, match=r"TrainConfig\.steps must be a whole number"):
        TrainConfig(steps=2.5)  # the annotation rejects it too: the library's own message, as users meet it
    with pytest.raises(ConfigError, match=r"TrainConfig\.warmup must be >= 0"):
        TrainConfig(warmup=-10)
    with pytest.raises(ConfigError, match=r"IRMConfig\.layers\[0\] must be >= 0"):
        IRMConfig(layers=(-1,))
    assert PriceTaggerConfig().iit_layer == -1  # -1 turns IIT off
    assert InterventionSpec("blocks.0.hook_resid_post", positions=(-1,)).positions == (-1,)
