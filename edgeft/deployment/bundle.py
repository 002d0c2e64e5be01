"""A deployed bundle on the device: verified, loaded into onnxruntime, ready to predict."""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgeft.data.records import MEDIA, read_texts
from edgeft.deployment.runtime import make_session
from edgeft.errors import EdgeftError
from edgeft.evaluation.metrics import scores
from edgeft.manifest import check_fields, load_manifest


@dataclass(frozen=True)
class Prediction:
    """What a bundle predicts for one input.

    ``label`` and ``score``: the top label and its probability (classification), or the first
    label above 0.5 (multi-label; None when none is); ``scores``: every label's probability, best
    first (classification), or the labels above 0.5 (multi-label); ``values``: the outputs of a
    regression model, or an embedding model's normalised vector (``label`` and ``score`` are then
    None); ``matches``: the nearest corpus entries and their cosine similarity, best first
    (:meth:`Bundle.search`).
    """

    input: str
    label: str | None
    score: float | None
    scores: dict[str, float] = field(default_factory=dict)
    values: list[float] | None = None
    matches: list[tuple[str, float]] = field(default_factory=list)

    def top(self, k: int) -> list[tuple[str, float]]:
        """The ``k`` best labels and their scores."""
        return list(self.scores.items())[:k]


class Bundle:
    """A deployed bundle: its model with its preprocessing, ready to predict with onnxruntime alone.

    Every file's sha256 is checked on load, so a bundle damaged in transfer is refused before it
    predicts anything. ``Bundle(path).predict(["turn on the lights"])`` gives :class:`Prediction`
    objects; :meth:`scores` gives the raw score matrix.
    """

    def __init__(self, folder: Path | str, threads: int | None = None) -> None:
        self.manifest = check_fields(load_manifest(folder, kind="bundle"))
        data = self.manifest.data
        self.folder = Path(folder)
        self.task = data["task"]
        self.labels = list(data["labels"]["names"])
        self.threads = threads or data.get("threads")

    @functools.cached_property
    def session(self):  # -> onnxruntime.InferenceSession; made on first use (reading the report needs none)
        data = self.manifest.data
        try:
            return make_session(self.manifest.path("model"), self.threads, data.get("graph_optimization", "all"),
                                data.get("session_config"))
        except Exception as exc:  # onnxruntime raises its own types for a file that is not a model it can run
            raise EdgeftError(f"onnxruntime cannot load the bundle's model: {exc}", where=str(self.manifest.path("model")),
                              hint="rebuild the bundle with edgeft deploy (or use the onnxruntime version it was "
                                   "built with).") from exc

    @functools.cached_property
    def input_names(self) -> list[str]:
        return [i.name for i in self.session.get_inputs()]

    @functools.cached_property
    def _encoder(self) -> Any:  # TextEncoder, ImageEncoder or AudioEncoder, read once rather than per batch
        data = self.manifest.data
        if data["modality"] == "text":
            from edgeft.data.encode import TextEncoder

            return TextEncoder(self.folder, data)
        if data["modality"] in MEDIA:
            from edgeft.data.encode import file_encoder

            return file_encoder(self.folder, data)
        raise EdgeftError("This bundle takes tensors, not texts, images or sound.", where=str(self.folder),
                          hint="give .npz files holding the model's input arrays (see predict_npz).")

    @property
    def report(self) -> dict[str, Any]:
        """The deploy report (``report.json``): the recipe chosen and why, fp32 and quantized
        accuracy, size and latency."""
        import json

        return json.loads(self.manifest.path("report").read_text(encoding="utf-8"))

    def encode(self, items: Sequence[str]) -> dict[str, np.ndarray]:
        """Model inputs for texts, or for the paths of images or WAV files."""
        encoder = self._encoder
        if self.manifest.data["modality"] == "text":
            return encoder.pad(encoder.encode(list(items)))
        return encoder.inputs([Path(p) for p in items])

    def predict(self, items: str | Sequence[str] | Mapping[str, np.ndarray], batch_size: int = 32) -> list[Prediction]:
        """Predictions for texts, paths of images or WAV files, or (for models that take tensors) a mapping of input
        arrays with the examples on axis 0; one text may be given alone."""
        if isinstance(items, Mapping):
            values = self.scores_of_arrays({name: np.asarray(array) for name, array in items.items()}, batch_size)
            names = [f"[{i}]" for i in range(len(values))]
        else:
            names = [items] if isinstance(items, str) else [str(item) for item in items]
            values = self.scores(names, batch_size)
        return [self.prediction(name, row) for name, row in zip(names, values)]

    def prediction(self, item: str, row: np.ndarray) -> Prediction:
        """One row of scores as a :class:`Prediction`, with the bundle's label names."""
        if self.task in ("regression", "embedding"):
            return Prediction(item, None, None, values=[float(v) for v in row])
        order = np.argsort(-row, kind="stable")
        if self.task == "multi-label":
            order = order[row[order] > 0.5]
        ranked = {self.labels[i]: float(row[i]) for i in order}
        best = next(iter(ranked.items()), (None, None))
        return Prediction(item, best[0], best[1], ranked)

    def search(self, queries: str | Sequence[str], corpus: Sequence[str], k: int = 3,
               batch_size: int = 32) -> list[Prediction]:
        """For an embedding bundle: each query's ``k`` nearest entries of ``corpus`` (texts) by
        cosine similarity, in :attr:`Prediction.matches`, with the query's embedding in ``values``.
        Embeddings are normalised, so the similarity is a dot product."""
        if self.task != "embedding":
            raise EdgeftError(f"This bundle's model is {self.task}: it predicts labels, it does not embed texts.",
                              where=str(self.folder), hint="search with a bundle of a model exported with "
                                                           "--task embedding, or predict without a corpus.")
        corpus = list(corpus)
        if not corpus:
            raise EdgeftError("The corpus is empty.", where="corpus", hint="give the texts to search among.")
        names = [queries] if isinstance(queries, str) else [str(q) for q in queries]
        found = self.scores(names, batch_size)
        entries = self.scores(corpus, batch_size)
        similarity = found @ entries.T
        results = []
        for name, vector, row in zip(names, found, similarity):
            best = np.argsort(-row, kind="stable")[:k]
            results.append(Prediction(name, None, None, values=[float(v) for v in vector],
                                      matches=[(corpus[i], float(row[i])) for i in best]))
        return results

    def scores(self, items: Sequence[str], batch_size: int = 32) -> np.ndarray:
        """Scores per item (a text, or the path of an image or WAV file): probabilities (classification,
        multi-label), values (regression) or the embedding, one row per item."""
        items = list(items)
        outputs = [self._run(self.encode(items[start : start + batch_size])) for start in range(0, len(items), batch_size)]
        return self._scores(outputs)

    def scores_of_arrays(self, arrays: Mapping[str, np.ndarray], batch_size: int = 32) -> np.ndarray:
        """Scores per example of model inputs given as arrays (axis 0 = example), for bundles of
        models that take tensors."""
        count = len(next(iter(arrays.values()))) if arrays else 0
        outputs = [self._run({name: values[start : start + batch_size] for name, values in arrays.items()})
                   for start in range(0, count, batch_size)]
        return self._scores(outputs)

    def predict_npz(self, paths: list[str]) -> tuple[list[str], np.ndarray]:
        """Places (``file[i]``) and scores of every example in .npz files of input arrays (a
        labels array in them is ignored)."""
        from edgeft.data.arrays import read_input_arrays

        places, rows = [], []
        for path in paths:
            scored = self.scores_of_arrays(read_input_arrays(Path(path), self.manifest.data))
            places += [f"{path}[{i}]" for i in range(len(scored))]
            rows.append(scored)
        return places, np.concatenate(rows) if rows else self._scores([])

    def _run(self, feed: dict[str, np.ndarray]) -> np.ndarray:
        return self.session.run(None, {n: feed[n] for n in self.input_names})[0]

    def _scores(self, outputs: list[np.ndarray]) -> np.ndarray:
        width = int(self.manifest.data["output"]["shape"][-1])
        return scores(self.task, np.concatenate(outputs)) if outputs else np.zeros((0, width))


TEXT_FILE_SUFFIXES = (".txt", ".csv", ".tsv", ".jsonl")
DATA_SUFFIXES = {*TEXT_FILE_SUFFIXES, ".npz", *(suffix for suffixes, _ in MEDIA.values() for suffix in suffixes)}


def read_items(args: list[str], modality: str, text_column: str = "text", as_text: bool = False,
               as_file: bool = False, skipped: list[str] | None = None) -> list[str]:
    """What to predict: texts, or files (.txt lines, .csv/.tsv/.jsonl text column; images or WAV
    files, and folders of them; .npz files for models that take tensors).

    The rule for each argument: with ``as_text`` it is a text, with ``as_file`` a file; otherwise
    it is a file when it exists (a file or a folder) or ends with a data file's suffix (.txt,
    .csv, .tsv, .jsonl, .npz, an image's or .wav), and a text when not, so a mistyped file name is an
    error instead of a prediction for the name. Rows of a file without a text go to ``skipped``.
    """
    if as_text and modality != "text":
        raise EdgeftError(f"--text gives texts, but this bundle's model takes {modality} inputs.", where="--text",
                          hint=f"give {MEDIA[modality][1]}s or folders of them." if modality in MEDIA else
                               "give .npz files holding the model's input arrays (axis 0 = example).")
    items: list[str] = []
    for arg in args:
        path = Path(arg)
        if as_text or not (as_file or path.exists() or path.suffix.lower() in DATA_SUFFIXES):
            if modality == "text":
                items.append(arg)
                continue
        if not path.exists() and (modality == "text" or path.suffix.lower() in DATA_SUFFIXES):
            hint = "check the path; to predict these words as a text, pass --text." if modality == "text" else \
                "check the path."
            raise EdgeftError(f"The file {arg} does not exist.", where=arg, hint=hint)
        if modality == "tensor":
            if not (path.suffix.lower() == ".npz" and path.is_file()):
                raise EdgeftError(f"{arg} is not a .npz file; this bundle's model takes tensors.", where=arg,
                                  hint="give .npz files holding the model's input arrays (axis 0 = example).")
            items.append(str(path))
        elif modality in MEDIA:
            suffixes, kind = MEDIA[modality]
            if not path.exists():
                raise EdgeftError(f"The {kind} {arg} does not exist.", where=arg, hint=f"give {kind}s or a folder of them.")
            # files and folders whose names start with a dot (macOS's ._clip.wav) are not the user's clips
            items += sorted(str(p) for p in path.rglob("*") if p.suffix.lower() in suffixes
                            and not any(part.startswith(".") for part in p.relative_to(path).parts)) \
                if path.is_dir() else [str(path)]
        elif path.is_dir():
            raise EdgeftError(f"{arg} is a folder, but this bundle reads texts.", where=arg,
                              hint="give texts, or .txt, .csv, .tsv or .jsonl files (--text predicts the name itself).")
        elif path.suffix.lower() not in TEXT_FILE_SUFFIXES:
            raise EdgeftError(f"edgeft reads texts from .txt, .csv, .tsv and .jsonl files, not from "
                              f"{path.suffix or 'files without a suffix'}.", where=arg,
                              hint="give a file of one of those kinds, or pass --text to predict the name itself.")
        else:
            items += read_texts(path, text_column, skipped)
    if not items:
        raise EdgeftError("Nothing to predict.", where=" ".join(args) or "(no input)", hint="give a text or a file.")
    return items
