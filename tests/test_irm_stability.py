"""Seed statistics of the IRM dimension shares, on hand-built share vectors."""

import pandas as pd
import pytest
import torch

from workbench.irm.stability import (
    PAIR_KINDS,
    controls,
    dominant_dims,
    kinds_frame,
    permuted,
    share_stats,
    side_by_side,
    spearman,
    stability,
    top_jaccard,
)


def _share(x):
    x = torch.as_tensor(x, dtype=torch.float64)
    return x / x.sum()


def test_identical_seeds_correlate_perfectly_and_kinds_are_labelled():
    gen = torch.Generator().manual_seed(0)
    a, b = torch.rand(50, generator=gen), torch.rand(50, generator=gen)
    shares = {("neg", 0): _share(a), ("neg", 1): _share(a), ("pos", 0): _share(b), ("pos", 1): _share(-b + 2)}
    s = stability(shares, k=5)
    pairs = s.pairs().set_index(["a", "b"])
    # identical seeds: correlation 1, same top-5; a reversed ranking: -1
    assert pairs.loc[("neg/s0", "neg/s1"), "spearman"] == pytest.approx(1.0)
    assert pairs.loc[("neg/s0", "neg/s1"), "jaccard"] == 1.0
    assert pairs.loc[("pos/s0", "pos/s1"), "spearman"] == pytest.approx(-1.0)
    assert (
        pairs.loc[("neg/s0", "pos/s0"), "kind"] == "same_seed"
        and pairs.loc[("neg/s0", "pos/s1"), "kind"] == "different"
    )
    summary = s.summary()
    assert summary["same_alignment"]["n_pairs"] == 2 and summary["same_alignment"]["spearman_mean"] == pytest.approx(0)
    assert summary["same_seed"]["n_pairs"] == 2 and summary["different"]["n_pairs"] == 2
    # the matrix is symmetric with ones on the diagonal
    assert torch.allclose(s.spearman, s.spearman.T) and torch.allclose(
        s.spearman.diag(), torch.ones(4, dtype=torch.float64)
    )


def test_spearman_matches_pandas_on_ranks_and_kinds_without_pairs():
    gen = torch.Generator().manual_seed(1)
    x, y = torch.rand(30, generator=gen), torch.rand(30, generator=gen)
    s = stability({("neg", 0): _share(x), ("neg", 1): _share(y)})
    # Spearman = Pearson correlation of the ranks (no ties)
    rx, ry = x.argsort().argsort().double(), y.argsort().argsort().double()
    assert float(s.spearman[0, 1]) == pytest.approx(float(torch.corrcoef(torch.stack([rx, ry]))[0, 1]))
    assert spearman(x, y) == pytest.approx(float(s.spearman[0, 1])) and spearman(x, 2 * x + 1) == pytest.approx(1)
    summary = s.summary()
    assert summary["same_seed"]["n_pairs"] == 0 and summary["same_seed"]["spearman_mean"] is None
    with pytest.raises(ValueError, match="at least two runs"):
        stability({("neg", 0): _share(x)})


def test_top_jaccard_by_hand():
    a = _share([9, 8, 7, 1, 1, 1])
    b = _share([9, 1, 7, 8, 1, 1])
    assert top_jaccard(a, b, k=3) == pytest.approx(2 / 4)  # {0,1,2} vs {0,2,3}


def test_dominant_dims_must_stand_out_in_every_seed():
    base = torch.ones(40, dtype=torch.float64)
    s0, s1 = base.clone(), base.clone()
    s0[[3, 7]] = 30  # 3 and 7 stand out in seed 0
    s1[[3, 9]] = 30  # only 3 stands out in both seeds
    df = dominant_dims([_share(s0), _share(s1)], z=3.0)
    assert df.dim.tolist() == [3] and df.z_min.iloc[0] > 3
    mean, std = share_stats([_share(s0), _share(s1)])
    assert df.share_mean.iloc[0] == pytest.approx(float(mean[3])) and float(std[3]) == pytest.approx(0)
    # a single run shows dims 3 and 7; nothing stands out when the seeds disagree everywhere
    assert set(dominant_dims([_share(s0)]).dim) == {3, 7}
    s2 = base.clone()
    s2[20] = 30
    assert dominant_dims([_share(s0), _share(s2)]).empty
    assert isinstance(dominant_dims([_share(base)]), pd.DataFrame) and dominant_dims([_share(base)]).empty


def test_controls_by_hand():
    gen = torch.Generator().manual_seed(2)
    reference = torch.rand(2000, generator=gen, dtype=torch.float64)
    runs = [("neg", 0), ("neg", 1), ("pos", 0), ("pos", 1)]
    # trained shares that all follow the base's profile; untrained ones ranked against it, one vector per seed
    trained = {r: _share(reference + 0.01 * torch.rand(2000, generator=gen, dtype=torch.float64)) for r in runs}
    by_seed = {seed: torch.rand(2000, generator=gen, dtype=torch.float64) for seed in (0, 1)}
    untrained = {(a, seed): _share(2 - reference + 0.001 * by_seed[seed]) for a, seed in runs}
    c = controls(trained, untrained, reference, k=10, seed=0)
    assert c["untrained"] == stability(untrained, k=10).summary()
    assert c["base_profile"]["trained"]["min"] > 0.99 and c["base_profile"]["untrained"]["max"] < -0.99
    # shuffled dimensions: the chance level (sd 1/sqrt(1999) ~ 0.02 per pair), whatever the trained agreement
    assert stability(trained).summary()["different"]["spearman_mean"] > 0.99
    assert all(abs(c["shuffled"][kind]["spearman_mean"]) < 0.1 for kind in PAIR_KINDS)
    shuffled = permuted(trained, seed=0)
    assert all(torch.equal(shuffled[r].sort().values, trained[r].sort().values) for r in runs)
    assert all(torch.equal(shuffled[r], permuted(trained, seed=0)[r]) for r in runs)  # seeded
    view = side_by_side(stability(trained).summary(), c)
    assert (
        view["same_seed"]["untrained"] == c["untrained"]["same_seed"]["spearman_mean"]
        and view["different"]["trained"] > 0.99
    )
    assert view["base_profile"] == {
        "trained": c["base_profile"]["trained"]["mean"],
        "untrained": c["base_profile"]["untrained"]["mean"],
    }
    frame = kinds_frame({"untrained": c["untrained"], "shuffled": c["shuffled"]})
    assert frame[["irm", "kind"]].values.tolist() == [[s, k] for s in ("untrained", "shuffled") for k in PAIR_KINDS]
    assert frame.spearman_mean.iloc[0] == c["untrained"]["same_alignment"]["spearman_mean"] and "spearman" not in frame
    with pytest.raises(ValueError, match="trained and untrained runs differ"):
        controls(trained, {r: untrained[r] for r in runs[:3]}, reference)
