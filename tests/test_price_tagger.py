"""The price tagger's interchange intervention training, and the subspace overlap DAS is scored with."""

import pytest
import torch

from tests.helpers import tiny_llama_config
from workbench.data.counterfactual import price_tagging_counterfactuals
from workbench.hooks import hook_name
from workbench.interventions.apply import InterventionSet, run_interventions
from workbench.interventions.modules import BoundlessRotatedSpaceIntervention, RotatedSpaceIntervention
from workbench.interventions.price_tagger import PriceTaggerConfig, _interchanged_logits, price_tokenizer
from workbench.interventions.search import subspace_overlap
from workbench.interventions.spec import InterventionSpec
from workbench.models import from_config


def test_planted_subspaces_are_orthonormal_and_disjoint():
    cfg = PriceTaggerConfig(d_model=16, iit_layer=1, iit_dims=3)
    planted = cfg.planted()
    both = torch.cat([planted["left"], planted["right"]], 1)
    assert both.shape == (16, 6)
    torch.testing.assert_close(both.T @ both, torch.eye(6), atol=1e-5, rtol=0)
    torch.testing.assert_close(cfg.planted()["left"], planted["left"])  # seeded
    assert PriceTaggerConfig().planted() == {}
    with pytest.raises(ValueError, match="iit_layer=2 is out of range"):
        PriceTaggerConfig(n_layers=2, iit_layer=2).planted()
    with pytest.raises(ValueError, match="do not fit"):
        PriceTaggerConfig(d_model=8, iit_layer=0, iit_dims=5).planted()


def test_iit_interchange_matches_the_bridge_rotated_intervention():
    """The HF-hook interchange used in training equals workbench's rotated-space interchange of the
    planted coordinates, run on the bridge at ``blocks.L.hook_resid_post``, last position."""
    tok = price_tokenizer()
    model = from_config(tiny_llama_config(len(tok)), tok, seed=0, prepend_bos=False)
    d, layer = model.cfg.d_model, 0
    basis = PriceTaggerConfig(d_model=d, iit_layer=layer, iit_dims=3).planted()["left"]
    data = price_tagging_counterfactuals("left", 6, seed=0).tokenize(tok)

    rotated = RotatedSpaceIntervention(d, k=3, seed=0)
    full = torch.linalg.qr(torch.cat([basis, torch.randn(d, d - 3)], 1))[0]
    rotated.rotation.weight = full
    torch.testing.assert_close(rotated.subspace() @ rotated.subspace().T, basis @ basis.T, atol=1e-5, rtol=0)
    spec = InterventionSpec(hook_name(model, "resid_post", layer), positions=(-1,))
    want = run_interventions(model, InterventionSet([(spec, rotated)]), data.base, [data.sources[0]]).logits[:, -1]
    with torch.no_grad():
        got = _interchanged_logits(model.original_model, layer, basis, data)
        plain = model(data.base)[:, -1]
    torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)
    assert not torch.allclose(got, plain, atol=1e-3)  # the interchange did something


def test_subspace_overlap_by_hand():
    e = torch.eye(4)
    assert subspace_overlap(e[:, :2], e[:, :2]) == pytest.approx(1.0)
    assert subspace_overlap(e[:, :2], e[:, 2:]) == pytest.approx(0.0)
    diagonal = (e[:, :1] + e[:, 2:3]) / 2**0.5  # 45 degrees from e0
    assert subspace_overlap(e[:, :1], diagonal) == pytest.approx(0.5)
    assert subspace_overlap(e[:, :2], torch.cat([e[:, :1], e[:, 3:]], 1)) == pytest.approx(
        0.5
    )  # one of two dims inside
    assert subspace_overlap(e[:, :3], e[:, :1] * 3) == pytest.approx(1.0)  # scale-free
    assert subspace_overlap(e[:, :0], e[:, :1]) == 0.0
    with pytest.raises(ValueError, match="different spaces"):
        subspace_overlap(e[:, :1], torch.ones(3, 1))


def test_boundless_subspace_is_the_hard_mask_columns():
    module = BoundlessRotatedSpaceIntervention(8, init_width=0.5, seed=0).eval()
    assert module.width == 4
    torch.testing.assert_close(module.subspace(), module.rotation.weight[:, :4].detach())
