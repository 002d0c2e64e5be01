"""Choosing what trains: numbered blocks and the head found from parameter names, and the
``--train head`` / ``last:N`` / REGEX rules (exact names selected, and one clear error per misuse)."""

from __future__ import annotations

import pytest

from edgeft.errors import EdgeftError
from edgeft.selection import find_blocks, head_names, select_trainable

LAYER = ["attention.self.query.weight", "attention.self.query.bias", "attention.self.key.weight",
         "attention.self.key.bias", "attention.self.value.weight", "attention.self.value.bias",
         "attention.output.dense.weight", "attention.output.dense.bias", "attention.output.LayerNorm.weight",
         "attention.output.LayerNorm.bias", "intermediate.dense.weight", "intermediate.dense.bias",
         "output.dense.weight", "output.dense.bias", "output.LayerNorm.weight", "output.LayerNorm.bias"]
EMBEDDINGS = ["embeddings.word_embeddings.weight", "embeddings.position_embeddings.weight",
              "embeddings.token_type_embeddings.weight", "embeddings.LayerNorm.weight", "embeddings.LayerNorm.bias"]
HEAD = ["pooler.dense.weight", "pooler.dense.bias", "classifier.weight", "classifier.bias"]


def layer(i: int) -> list[str]:
    return [f"encoder.layer.{i}.{name}" for name in LAYER]


def bert(layers: int) -> list[str]:
    """Parameter names of a BertForSequenceClassification, in forward order."""
    return EMBEDDINGS + [n for i in range(layers) for n in layer(i)] + HEAD


MLP = ["fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias", "head.weight", "head.bias"]


def test_find_blocks_on_bert():
    blocks = find_blocks(bert(4))
    assert blocks.prefix == "encoder.layer."
    assert blocks.count == 4
    assert blocks.members[2] == layer(2)


def test_blocks_sorted_numerically_and_last_n_takes_highest_indices():
    names = bert(12)
    assert list(find_blocks(names).members) == list(range(12))  # 10 and 11 come after 9, not after 1
    chosen = select_trainable(names, "last:2")
    assert chosen == layer(10) + layer(11) + HEAD


def test_find_blocks_prefers_the_list_with_most_parameters():
    # three small heads outnumber two blocks, but the blocks hold more parameters
    names = layer(0) + layer(1) + [f"heads.{i}.weight" for i in range(3)]
    assert find_blocks(names).prefix == "encoder.layer."
    assert find_blocks(["heads.0.weight", "heads.1.weight", "heads.2.weight"]).prefix == "heads."


def test_find_blocks_needs_two_numbered_blocks():
    assert find_blocks(MLP) is None
    assert find_blocks(layer(0) + HEAD) is None  # one numbered block is not a repeat
    assert find_blocks([]) is None
    top = find_blocks(["0.weight", "0.bias", "2.weight", "2.bias"])  # a bare nn.Sequential
    assert top.prefix == "" and top.members == {0: ["0.weight", "0.bias"], 2: ["2.weight", "2.bias"]}


def test_head_names():
    assert head_names(bert(2), find_blocks(bert(2))) == HEAD
    assert head_names(MLP, None) == ["head.weight", "head.bias"]  # module of the last parameter
    assert head_names(["w1", "b1", "w2"], None) == ["w2"]  # no module path: the last parameter alone
    assert head_names([], None) == []


def test_head_excludes_parameters_used_before_the_last_block():
    shared = "encoder.rel_bias.weight"  # used between blocks, not part of them
    names = layer(0) + [shared] + layer(1) + HEAD
    assert head_names(names, find_blocks(names)) == HEAD


def test_train_head():
    assert select_trainable(bert(4), "head") == HEAD
    assert select_trainable(MLP, " head ") == ["head.weight", "head.bias"]


def test_train_last_n_keeps_forward_order_and_freezes_embeddings():
    names = bert(4)
    assert select_trainable(names, "last:2") == layer(2) + layer(3) + HEAD
    assert select_trainable(names, "last:4") == [n for n in names if n not in EMBEDDINGS]


def test_train_regex_uses_search_and_forward_order():
    names = bert(2)
    assert select_trainable(names, r"classifier|embeddings\.LayerNorm") == [
        "embeddings.LayerNorm.weight", "embeddings.LayerNorm.bias", "classifier.weight", "classifier.bias"]
    assert select_trainable(names, r"query\.weight") == ["encoder.layer.0.attention.self.query.weight",
                                                         "encoder.layer.1.attention.self.query.weight"]


def test_last_n_without_blocks_is_refused():
    with pytest.raises(EdgeftError, match="needs a model made of numbered blocks") as info:
        select_trainable(MLP, "last:1")
    assert info.value.where == "parameter names such as fc1.weight, fc1.bias, fc2.weight"
    assert "--train REGEX" in info.value.hint


@pytest.mark.parametrize("spec", ["last:0", "last:", "last:x", "last:-1", "last:1.5", "last:\u00b2"])
def test_invalid_last_n(spec):
    with pytest.raises(EdgeftError, match="is not valid") as info:
        select_trainable(bert(2), spec)
    assert info.value.where == "--train"
    assert "last:N" in info.value.hint


def test_last_n_larger_than_the_model():
    with pytest.raises(EdgeftError, match="asks for 5 blocks but the model has 4") as info:
        select_trainable(bert(4), "last:5")
    assert info.value.hint == "use a number from 1 to 4."


def test_head_refused_when_nothing_follows_the_last_block():
    with pytest.raises(EdgeftError, match="no head to train") as info:
        select_trainable(EMBEDDINGS + layer(0) + layer(1), "head")
    assert info.value.where == "--train head"


def test_invalid_regex():
    with pytest.raises(EdgeftError, match="not a valid regular expression") as info:
        select_trainable(bert(2), "classifier(")
    assert info.value.where == "--train"


def test_regex_matching_nothing_shows_real_names():
    with pytest.raises(EdgeftError, match="'decoder' matches no parameter") as info:
        select_trainable(bert(2), "decoder")
    assert info.value.hint.endswith("pooler.dense.bias, classifier.weight, classifier.bias.")


@pytest.mark.parametrize("spec", ["", "  "])
def test_empty_spec_is_refused_not_read_as_match_everything(spec):
    with pytest.raises(EdgeftError, match="--train is empty") as info:
        select_trainable(bert(2), spec)
    assert "'.*'" in info.value.hint
    assert select_trainable(bert(2), ".*") == bert(2)  # training everything stays possible, asked for explicitly


def test_last_n_on_shared_layers_is_refused_with_the_reason_and_the_regex_that_trains_them():
    names = ["emb.weight", "encoder.groups.0.layers.0.query.weight", "encoder.groups.0.layers.0.ffn.weight",
             "classifier.weight"]
    shared = names[1:3]
    with pytest.raises(EdgeftError) as caught:
        select_trainable(names, "last:1", shared)
    assert "runs one set of layer weights (encoder.groups.0.layers.0) as each of its layers" in caught.value.what
    regex = caught.value.hint.split("--train '")[1].split("'")[0]
    assert select_trainable(names, regex) == shared
    assert select_trainable(names, "head", shared) == ["classifier.weight"]
