"""circuitsvis views: props built from hand values, attention patterns against Hugging Face's own."""

import copy
import json
import re

import pytest
import torch
from transformers import AutoModelForCausalLM

from tests.helpers import tiny_llama_config
from workbench.irm import IRM, IRMConfig
from workbench.irm.generate import generate_one
from workbench.models import boot
from workbench.views import (
    attention_comparison,
    attention_view,
    circuitsvis_js,
    head_patterns,
    irm_on_off_view,
    irm_outputs_on_reply,
    irm_token_view,
    side_by_side,
    token_strings,
    token_values,
)


def test_token_values_one_and_several_values():
    one = token_values(["a", "b", "c"], {"x": torch.tensor([1.0, -2.0, 0.5])})
    assert one.element == "ColoredTokens"
    assert one.props == {"tokens": ["a", "b", "c"], "values": [1.0, -2.0, 0.5]}
    multi = token_values(["a", "b"], {"x": [1.0, 2.0], "y": [3.0, 4.0]}, title="t")
    assert multi.element == "ColoredTokensMulti"
    assert multi.props["values"] == [[1.0, 3.0], [2.0, 4.0]]  # [token, value kind]
    assert multi.props["labels"] == ["x", "y"]
    assert multi.title == "t"


def test_token_values_rejects_wrong_lengths():
    with pytest.raises(ValueError, match="one per token"):
        token_values(["a", "b"], {"x": [1.0]})
    with pytest.raises(ValueError, match="at least one"):
        token_values(["a"], {})


def test_irm_token_view_by_hand():
    out = torch.zeros(2, 3, 4)  # token, layer, d_model
    out[0, :, 1] = torch.tensor([1.0, -3.0, 2.0])
    out[1, 0, 0] = -6.0
    view = irm_token_view(["x", "y"], out, dim=1)
    labels = view.props["labels"]
    assert labels == ["mean |IRM output|", "IRM output, dim 1"]
    assert view.props["values"] == [[6.0 / 12, 0.0], [6.0 / 12, 0.0]]
    out[1, 2, 1] = 5.0
    assert irm_token_view(["x", "y"], out, dim=1).props["values"][1] == pytest.approx([11.0 / 12, 5.0])
    with pytest.raises(ValueError, match="outside the residual stream"):
        irm_token_view(["x", "y"], out, dim=4)
    with pytest.raises(ValueError, match=r"\[token, layer, d_model\]"):
        irm_token_view(["x"], out, dim=0)


@pytest.fixture(scope="module")
def llama_and_reference(tokenizer):
    torch.manual_seed(0)
    hf = AutoModelForCausalLM.from_config(tiny_llama_config(len(tokenizer)), attn_implementation="eager").eval()
    reference = copy.deepcopy(hf)  # booting folds the norms into hf's weights in place
    return boot(hf, tokenizer, type(hf).__name__, prepend_bos=False), reference


def test_head_patterns_equal_hugging_face_attentions(llama_and_reference):
    model, reference = llama_and_reference
    tokens = model.to_tokens("The movie was really good")
    heads = [(1, 3), (0, 0), (1, 0)]
    patterns = head_patterns(model, tokens, heads)
    with torch.no_grad():
        attentions = reference(tokens, output_attentions=True).attentions
    expected = torch.stack([attentions[layer][0, head] for layer, head in heads])
    torch.testing.assert_close(patterns, expected, atol=1e-5, rtol=1e-4)
    assert torch.allclose(patterns.sum(-1), torch.ones(3, tokens.shape[1]), atol=1e-5)
    with pytest.raises(ValueError, match="4 heads"):
        head_patterns(model, tokens, [(0, 4)])
    with pytest.raises(ValueError, match="one prompt"):
        head_patterns(model, tokens.repeat(2, 1), [(0, 0)])


def test_attention_views_side_by_side(llama_and_reference):
    model, _ = llama_and_reference
    tokens = model.to_tokens("Hello there")
    view = attention_view(model, tokens, [(0, 1), (1, 2)])
    assert view.element == "AttentionHeads"
    assert view.props["attentionHeadNames"] == ["L0H1", "L1H2"]
    assert view.props["tokens"] == token_strings(model.tokenizer, tokens[0].tolist())
    assert len(view.props["attention"]) == 2 and len(view.props["attention"][0]) == tokens.shape[1]
    row = attention_comparison({"base": model, "tuned": model}, tokens, [(0, 1)], title="heads")
    assert [v.title for v in row.views] == ["base", "tuned"]
    assert row.views[0].props == row.views[1].props
    html = row.html()
    assert html.count("CircuitsVis.render(") == 2 and "<h4>heads</h4>" in html
    with pytest.raises(ValueError):
        side_by_side({})


def test_view_html_calls_the_bundle_with_its_props():
    view = token_values(["</script>", "b"], {"x": [1.0, 2.0]})
    page = view.html()
    call = re.search(r'CircuitsVis\.render\("(cv-[0-9a-f]+)", CircuitsVis\.ColoredTokens, (.*)\);</script>', page)
    assert call and f'id="{call.group(1)}"' in page
    assert json.loads(call.group(2).replace("<\\/", "</")) == view.props
    assert "</script>" not in call.group(2)  # a token cannot end the script early
    notebook = view._repr_html_()  # self-contained: the bundle inline, no network
    assert notebook.count("var CircuitsVis=") == 1 and "sourceMappingURL" not in notebook
    assert "https://unpkg.com" not in notebook
    assert circuitsvis_js().startswith('"use strict";var CircuitsVis=')


def test_saved_view_page_is_self_contained(tmp_path):
    row = side_by_side({"a": token_values(["x"], {"v": [1.0]}), "b": token_values(["y"], {"v": [2.0]})}, "A & B")
    path = row.save(tmp_path / "sub" / "views.txt")
    assert path == tmp_path / "sub" / "views.html"
    page = path.read_text()
    assert page.count("var CircuitsVis=") == 1 and page.count("CircuitsVis.render(") == 2
    assert "<title>A &amp; B</title>" in page and "https://" not in page.split("var CircuitsVis=")[0]
    assert page.index("var CircuitsVis=") < page.index("CircuitsVis.render(")  # the bundle loads first
    assert token_values(["x"], {"v": [1.0]}).save(tmp_path / "one").read_text().count("CircuitsVis.render(") == 1


def _random_irm(model):
    irm = IRM.for_model(model, IRMConfig(hidden_mult=0.5, n_hidden=2))
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in irm.net[-1].parameters():  # the last layer starts at zero (identity); make it write something
            p.copy_(torch.randn(p.shape, generator=gen) * 0.05)
    return irm


def test_irm_outputs_on_reply_match_the_generation_record(tiny_llama):
    model = tiny_llama
    irm = _random_irm(model)
    on = generate_one(model, irm, "How was your day?", max_new_tokens=6)
    off = generate_one(model, None, "How was your day?", max_new_tokens=6)
    torch.testing.assert_close(irm_outputs_on_reply(model, irm, on), on.irm_out, atol=1e-5, rtol=0)
    off_out = irm_outputs_on_reply(model, irm, off)
    assert off_out.shape == (len(off.tokens), 2, 64) and off_out.abs().sum() > 0
    row = irm_on_off_view(model, irm, off, on, dim=5)
    assert [v.title for v in row.views] == ["IRM off (what the IRM would add)", "IRM on"]
    assert row.views[1].props == irm_token_view(token_strings(model.tokenizer, on.tokens), on.irm_out, 5).props
    assert row.views[0].props["values"][0][1] == pytest.approx(off_out[0, :, 5].sum().item(), abs=1e-6)


def test_token_strings_keep_characters_split_over_byte_tokens(tokenizer):
    text = "I love it 😀🎉 so much é"
    ids = tokenizer(text)["input_ids"]
    pieces = [tokenizer.decode([i]) for i in ids]
    assert any("\ufffd" in p for p in pieces)  # the emoji are split over byte-level tokens
    strings = token_strings(tokenizer, ids)
    assert len(strings) == len(ids) and "".join(strings) == text
    assert not any("\ufffd" in s for s in strings)
    assert strings[:3] == pieces[:3] and strings[3] == " 😀"
