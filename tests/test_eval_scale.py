"""The evaluation at platform scale: sparse collaborative scorer, bounded user blocks, one fit per l2."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy import sparse

from evaluation import metrics, protocols, scorers, tuning
from evaluation.splits import Stage


def random_stage(n_users=60, n_items=25, seed=0, name="valid") -> Stage:
    """Users whose histories stay mostly inside one of three item clusters (so neighbours mean something)."""
    rng = np.random.default_rng(seed)
    clusters = np.array_split(np.arange(n_items), 3)
    histories = []
    for _ in range(n_users):
        home = clusters[rng.integers(3)]
        picks = rng.choice(home, size=min(len(home), int(rng.integers(3, 8))), replace=False)
        stray = rng.choice(n_items, size=1)
        histories.append(np.array(list(dict.fromkeys([*picks.tolist(), *stray.tolist()])), dtype=np.int64))
    targets = np.array([rng.choice(np.setdiff1d(np.arange(n_items), h)) for h in histories], dtype=np.int64)
    return Stage(
        name, [f"i{i}" for i in range(n_items)], [f"u{u}" for u in range(n_users)], histories,
        [np.ones(len(h), dtype=np.float32) for h in histories], [np.arange(len(h), dtype=np.float64) for h in histories],
        targets,
    )


def dense_cosine(x: sparse.spmatrix, shrink: float) -> np.ndarray:
    """The reference: the whole items x items shrunk cosine, diagonal zeroed."""
    co = (x.T @ x).toarray().astype(np.float64)
    norms = np.sqrt(np.diag(co))
    np.fill_diagonal(co, 0.0)
    return co / (np.outer(norms, norms) + shrink)


# The sparse neighbourhood -------------------------------------------------------------------


@pytest.mark.parametrize("k", [1, 3, 10, 100])
@pytest.mark.parametrize("cells", [1, 50, 1 << 20])  # 1: a block per item; 1 << 20: all items at once
def test_sparse_neighbours_keep_each_items_k_most_similar(k, cells):
    stage = random_stage()
    x = scorers.interaction_matrix(stage)
    reference = dense_cosine(x, shrink=10.0)
    sim = scorers.cosine_neighbours(x, k, 10.0, cells=cells).toarray()
    for i in range(stage.n_items):
        kept = np.flatnonzero(sim[i])
        assert len(kept) == min(k, np.count_nonzero(reference[i]))
        np.testing.assert_allclose(sim[i, kept], reference[i, kept], rtol=1e-5)
        if len(kept) < np.count_nonzero(reference[i]):  # nothing left out beats what was kept
            dropped = np.setdiff1d(np.arange(stage.n_items), kept)
            assert reference[i, dropped].max() <= reference[i, kept].min() + 1e-7


def test_with_every_neighbour_itemknn_scores_as_the_dense_cosine():
    stage = random_stage()
    knn = scorers.ItemKNN(neighbours=stage.n_items, shrink=5.0, last=4, decay=0.8).fit(stage)
    profile = scorers.recent_profile(stage, range(stage.n_users), last=4, decay=0.8, use_weights=False)
    expected = profile @ dense_cosine(scorers.interaction_matrix(stage), 5.0)
    np.testing.assert_allclose(knn.score(stage, range(stage.n_users)), expected, rtol=1e-5, atol=1e-7)


def test_sparse_itemknn_and_dense_ease_agree_on_the_clusters():
    """Where co-occurrence is clear-cut both collaborative scorers recommend from the user's own cluster."""
    stage = random_stage(n_users=300, n_items=30)
    rows = np.arange(stage.n_users)
    knn = scorers.ItemKNN(neighbours=10, last=50, decay=1.0).fit(stage).score(stage, rows)
    ease = scorers.EASE(l2=10.0).fit(stage).score(stage, rows)
    clusters = np.repeat(np.arange(3), 10)
    keys = protocols.tie_key(stage.n_items, 0)

    for scores in (knn, ease):
        top = metrics.top_k(scores, stage.histories, keys, 3)
        home = [np.bincount(clusters[h], minlength=3).argmax() for h in stage.histories]
        same = np.mean([np.mean(clusters[t] == c) for t, c in zip(top, home)])
        assert same > 0.9
    # And their neighbour of each item is mostly the same item.
    x = scorers.interaction_matrix(stage)
    ease_best = scorers.EASE(l2=10.0).fit(stage).weights.argmax(axis=1)
    knn_best = np.asarray(scorers.cosine_neighbours(x, 1, 0.0).argmax(axis=1)).ravel()
    assert np.mean(clusters[ease_best] == clusters[knn_best]) > 0.9


# Bounded user blocks ------------------------------------------------------------------------


def all_scorers(stage: Stage) -> dict[str, scorers.Scorer]:
    vectors = np.random.default_rng(1).normal(size=(stage.n_items, 8)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return {
        "popularity": scorers.Popularity(),
        "content": scorers.Content(vectors, last=5),
        "itemknn": scorers.ItemKNN(neighbours=5, last=5),
        "ease": scorers.EASE(l2=50.0, last=5),
        "sequential": scorers.Sequential(window=3, last=5),
        "hybrid": scorers.Hybrid([scorers.Sequential(), scorers.Popularity()], [1.0, 0.3]),
    }


@pytest.mark.parametrize("name", ["popularity", "content", "itemknn", "ease", "sequential", "hybrid"])
def test_scoring_in_blocks_equals_scoring_at_once(name):
    stage = random_stage()
    scorer = all_scorers(stage)[name].fit(stage)
    rows = np.arange(stage.n_users)[::-1]  # any order of rows
    whole = scorer.score(stage, rows)
    blocks = list(scorers.user_blocks(rows, stage.n_items, cells=7 * stage.n_items))
    assert [len(b) for b in blocks] == [7] * 8 + [4]
    np.testing.assert_allclose(np.vstack([scorer.score(stage, b) for b in blocks]), whole, rtol=1e-6)


def test_block_size_is_bounded_by_cells_but_never_empty():
    assert [len(b) for b in scorers.user_blocks(range(10), 1_000_000, cells=10)] == [1] * 10
    assert [len(b) for b in scorers.user_blocks(range(10), 3, cells=12)] == [4, 4, 2]


def test_blocked_objective_and_weight_search_match_the_whole_matrix(monkeypatch):
    stage = random_stage()
    keys = protocols.tie_key(stage.n_items, 0)
    signals = {n: s.fit(stage) for n, s in all_scorers(stage).items() if n in ("sequential", "popularity", "itemknn")}
    rows = np.arange(stage.n_users)
    whole = tuning.objective(signals["itemknn"].score(stage, rows), stage, keys)
    space = {"itemknn": (0.0, 0.5), "popularity": (0.0, 0.1)}
    at_once = tuning.search_weights(signals, space, stage, rows, keys).to_dict()
    monkeypatch.setattr(scorers, "BLOCK_CELLS", 5 * stage.n_items)
    assert tuning.blocked_objective(signals["itemknn"], stage, rows, keys) == pytest.approx(whole, abs=1e-12)
    assert tuning.search_weights(signals, space, stage, rows, keys).to_dict() == at_once


# One fit per fit knob ----------------------------------------------------------------------


def test_the_ease_grid_inverts_once_per_l2_and_scores_as_fresh_fits(monkeypatch):
    stage = random_stage()
    keys = protocols.tie_key(stage.n_items, 0)
    fits = []
    original = scorers.EASE.fit
    monkeypatch.setattr(scorers.EASE, "fit", lambda self, s: fits.append(self.l2) or original(self, s))
    found = tuning.search_scorer("collab", lambda s: scorers.EASE(**s), tuning.COLLAB_GRID, stage, keys)
    assert fits == list(tuning.COLLAB_GRID["l2"])
    for setting, score in found.tried:
        assert score == tuning.objective(scorers.EASE(**setting).fit(stage).score(stage, range(stage.n_users)), stage, keys)


# The size switch ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "n_items, max_dense, expected",
    [
        (3_650, scorers.DENSE_EASE_MAX_ITEMS, "ease"),  # MovieLens-small after LlamaRec filtering
        (scorers.DENSE_EASE_MAX_ITEMS, scorers.DENSE_EASE_MAX_ITEMS, "ease"),
        (scorers.DENSE_EASE_MAX_ITEMS + 1, scorers.DENSE_EASE_MAX_ITEMS, "itemknn"),
        (100_000, scorers.DENSE_EASE_MAX_ITEMS, "itemknn"),
        (30, 29, "itemknn"),
    ],
)
def test_the_collaborative_scorer_is_chosen_by_catalog_size(n_items, max_dense, expected):
    assert scorers.collab_kind(n_items, max_dense) == expected
    assert scorers.make_collab(expected).name == expected


def test_an_unknown_collaborative_scorer_is_a_clear_error():
    with pytest.raises(ValueError, match="ease, itemknn"):
        scorers.make_collab("slim")


@pytest.mark.parametrize("max_dense, expected", [(10, "itemknn"), (10_000, "ease")])
def test_the_runner_completes_on_a_synthetic_platform_with_the_chosen_scorer(tmp_path, max_dense, expected):
    from evaluation.runner import EvalConfig, run
    from evaluation.synthetic import Platform, generate
    from retrieval.embeddings import HashingEmbedder

    written = generate(Platform(items=120, users=80, events=1_500, seed=3), tmp_path / "platform", progress=False)
    cfg = EvalConfig(
        out=tmp_path / "report", work_dir=tmp_path / "work", data="custom", catalog=written.catalog, events=written.events,
        protocol="a", variants=["popularity", "collab", "sequential", "hybrid"], min_count=0, progress=False,
        embedder=HashingEmbedder(), dense_collab_max_items=max_dense,
    )
    results = run(cfg)
    assert results["split"]["items"] > max_dense or expected == "ease"
    assert results["knobs"]["collab"]["best"]["scorer"] == expected
    assert results["variants"]["collab"]["knobs"]["scorer"] == expected
    assert ("ItemKNN" in results["variants"]["collab"]["description"]) == (expected == "itemknn")
    saved = json.loads((tmp_path / "report" / "metrics.json").read_text())
    assert 0.0 <= saved["protocol_a"]["test"]["collab"]["NDCG@10"]["mean"] <= 1.0
    assert f'"scorer": "{expected}"' in (tmp_path / "report" / "report.md").read_text()  # the report says which ran


# The weight search's shortcut ---------------------------------------------------------------


def brute_force_weights(scaled, anchor, settings, stage, block, keys) -> np.ndarray:
    """Every setting's weighted sum ranked over the whole catalog (what the shortcut must equal)."""
    out = []
    for setting in settings:
        total = scaled[anchor].copy()
        for name, weight in setting.items():
            if weight:
                total += weight * scaled[name]
        out.append(tuning.block_ndcg(total, stage, block, keys))
    return np.array(out)


@pytest.mark.parametrize("seed", range(6))
def test_the_weight_search_shortcut_equals_ranking_every_weighted_sum(seed):
    stage = random_stage(n_users=40, n_items=30, seed=seed)
    rng = np.random.default_rng(seed)
    block = np.arange(stage.n_users)
    shape = (len(block), stage.n_items)
    # Coarse values make exact ties (between items, and across settings), as counts and sparse signals do.
    scaled = {
        "sequential": scorers.scale_rows(rng.integers(0, 3, shape).astype(np.float32) * (rng.random(shape) < 0.3)),
        "collab": scorers.scale_rows(rng.normal(size=shape).astype(np.float32)),
        "content": scorers.scale_rows(rng.integers(0, 4, shape).astype(np.float32)),
        "popularity": scorers.scale_rows(np.tile(rng.integers(0, 5, stage.n_items), (len(block), 1)).astype(np.float32)),
    }
    settings = tuning.grid(tuning.HYBRID_GRID)
    keys = protocols.tie_key(stage.n_items, seed)
    got = tuning.weighted_ndcg(scaled, "sequential", settings, stage, block, keys)
    np.testing.assert_array_equal(got, brute_force_weights(scaled, "sequential", settings, stage, block, keys))
    assert got.max() > 0  # some target is in some top 10, so the comparison means something


@pytest.mark.parametrize("seed", range(4))
def test_block_ndcg_skips_only_users_who_are_surely_outside_the_top_10(seed):
    stage = random_stage(n_users=50, n_items=40, seed=seed)
    rng = np.random.default_rng(seed)
    scores = rng.integers(0, 6, (stage.n_users, stage.n_items)).astype(np.float32)  # many exact ties
    scores[::7, :] = 0.0  # rows where everything ties with the target
    block = np.arange(stage.n_users)
    keys = protocols.tie_key(stage.n_items, seed)
    full = metrics.ndcg_at(metrics.target_ranks(scores, stage.targets, stage.histories, keys), 10)
    np.testing.assert_array_equal(tuning.block_ndcg(scores, stage, block, keys), full)
    assert 0 < np.count_nonzero(full) < len(full)


# Sampled negatives without a catalog-sized pool per user ----------------------------------


@pytest.mark.parametrize("seen", [[], [0], [5], [0, 1, 2], [3, 4, 9, 10, 11, 19], list(range(1, 20, 2))])
def test_unseen_at_reads_the_sorted_unseen_items(seen):
    seen = np.array(seen, dtype=np.int64)
    pool = np.setdiff1d(np.arange(20), seen)
    np.testing.assert_array_equal(protocols.unseen_at(np.arange(len(pool)), seen), pool)


def test_sampled_negatives_are_the_draw_from_the_whole_unseen_pool(tmp_path):
    from evaluation.splits import leave_one_out
    from evaluation.synthetic import Platform, generate
    from retrieval.ingest import read_catalog, read_events

    written = generate(Platform(items=60, users=40, events=600, seed=5), tmp_path, progress=False)
    split = leave_one_out(read_catalog(written.catalog).records, read_events(written.events).records)
    got = protocols.sampled_negatives(split, seed=3)
    index = split.item_index()
    for user in split.users:  # the original: rng.choice over the explicit pool
        seen = {index[e.item_id] for e in [*user.train, user.valid, user.test]}
        pool = np.setdiff1d(np.arange(len(split.items)), np.fromiter(seen, dtype=np.int64))
        rng = np.random.default_rng([3, protocols._user_seed(user.user_id)])
        np.testing.assert_array_equal(got[user.user_id], rng.choice(pool, size=min(19, len(pool)), replace=False))


def test_a_run_inverts_once_per_searched_l2_plus_once_per_stage(tmp_path, monkeypatch):
    """Search: one EASE fit per l2; then the chosen setting once on validation (shared by the weight
    search, the collab variant and the hybrid) and once on test."""
    from evaluation.runner import EvalConfig, run
    from evaluation.synthetic import Platform, generate
    from retrieval.embeddings import HashingEmbedder

    fits = []
    original = scorers.EASE.fit
    monkeypatch.setattr(scorers.EASE, "fit", lambda self, stage: fits.append((stage.name, self.l2)) or original(self, stage))
    written = generate(Platform(items=80, users=60, events=1_000, seed=4), tmp_path / "platform", progress=False)
    results = run(EvalConfig(
        out=tmp_path / "report", work_dir=tmp_path / "work", data="custom", catalog=written.catalog, events=written.events,
        protocol="both", variants=["collab", "sequential", "hybrid"], min_count=0, progress=False, embedder=HashingEmbedder(),
    ))
    chosen = results["knobs"]["collab"]["best"]["l2"]
    assert fits == [("valid", l2) for l2 in tuning.COLLAB_GRID["l2"]] + [("valid", chosen), ("test", chosen)]
