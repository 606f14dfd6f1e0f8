"""Metrics against hand computations; prompt sets' checks (single-token answers, equal lengths)."""

import pytest
import torch

from workbench.data.prompts import MOVIE_SENTIMENT, PromptSet, answer_token, prompt_tokens
from workbench.metrics import KLDivergence, LogitDiff, Normalized, kl_divergence, logit_diff, normalized


@pytest.fixture
def logits():
    torch.manual_seed(0)
    return torch.randn(3, 5, 11)


ANSWERS = torch.tensor([[1, 2], [3, 4], [5, 0]])


def test_logit_diff_by_hand(logits):
    by_hand = torch.tensor([logits[b, -1, ANSWERS[b, 0]] - logits[b, -1, ANSWERS[b, 1]] for b in range(3)])
    torch.testing.assert_close(logit_diff(logits, ANSWERS, per_prompt=True), by_hand)
    torch.testing.assert_close(logit_diff(logits, ANSWERS), by_hand.mean())
    at_two = LogitDiff(ANSWERS, pos=2)
    assert float(at_two(logits)) == pytest.approx(
        float(torch.stack([logits[b, 2, ANSWERS[b, 0]] - logits[b, 2, ANSWERS[b, 1]] for b in range(3)]).mean())
    )
    # the positions path gives the same value from the read positions only
    assert at_two.positions == (2,)
    torch.testing.assert_close(at_two.on_positions(logits[:, [2]]), at_two(logits))
    with pytest.raises(ValueError, match="one pair per prompt"):
        LogitDiff(ANSWERS)(logits[:2])
    with pytest.raises(ValueError, match="one pair per prompt"):
        LogitDiff(ANSWERS).on_vocab(logits[:2, [-1]][..., LogitDiff(ANSWERS).vocab])
    with pytest.raises(ValueError, match=r"\[batch, 2\]"):
        LogitDiff(torch.tensor([[1, 2, 3]]))


def test_vocab_path_reads_only_the_answer_logits(logits):
    # repeated ids across pairs (2 and 0 twice, 5 in both columns): the narrow logits are the unique
    # ids' columns and give the same value as the full vocabulary
    answers = torch.tensor([[2, 0], [5, 2], [0, 5], [7, 2]])
    wide = torch.randn(4, 5, 11)
    metric = LogitDiff(answers, pos=3, per_prompt=True)
    assert metric.vocab.tolist() == [0, 2, 5, 7]
    narrow = wide[:, [3]][..., metric.vocab]
    torch.testing.assert_close(metric.on_vocab(narrow), metric(wide))
    wrapped = Normalized(LogitDiff(answers, pos=3), baseline=-1.0, reference=3.0)
    torch.testing.assert_close(wrapped.on_vocab(narrow), wrapped(wide))
    assert torch.equal(wrapped.vocab, metric.vocab)
    assert Normalized(KLDivergence(wide), 0, 1).vocab is None


def test_normalized():
    assert float(normalized(3.0, 1.0, 5.0)) == pytest.approx(0.5)
    assert float(normalized(1.0, 1.0, 5.0)) == 0.0 and float(normalized(5.0, 1.0, 5.0)) == 1.0
    with pytest.raises(ValueError, match="undefined"):
        normalized(1.0, 2.0, 2.0)


def test_normalized_metric_wraps(logits):
    inner = LogitDiff(ANSWERS)
    wrapped = Normalized(inner, baseline=0.5, reference=2.5)
    assert float(wrapped(logits)) == pytest.approx((float(inner(logits)) - 0.5) / 2.0)
    assert wrapped.positions == (-1,)
    torch.testing.assert_close(wrapped.on_positions(logits[:, [-1]]), wrapped(logits))


def test_kl_by_hand(logits):
    torch.manual_seed(1)
    reference = torch.randn(3, 5, 11)
    p, q = reference[:, -1].softmax(-1), logits[:, -1].softmax(-1)
    by_hand = (p * (p.log() - q.log())).sum(-1)
    torch.testing.assert_close(kl_divergence(logits, reference, per_prompt=True), by_hand, atol=1e-6, rtol=1e-5)
    assert float(kl_divergence(reference, reference)) == pytest.approx(0.0, abs=1e-6)
    metric = KLDivergence(reference, pos=1)
    torch.testing.assert_close(metric.on_positions(logits[:, [1]]), metric(logits))


def test_prompt_set(tiny_llama):
    tokens = MOVIE_SENTIMENT.tokens(tiny_llama)
    assert tokens.shape == (1, len(tiny_llama.to_str_tokens("This movie was really")))
    answers = MOVIE_SENTIMENT.answer_tokens(tiny_llama)
    assert answers.tolist() == [[tiny_llama.to_single_token(" bad"), tiny_llama.to_single_token(" good")]]
    with pytest.raises(ValueError, match="single-token"):
        answer_token(tiny_llama, " unbelievably awful")
    with pytest.raises(ValueError, match="different token lengths"):
        prompt_tokens(tiny_llama, ["This movie was really", "A film"])
    with pytest.raises(ValueError, match="one"):
        PromptSet(("a", "b"), ((" x", " y"),))
