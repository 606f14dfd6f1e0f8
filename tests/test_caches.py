"""The test session caches in a temporary folder: a test run writes nothing into the user's cache."""

import os
import subprocess
import sys
from pathlib import Path

import huggingface_hub.constants

from tests.caches import DEFAULT_MODEL_DIR, SESSION
from workbench.interventions.price_tagger import price_tokenizer
from workbench.models import DEFAULT_MODEL, cache_dir, cached_model_dir

ROOT = Path(__file__).resolve().parents[1]


def test_the_session_caches_in_a_temporary_folder():
    test, user = SESSION["test"], SESSION["user"]
    assert cache_dir() == test != user
    assert not test.is_relative_to(user) and not user.is_relative_to(test)
    # set before transformers was imported: huggingface_hub took the test folder too
    assert Path(huggingface_hub.constants.HF_HOME) == test / "huggingface"
    assert cached_model_dir(DEFAULT_MODEL) == test / DEFAULT_MODEL_DIR
    if (user / DEFAULT_MODEL_DIR / "config.json").is_file():  # the user's de-quantised model, linked, not copied
        assert (test / DEFAULT_MODEL_DIR).resolve() == (user / DEFAULT_MODEL_DIR).resolve()


def test_cache_writes_land_in_the_session_folder():
    price_tokenizer()  # caches a tokenizer under cache_dir()/tokenizers
    assert (SESSION["test"] / "tokenizers" / "price" / "tokenizer.json").is_file()


def test_a_test_run_leaves_the_user_cache_alone(tmp_path):
    """A pytest session whose test writes to the cache, run with a stand-in user cache: the stand-in stays empty."""
    user = tmp_path / "user-cache"
    user.mkdir()
    env = {**os.environ, "WORKBENCH_CACHE": str(user)}
    test = f"{Path(__file__).relative_to(ROOT)}::test_cache_writes_land_in_the_session_folder"
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", test],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    assert "1 passed" in run.stdout
    assert list(user.iterdir()) == []
