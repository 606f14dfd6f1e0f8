"""Intervention modules and running them on a bridge: hand formulas, pyvene, identities, bundles."""

import importlib.util
import sys
import types
from pathlib import Path

import pytest
import torch

from tests.helpers import tiny_llama_config
from workbench.hooks import attach, capture, hook_name
from workbench.interventions.apply import InterventionSet, run_interventions
from workbench.interventions.bundle import bundle_size, load_bundle, save_bundle
from workbench.interventions.modules import (
    AdditionIntervention,
    BoundlessRotatedSpaceIntervention,
    CollectIntervention,
    ConstantSourceIntervention,
    InterchangeIntervention,
    LowRankRotatedSpaceIntervention,
    RotatedSpaceIntervention,
    ZeroIntervention,
)
from workbench.interventions.spec import InterventionSpec, spec_at
from workbench.models import from_config

D = 16


@pytest.fixture()
def pair():
    g = torch.Generator().manual_seed(0)
    return torch.randn(3, 5, D, generator=g), torch.randn(3, 5, D, generator=g)


def _hand(R, mask, b, s):
    """(m * sR + (1 - m) * bR) R^T, rows as vectors."""
    return (mask * (s @ R) + (1 - mask) * (b @ R)) @ R.T


def test_rotated_equals_hand_formula(pair):
    b, s = pair
    m = RotatedSpaceIntervention(D, k=5, seed=3)
    R = m.rotation.weight.detach()
    mask = (torch.arange(D) < 5).float()
    torch.testing.assert_close(m(b, s), _hand(R, mask, b, s), atol=1e-5, rtol=0)
    assert torch.allclose(R.T @ R, torch.eye(D), atol=1e-5)


def test_boundless_soft_and_hard_masks_equal_hand_formula(pair):
    b, s = pair
    m = BoundlessRotatedSpaceIntervention(D, init_width=0.3, temperature=2.0, seed=1)
    R = m.rotation.weight.detach()
    i = torch.arange(D).float()
    m.train()
    torch.testing.assert_close(m(b, s), _hand(R, torch.sigmoid((0.3 * D - i - 0.5) / 2.0), b, s), atol=1e-5, rtol=0)
    m.eval()
    hard = (i + 0.5 < 0.3 * D).float()  # 4.8 -> the first 5 coordinates
    assert m.width == 5
    torch.testing.assert_close(m(b, s), _hand(R, hard, b, s), atol=1e-5, rtol=0)


def test_low_rank_equals_hand_formula(pair):
    b, s = pair
    m = LowRankRotatedSpaceIntervention(D, rank=3, seed=2)
    R = m.rotation.weight.detach()
    assert R.shape == (D, 3) and torch.allclose(R.T @ R, torch.eye(3), atol=1e-5)
    torch.testing.assert_close(m(b, s), b + (s @ R - b @ R) @ R.T, atol=1e-5, rtol=0)


def _pyvene_interventions():
    """pyvene's interventions module, loaded without its package __init__ (which needs matplotlib etc.)."""
    spec = importlib.util.find_spec("pyvene")
    if spec is None:
        pytest.skip("pyvene is not installed (pip install --no-deps pyvene==0.1.8)")
    root = Path(spec.submodule_search_locations[0])
    saved = {k: v for k, v in sys.modules.items() if k == "pyvene" or k.startswith("pyvene.")}
    try:
        for name, folder in (("pyvene", root), ("pyvene.models", root / "models")):
            stub = types.ModuleType(name)
            stub.__path__ = [str(folder)]
            sys.modules[name] = stub
        return importlib.import_module("pyvene.models.interventions")
    finally:
        for k in [k for k in sys.modules if k == "pyvene" or k.startswith("pyvene.")]:
            del sys.modules[k]
        sys.modules.update(saved)


def test_rotated_and_low_rank_equal_pyvene_on_identical_weights(pair):
    pv = _pyvene_interventions()
    b, s = pair
    ours = RotatedSpaceIntervention(D, k=6, seed=4)
    theirs = pv.RotatedSpaceIntervention(embed_dim=D)
    theirs.set_interchange_dim(6)
    theirs.rotate_layer.weight = ours.rotation.weight.detach().clone()
    torch.testing.assert_close(theirs.rotate_layer.weight, ours.rotation.weight, atol=1e-6, rtol=0)
    torch.testing.assert_close(ours(b, s), theirs(b.clone(), s.clone()), atol=1e-5, rtol=0)

    ours = LowRankRotatedSpaceIntervention(D, rank=4, seed=5)
    theirs = pv.LowRankRotatedSpaceIntervention(embed_dim=D, low_rank_dimension=4)
    theirs.rotate_layer.weight = ours.rotation.weight.detach().clone()
    torch.testing.assert_close(ours(b, s), theirs(b.clone(), s.clone()), atol=1e-5, rtol=0)


def test_static_modules_equal_hand_formulas(pair):
    b, s = pair
    dims = (1, 4)
    z = ZeroIntervention(dims)(b, s)
    assert torch.equal(z[..., 1], torch.zeros_like(b[..., 1])) and torch.equal(z[..., 0], b[..., 0])
    x = InterchangeIntervention(dims)(b, s)
    assert torch.equal(x[..., 4], s[..., 4]) and torch.equal(x[..., 5], b[..., 5])
    add = AdditionIntervention(D, scale=2.0)
    assert torch.equal(add(b), b)  # zero vector at init
    add.vector.copy_(torch.arange(D).float())
    assert torch.equal(add(b), b + 2.0 * torch.arange(D).float())
    const = ConstantSourceIntervention(D, dims)
    const.value.copy_(torch.full((D,), 7.0))
    assert torch.equal(const(b)[..., 1], torch.full_like(b[..., 1], 7.0)) and torch.equal(const(b)[..., 2], b[..., 2])
    with pytest.raises(ValueError, match="needs a source"):
        InterchangeIntervention()(b)


def test_trainable_modules_are_exact_identity_when_source_is_base_or_width_zero(pair):
    b, s = pair
    for m in (
        RotatedSpaceIntervention(D, 7),
        LowRankRotatedSpaceIntervention(D, 3),
        BoundlessRotatedSpaceIntervention(D),
    ):
        assert torch.equal(m(b, b), b)
    assert torch.equal(RotatedSpaceIntervention(D, 0)(b, s), b)
    assert torch.equal(BoundlessRotatedSpaceIntervention(D, init_width=0.0).eval()(b, s), b)


@pytest.mark.parametrize("kind", ["rotated", "low_rank", "boundless"])
def test_trainable_module_learns_a_known_subspace(kind):
    """Targets swap only the component along a hidden unit vector u; the module must find u."""
    g = torch.Generator().manual_seed(0)
    u = torch.nn.functional.normalize(torch.randn(D, generator=g), dim=0)
    module = {
        "rotated": lambda: RotatedSpaceIntervention(D, 1, seed=1),
        "low_rank": lambda: LowRankRotatedSpaceIntervention(D, 1, seed=1),
        "boundless": lambda: BoundlessRotatedSpaceIntervention(D, init_width=0.25, temperature=1.0, seed=1),
    }[kind]()
    boundary = [p for n, p in module.named_parameters() if n == "boundary"]
    rest = [p for n, p in module.named_parameters() if n != "boundary"]
    opt = torch.optim.Adam([{"params": rest, "lr": 0.02}] + ([{"params": boundary, "lr": 0.01}] if boundary else []))
    module.train()
    for step in range(400):
        b, s = torch.randn(64, D, generator=g), torch.randn(64, D, generator=g)
        target = b + ((s - b) @ u)[:, None] * u
        if boundary:
            module.temperature.fill_(1.0 * 0.02 ** (step / 399))
        loss = (module(b, s) - target).pow(2).sum(-1).mean() + (0.05 * boundary[0] if boundary else 0)
        opt.zero_grad()
        loss.backward()
        opt.step()
    module.eval()
    R = module.rotation.weight.detach()
    if kind == "boundless":
        assert module.width == 1
    assert abs(float(R[:, 0] @ u)) > 0.99


# --- on a bridge -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def model(tiny_llama):
    return tiny_llama


@pytest.fixture(scope="module")
def tokens():
    g = torch.Generator().manual_seed(1)
    return (
        torch.randint(100, 5000, (4, 7), generator=g),
        torch.randint(100, 5000, (4, 7), generator=g),
        torch.randint(100, 5000, (4, 9), generator=g),
    )


def test_identity_interventions_leave_logits_unchanged(model, tokens):
    base, source, _ = tokens
    clean = model(base)
    d = model.cfg.d_model
    identity = InterventionSet(
        [
            (spec_at(model, "resid_post", 0, (2, 5)), RotatedSpaceIntervention(d, 0)),
            (spec_at(model, "resid_mid", 1), BoundlessRotatedSpaceIntervention(d, init_width=0.0).eval()),
            (spec_at(model, "mlp_out", 1, -1), AdditionIntervention(d)),
            (spec_at(model, "resid_pre", 1), CollectIntervention()),
        ]
    )
    assert torch.equal(run_interventions(model, identity, base, source).logits, clean)
    same = InterventionSet(
        [
            (spec_at(model, "resid_post", 0), InterchangeIntervention()),
            (spec_at(model, "resid_post", 1, (3,)), RotatedSpaceIntervention(d, 20)),
            (spec_at(model, "z", 0, (1, 2)), LowRankRotatedSpaceIntervention(d, 4)),
        ]
    )
    assert torch.equal(run_interventions(model, same, base, base).logits, clean)


def test_full_interchange_gives_the_source_run(model, tokens):
    base, source, _ = tokens
    swap = InterventionSet([(spec_at(model, "resid_pre", 0), InterchangeIntervention())])
    torch.testing.assert_close(run_interventions(model, swap, base, source).logits, model(source), atol=1e-5, rtol=0)


def test_positions_groups_and_collect_equal_manual_hooks(model, tokens):
    base, source, longer = tokens
    h0, h1 = hook_name(model, "resid_post", 0), hook_name(model, "z", 1)
    with capture(model, [h0, h1]) as src_acts:
        model(source)
    with capture(model, [h1]) as long_acts:
        model(longer)
    g = torch.Generator().manual_seed(2)
    d = model.cfg.d_model
    rot = RotatedSpaceIntervention(d, 10, seed=7)

    def manual0(x, hook):
        x = x.clone()
        x[:, 4] = rot(x[:, 4], src_acts[h0][:, 1])
        return x

    def manual1(x, hook):
        x = x.clone()
        x[:, [-1, 2]] = long_acts[h1][:, [8, 0]]  # source positions differ from base positions
        return x

    with attach(model, [(h0, manual0), (h1, manual1)]), capture(model, [h1]) as seen:
        expected = model(base)
    collect = CollectIntervention()
    spec_z = InterventionSpec(hook=h1, positions=(-1, 2), source_positions=(8, 0), group=1, name="z swap")
    both = InterventionSet(
        [
            (InterventionSpec(hook=h0, positions=(4,), source_positions=(1,)), rot),
            (spec_z, InterchangeIntervention()),
            (InterventionSpec(hook=h1, name="after"), collect),
        ]
    )
    out = run_interventions(model, both, base, [source, longer])
    torch.testing.assert_close(out.logits, expected, atol=1e-5, rtol=0)
    torch.testing.assert_close(out.collected["after"], seen[h1].flatten(2), atol=1e-6, rtol=0)
    assert out.collected["after"].shape == (4, 7, model.cfg.n_heads * model.cfg.d_head)
    del g


def test_hooks_are_removed_even_on_error(model, tokens):
    base, source, _ = tokens
    clean = model(base)

    class Boom(ZeroIntervention):
        def forward(self, base, source=None):
            raise RuntimeError("boom")

    bad = InterventionSet(
        [(spec_at(model, "resid_post", 0), ZeroIntervention()), (spec_at(model, "resid_post", 1), Boom())]
    )
    with pytest.raises(RuntimeError, match="boom"):
        run_interventions(model, bad, base, source)
    assert torch.equal(model(base), clean)
    with pytest.raises(ValueError, match="source input"):
        run_interventions(model, InterventionSet([(spec_at(model, "resid_post", 0), InterchangeIntervention())]), base)
    with pytest.raises(KeyError, match="close matches"):
        run_interventions(
            model, InterventionSet([(InterventionSpec("blocks.0.hook_resid_pots"), ZeroIntervention())]), base
        )


def test_spec_validation():
    with pytest.raises(ValueError, match="one source position per base position"):
        InterventionSpec("blocks.0.hook_resid_post", positions=(1, 2), source_positions=(3,))
    spec = InterventionSpec("blocks.0.hook_resid_post", positions=(1, -1), source_positions=(0, 4), group=2, name="x")
    assert InterventionSpec.from_dict(spec.to_dict()) == spec


def test_bundle_round_trip_on_a_fresh_model(model, tokens, tokenizer, tmp_path):
    base, source, _ = tokens
    d = model.cfg.d_model
    boundless = BoundlessRotatedSpaceIntervention(d, init_width=0.2, seed=3)
    add = AdditionIntervention(d, scale=0.5)
    add.vector.normal_()
    const = ConstantSourceIntervention(d, dims=(0, 3))
    const.value.normal_()
    items = InterventionSet(
        [
            (spec_at(model, "resid_post", 0, (1, 3), name="boundless"), boundless),
            (spec_at(model, "resid_post", 1, -1, name="low"), LowRankRotatedSpaceIntervention(d, 5, seed=9)),
            (spec_at(model, "resid_mid", 1, name="add"), add),
            (spec_at(model, "resid_mid", 0, (2,), name="const"), const),
            (spec_at(model, "z", 1, (0,), name="zero"), ZeroIntervention((1, 2))),
        ]
    ).eval()
    with torch.no_grad():  # move the rotations off their init
        for p in items.parameters():
            p.add_(0.01 * torch.randn_like(p))
    expected = run_interventions(model, items, base, source).logits
    path = save_bundle(items, tmp_path / "bundle", metadata={"model": "tiny"})
    fresh = from_config(tiny_llama_config(len(tokenizer)), tokenizer, seed=0, prepend_bos=False)
    loaded, meta = load_bundle(path, fresh)
    assert meta == {"model": "tiny"} and loaded.specs == items.specs
    assert torch.equal(run_interventions(fresh, loaded, base, source).logits, expected)
    assert 0 < bundle_size(path) < 60_000
