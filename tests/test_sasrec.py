"""SASRecModel learns what follows what, answers for any history and repeats itself under a seed."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from core.errors import ConfigError
from evaluation.sasrec import SASRecModel
from retrieval.records import Event

torch = pytest.importorskip("torch", reason="SASRecModel needs PyTorch (pip install torch); these tests need it too")

N_ITEMS = 20


def chains(count: int = 120, seed: int = 0) -> list[list[str]]:
    """Runs of consecutive item ids: item k is always followed by item k + 1."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(count):
        start = int(rng.integers(0, N_ITEMS - 4))
        stop = int(rng.integers(start + 3, N_ITEMS + 1))
        out.append([str(k) for k in range(start, stop)])
    return out


def small(**knobs) -> SASRecModel:
    return SASRecModel(**{"hidden": 32, "dropout": 0.1, "max_len": 16, "epochs": 40, "batch_size": 32, "lr": 3e-3, **knobs})


@pytest.fixture(scope="module")
def model() -> SASRecModel:
    return small().fit_sequences(chains())


@pytest.mark.parametrize("history, expected", [(["3"], "4"), (["0", "1", "2"], "3"), (["10", "11"], "12"), (["7", "15"], "16")])
def test_the_item_that_always_came_next_ranks_first(model, history, expected):
    scores = model.score_array(history)
    assert model.item_ids[int(np.argmax(scores))] == expected


def test_scores_are_next_item_probabilities_over_item_ids(model):
    scores = model.score_array(["5"])
    assert scores.shape == (len(model.item_ids),) and scores.dtype == np.float32
    assert scores.min() >= 0 and abs(float(scores.sum()) - 1.0) < 1e-4


def test_the_same_seed_trains_the_same_model():
    a = small(epochs=3, seed=7).fit_sequences(chains())
    b = small(epochs=3, seed=7).fit_sequences(chains())
    c = small(epochs=3, seed=8).fit_sequences(chains())
    np.testing.assert_array_equal(a.score_array(["2", "3"]), b.score_array(["2", "3"]))
    assert not np.array_equal(a.score_array(["2", "3"]), c.score_array(["2", "3"]))


@pytest.mark.parametrize("history", [["unknown", "3"], ["3", "unknown"], ["3", "3"]])
def test_unknown_and_repeated_items_in_the_history_are_ignored(model, history):
    np.testing.assert_array_equal(model.score_array(history), model.score_array(["3"]))


@pytest.mark.parametrize("history", [[], ["unknown"]])
def test_a_history_with_no_known_item_scores_zero_everywhere(model, history):
    scores = model.score_array(history)
    assert scores.shape == (len(model.item_ids),) and not scores.any()
    assert model.scores(history) == {}


def test_an_unfitted_model_scores_nothing():
    model = SASRecModel()
    assert not model.fitted and model.score_array(["a"]).shape == (0,) and model.scores(["a"]) == {}


def test_score_matrix_matches_one_history_at_a_time(model):
    histories = [["1", "2"], [], ["4"], ["9", "10", "11", "12"]]
    rows = model.score_matrix(histories)  # one batch: the shorter histories are padded
    for row, history in zip(rows, histories):
        np.testing.assert_allclose(row, model.score_array(history), atol=1e-6)


def test_scores_lists_the_best_items_first(model):
    best = model.scores(["6"], n=3)
    assert list(best)[0] == "7" and len(best) == 3
    assert list(best.values()) == sorted(best.values(), reverse=True)


def test_fit_reads_each_users_consumed_items_in_time_order():
    events = [Event(user_id=f"u{n}", type="rate", timestamp=float(-t), item_id=item, value=4.0)
              for n, seq in enumerate(chains()) for t, item in enumerate(reversed(seq))]
    events.append(Event(user_id="u0", type="dislike", timestamp=99.0, item_id="disliked"))
    fitted = small(epochs=40).fit(events)
    assert "disliked" not in fitted.item_ids
    assert fitted.item_ids[int(np.argmax(fitted.score_array(["3"])))] == "4"


def test_a_missing_torch_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)  # makes `import torch` fail
    with pytest.raises(ConfigError, match="pip install torch"):
        SASRecModel().fit_sequences([["a", "b"]])


def test_importing_the_module_does_not_import_torch():
    code = "import sys, evaluation.sasrec; assert 'torch' not in sys.modules, 'torch imported at import time'"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).resolve().parent.parent)
