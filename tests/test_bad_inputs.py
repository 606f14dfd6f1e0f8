# ruff: noqa: E501  (the case tables keep one case per line)
"""Bad inputs, one table per entry point: each is refused early, with an error naming the problem and the fix.

API cases call the library and assert the exception type and message. CLI cases run an experiment's
real ``__main__`` block (``python -m experiments.NAME ARGS``, in-process through :mod:`runpy`) with
model loading made to fail loudly: the run must exit with status 2 and ``error: ...`` on stderr
before any model loads or any step trains. One case runs the CLI in a real subprocess.
"""

from __future__ import annotations

import json
import re
import runpy
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch

import workbench.models
from experiments.fields import ExperimentConfig, check_device, check_irm_path, check_output_dir, check_prompt_lengths
from tests.helpers import without_type_checks
from workbench.analysis.patching import patch_sweep
from workbench.config import ConfigError
from workbench.data.corpora import load_texts
from workbench.data.prompts import PromptSet, prompt_tokens
from workbench.irm import IRM, IRMConfig, TrainConfig, train_irm
from workbench.irm.text import encode_prompt, encode_replies
from workbench.metrics import LogitDiff
from workbench.models import load_model

NO_CUDA = pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@dataclass
class Ctx:
    """What a case may use: a tiny model and a folder of bad files (see ``ctx``)."""

    model: Any
    tmp: Path

    def sweep(self, tokens=None, **kwargs):
        tokens = self.model.to_tokens(["The cat sat on the mat"]) if tokens is None else tokens
        metric = LogitDiff(torch.tensor([[1, 2]] * tokens.shape[0]))
        return patch_sweep(self.model, self.model, "resid_pre", metric, tokens, **kwargs)


@pytest.fixture
def ctx(tiny_llama, tmp_path) -> Ctx:
    files = {
        "empty.txt": b"  \n\n",
        "latin1.txt": "caf\xe9 au lait\n".encode("latin-1"),
        "binary.txt": b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR",
        "broken.jsonl": b'{"text": "one"}\n{"text": "two"}\n{"text": "three",}\n',
        "list.jsonl": b'{"text": "one"}\n["two"]\n',
        "broken.csv": b'text,label\nfine,1\n"unclosed, 2\n',
        "body.csv": b"body\nhello\n",
        "labels.csv": b"text,y\nhello,a\nbye,b\n",
        "nonascii.txt": "\u00e9\u00e9\u00e9\n\u4e2d\u6587\n".encode(),
        "afile": b"not a folder",
    }
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    (tmp_path / "cfg.json").write_text('{"stepz": 3}')
    (tmp_path / "notmodel").mkdir()
    (tmp_path / "notmodel" / "README.md").write_text("weights elsewhere")
    (tmp_path / "badconfig").mkdir()
    (tmp_path / "badconfig" / "config.json").write_text('{"model_type": "llama",')
    (tmp_path / "badconfig" / "tokenizer.json").write_text("{}")
    (tmp_path / "noirm" / "step-00010").mkdir(parents=True)
    return Ctx(tiny_llama, tmp_path)


def _right_padded(c: Ctx):
    tokens = c.model.to_tokens(["The cat sat on the mat today", "A dog"])  # the short row is right-padded
    return c.sweep(tokens)


def _long_prompt(c: Ctx):
    return prompt_tokens(c.model, ["word " * 400])  # tiny_llama's context is 256 tokens


def _tok(c: Ctx):
    return c.model.tokenizer


# Each row: id, the call, the exception type, a phrase naming the problem, a phrase naming the fix.
API_CASES: list[tuple[str, Callable[[Ctx], Any], type[Exception], str, str]] = [
    # configs: every numeric field checked at construction
    ("config nan lr", lambda c: TrainConfig(lr=float("nan")), ConfigError, "TrainConfig.lr", "must be a finite number"),
    ("config inf l1", lambda c: TrainConfig(l1=float("inf")), ConfigError, "TrainConfig.l1", "must be a finite number"),
    ("config fractional steps", lambda c: TrainConfig(steps=2.5), ConfigError, "TrainConfig.steps", "whole number"),
    ("config zero batch", lambda c: TrainConfig(batch_size=0), ConfigError, "batch_size", "must be >= 1"),
    ("config negative warm-up", lambda c: TrainConfig(warmup=-10), ConfigError, "TrainConfig.warmup", "must be >= 0"),
    ("config unknown hook kind", lambda c: IRMConfig(read_hook="attn"), ValueError, "read_hook 'attn'", "choose one of"),
    # patching: no wrapping of out-of-range indices, no padding at the last position
    ("sweep layer 99", lambda c: c.sweep(layers=[99]), IndexError, "layer 99 out of range", "pass layers in that range"),
    ("sweep layer -3", lambda c: c.sweep(layers=[-3]), IndexError, "layer -3 out of range", "-2..-1 counting from"),
    ("sweep position 50", lambda c: c.sweep(positions=[50]), IndexError, "position 50 out of range", "pass positions"),
    ("sweep right padding", _right_padded, ValueError, r"rows \[1\] of tokens end in the pad token", "left-pad"),
    # corpus files
    ("corpus missing", lambda c: load_texts(c.tmp / "nope.txt"), FileNotFoundError, "no text file at", "pass an existing"),
    ("corpus folder", lambda c: load_texts(c.tmp), IsADirectoryError, "is a folder", "pass a .txt, .csv or .jsonl"),
    ("corpus empty", lambda c: load_texts(c.tmp / "empty.txt"), ValueError, "empty.txt is empty", "one text per line"),
    ("corpus latin-1", lambda c: load_texts(c.tmp / "latin1.txt"), ValueError, "is not utf-8 text", "encoding='latin-1'"),
    ("corpus binary", lambda c: load_texts(c.tmp / "binary.txt"), ValueError, "looks binary", "pass a UTF-8 file"),
    ("jsonl bad line", lambda c: load_texts(c.tmp / "broken.jsonl"), ValueError, "line 3: not valid JSON", "one JSON object per line"),
    ("jsonl not object", lambda c: load_texts(c.tmp / "list.jsonl"), ValueError, "line 2: a JSON list", "write objects"),
    ("csv broken", lambda c: load_texts(c.tmp / "broken.csv"), ValueError, "not a readable CSV", "quote fields"),
    ("csv no column", lambda c: load_texts(c.tmp / "body.csv"), KeyError, "no column 'text'", "pass the right column"),
    ("csv no label", lambda c: load_texts(c.tmp / "labels.csv", label_column="y", label="z"), ValueError, "no row of", "its values: \\['a', 'b'\\]"),
    ("corpus no usable text", lambda c: load_texts(c.tmp / "nonascii.txt"), ValueError, "holds no usable text", "give a file"),
    # texts and prompts
    ("train on an empty text", lambda c: train_irm(c.model, IRM.for_model(c.model), ["a tweet", ""], TrainConfig(steps=1, batch_size=2), progress=False), ValueError, "texts are empty", "drop them"),
    ("empty text", lambda c: encode_replies(_tok(c), ["fine", " "], user_prompt="Hi"), ValueError, r"1 of 2 texts are empty or not strings \(indices \[1\]", "drop them"),
    ("texts one string", lambda c: encode_replies(_tok(c), "one text", user_prompt="Hi"), TypeError, "texts is one string", "pass a list"),
    ("prompt fills max_len", lambda c: encode_replies(_tok(c), ["fine"], user_prompt="Hi " * 20, max_len=8), ValueError, "leaves no room for the reply", "raise max_len"),
    ("empty chat prompt", lambda c: encode_prompt(_tok(c), "  "), ValueError, "the prompt is empty", "give a message"),
    ("chat prompt too long", lambda c: encode_prompt(_tok(c), "word " * 50, max_len=20), ValueError, "longer than the context of 20", "shorten it"),
    ("prompt beyond n_ctx", _long_prompt, ValueError, "longer than the model's context of 256", "shorten it"),
    ("empty prompt set", lambda c: PromptSet(("",), ((" a", " b"),)), ValueError, "prompt 0 is empty", "give every prompt"),
    # model folders
    ("not a model folder", lambda c: load_model(c.tmp / "notmodel"), FileNotFoundError, "not a Hugging Face model folder: it has no config.json", "save_pretrained"),
    ("broken config.json", lambda c: load_model(c.tmp / "badconfig"), ValueError, "could not load the model in", "write the folder again"),
    # experiment pre-flight checks
    pytest.param("device cuda without CUDA", lambda c: check_device("--device", "cuda"), ValueError, "no usable CUDA GPU", "use --device cpu", marks=NO_CUDA),
    pytest.param("load_model on cuda", lambda c: load_model(device="cuda"), ValueError, "no usable CUDA GPU", "use cpu", marks=NO_CUDA),
    ("config.json broken", lambda c: TrainConfig.load_json(c.tmp / "broken.jsonl"), ValueError, "broken.jsonl is not a config file", "save_json"),
    ("config.json unknown field", lambda c: TrainConfig.load_json(c.tmp / "cfg.json"), KeyError, r"unknown TrainConfig fields \['stepz'\]", "valid:"),
    pytest.param("device cuda:99", lambda c: check_device("--device", "cuda:99"), ValueError, r"has \d+ CUDA GPU", "one of cuda:0", marks=CUDA),
    ("device malformed", lambda c: check_device("--device", "gpu0"), ValueError, "'gpu0' is not a torch device", "use --device cpu, cuda"),
    ("out is a file", lambda c: check_output_dir("--out", c.tmp / "afile"), NotADirectoryError, "is a file, not a folder", "pass a folder path"),
    ("out under a file", lambda c: check_output_dir("--out", c.tmp / "afile" / "x"), NotADirectoryError, "cannot be created", "pass another folder"),
    ("irm missing", lambda c: check_irm_path("--irm", c.tmp / "runs"), FileNotFoundError, "does not exist", "runs/neuron1512/card/negative/seed-0"),
    ("prompts of two lengths", lambda c: check_prompt_lengths("--prompts", "smollm2-135m-instruct", ["This movie was really", "Bad"]), ValueError, "different token lengths", "equal token length"),
    ("irm no checkpoint", lambda c: check_irm_path("--irm", c.tmp / "noirm"), FileNotFoundError, "holds no IRM checkpoint", "checkpoint folder"),
]  # fmt: skip


def _id(case) -> str:
    return case.values[0] if hasattr(case, "values") else case[0]


@pytest.mark.parametrize(("name", "call", "error", "problem", "fix"), API_CASES, ids=[_id(c) for c in API_CASES])
def test_api_refuses(ctx, name, call, error, problem, fix):
    # the library's own checks, as users meet them (under the test run's type checks a wrong type or word
    # is refused first by beartype, see test_types)
    with without_type_checks(), pytest.raises(error, match=problem) as info:
        call(ctx)
    assert re.search(fix, str(info.value)), f"the message does not name the fix {fix!r}: {info.value}"


def test_negative_indices_count_from_the_end(ctx):
    """Negative layers and positions stay allowed (documented): -1 is the last one."""
    tail = ctx.sweep(layers=[-1], positions=[-1])
    last = ctx.sweep(
        layers=[ctx.model.cfg.n_layers - 1], positions=[ctx.model.to_tokens("The cat sat on the mat").shape[1] - 1]
    )
    assert tail.layers == last.layers and tail.positions == last.positions
    torch.testing.assert_close(tail.values, last.values)


def test_good_corpus_files_still_read(tmp_path):
    (tmp_path / "a.jsonl").write_text(json.dumps({"text": "one"}) + "\n\n" + json.dumps({"text": "two"}) + "\n")
    (tmp_path / "b.json").write_text(json.dumps([{"text": "three"}, {"text": "four"}]))
    (tmp_path / "c.txt").write_bytes("caf\xe9 ok\n".encode("latin-1"))
    (tmp_path / "d.txt").write_bytes("\ufeffwith a BOM\n".encode())
    (tmp_path / "e.txt").write_text("utf16 text\n", encoding="utf-16")
    assert load_texts(tmp_path / "a.jsonl") == ["one", "two"]
    assert load_texts(tmp_path / "b.json") == ["three", "four"]
    assert load_texts(tmp_path / "c.txt", encoding="latin-1") == ["caf ok"]  # the corpus keeps printable ASCII
    assert load_texts(tmp_path / "d.txt") == ["with a BOM"]
    assert load_texts(tmp_path / "e.txt") == ["utf16 text"]


# Each row: id, experiment module, its arguments ({tmp} is the case folder), a phrase naming the problem, and the fix.
CLI_CASES: list[tuple[str, str, list[str], str, str]] = [
    pytest.param("cuda without CUDA", "neuron1512", ["--device", "cuda"], "no usable CUDA GPU", "use --device cpu", marks=NO_CUDA),
    ("malformed device", "neuron1512", ["--device", "cuda:x"], "is not a torch device", "use --device cpu, cuda"),
    ("nan learning rate", "neuron1512", ["--lr", "nan"], "TrainConfig.lr", "must be a finite number"),
    ("zero steps", "neuron1512", ["--steps", "0"], "--steps", "must be >= 1, got 0"),
    ("negative lr", "neuron1512", ["--lr", "-0.1"], "--lr", "must be > 0, got -0.1"),
    ("out is a file", "neuron1512", ["--out", "{tmp}/afile"], "--out", "is a file, not a folder"),
    ("ckpt dir under a file", "neuron1512", ["--ckpt-dir", "{tmp}/afile/runs"], "--ckpt-dir", "cannot be created"),
    ("layer out of range", "neuron1512", ["--layers", "5", "99"], "--layers 99: out of range", "has layers 0..29"),
    ("unknown hook kind", "neuron1512", ["--read-hook", "attn"], "'attn'", "choose"),  # argparse choices or the pre-flight check
    ("write before read", "neuron1512", ["--read-layer", "3", "--layers", "1", "2"], "runs before its read point", "Write only at layers"),
    ("unknown alignment", "neuron1512", ["--alignments", "negative", "angry"], "'angry'", "choose"),
    ("irm path missing", "model_diff", ["--irm", "{tmp}/runs/neuron1512/negative"], "does not exist", "training folder"),
    ("irm without checkpoint", "model_diff", ["--irm", "{tmp}/noirm"], "holds no IRM checkpoint", "checkpoint folder"),
    ("tuned not a model", "model_diff", ["--tuned", "{tmp}/notmodel"], "not a Hugging Face model folder", "save_pretrained"),
    ("base not a model", "model_diff", ["--base", "{tmp}/notmodel"], "not a Hugging Face model folder", "registry name"),
    ("empty prompt", "model_diff", ["--prompts", "This movie was", ""], "prompt 1 is empty", "give every prompt"),
    ("odd answers", "model_diff", ["--answers", " bad", " good", " fine"], "(answer, other) pairs", "got 3 strings"),
    ("empty corpus", "rw_functionalities", ["--corpus", "{tmp}/empty.txt"], "empty.txt is empty", "one text per line"),
    ("broken jsonl", "rw_functionalities", ["--corpus", "{tmp}/broken.jsonl"], "line 3: not valid JSON", "one JSON object per line"),
    ("unknown corpus", "rw_functionalities", ["--corpus", "angry"], "neither an alignment", "pass one of those"),
    ("lr -1", "boundless_das", ["--lr", "-1"], "BoundlessDASConfig.lr", "must be > 0"),
    ("unknown hook", "boundless_das", ["--hook", "resid"], "'resid'", "choose"),
]  # fmt: skip


def _no_model_loads(*args, **kwargs):
    raise AssertionError("a model was loaded before the bad input was refused")


@pytest.mark.parametrize(("name", "module", "args", "problem", "fix"), CLI_CASES, ids=[_id(c) for c in CLI_CASES])
def test_cli_refuses_before_work(ctx, monkeypatch, capsys, name, module, args, problem, fix):
    monkeypatch.setattr(workbench.models, "load_hf", _no_model_loads)
    monkeypatch.setattr(workbench.models, "load_model", _no_model_loads)
    monkeypatch.chdir(ctx.tmp)  # default output folders land here, if anything were written
    monkeypatch.setattr(sys, "argv", [module, *(a.format(tmp=ctx.tmp) for a in args)])
    started = time.perf_counter()
    with pytest.raises(SystemExit) as exit_info:
        runpy.run_module(f"experiments.{module}", run_name="__main__", alter_sys=True)
    seconds = time.perf_counter() - started
    err = capsys.readouterr().err
    assert exit_info.value.code == 2, err
    assert f"python -m experiments.{module}: error:" in err and problem in err and fix in err, err
    assert "Traceback" not in err
    assert not (ctx.tmp / "figures").exists() and not (ctx.tmp / "runs").exists()
    assert seconds < 20, f"took {seconds:.1f} s to refuse"


def test_cli_subprocess_fails_fast_without_traceback(tmp_path):
    """The real command line: exit status 2, one error line, nothing written, no more than the import time."""
    started = time.perf_counter()
    run = subprocess.run(
        [sys.executable, "-m", "experiments.neuron1512", "--device", "gpu0", "--out", str(tmp_path / "out")],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=Path(__file__).resolve().parents[1],
    )
    seconds = time.perf_counter() - started
    assert run.returncode == 2, run.stderr
    assert "error: --device: device 'gpu0' is not a torch device" in run.stderr and "Traceback" not in run.stderr
    assert not (tmp_path / "out").exists()
    print(f"CLI refused a bad --device in {seconds:.1f} s (mostly importing torch and TransformerLens)")


def test_good_flags_pass_the_preflight(tmp_path, monkeypatch):
    """No false refusals: the defaults of every experiment, and the documented --irm training-folder form."""
    from experiments.boundless_das import BoundlessDASConfig
    from experiments.cli import parse_config
    from experiments.model_diff import ModelDiffConfig
    from experiments.neuron1512 import Neuron1512Config, parse_args
    from experiments.rw_functionalities import RWConfig

    monkeypatch.setattr(workbench.models, "load_hf", _no_model_loads)
    step = tmp_path / "runs" / "neuron1512" / "negative" / "checkpoints" / "step-000010"
    step.mkdir(parents=True)
    meta = dict.fromkeys(("irm_config", "model_name", "d_model", "n_layers", "d_vocab"))
    (step / "irm.json").write_text(json.dumps({**meta, "step": 10, "train_config": {"steps": 10}}))
    (step / "irm.safetensors").write_bytes(b"")
    (step / "train_state.pt").write_bytes(b"")
    for cls in (Neuron1512Config, ModelDiffConfig, BoundlessDASConfig, RWConfig):
        assert cls(out=str(tmp_path / "new" / "folder")).preflight() == cls(out=str(tmp_path / "new" / "folder"))
    cfg = parse_config(ModelDiffConfig, ["--irm", str(tmp_path / "runs" / "neuron1512" / "negative"), "--quick"])
    assert cfg.irm.endswith("negative") and cfg.quick
    cfg = parse_args(["--layers", "1", "29", "--read-layer", "0", "--device", "cpu"])
    assert all(p.irm.layers == (1, 29) for p in cfg.runs)
    assert list((tmp_path / "new" / "folder").iterdir()) == []  # proven writable by a probe file, then removed


@dataclass(frozen=True)
class _WithOwnCheck(ExperimentConfig):
    base: str = "smollm2-135m-instruct"
    """Model."""
    prompts: tuple[str, ...] = ("This movie was really",)
    """Prompts batched together."""

    def check(self) -> None:
        check_prompt_lengths("--prompts", self.base, self.prompts)


def test_a_config_check_method_runs_in_the_preflight(capsys):
    from experiments.cli import parse_config

    assert parse_config(_WithOwnCheck, ["--prompts", "This movie was", "That film was"]).prompts[1] == "That film was"
    with pytest.raises(SystemExit):
        parse_config(_WithOwnCheck, ["--prompts", "This movie was really", "Bad"])
    assert "--prompts: the prompts have different token lengths" in capsys.readouterr().err


def _main_cases() -> list[tuple[str, Callable[[Path], Any], type[Exception], str]]:
    """Per experiment: a config built in Python that its ``main`` must refuse before loading a model."""
    from experiments import boundless_das, model_diff, neuron1512, realignments, rw_functionalities

    def layers_beyond_the_model(tmp: Path):
        cfg = neuron1512.Neuron1512Config(out=str(tmp / "out"), ckpt_dir=str(tmp / "runs"))
        return neuron1512.main, neuron1512.resolve(cfg, irm={"layers": (5, 99)})

    return [
        ("neuron1512", layers_beyond_the_model, IndexError, "--layers 99: out of range"),
        (
            "model_diff",
            lambda tmp: (model_diff.main, model_diff.ModelDiffConfig(tuned=str(tmp / "nomodel"), out=str(tmp / "out"))),
            FileNotFoundError,
            "nomodel does not exist",
        ),
        (
            "realignments",
            lambda tmp: (
                realignments.main,
                realignments.RealignmentsConfig(irm=str(tmp / "noirm"), out=str(tmp / "out")),
            ),
            FileNotFoundError,
            "--irm",
        ),
        (
            "rw_functionalities",
            lambda tmp: (
                rw_functionalities.main,
                rw_functionalities.RWConfig(corpus=str(tmp / "missing.txt"), out=str(tmp / "out")),
            ),
            FileNotFoundError,
            "neither an alignment",
        ),
        (
            "boundless_das",
            lambda tmp: (boundless_das.main, boundless_das.BoundlessDASConfig(out=str(tmp / "afile"))),
            NotADirectoryError,
            "is a file, not a folder",
        ),
    ]


@pytest.mark.parametrize("case", range(5), ids=[c[0] for c in _main_cases()])
def test_main_checks_a_config_built_in_python(ctx, monkeypatch, case):
    """``main(cfg)`` runs the pre-flight itself: a bad config built in Python fails before any model loads."""
    name, build, error, problem = _main_cases()[case]
    module = sys.modules[f"experiments.{name}.run"]
    monkeypatch.setattr(workbench.models, "load_hf", _no_model_loads)
    if hasattr(module, "load_model"):
        monkeypatch.setattr(module, "load_model", _no_model_loads)
    monkeypatch.chdir(ctx.tmp)
    main, cfg = build(ctx.tmp)
    with pytest.raises(error, match=re.escape(problem)):
        main(cfg)
    assert not (ctx.tmp / "out").exists() and not (ctx.tmp / "figures").exists()


def test_the_command_line_checks_once(ctx, monkeypatch):
    """The CLI checks its config while parsing; ``main`` then does not check it again, but checks a new one."""
    import experiments.fields
    from experiments.neuron1512 import Neuron1512Config, main

    checked = []
    named = experiments.fields._named

    def counting(check, name, value):
        if name == "--device":
            checked.append(value)
        return named(check, name, value)

    monkeypatch.setattr(experiments.fields, "_named", counting)
    monkeypatch.setattr(workbench.models, "load_hf", _no_model_loads)
    monkeypatch.setattr(workbench.models, "load_model", _no_model_loads)
    monkeypatch.chdir(ctx.tmp)
    monkeypatch.setattr(sys, "argv", ["neuron1512", "--quick", "--out", str(ctx.tmp / "cli")])
    with pytest.raises(AssertionError, match="a model was loaded"):  # the check passed; main went on to load
        runpy.run_module("experiments.neuron1512", run_name="__main__", alter_sys=True)
    assert checked == ["cpu"]
    monkeypatch.setattr(sys.modules["experiments.neuron1512.run"], "load_model", _no_model_loads)
    cfg = Neuron1512Config(quick=True, out=str(ctx.tmp / "api"))
    for _ in range(2):  # a new config is checked once, however often main runs it
        with pytest.raises(AssertionError, match="a model was loaded"):
            main(cfg)
    assert checked == ["cpu", "cpu"]
