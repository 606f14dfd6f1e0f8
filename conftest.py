"""The test session's setup: caches in a temporary folder (first, see :mod:`tests.caches`), and the names the
docstring examples of ``workbench`` use (``--doctest-modules``): a tiny random Llama as ``model``."""

from tests.caches import redirect_caches, remove

_, TEST_CACHE = redirect_caches()

import pytest  # noqa: E402  (after the redirect: transformers must see the test cache)
import torch  # noqa: E402
from transformers import AutoTokenizer  # noqa: E402

from tests.helpers import tiny_llama_config  # noqa: E402
from workbench.irm import IRM, IRMConfig  # noqa: E402
from workbench.models import DEFAULT_MODEL, ensure_cached, from_config  # noqa: E402


def pytest_unconfigure(config):
    remove(TEST_CACHE)


@pytest.fixture(scope="session")
def doctest_namespace():
    tokenizer = AutoTokenizer.from_pretrained(ensure_cached(DEFAULT_MODEL))
    model = from_config(tiny_llama_config(len(tokenizer), n_layers=4), tokenizer, seed=0)
    torch.manual_seed(0)
    return {
        "model": model,
        "tokens": model.to_tokens("The cat sat on the mat"),
        "prompt": "Tell me about the weather.",
        "irm": IRM.for_model(model, IRMConfig(hidden_mult=1.0)),
        "outs": [],
        # per-dimension shares of IRM output mass, as three IRM runs give them
        **{f"share_{name}": torch.rand(64).div(32) for name in "abc"},
    }
