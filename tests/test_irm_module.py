"""The IRM module, its hooks, injection, recording, masking and checkpoints (tiny random models)."""

import json

import pytest
import torch

from tests.helpers import tiny_llama_config
from workbench.hooks import attach, capture
from workbench.irm import IRM, IRMConfig, inject, load_irm, save_irm
from workbench.irm.generate import generate_one
from workbench.irm.text import encode_prompt
from workbench.models import from_config

SMALL = IRMConfig(hidden_mult=0.5, n_hidden=2)


def randomize_last(irm: IRM, seed: int = 1, scale: float = 0.5) -> IRM:
    """Give the zero-initialised last layer random weights, so the IRM does something."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in irm.net[-1].parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * scale)
    return irm


def hand_irm(irm: IRM, x: torch.Tensor) -> torch.Tensor:
    """The IRM by hand: ReLU(x W^T + b) through the hidden layers, then the last linear layer, split per layer."""
    linears = [m for m in irm.net if isinstance(m, torch.nn.Linear)]
    h = x
    for lin in linears[:-1]:
        h = torch.clamp(h @ lin.weight.T + lin.bias, min=0)
    h = h @ linears[-1].weight.T + linears[-1].bias
    return h.reshape(*x.shape[:-1], len(irm.layers), irm.d_model)


@pytest.fixture
def tokens(tokenizer):
    return torch.tensor([tokenizer("The flight was late and the staff were rude")["input_ids"]])


def test_paper_shape_on_llama_7b_dimensions():
    irm = IRM(IRMConfig(), d_model=64, n_layers=4)
    widths = [m.out_features for m in irm.net if isinstance(m, torch.nn.Linear)]
    assert widths == [192, 192, 192, 192, 256]  # d_model -> 3 d_model (x4) -> d_model * n_layers
    # at Llama-2-7b's size the paper's IRM has ~2.1 B parameters
    n = 4096 * 12288 + 3 * 12288**2 + 12288 * 4096 * 32 + 4 * 12288 + 4096 * 32
    assert 2.0e9 < n < 2.2e9


@pytest.mark.parametrize("fixture", ["tiny_llama", "tiny_gpt2"])
def test_identity_at_init(fixture, request, tokens):
    model = request.getfixturevalue(fixture)
    irm = IRM.for_model(model, SMALL, seed=3)
    base = model(tokens)
    with attach(model, irm.hooks(model)):
        injected = model(tokens)
    assert torch.equal(irm.net[-1].weight, torch.zeros_like(irm.net[-1].weight))
    assert (injected - base).abs().max() <= 1e-6


def test_the_untrained_control_is_the_init_that_writes(tiny_llama, tokens):
    irm, control = (IRM.for_model(tiny_llama, SMALL, seed=3, identity=identity) for identity in (True, False))
    # the same seeded draws; only the zeroing of the last layer is skipped (PyTorch's default bound)
    for a, b in zip(irm.net[:-1].parameters(), control.net[:-1].parameters()):
        assert torch.equal(a, b)
    bound = control.net[-1].in_features ** -0.5
    assert 0 < control.net[-1].weight.abs().max() <= bound and control.net[-1].bias.abs().min() > 0
    assert torch.equal(control.net[-1].weight, IRM.for_model(tiny_llama, SMALL, seed=3, identity=False).net[-1].weight)
    with attach(tiny_llama, control.hooks(tiny_llama)):
        injected = tiny_llama(tokens)
    assert (injected - tiny_llama(tokens)).abs().max() > 1e-3  # unlike the identity, it writes


def test_forward_equals_hand_computation(tiny_llama, tokens):
    model = tiny_llama
    irm = randomize_last(IRM.for_model(model, SMALL))
    with capture(model, ["blocks.0.hook_attn_out", "blocks.0.hook_resid_post"]) as base:
        model(tokens)
    delta0 = hand_irm(irm, base["blocks.0.hook_attn_out"])
    record = []
    with capture(model, ["blocks.1.hook_resid_pre"]) as acts, attach(model, irm.hooks(model, record=record)):
        logits = model(tokens)
    # the residual entering layer 1 is the base residual after layer 0 plus the IRM's layer-0 slice
    torch.testing.assert_close(
        acts["blocks.1.hook_resid_pre"], base["blocks.0.hook_resid_post"] + delta0[:, :, 0], atol=1e-5, rtol=0
    )
    torch.testing.assert_close(record[0], delta0, atol=1e-5, rtol=0)
    # the same injection written with plain hooks adding the hand-computed slices
    plain = [(f"blocks.{i}.hook_resid_post", (lambda x, hook, i=i: x + delta0[:, :, i])) for i in range(2)]
    with attach(model, plain):
        reference = model(tokens)
    torch.testing.assert_close(logits, reference, atol=1e-4, rtol=0)
    assert (logits - model(tokens)).abs().max() > 1e-2  # it does change the model


def test_read_and_write_at_the_same_point(tiny_llama, tokens):
    model = tiny_llama
    irm = randomize_last(
        IRM.for_model(model, IRMConfig(read_hook="resid_mid", write_hook="resid_mid", hidden_mult=0.5, n_hidden=1))
    )
    with capture(model, ["blocks.0.hook_resid_mid"]) as base:
        model(tokens)
    # ln2.hook_in is an alias of the same hook point; hooks run in order, so this capture sees the IRM's write
    with attach(model, irm.hooks(model)), capture(model, ["blocks.0.ln2.hook_in"]) as acts:
        model(tokens)
    expected = base["blocks.0.hook_resid_mid"] + hand_irm(irm, base["blocks.0.hook_resid_mid"])[:, :, 0]
    torch.testing.assert_close(acts["blocks.0.ln2.hook_in"], expected, atol=1e-5, rtol=0)


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(write_hook="resid_pre"),  # blocks.0.hook_resid_pre runs before blocks.0.hook_attn_out
        dict(read_layer=2, layers=(1, 2, 3)),
        dict(read_hook="resid_post", write_hook="resid_mid", layers=(0,)),
    ],
)
def test_write_before_read_is_a_config_error(kwargs):
    with pytest.raises(ValueError, match=r"configuration error.*runs before its read point"):
        IRMConfig(**kwargs)


def test_write_after_read_is_allowed():
    assert IRMConfig(write_hook="resid_pre", layers=(1, 2)).layers == (1, 2)
    assert IRMConfig(read_hook="resid_mid", write_hook="resid_mid").write_hook == "resid_mid"


def test_layers_out_of_range_and_wrong_model(tiny_llama, tokenizer):
    with pytest.raises(IndexError, match=r"0\.\.1"):
        IRM.for_model(tiny_llama, IRMConfig(layers=(0, 5)))
    irm = IRM(SMALL, d_model=32, n_layers=2)
    with pytest.raises(ValueError, match="d_model=32"):
        irm.hooks(tiny_llama)


def test_mask_zeroes_dims_and_layers(tiny_llama, tokens):
    model = tiny_llama
    irm = randomize_last(IRM.for_model(model, SMALL))
    full, masked = [], []
    with inject(model, irm, record=full):
        model(tokens)
    mask = irm.mask_for(dims=[3, 7], layers=[1])
    with inject(model, irm, record=masked, mask=mask):
        model(tokens)
    expected = full[0].clone()
    expected[..., [3, 7]] = 0
    expected[:, :, 1] = 0
    assert torch.equal(masked[0], expected)
    assert full[0].shape == (1, tokens.shape[1], 2, 64)
    with pytest.raises(ValueError, match="writes at layers"):
        IRM(SMALL.replace(layers=(1,)), 64, 2).mask_for(layers=[0])


def test_inject_removes_hooks_when_the_body_raises(tiny_llama, tokens):
    irm = randomize_last(IRM.for_model(tiny_llama, SMALL))
    base = tiny_llama(tokens)
    with pytest.raises(RuntimeError, match="boom"), inject(tiny_llama, irm):
        raise RuntimeError("boom")
    assert torch.equal(tiny_llama(tokens), base)


def test_generate_records_every_token_with_kv_cache(tiny_llama, tokenizer):
    model = tiny_llama
    irm = randomize_last(IRM.for_model(model, SMALL), scale=0.05)
    gen = generate_one(model, irm, "How was your day?", max_new_tokens=7)
    assert gen.irm_out.shape == (len(gen.tokens), 2, 64) and len(gen.tokens) >= 1
    prompt = encode_prompt(tokenizer, "How was your day?")
    full = torch.cat([prompt, torch.tensor([gen.tokens])], dim=1)
    record = []
    with inject(model, irm, record=record):
        logits = model(full)
    # teacher-forced outputs at the positions that produced each generated token
    torch.testing.assert_close(gen.irm_out, record[0][0, prompt.shape[1] - 1 : -1], atol=1e-5, rtol=0)
    assert logits[0, prompt.shape[1] - 1 : -1].argmax(-1).tolist() == list(gen.tokens)


def test_save_load_round_trip(tiny_llama, tokens, tmp_path):
    irm = randomize_last(IRM.for_model(tiny_llama, SMALL.replace(layers=(1,))))
    save_irm(tmp_path / "ck", irm, model=tiny_llama, step=7)
    save_irm(tmp_path / "ck", irm, model=tiny_llama, step=8)  # overwriting an existing checkpoint
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ck"]  # no temporary folders left
    meta = json.loads((tmp_path / "ck" / "irm.json").read_text())
    assert meta["step"] == 8 and meta["d_model"] == 64 and meta["layers"] == [1]
    loaded = load_irm(tmp_path / "ck", tiny_llama)
    assert loaded.cfg == irm.cfg
    for a, b in zip(irm.state_dict().values(), loaded.state_dict().values()):
        assert torch.equal(a, b)
    with inject(tiny_llama, irm):
        x = tiny_llama(tokens)
    with inject(tiny_llama, loaded):
        y = tiny_llama(tokens)
    assert torch.equal(x, y)


def test_wrong_model_checkpoint_refused(tiny_llama, tiny_gpt2, tokenizer, tmp_path):
    irm = IRM.for_model(tiny_llama, SMALL)
    save_irm(tmp_path / "ck", irm, model=tiny_llama)
    deeper = from_config(tiny_llama_config(len(tokenizer), n_layers=3), tokenizer)
    with pytest.raises(ValueError, match=r"n_layers=2.*n_layers=3"):
        load_irm(tmp_path / "ck", deeper)
    with pytest.raises(ValueError, match="allow_other_model"):
        load_irm(tmp_path / "ck", tiny_gpt2)  # same shape, another model
    assert load_irm(tmp_path / "ck", tiny_gpt2, allow_other_model=True).layers == (0, 1)


@pytest.mark.real_model
def test_identity_at_init_on_the_default_model(smollm2):
    tokens = smollm2.to_tokens("The flight was late and the staff were rude")
    irm = IRM.for_model(smollm2, IRMConfig(hidden_mult=0.25, n_hidden=1))
    base = smollm2(tokens)
    record = []
    with inject(smollm2, irm, record=record):
        injected = smollm2(tokens)
    assert record[0].shape == (1, tokens.shape[1], 30, 576) and not record[0].any()
    assert (injected - base).abs().max() <= 1e-6
