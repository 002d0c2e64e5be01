"""The embedding task: a text encoder's own sentence embedding fine-tuned with a contrastive loss.

The loss and its gradients against PyTorch autograd (both backends), the retrieval metrics on
hand-checked cases, group-aware batches and splits, (text, group) and (text, positive) data,
and the whole flow on the tiny BERT: export, train (held-out retrieval improves), evaluate with
knowledge retention, deploy, and predict (vectors, nearest corpus entries).
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import ORT, text_batch
from reliability_faults import run_edgeft
from edgeft.backends.select import open_trainer
from edgeft.data.batching import grouped_batches
from edgeft.data.split import grouped_split
from edgeft.errors import EdgeftError
from edgeft.evaluation.metrics import contrastive_loss, retrieval
from test_portable import _assert_gradients_match, _forward_weights
from test_train import dataset, held_out_rows, write_csv

TEXTS = ["turn on the lights", "lights on in the kitchen", "play some music", "stop the music",
         "what is the weather", "is it rain", "lights please"]
GROUPS = np.array([0, 0, 1, 1, 2, 2, 0], dtype=np.int64)


@pytest.fixture(scope="module")
def embedding_artifacts(tiny_bert, export_cache):
    return export_cache(model=str(tiny_bert), task="embedding", train="last:1", dropout=False)


@pytest.fixture(scope="module")
def trained(embedding_artifacts, tmp_path_factory) -> dict:
    """A run on (text, group) rows, validated on phrasings written apart from the training ones."""
    from edgeft.training.loop import DataOptions, TrainConfig, train

    root = tmp_path_factory.mktemp("embedding-run")
    data = write_csv(root / "train.csv", dataset(0, 30))
    val = write_csv(root / "held_out.csv", held_out_rows())
    summary = train(embedding_artifacts.folder, DataOptions(train=data, val=val), root / "run",
                    TrainConfig(epochs=8, batch_size=12, lr=3e-3, seed=0), threads=1, backend="portable")
    return {"root": root, "summary": summary, "val": val, "run": root / "run"}


def _torch_loss(embeddings, groups, temperature=0.05):
    """The contrastive loss written independently in PyTorch (log-softmax over the other examples)."""
    import torch

    scaled = embeddings @ embeddings.T / temperature
    eye = torch.eye(len(groups), dtype=torch.bool)
    scaled = scaled.masked_fill(eye, float("-inf"))
    log_prob = scaled - torch.logsumexp(scaled, dim=1, keepdim=True)
    positive = (groups[:, None] == groups[None, :]) & ~eye
    has = positive.any(dim=1)
    per = -torch.logsumexp(log_prob.masked_fill(~positive, float("-inf")), dim=1)
    return per[has].mean()


@pytest.mark.parametrize("backend", ["portable", ORT])
def test_gradients_match_pytorch_autograd(embedding_artifacts, tiny_bert, backend):
    import torch
    from transformers import AutoModel

    from edgeft.exporting.hf_source import MeanPoolEmbedder

    if backend == "ort-training" and "ort-training" not in embedding_artifacts.manifest.data["formats"]:
        pytest.skip("ONNX Runtime's training API is not installed")
    batch = text_batch(embedding_artifacts.folder, TEXTS)
    batch["labels"] = GROUPS
    trainer = open_trainer(embedding_artifacts.manifest, backend, threads=1)
    loss, embeddings = trainer.train_step(batch)

    reference = MeanPoolEmbedder(AutoModel.from_pretrained(tiny_bert, local_files_only=True,
                                                           attn_implementation="eager")).eval()
    weights = _forward_weights(embedding_artifacts.folder)
    reference.load_state_dict({k: weights[k] for k in reference.state_dict() if k in weights}, strict=False)
    out = reference(torch.from_numpy(batch["input_ids"]), torch.from_numpy(batch["attention_mask"]))
    expected = _torch_loss(out, torch.from_numpy(GROUPS))
    expected.backward()
    params = dict(reference.named_parameters())
    assert loss == pytest.approx(expected.item(), rel=1e-5)
    assert loss == pytest.approx(contrastive_loss(out.detach().numpy(), GROUPS), rel=1e-5)
    np.testing.assert_allclose(np.linalg.norm(embeddings, axis=1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(embeddings, out.detach().numpy(), rtol=1e-4, atol=1e-5)
    _assert_gradients_match(trainer.gradients(),
                            {t.name: params[t.name].grad.numpy() for t in embedding_artifacts.trainable})


def test_an_example_without_a_positive_is_a_negative_only():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((5, 4))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    with_loner = contrastive_loss(x, np.array([0, 0, 1, 1, 2]))
    import torch

    assert with_loner == pytest.approx(_torch_loss(torch.from_numpy(x), torch.tensor([0, 0, 1, 1, 2])).item())
    assert contrastive_loss(x, np.arange(5)) == 0.0  # nobody has a positive: nothing to learn


def test_retrieval_metrics_on_a_hand_checked_case():
    # 0 and 1 are one group, 2 and 3 another; 4 has no partner and is only a candidate
    x = np.array([[1, 0], [0.8, 0.6], [0, 1], [0.6, 0.8], [1, 0.1]], dtype=np.float64)  # 4: scaled, not unit
    found = retrieval(x, np.array([0, 0, 1, 1, 2]))
    # cosines: query 0 finds 4 (0.995) before 1 (0.8): rank 2; query 1 finds 3 (0.96) and 4 (0.856)
    # before 0 (0.8): rank 3; query 2 finds 3 (0.8) first: rank 1; query 3 finds 1 (0.96) before 2 (0.8)
    assert found["queries"] == 4
    assert found["recall@1"] == pytest.approx(0.25)
    assert found["recall@5"] == 1.0
    assert found["mrr"] == pytest.approx((1 / 2 + 1 / 3 + 1 + 1 / 2) / 4)
    assert retrieval(x[:2], np.array([0, 1]))["queries"] == 0


def test_batches_keep_groups_together_and_split_keeps_pairs_whole():
    groups = np.repeat(np.arange(10), [5, 5, 5, 5, 2, 2, 2, 2, 1, 3])
    rng = np.random.default_rng(3)
    batches = grouped_batches(groups, 8, rng)
    assert sorted(np.concatenate(batches).tolist()) == list(range(len(groups)))
    assert all(len(b) <= 8 for b in batches)
    # every example but the lone one meets a member of its group in its batch
    taught = sum(int((groups[b] == groups[i]).sum() > 1) for b in batches for i in b)
    assert taught == len(groups) - 1
    again = grouped_batches(groups, 8, np.random.default_rng(3))
    assert all(np.array_equal(a, b) for a, b in zip(batches, again))

    train, val = grouped_split(groups, 0.3, seed=0)
    for group in np.unique(groups):
        members = np.flatnonzero(groups == group)
        in_val = np.isin(members, val).sum()
        if len(members) >= 4:
            assert 2 <= in_val <= len(members) - 2
        else:
            assert in_val in (0, len(members))
    assert sorted([*train, *val]) == list(range(len(groups)))


def test_fine_tuning_improves_held_out_retrieval(trained):
    summary = trained["summary"]
    assert summary["metric"] == "recall@1" and summary["task"] == "embedding"
    before, after = summary["before"], summary["after"]
    assert after["mrr"] > before["mrr"] + 0.15  # measured: MRR 0.70 -> 0.97, recall@1 0.50 -> 0.93
    assert after["recall@1"] >= 0.85 and before["recall@1"] <= 0.6
    assert after["loss"] < before["loss"]


def test_pairs_are_read_as_groups_of_two(embedding_artifacts, tmp_path):
    from edgeft.data.records import read_records

    path = tmp_path / "pairs.jsonl"
    path.write_text("".join(json.dumps({"text": a, "positive": b}) + "\n"
                            for a, b in [("turn on the lights", "lights please"), ("play music", "music please")]))
    records = read_records(path, embedding_artifacts.manifest.data)
    assert records.texts == ["turn on the lights", "lights please", "play music", "music please"]
    assert records.labels.tolist() == [0, 0, 1, 1]
    table = write_csv(tmp_path / "groups.csv", [("a", "x"), ("b", "y"), ("c", "x")])
    assert read_records(table, embedding_artifacts.manifest.data).labels.tolist() == [0, 1, 0]


def test_evaluate_deploy_and_predict(trained, embedding_artifacts, tmp_path):
    import edgeft

    run, val = trained["run"], trained["val"]
    reference = tmp_path / "unrelated.txt"
    reference.write_text("a door\nthe timer is set\nwhat is it\nset an alarm for my kitchen\nit is warmer\n")
    untouched = edgeft.evaluate(embedding_artifacts.folder, val, reference=reference)
    assert untouched.retention["mean_cosine"] == pytest.approx(1.0, abs=1e-6)
    assert untouched.retention["similarity_correlation"] == pytest.approx(1.0, abs=1e-6)
    tuned = edgeft.evaluate(run, val, reference=reference)
    assert tuned.recall_at_1 == pytest.approx(trained["summary"]["best"]["recall@1"])
    assert 0.0 < tuned.retention["mean_cosine"] < 0.999  # moved, and measured

    bundle = edgeft.deploy(run, device="raspberry-pi-5", output=tmp_path / "bundle")
    deployed = edgeft.evaluate(bundle, val)
    assert deployed.recall_at_1 >= tuned.recall_at_1 - 0.02 - 1e-9  # the guard's tolerance on held-out data
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("turn on the lights\nplay some music\nwhat is the weather\n")
    matches = bundle.search(["lights on now", "music please"], ["turn on the lights", "play some music",
                                                                "what is the weather"], k=2)
    assert [m.matches[0][0] for m in matches] == ["turn on the lights", "play some music"]
    assert matches[0].matches[0][1] > matches[0].matches[1][1]
    found = run_edgeft(["predict", str(tmp_path / "bundle"), "lights on now", "--corpus", str(corpus), "--top-k", "1",
                        "--json"], tmp_path)  # on the device side: no torch
    assert found.returncode == 0, found.stderr
    out = json.loads(found.stdout)
    assert out == [{"input": "lights on now", "matches": [{"text": "turn on the lights",
                                                          "score": pytest.approx(matches[0].matches[0][1], abs=1e-4)}]}]
    vectors = json.loads(run_edgeft(["predict", str(tmp_path / "bundle"), "lights on now", "--json"], tmp_path).stdout)
    assert len(vectors[0]["embedding"]) == 32
    assert np.linalg.norm(vectors[0]["embedding"]) == pytest.approx(1.0, abs=1e-3)


def test_what_does_not_fit_the_task_is_refused(embedding_artifacts, tiny_bert, tiny_vit, tmp_path):
    import edgeft
    from edgeft.exporting.artifacts import ExportOptions, export_artifacts

    with pytest.raises(EdgeftError, match="has no labels"):
        export_artifacts(ExportOptions(model=str(tiny_bert), task="embedding", label_names=["a", "b"]))
    with pytest.raises(EdgeftError, match="model of image inputs"):
        export_artifacts(ExportOptions(model=str(tiny_vit), task="embedding", output=tmp_path / "x"))
    with pytest.raises(EdgeftError, match="a regression loss"):
        export_artifacts(ExportOptions(model=str(tiny_bert), task="embedding", loss="mse"))
    data = write_csv(tmp_path / "d.csv", dataset(0, 4))
    with pytest.raises(EdgeftError, match="batch of 1 holds one group"):
        edgeft.train(embedding_artifacts.folder, data, run_dir=tmp_path / "run", batch_size=1)
    assert not (tmp_path / "run").exists()


def test_a_batch_is_never_cut_into_pieces_the_loss_couples_its_examples(embedding_artifacts, tmp_path):
    from edgeft.backends.state import read_state
    from edgeft.training.loop import DataOptions, TrainConfig, train

    data = DataOptions(train=write_csv(tmp_path / "train.csv", dataset(0, 8)), val=None)
    params = []
    for tokens in (0, 8):  # 8 tokens would cut every batch into one-example pieces, if allowed
        train(embedding_artifacts.folder, data, tmp_path / f"run-{tokens}",
              TrainConfig(epochs=1, batch_size=8, lr=3e-3, micro_batch_tokens=tokens, val_fraction=0), threads=1,
              backend="portable")
        params.append(read_state(next((tmp_path / f"run-{tokens}" / "checkpoints").iterdir()) / "trainable.npz").params)
    for name, value in params[0].items():
        np.testing.assert_array_equal(params[1][name], value)


def test_the_guard_tops_up_with_whole_groups(embedding_artifacts, tmp_path):
    from edgeft.data.examples import ExampleSet
    from edgeft.data.records import read_records
    from edgeft.deployment.pipeline import _guard_top_up

    def examples(rows, name):
        return ExampleSet(read_records(write_csv(tmp_path / name, rows), embedding_artifacts.manifest.data),
                          embedding_artifacts.manifest)

    train = examples([(f"text {i}", f"group {i % 40}") for i in range(200)], "train.csv")
    extra = _guard_top_up(train, examples([("a", "x"), ("b", "x")], "val.csv"), 60)
    labels = extra.labels(np.arange(len(extra)))
    assert len(extra) >= 58
    assert all((labels == group).sum() == 5 for group in np.unique(labels))  # each picked group whole


def test_small_groups_and_lone_texts_split_so_that_validation_can_retrieve():
    pairs = np.repeat(np.arange(5), 2)  # 5 pairs at 10%: round(0.5) would hold out none
    _, val = grouped_split(pairs, 0.1, seed=0)
    assert len(val) == 2 and len(set(pairs[val])) == 1
    lone_and_pairs = np.concatenate([np.arange(30), np.repeat(np.arange(30, 35), 2)])
    for seed in range(5):
        _, val = grouped_split(lone_and_pairs, 0.2, seed)
        assert len(val) and all((lone_and_pairs[val] == g).sum() == 2 for g in lone_and_pairs[val])


def test_pairs_that_share_a_text_are_one_group(embedding_artifacts, tmp_path):
    from edgeft.data.records import read_records

    path = tmp_path / "faq.jsonl"
    rows = [("how do i reset", "press the button"), ("reset help", "press the button"), ("play music", "music please")]
    path.write_text("".join(json.dumps({"text": a, "positive": b}) + "\n" for a, b in rows))
    assert read_records(path, embedding_artifacts.manifest.data).labels.tolist() == [0, 0, 0, 0, 1, 1]


def test_retrieval_in_blocks_equals_retrieval_at_once(monkeypatch):
    from edgeft.evaluation import metrics

    rng = np.random.default_rng(4)
    x, groups = rng.standard_normal((50, 6)), rng.integers(0, 8, 50)
    whole = retrieval(x, groups)
    monkeypatch.setattr(metrics, "BLOCK", 7)
    assert retrieval(x, groups) == pytest.approx(whole)
    assert retrieval(np.zeros((0, 6)), np.zeros(0, dtype=np.int64))["queries"] == 0


def test_an_epoch_count_of_grouped_batches_is_counted_per_epoch(embedding_artifacts, tmp_path):
    import math

    from edgeft.training.loop import DataOptions, TrainConfig, train

    rows = [(f"{w} lights", f"g{i}") for i, w in enumerate(["turn", "play", "set", "lock", "stop"]) for _ in range(3)]
    rows += [(f"my {w}", f"p{i}") for i, w in enumerate(["door", "alarm", "rain", "timer", "music", "kitchen"])
             for _ in range(2)]
    data = write_csv(tmp_path / "train.csv", rows)
    config = TrainConfig(epochs=6, batch_size=5, lr=1e-3, val_fraction=0)
    summary = train(embedding_artifacts.folder, DataOptions(train=data), tmp_path / "run", config, threads=1,
                    backend="portable")
    from edgeft.data.records import read_records

    groups = read_records(data, embedding_artifacts.manifest.data).labels
    counts = [len(grouped_batches(groups, 5, np.random.default_rng([0, e]))) for e in range(6)]
    assert len(set(counts)) > 1  # the case at hand: epochs of different lengths
    assert summary["steps"] == sum(counts) and summary["epochs"] == 6
    with pytest.raises(EdgeftError, match="not a metric the embedding task reports"):
        train(embedding_artifacts.folder, DataOptions(train=data), tmp_path / "run2",
              TrainConfig(metric="accuracy"), threads=1)
    with pytest.raises(EdgeftError, match="batch of 3"):
        train(embedding_artifacts.folder, DataOptions(train=data), tmp_path / "run3", TrainConfig(batch_size=3))
    lone = write_csv(tmp_path / "lone.csv", [("a door", "x"), ("the rain", "y")])
    with pytest.raises(EdgeftError, match="No validation text"):
        train(embedding_artifacts.folder, DataOptions(train=data, val=lone), tmp_path / "run4", config)
    import edgeft

    with pytest.raises(EdgeftError, match="No text of"):
        edgeft.evaluate(embedding_artifacts.folder, lone)
    assert math.isfinite(summary["after"]["loss"]) if summary["after"] else True
