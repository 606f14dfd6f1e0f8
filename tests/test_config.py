from dataclasses import dataclass
from typing import Literal

import pandas as pd
import plotly.graph_objects as go
import pytest

from experiments.common import parse_config, write_outputs
from workbench.config import Config, field_docs


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
    assert names == ["config.json", "fig.html", "fig.png", "summary.json", "t.csv"]
    assert Outer.load_json(tmp_path / "exp" / "config.json") == Outer()
