"""The paths made fast for a 200k-item, 10M-event platform give what the plain ones gave: the log read
by rowid equals the keyset read, the partial sorts equal full sorts, the sequential scores summed
from the rows equal the sparse product, the trending list kept ready equals a fresh one, and the
item vectors without svds' last step keep every item dot product."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from evaluation.synthetic import Platform, generate
from retrieval.collab import factorize
from retrieval.comention import CoMentionModel
from retrieval import fitting
from retrieval.fitting import read_event_columns
from retrieval.ingest import ingest_catalog, ingest_events
from retrieval.records import Event, Item
from retrieval.sequential import SequentialModel
from retrieval.store import Store
from retrieval.topk import top_k, top_per_row, top_per_row_positions

T0 = 1_700_000_000.0


@pytest.fixture(scope="module")
def stores(tmp_path_factory) -> dict[str, Store]:
    root = tmp_path_factory.mktemp("scale")
    hand = Store.open(f"sqlite:///{root / 'hand.db'}")
    hand.upsert_items([Item(id=i, title=f"Item {i}") for i in "abcdef"])
    hand.add_events([
        Event("u2", "view", T0 + 5, "b"), Event("u1", "view", T0, "a"), Event("u1", "like", T0, "c"),  # one second, three events
        Event("u3", "search", T0 + 1, None, text="sea"), Event("u3", "view", T0 + 2, ""), Event("u4", "like", T0 + 3, "ghost"),
        Event("u1", "rate", T0 + 4, "d", 4.5), Event("u4", "rate", T0 - 9, "zombie", None), Event("u2", "dislike", T0 + 6, "a"),
    ])
    synthetic = Store.open(f"sqlite:///{root / 'synthetic.db'}")
    written = generate(Platform(items=300, users=150, events=4000, seed=11), root / "platform", progress=False)
    ingest_catalog(written.catalog, synthetic, progress=False)
    ingest_events(written.events, synthetic, progress=False)
    yield {"hand-made": hand, "synthetic": synthetic}
    hand.close()
    synthetic.close()


def keyset_read(store, item_ids, through=None, monkeypatch=None):
    """read_event_columns the way PostgreSQL reads it: in (time, id) pages from the store."""
    monkeypatch.setattr(fitting, "event_key", lambda database: "seq")
    try:
        return read_event_columns(store, item_ids, through=through)
    finally:
        monkeypatch.undo()


def same_columns(a, b) -> None:
    assert (a.users, a.items, a.types, a.watermark) == (b.users, b.items, b.types, b.watermark)
    for name in ("user", "item", "kind", "ts", "weight"):
        assert getattr(a, name).dtype == getattr(b, name).dtype, name
        assert np.array_equal(getattr(a, name), getattr(b, name)), name


@pytest.mark.parametrize("log", ["hand-made", "synthetic"])
@pytest.mark.parametrize("through", [None, 5, 1000])
@pytest.mark.parametrize("catalog", [True, False])
def test_the_log_read_by_rowid_equals_the_keyset_read(stores, log, through, catalog, monkeypatch):
    store = stores[log]
    item_ids = [item.id for item in store.iter_items()] if catalog else []
    same_columns(read_event_columns(store, item_ids, chunk_size=7, through=through),
                 keyset_read(store, item_ids, through, monkeypatch))


def test_the_rowid_read_of_an_empty_log_is_empty(tmp_path, monkeypatch):
    with Store.open(f"sqlite:///{tmp_path / 'empty.db'}") as store:
        store.upsert_items([Item(id="a", title="A")])
        columns = read_event_columns(store, ["a"])
        assert len(columns) == 0 and columns.items == ["a"] and columns.watermark is None
        same_columns(columns, keyset_read(store, ["a"], None, monkeypatch))


def test_rows_deleted_after_the_order_was_read_are_left_out(tmp_path, monkeypatch):
    store = Store.open(f"sqlite:///{tmp_path / 'deleting.db'}")
    written = generate(Platform(items=50, users=30, events=500, seed=3), tmp_path / "platform", progress=False)
    ingest_catalog(written.catalog, store, progress=False)
    ingest_events(written.events, store, progress=False)
    item_ids = [item.id for item in store.iter_items()]
    expected = keyset_read(store, item_ids, None, monkeypatch)
    doomed = expected.users[3]
    real = store.database.read

    def read_then_delete():
        # The order query runs first; the user's events vanish before the table is read.
        context = real()
        session = context.__enter__()
        original = session.execute

        def execute(sql, params=()):
            cursor = original(sql, params)
            if sql.startswith("SELECT rowid FROM events WHERE"):
                store.delete_user(doomed)
            return cursor
        session.execute = execute
        return _Entered(context, session)

    monkeypatch.setattr(store.database, "read", read_then_delete)
    got = read_event_columns(store, item_ids)
    monkeypatch.undo()
    after = keyset_read(store, item_ids, None, monkeypatch)
    store.close()
    assert doomed not in got.users and len(after) < len(expected)
    same_columns(got, after)


class _Entered:
    def __init__(self, context, session):
        self.context, self.session = context, session

    def __enter__(self):
        return self.session

    def __exit__(self, *exc):
        return self.context.__exit__(*exc)


def lexsort_top_per_row(data, rows, n_rows, keep):
    """The co-mention fit's row cut as it was: one lexsort of the whole block."""
    counts = np.bincount(rows, minlength=n_rows)
    if counts.max(initial=0) <= keep:
        return np.arange(len(data))
    order = np.lexsort((-data, rows))
    rank = np.arange(len(order)) - np.repeat(np.r_[0, np.cumsum(counts)[:-1]], counts)
    return np.sort(order[rank < keep])


@pytest.mark.parametrize("seed", range(20))
@pytest.mark.parametrize("values", ["distinct", "tied", "float64"])
def test_the_row_cut_keeps_what_a_lexsort_kept(seed, values):
    rng = np.random.default_rng(seed)
    n_rows, keep = int(rng.integers(1, 40)), int(rng.integers(1, 12))
    rows = np.repeat(np.arange(n_rows), rng.integers(0, 30, n_rows))
    data = {"distinct": lambda: rng.random(len(rows)).astype(np.float32),
            "tied": lambda: rng.choice(np.array([0.5, 1.0, 2.0, 1e-30], np.float32), len(rows)),
            "float64": lambda: rng.random(len(rows))}[values]()
    got = top_per_row_positions(data, rows, n_rows, keep)
    assert np.array_equal(got, lexsort_top_per_row(data, rows, n_rows, keep))


@pytest.mark.parametrize("seed", range(10))
def test_a_matrix_cut_to_its_largest_entries_per_row(seed):
    import scipy.sparse as sp

    rng = np.random.default_rng(seed)
    n, keep = int(rng.integers(2, 30)), int(rng.integers(1, 6))
    dense = rng.choice(np.array([0, 0, 0.5, 1.0, 2.0, 3.0], np.float32), (n, n)) * (rng.random((n, n)) < 0.6)
    cut = top_per_row(sp.csr_matrix(dense), keep).toarray()
    for row, got in zip(dense, cut):
        # The largest `keep` values stay, equal ones by the lower column; nothing else.
        order = sorted(np.flatnonzero(row), key=lambda column: (-row[column], column))[:keep]
        expected = np.zeros_like(row)
        expected[order] = row[order]
        assert np.array_equal(got, expected)
    matrix = sp.csr_matrix(dense)
    assert top_per_row(matrix, None) is matrix and top_per_row(matrix, n) is matrix  # nothing to cut: no copy


def sorted_top(scores, k):
    """The reference: a full stable sort, best first, equal scores by position."""
    return np.argsort(-scores, kind="stable")[: max(k, 0)]


@pytest.mark.parametrize("n, k, ties", [
    (0, 5, False), (10, 0, False), (10, 3, False), (10, 50, False), (200_000, 200, False),
    (200_000, 200, True), (5_000, 100, True), (100_000, 1, False), (100_000, 2_000, True),
])
def test_top_k_equals_a_full_sort(n, k, ties):
    rng = np.random.default_rng(n + k)
    scores = rng.integers(0, 50, n).astype(np.float32) if ties else rng.standard_normal(n).astype(np.float32)
    assert np.array_equal(top_k(scores, k), sorted_top(scores, k))


def test_top_k_when_the_sample_misses_the_best():
    """The best scores all fall between the sampled positions: too few pass the threshold, and all are sorted."""
    scores = np.zeros(100_000, dtype=np.float32)
    scores[1::16][:50] = 1.0  # never at a multiple of 16, where the sample looks
    assert np.array_equal(top_k(scores, 60), sorted_top(scores, 60))


@pytest.fixture(scope="module")
def sequential(stores) -> SequentialModel:
    return SequentialModel().fit(stores["synthetic"].iter_events())


def test_sequential_scores_equal_the_sparse_product(stores, sequential):
    rng = np.random.default_rng(0)
    ids = sequential.item_ids
    for n in (1, 5, 40, 1000):
        for _ in range(20):
            recent = [ids[j] for j in rng.integers(0, len(ids), int(rng.integers(1, 15)))] + ["not-an-item"]
            dense = sequential.score_array(recent)
            positive = np.flatnonzero(dense > 0)
            best = positive[sorted_top(dense[positive], n)]
            assert sequential.scores(recent, n) == {ids[j]: float(dense[j]) for j in best}


def test_sequential_scores_of_adopted_rows_with_ties_and_repeats_equal_the_product():
    """Rows as another writer might hand them over: a column twice in a row, unsorted, equal values."""
    rng = np.random.default_rng(1)
    n = 50
    indptr = np.arange(0, 8 * n + 1, 8)
    indices = rng.integers(0, n, 8 * n)  # repeats within a row, in no order
    data = rng.choice(np.array([0.25, 0.5, 1.0], dtype=np.float32), 8 * n)  # many equal sums
    model = SequentialModel().adopt([f"i{j}" for j in range(n)], sp.csr_matrix((data, indices, indptr), shape=(n, n)))
    assert not model._distinct
    _scores_equal_the_product(model, rng, n)


def _scores_equal_the_product(model, rng, n):
    for _ in range(30):
        recent = [f"i{j}" for j in rng.integers(0, n, int(rng.integers(1, 6)))]
        dense = model.score_array(recent)
        positive = np.flatnonzero(dense > 0)
        best = positive[sorted_top(dense[positive], 10)]
        assert model.scores(recent, 10) == {f"i{j}": float(dense[j]) for j in best}


def test_sequential_scores_of_unknown_items_are_empty(sequential):
    assert sequential.scores(["nobody-had-this"]) == {} and SequentialModel().scores(["a"]) == {}


def test_trending_kept_ready_equals_a_fresh_list_and_follows_a_new_fit(stores):
    events = list(stores["synthetic"].iter_events())
    model = CoMentionModel().fit(events)
    fresh = CoMentionModel().fit(events)
    for n in (1, 10, 200, 1000, 1500):
        assert model.trending(n) == fresh.trending(n)
        assert list(model.trending(n).values()) == sorted(model.trending(n).values(), reverse=True)
    model.fit(events[: len(events) // 3])
    assert model.trending(50) == CoMentionModel().fit(events[: len(events) // 3]).trending(50)


def svds_factors(matrix, dim=64):
    """collab.factorize as it was: svds's right vectors, scaled and normalised."""
    from scipy.sparse.linalg import svds

    rank = min(dim, min(matrix.shape) - 1)
    start = np.full(min(matrix.shape), 1.0 / np.sqrt(min(matrix.shape)))
    _, singular, vt = svds(matrix.astype(np.float64), k=rank, v0=start)
    order = np.argsort(-singular)
    vectors = (vt[order].T * np.sqrt(singular[order])).astype(np.float32)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.where(norms > 0, norms, 1.0)


@pytest.mark.parametrize("users, items", [(3000, 400), (400, 3000), (500, 500)])
def test_item_vectors_keep_every_dot_product_of_svds(users, items):
    rng = np.random.default_rng(users)
    nnz = 10 * max(users, items)
    matrix = sp.csr_matrix((np.ones(nnz), ((rng.zipf(1.5, nnz) - 1) % users, (rng.zipf(1.3, nnz) - 1) % items)),
                           shape=(users, items))
    matrix.data[:] = 1.0
    got, expected = factorize(matrix, 32), svds_factors(matrix, 32)
    assert got.shape == expected.shape
    assert np.abs(got @ got.T - expected @ expected.T).max() < 1e-5


def test_collab_search_past_its_limit_covers_the_most_had_items_only():
    """Past `scan` items the exact search reads only the most had ones (a long tail's vectors are
    noise and most of the cost); under the limit it is the full exact search."""
    from retrieval.collab import CollabTable

    rng = np.random.default_rng(0)
    ids = [f"i{n}" for n in range(40)]
    vectors = rng.normal(size=(40, 8)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    weight = {f"i{n}": float(n) for n in range(40)}  # i39 is the most had
    query = vectors[3]  # i3, a tail item: its own best match is itself

    full = CollabTable(ids, vectors)
    assert full.top(query, 1)[0][0] == "i3"
    assert CollabTable(ids, vectors, weight=weight, scan=40).top(query, 40) == full.top(query, 40)

    limited = CollabTable(ids, vectors, weight=weight, scan=10)
    found = [i for i, _ in limited.top(query, 40)]
    assert set(found) == {f"i{n}" for n in range(30, 40)}  # the ten most had, nothing else
    assert np.allclose(limited.get(["i3"])["i3"], vectors[3])  # every vector still feeds a profile


def test_sequential_scores_of_canonical_rows_take_the_plain_add_and_equal_the_product():
    rng = np.random.default_rng(2)
    n = 60
    dense = rng.choice(np.array([0, 0, 0, 0.25, 0.5, 1.0], dtype=np.float32), (n, n))
    model = SequentialModel().adopt([f"i{j}" for j in range(n)], sp.csr_matrix(dense))
    assert model._distinct
    _scores_equal_the_product(model, rng, n)
