"""VADER sentiment: one analyzer for the whole library, scores equal to VADER's formula by hand."""

import math
import re
from pathlib import Path

import workbench
from workbench.sentiment import analyzer, lexicon, vader_compound, vader_negativity


def test_scores_follow_vaders_normalisation():
    # one lexicon word, no modifiers: compound = v / sqrt(v^2 + 15) (Hutto & Gilbert 2014's alpha = 15)
    v = lexicon()["love"]
    assert v == 3.2
    assert vader_compound(["I love it"]) == [round(v / math.sqrt(v * v + 15), 4)]
    assert vader_negativity("any prompt", "I love it") == -vader_compound(["I love it"])[0]
    assert vader_compound(["the table is wooden"]) == [0.0]


def test_one_analyzer_built_once_and_only_here():
    assert analyzer() is analyzer()
    root = Path(workbench.__file__).parent
    importers = [
        str(p.relative_to(root)) for p in root.rglob("*.py") if re.search(r"\bvaderSentiment\b", p.read_text())
    ]
    assert importers == ["sentiment.py"]
