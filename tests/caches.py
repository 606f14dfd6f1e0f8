"""The test session's caches: a fresh temporary folder, never the user's.

The root ``conftest.py`` calls :func:`redirect_caches` before anything imports ``transformers``
(``huggingface_hub`` reads ``HF_HOME`` when it is imported), so every test, doctest and subprocess of the
session caches under the temporary folder. The default model's de-quantised folder is the one thing read
from the user's cache, through a link (made once per machine, ~20 s; reading it writes nothing).

This module imports the standard library only.
"""

import os
import shutil
import tempfile
from pathlib import Path

DEFAULT_MODEL_DIR = Path("models") / "smollm2-135m-instruct"
"""Where the default model's de-quantised folder lies inside a workbench cache (``cached_model_dir``)."""

SESSION: dict[str, Path] = {}
"""This session's ``user`` and ``test`` cache folders, once :func:`redirect_caches` ran."""


def user_cache() -> Path:
    """The workbench cache outside the tests (``workbench.models.cache_dir`` with the environment as given)."""
    return Path(os.environ.get("WORKBENCH_CACHE") or Path.home() / ".cache" / "workbench")


def redirect_caches() -> tuple[Path, Path]:
    """Point ``WORKBENCH_CACHE`` and ``HF_HOME`` at a new temporary folder; returns ``(user cache, test cache)``.

    The user's de-quantised default model, where it exists, is linked into the test cache; where it does
    not, the first test that loads the model de-quantises it into the test cache.
    """
    user = user_cache()
    test = Path(tempfile.mkdtemp(prefix="workbench-test-cache-"))
    model = user / DEFAULT_MODEL_DIR
    if (model / "config.json").is_file():
        (test / DEFAULT_MODEL_DIR).parent.mkdir(parents=True)
        (test / DEFAULT_MODEL_DIR).symlink_to(model, target_is_directory=True)
    os.environ["WORKBENCH_CACHE"] = str(test)
    os.environ["HF_HOME"] = str(test / "huggingface")
    SESSION.update(user=user, test=test)
    return user, test


def remove(test: Path) -> None:
    """Delete the test cache (the link to the user's model goes, the model stays)."""
    shutil.rmtree(test, ignore_errors=True)
