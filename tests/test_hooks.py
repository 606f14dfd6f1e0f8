import pytest
import torch

from workbench.hooks import attach, capture, check_layer, hook_name, hook_names


def test_hook_names_build_and_check(tiny_llama):
    assert hook_name(tiny_llama, "resid_post", 1) == "blocks.1.hook_resid_post"
    assert hook_name(tiny_llama, "z", -1) == "blocks.1.attn.hook_z"
    assert hook_name(tiny_llama, "mlp_post", 0) == "blocks.0.mlp.hook_post"
    assert hook_name(tiny_llama, "hook_embed") == "hook_embed"
    assert hook_names(tiny_llama, "attn_out") == ["blocks.0.hook_attn_out", "blocks.1.hook_attn_out"]
    for name in hook_names(tiny_llama, "resid_mid") + hook_names(tiny_llama, "mlp_out"):
        assert name in tiny_llama.hook_dict


def test_unknown_hook_name_lists_close_matches(tiny_llama):
    with pytest.raises(KeyError, match=r"close matches: blocks\.1\.hook_resid_post"):
        hook_name(tiny_llama, "blocks.1.hook_resid_pots")
    with pytest.raises(KeyError, match="unknown hook kind 'resid_psot'"):
        hook_name(tiny_llama, "resid_psot", 0)


def test_layer_out_of_range_names_the_range(tiny_llama):
    with pytest.raises(IndexError, match=r"layers 0\.\.1"):
        hook_name(tiny_llama, "resid_pre", 2)
    with pytest.raises(IndexError, match=r"layers 0\.\.1"):
        check_layer(tiny_llama, -3)


def test_attach_modifies_and_removes(tiny_llama):
    tokens = torch.tensor([[3, 14, 15, 92, 65]])
    name = hook_name(tiny_llama, "resid_post", 0)
    with torch.no_grad():
        clean = tiny_llama(tokens)
        with capture(tiny_llama, [name, hook_name(tiny_llama, "resid_pre", 1)]) as acts:
            tiny_llama(tokens)
        # resid_post of layer 0 *is* resid_pre of layer 1
        assert torch.equal(acts[name], acts["blocks.1.hook_resid_pre"])
        with (
            attach(tiny_llama, [(name, lambda x, hook: torch.zeros_like(x))]),
            capture(tiny_llama, ["blocks.1.hook_resid_pre"]) as zeroed,
        ):
            ablated = tiny_llama(tokens)
        assert torch.count_nonzero(zeroed["blocks.1.hook_resid_pre"]) == 0
        assert not torch.allclose(ablated, clean)
        assert torch.equal(tiny_llama(tokens), clean)


def test_hooks_removed_when_body_raises(tiny_llama):
    tokens = torch.tensor([[3, 14, 15]])
    name = hook_name(tiny_llama, "attn_out", 1)
    with torch.no_grad():
        clean = tiny_llama(tokens)
        with pytest.raises(RuntimeError, match="boom"), attach(tiny_llama, [(name, lambda x, hook: x + 1.0)]):
            raise RuntimeError("boom")
        assert not tiny_llama.hook_dict[name].fwd_hooks
        assert torch.equal(tiny_llama(tokens), clean)


def test_bad_name_attaches_nothing(tiny_llama):
    good = hook_name(tiny_llama, "resid_pre", 0)
    with (
        pytest.raises(KeyError),
        attach(tiny_llama, [(good, lambda x, hook: x * 0), ("blocks.0.hook_nope", lambda x, hook: x)]),
    ):
        pass
    assert not tiny_llama.hook_dict[good].fwd_hooks
