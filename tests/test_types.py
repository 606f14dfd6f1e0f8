"""The typed contracts: word sets match their tables, protocols recognise their implementations, checks are on."""

from typing import get_args

import pytest
import torch
from jaxtyping import TypeCheckError

from workbench.analysis.patching import SWEEPS, SweepKind
from workbench.hooks import HOOK_KINDS, HookFn, HookKind, hook_name
from workbench.interventions.modules import (
    MODULES,
    Collecting,
    CollectIntervention,
    InterventionKind,
    ZeroIntervention,
)
from workbench.irm.config import READ_KINDS, WRITE_KINDS, point_rank
from workbench.irm.explain import TokenSetLogProb
from workbench.metrics import (
    KLDivergence,
    LogitDiff,
    Metric,
    Normalized,
    PositionedMetric,
    VocabMetric,
    logit_diff,
)


def test_word_sets_are_the_keys_of_their_tables():
    assert get_args(HookKind) == tuple(HOOK_KINDS)
    assert get_args(SweepKind) == tuple(SWEEPS)
    assert get_args(InterventionKind) == tuple(MODULES)
    assert all(cls.kind == kind for kind, cls in MODULES.items())
    assert set(WRITE_KINDS) <= set(READ_KINDS) <= set(HOOK_KINDS)
    # READ_KINDS lists a block's points in the order the forward pass reaches them
    assert sorted(READ_KINDS, key=lambda kind: point_rank(kind, 0)) == list(READ_KINDS)
    assert point_rank("resid_pre", 1) > point_rank("resid_post", 0)


def test_protocols_recognise_their_implementations():
    answers = torch.tensor([[1, 2]])
    positioned = [
        LogitDiff(answers),
        KLDivergence(torch.zeros(1, 3, 5)),
        Normalized(LogitDiff(answers), 0, 1),
    ]
    assert all(isinstance(m, PositionedMetric) for m in positioned)
    plain = lambda logits: logits.sum()
    assert isinstance(plain, Metric) and not isinstance(plain, PositionedMetric)
    assert Normalized(plain, 0, 1).positions is None
    assert isinstance(LogitDiff(answers), VocabMetric) and isinstance(Normalized(LogitDiff(answers), 0, 1), VocabMetric)
    assert not isinstance(KLDivergence(torch.zeros(1, 3, 5)), VocabMetric)
    assert not isinstance(TokenSetLogProb([1, 2]), VocabMetric)
    assert isinstance(CollectIntervention(), Collecting) and not isinstance(ZeroIntervention(), Collecting)
    assert isinstance(lambda x, hook: x, HookFn)


def test_shapes_and_types_are_checked_in_the_test_run(tiny_llama):
    # jaxtyping's import hook with beartype wraps workbench (pyproject addopts): a batch mismatch
    # between the logits and the answers, or a layer given as text, fails at the call
    with pytest.raises(TypeCheckError, match="batch"):
        logit_diff(torch.zeros(2, 3, 5), torch.zeros(3, 2, dtype=torch.long))
    with pytest.raises(TypeCheckError, match="layer"):
        hook_name(tiny_llama, "resid_post", "3")
