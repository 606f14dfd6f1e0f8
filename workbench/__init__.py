"""workbench: an interpretability workbench on TransformerLens's TransformerBridge."""

from workbench.hooks import attach, capture, hook_name, hook_names
from workbench.models import REGISTRY, load_model
from workbench.pairs import check_pair

__all__ = ["REGISTRY", "attach", "capture", "check_pair", "hook_name", "hook_names", "load_model"]
__version__ = "0.1.0"
