"""What the Llama-2-7b-shape benchmark relies on, at tiny size: an IRM built directly in bfloat16 keeps its dtype
through a checkpoint round trip, and the shared-block Llama boots with its blocks' weights stored once."""

import torch
from transformers import AutoTokenizer

from benchmarks.gpu_check import DRY_RUN_LLAMA
from benchmarks.llama7b_shape import PAPER_IRM, shared_block_llama
from workbench.hooks import attach
from workbench.irm import IRM, IRMConfig, load_irm, save_irm
from workbench.models import DEFAULT_MODEL, boot, ensure_cached


def test_irm_in_bfloat16_round_trips_exactly(tiny_llama, tmp_path):
    cfg = IRMConfig(hidden_mult=2.0, n_hidden=2)
    irm = IRM.for_model(tiny_llama, cfg, seed=3, dtype=torch.bfloat16)
    assert {p.dtype for p in irm.parameters()} == {torch.bfloat16}
    assert irm.net[-1].weight.abs().max() == 0 and irm.net[0].weight.abs().max() > 0  # identity at init
    bound = tiny_llama.cfg.d_model**-0.5
    assert irm.net[0].weight.abs().max() <= bound  # nn.Linear's default range
    with torch.no_grad():
        irm.net[-1].weight.normal_(generator=torch.Generator().manual_seed(0))
    again = load_irm(save_irm(tmp_path / "irm", irm, model=tiny_llama), tiny_llama)
    assert {p.dtype for p in again.parameters()} == {torch.bfloat16}
    for key, value in irm.state_dict().items():
        assert torch.equal(again.state_dict()[key], value), key
    # float32 (no dtype) is drawn as before: the same first layer as an IRM built without the argument
    full = IRM.for_model(tiny_llama, cfg, seed=3)
    assert full.net[0].weight.dtype == torch.float32
    assert torch.equal(IRM.for_model(tiny_llama, cfg, seed=3).net[0].weight, full.net[0].weight)


def test_shared_block_llama_boots_with_one_block_of_weights():
    hf = shared_block_llama(DRY_RUN_LLAMA)
    blocks = hf.model.layers
    assert blocks[0].mlp.up_proj.weight.data_ptr() == blocks[3].mlp.up_proj.weight.data_ptr()
    assert hf.model.layers[0].input_layernorm.weight.eq(1).all()
    tok = AutoTokenizer.from_pretrained(ensure_cached(DEFAULT_MODEL))
    model = boot(hf, tok, type(hf).__name__, prepend_bos=False, compat=False)
    tokens = torch.randint(0, DRY_RUN_LLAMA["vocab_size"], (1, 5), generator=torch.Generator().manual_seed(0))
    irm = IRM.for_model(model, PAPER_IRM, dtype=torch.bfloat16)
    assert irm.read_name == "blocks.0.hook_resid_mid" and len(irm.layers) == DRY_RUN_LLAMA["num_hidden_layers"]
    with torch.no_grad():
        plain = model(tokens)
        with attach(model, irm.hooks(model)):
            injected = model(tokens)
    assert plain.dtype == torch.bfloat16 and torch.isfinite(plain).all()
    assert torch.equal(plain, injected)  # the untrained IRM is an identity
