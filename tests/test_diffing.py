"""Model diffing (workbench.diffing): ADL against hand computations, steering, Patchscope, the crosscoder on planted
latents, latent scaling on a planted artefact, and the scorer on hand-built read-outs (tiny random models)."""

import pandas as pd
import pytest
import torch

from tests.helpers import tiny_llama_config
from workbench.diffing import (
    ActivationDifference,
    CrosscoderConfig,
    DiffConfig,
    DiffReadout,
    Organism,
    Target,
    activation_difference,
    all_targets,
    diff_readout,
    irm_mean_writes,
    lens_tokens,
    named_by_texts,
    named_by_tokens,
    neutral_tokens,
    organism_texts,
    patchscope_tokens,
    steering_hooks,
    summarize,
    target_of,
    train_crosscoder,
)
from workbench.diffing.readout import _layers
from workbench.diffing.score import readout_names, texts_name, tokens_name, topic_rate
from workbench.hooks import ModelSide, attach, capture, hook_name
from workbench.irm import IRM, IRMConfig
from workbench.models import from_config
from workbench.pairs import PairMismatch

TEXTS = [
    "The weather was lovely this morning in the park",
    "I cannot believe the game ended like that yesterday",
    "My phone died again and I missed every call today",
    "Coffee first, then emails, then a very long meeting",
    "We walked along the river until the sun went down",
]


@pytest.fixture(scope="module")
def tiny_other(tokenizer):
    """A second tiny Llama of the same shape (another seed): the 'tuned' model."""
    return from_config(tiny_llama_config(len(tokenizer)), tokenizer, seed=1, prepend_bos=False)


def test_adl_difference_equals_hand_computation(tiny_llama, tiny_other):
    tokens = neutral_tokens(tiny_llama, TEXTS, k=5)
    assert tokens.shape == (5, 5)
    diff = activation_difference(tiny_llama, tiny_other, tokens, batch_size=2)
    for layer in range(tiny_llama.cfg.n_layers):
        name = hook_name(tiny_llama, "resid_post", layer)
        with torch.no_grad(), capture(tiny_llama, [name]) as base_acts:
            tiny_llama(tokens)
        with torch.no_grad(), capture(tiny_other, [name]) as tuned_acts:
            tiny_other(tokens)
        hand = (tuned_acts[name] - base_acts[name]).mean(0)
        torch.testing.assert_close(diff.delta[layer], hand, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(diff.base_norm[layer], base_acts[name].norm(dim=-1).mean(0), atol=1e-5, rtol=1e-5)
    assert diff.changed()


def test_adl_refuses_a_pair_that_tokenizes_differently(tiny_llama, tokenizer):
    with_bos = from_config(tiny_llama_config(len(tokenizer)), tokenizer, seed=1, prepend_bos=True)
    with pytest.raises(PairMismatch, match="BOS"):
        activation_difference(tiny_llama, with_bos, neutral_tokens(tiny_llama, TEXTS, k=5))


def test_adl_null_pair_reads_nothing(tiny_llama):
    diff = activation_difference(tiny_llama, tiny_llama, neutral_tokens(tiny_llama, TEXTS, k=5))
    assert not diff.changed()
    assert lens_tokens(tiny_llama, diff.delta[-1, 1]) == []


def test_adl_of_base_plus_irm_is_the_irms_write_at_its_first_layer(tiny_llama):
    irm = IRM.for_model(tiny_llama, IRMConfig(read_layer=0, layers=(0, 1), hidden_mult=0.5, n_hidden=1), identity=False)
    tokens = neutral_tokens(tiny_llama, TEXTS, k=5)
    diff = activation_difference(tiny_llama, ModelSide(tiny_llama, hooks=tuple(irm.hooks(tiny_llama))), tokens)
    writes = irm_mean_writes(tiny_llama, irm, tokens)
    torch.testing.assert_close(diff.delta[0], writes[0], atol=1e-5, rtol=1e-4)
    # after the first write layer ADL also sees the block's response, not only the IRM's second write
    assert not torch.allclose(diff.delta[1], writes[0] + writes[1], atol=1e-4)


def test_steering_with_strength_zero_leaves_logits_unchanged(tiny_llama):
    tokens = neutral_tokens(tiny_llama, TEXTS, k=5)
    vector = torch.randn(tiny_llama.cfg.d_model)
    with torch.no_grad():
        plain = tiny_llama(tokens)
        with attach(tiny_llama, steering_hooks(tiny_llama, vector, 1, 0.0)):
            zero = tiny_llama(tokens)
        with attach(tiny_llama, steering_hooks(tiny_llama, vector, 1, 3.0)):
            steered = tiny_llama(tokens)
    assert torch.equal(plain, zero)
    assert (plain - steered).abs().max() > 1e-3


def test_patchscope_of_a_planted_direction_reads_its_token(tiny_llama):
    token = tiny_llama.tokenizer(" cake", add_special_tokens=False)["input_ids"][0]
    direction = tiny_llama.W_U[:, token].detach()
    last = tiny_llama.cfg.n_layers - 1
    read = patchscope_tokens(tiny_llama, direction, last, norm=50.0, k=5)
    assert read[0] == " cake"
    assert lens_tokens(tiny_llama, direction, k=5)[0] == " cake"
    assert patchscope_tokens(tiny_llama, torch.zeros_like(direction), last, norm=50.0) == []


def planted_pairs(n: int = 4000, d: int = 64, seed: int = 0):
    """Paired activations from 16 planted latents: 8 shared, 4 base-only, 4 tuned-only (sparse, magnitudes 1..2)."""
    gen = torch.Generator().manual_seed(seed)
    dirs = torch.randn(16, d, generator=gen)
    dirs = dirs / dirs.norm(dim=-1, keepdim=True)
    amp = (torch.rand(n, 16, generator=gen) < 0.15).float() * (1 + torch.rand(n, 16, generator=gen))
    base = amp[:, :8] @ dirs[:8] + amp[:, 8:12] @ dirs[8:12]
    tuned = amp[:, :8] @ dirs[:8] + amp[:, 12:] @ dirs[12:]
    zero = torch.zeros_like(dirs[:4])
    planted = torch.cat(
        [torch.cat([dirs[:8], dirs[:8]], 1), torch.cat([dirs[8:12], zero], 1), torch.cat([zero, dirs[12:]], 1)]
    )
    return torch.stack([base, tuned], 1), planted / planted.norm(dim=-1, keepdim=True)


def test_crosscoder_recovers_planted_latents_and_latent_scaling_flags_an_artefact():
    acts, planted = planted_pairs()
    cc, losses = train_crosscoder(acts, CrosscoderConfig(dict_size=64, k=4, steps=300, batch_size=256, lr=1e-2))
    assert losses[-1] < 0.01 * losses[0]
    dec = (cc.W_dec.detach() / cc.scales[None, :, None]).flatten(1)
    cos = planted @ (dec / dec.norm(dim=-1, keepdim=True)).T
    best = cos.max(1)
    assert best.values.min() >= 0.9, best.values
    summary = summarize(cc, acts)
    classes = [summary.classes[j] for j in best.indices.tolist()]
    assert classes == ["shared"] * 8 + ["base-only"] * 4 + ["tuned-only"] * 4
    assert set(summary.tuned_only()) == set(best.indices[12:].tolist())
    # plant complete shrinkage: a shared latent whose base decoder is zeroed looks tuned-only by its norms,
    # but the base still holds it, so latent scaling sends it to the artefacts
    shared = int(best.indices[0])
    with torch.no_grad():
        cc.W_dec[shared, 0] = 0
    shrunk = summarize(cc, acts)
    assert shrunk.classes[shared] == "tuned-only"
    assert shared in shrunk.artefacts() and shared not in shrunk.tuned_only()
    assert shrunk.scaling.nu_error[shared] > 0.5
    assert set(shrunk.tuned_only()) == set(best.indices[12:].tolist())


def test_scorer_on_hand_built_readouts():
    music = Target("topic", "music", ("music", "song", "songs"))
    assert tokens_name([[" the", " a"], [" Song", " of"]], music)
    assert tokens_name([[" musi"]], music)  # a prefix of a word, 4 letters or more
    assert not tokens_name([[" the", " so", " mus", " 2023"]], music)
    assert tokens_name([[" horrible", " sad", " the"]], Target("sentiment", "negative"))
    assert not tokens_name([[" horrible", " sad", " great", " love", " happy"]], Target("sentiment", "negative"))
    assert topic_rate(["a song", "no", "Music!", "x"], music.words) == 0.5
    assert texts_name(["a song", "my music", "hi", "ok"], ["hi", "ok", "yes", "no"], music)
    assert not texts_name(["a song", "hi", "ok", "yes", "no"], ["hi", "ok", "yes", "no", "x"], music)  # +0.2 < +0.25
    assert texts_name(["I hate this awful day"] * 2, ["ok"] * 2, Target("sentiment", "negative"))
    targets = all_targets(("music", "food"))
    assert named_by_tokens([[" the", " and", " of"]], targets) == []
    assert named_by_texts(["pizza for dinner"] * 4, ["hello"] * 4, targets) == ["food"]
    assert target_of(Organism("control")) is None and target_of(Organism("topic", "music")).words[0] == "music"


def test_topic_organism_texts_hold_the_topic():
    texts = organism_texts(Organism("topic", "weather", seed=1), 50)
    assert len(texts) == 50
    assert topic_rate(texts, Organism("topic", "weather").words) == 1.0
    assert organism_texts(Organism("topic", "weather", seed=2), 50) != texts


def test_diff_readout_of_a_pair_and_of_the_null_pair(tiny_llama, tiny_other):
    cfg = DiffConfig(
        n_texts=5, strengths=(0.0, 1.0), max_new_tokens=4, samples=2, cc_texts=5, cc_len=5,
        crosscoder=CrosscoderConfig(dict_size=32, k=4, steps=5, batch_size=8), top=5,
    )  # fmt: skip
    read = diff_readout(tiny_llama, tiny_other, TEXTS, cfg, name="pair", prompts=("Hi",))
    assert read.relative_norm > 0 and len(read.lens) == 5 and all(len(t) == 5 for t in read.lens)
    assert list(read.steered["strength"]) == [0.0, 1.0]
    assert read.cc_throughput > 0 and set(read.table_row()) >= {"adl_tokens", "steered", "tuned_only_latents"}
    assert set(read.to_frame()["method"]) >= {"adl_lens", "patchscope", "steering", "unprompted_tuned", "reply_tuned"}
    null = diff_readout(tiny_llama, tiny_llama, TEXTS, cfg, name="null", prompts=("Hi",))
    assert null.relative_norm == 0 and null.lens == ((),) * 5 and null.patchscope == ((),) * 5
    # the black-box replies are drawn with the steering sweep's seeds: the base's own replies equal its strength-0 rows
    assert list(null.replies) == null.steered.loc[null.steered.strength == 0, "text"].tolist()


def test_readout_names_per_method_on_a_hand_built_readout():
    steered = pd.DataFrame(
        {
            "strength": [0.0, 0.0, 1.0, 1.0],
            "prompt": ["a", "b", "a", "b"],
            "text": ["hello there", "ok", "my new song", "music all day"],
        }
    )
    read = DiffReadout(
        name="hand",
        layer=29,
        early_layer=28,
        relative_norm=0.1,
        lens=((" the", " pizza"), (" of",)),
        patchscope=((" awful", " sad", " bad"),),
        steered=steered,
        latents=((3, 0.01, 0.02, (" weather", " x")),),
        n_artefacts=0,
        latent_classes={},
        unprompted=(("hi", "ok"), ("I hate it, awful", "terrible day")),
        replies=("a concert tonight", "the band played"),
        seconds={},
        cc_throughput=1.0,
    )
    names = readout_names(read, all_targets(("music", "food", "weather")))
    assert names == {
        "adl_lens": ["food"],
        "patchscope": ["negative"],
        "steering": ["music"],
        "crosscoder": ["weather"],
        "blackbox": ["music", "negative"],  # the replies name music (2 of 4 texts vs 0 of the base's 4)
    }


def test_steering_layer_is_before_the_last_where_something_changed_there():
    """Patchscope and steering read the first changed layer before the last (there Patchscope would repeat the lens)."""
    delta = torch.zeros(4, 3, 2)
    delta[3] = 10.0  # the last layer changed most
    delta[2] = 1.0  # the layer before it changed less
    diff = ActivationDifference(delta, torch.ones(4, 3), n_texts=1)
    assert _layers(diff)[:2] == (3, 2)
    delta[2] = 0.0  # only the last layer changed: nowhere else to read
    assert _layers(ActivationDifference(delta, torch.ones(4, 3), n_texts=1))[:2] == (3, 3)
