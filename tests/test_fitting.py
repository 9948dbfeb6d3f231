"""The fitting job as a specification: the vectorised fit (retrieval.fitting) equals today's per-event
code paths (Retriever._compute_popularity, SequentialModel.fit, CoMentionModel.fit,
fit_item_factors) on a hand-made log and a synthetic one; its artifact (retrieval.signals)
round-trips, and a publish that dies halfway is never served."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from core.errors import StoreError
from evaluation.synthetic import Platform, generate
from retrieval import fitting
from retrieval import signals as artifact
from retrieval.candidates import Retriever
from retrieval.request import Request
from retrieval.collab import fit_item_factors
from retrieval.comention import CoMentionModel
from retrieval.embeddings import HashingEmbedder
from retrieval.fitting import fit_signals, read_event_columns
from retrieval.ingest import ingest_catalog, ingest_events
from retrieval.records import Event, Item, event_weight
from retrieval.sequential import SequentialModel
from retrieval.store import Store
from retrieval.vectors import VectorIndex, open_chroma

DAY = 86400.0
T0 = 1_700_000_000.0


def hand_made_events() -> list[Event]:
    """Every kind of event the fit must read the way the per-event code does."""
    def at(days: float, minutes: float = 0.0) -> float:
        return T0 + days * DAY + minutes * 60
    events = [
        # u1: a run of views and likes, a rating of each kind, a search without an item.
        Event("u1", "view", at(0), "a"), Event("u1", "like", at(0, 1), "b"), Event("u1", "view", at(0, 2), "c"),
        Event("u1", "rate", at(0, 3), "d", 4.5), Event("u1", "rate", at(0, 4), "e", 2.5), Event("u1", "search", at(0, 5), None, text="sea"),
        Event("u1", "view", at(0, 6), "a"),  # again: sequences keep the first time only
        # u2: same-second events (their order is the event id's), a dislike, a purchase, a comment.
        Event("u2", "view", at(1), "b"), Event("u2", "view", at(1), "c"), Event("u2", "view", at(1), "d"),
        Event("u2", "dislike", at(1, 1), "a"), Event("u2", "purchase", at(1, 2), "f"), Event("u2", "comment", at(1, 3), "g"),
        # u3: long ago (the decays), a rating without a value, not_interested, a half-star rating.
        Event("u3", "view", at(-400), "a"), Event("u3", "rate", at(-399), "b", None), Event("u3", "not_interested", at(-398), "c"),
        Event("u3", "rate", at(-397), "e", 1.5), Event("u3", "seen", at(-396), "h"),
        # u4: an item missing from the catalog, an empty item id, a search that names an item.
        Event("u4", "like", at(2), "ghost"), Event("u4", "view", at(2, 1), "a"), Event("u4", "view", at(2, 2), ""),
        Event("u4", "search", at(2, 3), "b"), Event("u4", "click", at(2, 4), "f"), Event("u4", "like", at(2, 5), "g"),
        # u5, u6: enough users for a 64-wide SVD to have rank.
        Event("u5", "like", at(3), "a"), Event("u5", "like", at(3, 1), "c"), Event("u5", "like", at(3, 2), "f"),
        Event("u6", "view", at(4), "g"), Event("u6", "view", at(4, 1), "b"), Event("u6", "like", at(4, 2), "h"),
    ]
    return events


def hand_made_catalog() -> list[Item]:
    return [Item(id=i, title=f"Item {i}", popularity=p) for i, p in zip("abcdefghi", (0.9, None, 0.2, 1.5, -1, 0.0, 0.5, None, 0.3))]


@pytest.fixture(scope="module")
def logs(tmp_path_factory) -> dict[str, Store]:
    """A hand-made log and a synthetic platform ingested through the public path."""
    root = tmp_path_factory.mktemp("logs")
    hand = Store.open(f"sqlite:///{root / 'hand.db'}")
    hand.upsert_items(hand_made_catalog())
    hand.add_events(hand_made_events())
    synthetic = Store.open(f"sqlite:///{root / 'synthetic.db'}")
    written = generate(Platform(items=300, users=150, events=4000, seed=7), root / "platform", progress=False)
    ingest_catalog(written.catalog, synthetic, progress=False)
    ingest_events(written.events, synthetic, progress=False)
    yield {"hand-made": hand, "synthetic": synthetic}
    hand.close()
    synthetic.close()


LOGS = ["hand-made", "synthetic"]


def entries(matrix, ids: list[str]) -> dict[tuple[str, str], float]:
    coo = matrix.tocoo()
    return {(ids[r], ids[c]): float(v) for r, c, v in zip(coo.row.tolist(), coo.col.tolist(), coo.data.tolist())}


@pytest.mark.parametrize("log", LOGS)
def test_popularity_and_confidence_equal_the_retrievers(logs, log):
    store = logs[log]
    expected, confidence = Retriever._compute_popularity(store, list(store.iter_events()))
    fitted = fit_signals(store)
    assert fitted.confidence == confidence
    assert fitted.popularity_scores() == expected  # same operations in the same order: bit for bit


@pytest.mark.parametrize("log", LOGS)
@pytest.mark.parametrize("knobs", [{}, {"window": 2, "backward": 0.0}, {"backward": 0.3, "source_power": 1.0}])
def test_sequential_transitions_equal_sequential_model_fit(logs, log, knobs):
    store = logs[log]
    reference = SequentialModel(**knobs).fit(store.iter_events())
    fitted = fit_signals(store, sequential=SequentialModel(**knobs))
    expected = entries(reference._state[2], reference.item_ids)
    got = entries(fitted.transitions, fitted.item_ids)
    assert got.keys() == expected.keys()
    assert np.allclose([got[k] for k in expected], list(expected.values()), rtol=1e-5, atol=0)


@pytest.mark.parametrize("log", LOGS)
def test_sequential_rows_cut_to_keep_as_the_model_cuts_them(logs, log):
    store = logs[log]
    reference = SequentialModel(keep=2).fit(store.iter_events())
    fitted = fit_signals(store, sequential=SequentialModel(keep=2))
    whole = SequentialModel(keep=None).fit(store.iter_events())
    assert np.diff(whole._state[2].indptr).max() > 2  # the log has rows to cut
    assert np.diff(fitted.transitions.indptr).max() == 2
    for item_id in reference.item_ids:
        # The two largest of each row (equal values may keep another column: the kept values are equal).
        mine = np.sort(fitted.transitions[fitted.index[item_id]].data)
        theirs = np.sort(reference._state[2][reference._state[1][item_id]].data)
        largest = np.sort(whole._state[2][whole._state[1][item_id]].data)[-2:]
        assert np.allclose(mine, theirs, rtol=1e-5, atol=0) and np.allclose(theirs, largest, rtol=1e-5, atol=0), item_id
    assert fitted.manifest["knobs"]["sequential"]["keep"] == 2


@pytest.mark.parametrize("log", LOGS)
@pytest.mark.parametrize("keep", [300, 3])
def test_comention_neighbours_and_trending_equal_comention_model_fit(logs, log, keep):
    store = logs[log]
    reference = CoMentionModel(keep=keep).fit(store.iter_events())
    fitted = fit_signals(store, comention=CoMentionModel(keep=keep))
    ids, index, neighbours, trending = reference._state
    for item_id in ids:
        # With `keep` cutting through ties, which tied neighbour stays may differ; the kept values may not.
        mine = np.sort(fitted.neighbours[fitted.index[item_id]].data)
        theirs = np.sort(neighbours[index[item_id]].data)
        assert np.allclose(mine, theirs, rtol=1e-5, atol=0), item_id
    if keep >= 300:
        assert entries(fitted.neighbours, fitted.item_ids).keys() == entries(neighbours, ids).keys()
    got = dict(zip(fitted.item_ids, fitted.trending.tolist()))
    assert np.allclose([got[i] for i in ids], trending, rtol=1e-6, atol=0)
    assert not any(got[i] for i in set(fitted.item_ids) - set(ids))


@pytest.mark.parametrize("log", LOGS)
def test_collab_vectors_equal_fit_item_factors(logs, log):
    store = logs[log]
    ids, vectors = fit_item_factors(store.iter_events())
    fitted = fit_signals(store)
    assert ids and fitted.collab_ids() == ids
    assert np.allclose(fitted.collab_vectors, vectors, atol=1e-6)


@pytest.mark.parametrize("keep", [300, 3])
def test_blocks_and_passes_do_not_change_the_fit(logs, monkeypatch, keep):
    """Memory bounds (co-mention product a few item rows at a time, sequential pairs a few at a time) change nothing."""
    store = logs["synthetic"]
    whole = fit_signals(store, comention=CoMentionModel(keep=keep))
    monkeypatch.setattr(fitting, "PRODUCT_BUDGET", 50)
    monkeypatch.setattr(fitting, "PAIRS_PER_PASS", 100)
    pieces = fit_signals(store, comention=CoMentionModel(keep=keep))
    for name in ("transitions", "neighbours"):
        expected, got = entries(getattr(whole, name), whole.item_ids), entries(getattr(pieces, name), pieces.item_ids)
        assert got.keys() == expected.keys(), name
        assert np.allclose([got[k] for k in expected], list(expected.values()), rtol=1e-5, atol=0), name


@pytest.mark.parametrize("chunk_size", [1, 7, 100_000])
def test_chunks_do_not_change_the_columns(logs, chunk_size):
    store = logs["hand-made"]
    columns = read_event_columns(store, chunk_size=chunk_size)
    events = list(store.iter_events())
    assert len(columns) == len(events)
    assert [columns.users[u] for u in columns.user] == [e.user_id for e in events]
    assert [columns.items[i] if i >= 0 else None for i in columns.item] == [e.item_id or None for e in events]
    assert columns.ts.tolist() == [e.timestamp for e in events]
    assert columns.weight.tolist() == [np.float32(e.weight) for e in events]
    assert columns.watermark == (events[-1].timestamp, events[-1].id)


@pytest.mark.parametrize("value", [None, 0.5, 1.0, 1.5, 1.75, 2.0, 2.5, 2.75, 3.0, 3.5, 4.0, 4.5, 5.0, 10.0])
def test_rating_weights_are_records_rating_weights(tmp_path, value):
    with Store.open(f"sqlite:///{tmp_path / 's.db'}") as store:
        store.add_events([Event("u", "rate", T0, "a", value)])
        assert read_event_columns(store).weight.tolist() == [event_weight("rate", value)]


def test_an_empty_log_fits_to_the_catalog_priors(tmp_path):
    with Store.open(f"sqlite:///{tmp_path / 's.db'}") as store:
        store.upsert_items(hand_made_catalog())
        fitted = fit_signals(store)
        expected, confidence = Retriever._compute_popularity(store, [])
        assert fitted.popularity_scores() == expected and fitted.confidence == confidence == 0.0
        assert fitted.transitions.nnz == fitted.neighbours.nnz == len(fitted.collab_rows) == 0
        loaded = artifact.load_signals(artifact.publish(fitted, tmp_path / "signals").parent)
        assert loaded.manifest["events"] == 0 and loaded.popularity_scores() == expected


# -- the artifact ------------------------------------------------------------------------------


def test_the_artifact_round_trips(logs, tmp_path):
    fitted = fit_signals(logs["synthetic"])
    folder = artifact.publish(fitted, tmp_path / "signals")
    assert (tmp_path / "signals" / artifact.CURRENT).read_text().strip() == folder.name
    loaded = artifact.load_signals(tmp_path / "signals")
    assert loaded.item_ids == fitted.item_ids and loaded.catalog_items == fitted.catalog_items
    assert loaded.confidence == fitted.confidence
    for name in ("popularity", "trending", "collab_rows", "collab_vectors"):
        assert np.array_equal(getattr(loaded, name), getattr(fitted, name)), name
    for name in ("transitions", "neighbours"):
        assert (getattr(loaded, name) != getattr(fitted, name)).nnz == 0, name
    manifest = loaded.manifest
    assert manifest["format"] == artifact.FORMAT and manifest["version"] == folder.name
    assert manifest["events"] == logs["synthetic"].event_count()
    assert manifest["watermark"]["id"] == list(logs["synthetic"].iter_events())[-1].id
    assert artifact.read_manifest(tmp_path / "signals")["version"] == folder.name


def test_nothing_published_loads_as_none(tmp_path):
    assert artifact.load_signals(tmp_path / "signals") is None
    assert artifact.read_manifest(tmp_path / "signals") is None


@pytest.mark.parametrize("request_", [Request(), Request(query="detective murder"), Request(seed_item_ids=["i3", "i10"])],
                         ids=["history", "query", "seeds"])
def test_a_retriever_serving_published_signals_answers_as_one_that_refit(logs, tmp_path, request_):
    from evaluation.bench_scale import legacy_refit

    store = logs["synthetic"]
    client = open_chroma("persistent", path=str(tmp_path / "chroma"))
    embedder = HashingEmbedder()
    content = VectorIndex(client, "content", embedder)
    refitted = Retriever(store, embedder, content, VectorIndex(client, "collab"), SequentialModel())
    refitted.index_items(list(store.iter_items()))
    legacy_refit(refitted, store)  # the per-event refit every process ran before the fitting job
    served = Retriever(store, embedder, content, VectorIndex(client, "collab"), SequentialModel())
    served.adopt(artifact.load_signals(artifact.publish(fit_signals(store), tmp_path / "signals").parent))
    for user in ("u0", "u5", "u42", "nobody"):
        expected = refitted.candidates(user, request_, k=10)
        got = served.candidates(user, request_, k=10)
        assert expected, user
        assert [c.item.id for c in got] == [c.item.id for c in expected], user
        assert np.allclose([c.score for c in got], [c.score for c in expected], rtol=1e-4)


def test_a_publish_that_dies_before_the_swap_is_never_served(logs, tmp_path, monkeypatch):
    root = tmp_path / "signals"
    first = artifact.publish(fit_signals(logs["hand-made"]), root)

    def crash(*args):
        raise OSError("killed")
    monkeypatch.setattr(artifact.os, "replace", crash)  # the last step: CURRENT is not swapped
    with pytest.raises(OSError):
        artifact.publish(fit_signals(logs["synthetic"]), root)
    monkeypatch.undo()
    assert len([p for p in root.iterdir() if p.name.startswith("v")]) == 2  # written in full, never pointed to
    loaded = artifact.load_signals(root)
    assert loaded.version == first.name and loaded.item_ids == fit_signals(logs["hand-made"]).item_ids


def test_an_earlier_version_can_be_read_by_name_without_serving_it(logs, tmp_path):
    root = tmp_path / "signals"
    first = artifact.publish(fit_signals(logs["hand-made"]), root)
    second = artifact.publish(fit_signals(logs["synthetic"]), root)
    assert artifact.load_signals(root).version == second.name
    earlier = artifact.load_signals(root, version=first.name)
    assert earlier.version == first.name and earlier.item_ids == fit_signals(logs["hand-made"]).item_ids
    assert artifact.current_version(root) == second  # reading it changed nothing


def test_a_publish_that_dies_while_writing_leaves_nothing(logs, tmp_path, monkeypatch):
    root = tmp_path / "signals"
    first = artifact.publish(fit_signals(logs["hand-made"]), root)
    saves = []
    real_save = np.save

    def dies_on_third(*args, **kwargs):
        saves.append(1)
        if len(saves) == 3:
            raise OSError("disk full")
        return real_save(*args, **kwargs)
    monkeypatch.setattr(artifact.np, "save", dies_on_third)
    with pytest.raises(OSError, match="disk full"):
        artifact.publish(fit_signals(logs["synthetic"]), root)
    monkeypatch.undo()
    assert sorted(p.name for p in root.iterdir()) == sorted([artifact.CURRENT, first.name])
    assert artifact.load_signals(root).version == first.name


def test_an_unfinished_folder_is_removed_once_stale(logs, tmp_path, monkeypatch):
    root = tmp_path / "signals"
    (root / ".tmp-v1-dead").mkdir(parents=True)
    artifact.publish(fit_signals(logs["hand-made"]), root)
    assert (root / ".tmp-v1-dead").exists()  # maybe another fit still writing: left alone
    monkeypatch.setattr(artifact, "STALE_TMP_S", -1.0)
    artifact.publish(fit_signals(logs["hand-made"]), root)
    assert not (root / ".tmp-v1-dead").exists()


def test_old_versions_are_pruned_but_the_current_one_stays(logs, tmp_path):
    root = tmp_path / "signals"
    fitted = fit_signals(logs["hand-made"])
    folders = [artifact.publish(fitted, root, keep=2) for _ in range(4)]
    assert sorted(p.name for p in root.iterdir() if p.name.startswith("v")) == [f.name for f in folders[-2:]]
    (root / artifact.CURRENT).write_text(folders[-2].name)  # a rollback to the older one
    artifact.prune(root, keep=1)
    assert (root / folders[-2].name).exists()


@pytest.mark.parametrize("damage, message", [
    (lambda folder: (folder / "trending.npy").write_bytes(b"\x93NUMPY"), "trending.npy is missing or truncated"),
    (lambda folder: (folder / "manifest.json").unlink(), "no manifest"),
    (lambda folder: (folder / "manifest.json").write_text(json.dumps({"format": 99})), "format 99"),
], ids=["truncated-file", "no-manifest", "newer-format"])
def test_a_damaged_version_is_refused_with_what_to_do(logs, tmp_path, damage, message):
    folder = artifact.publish(fit_signals(logs["hand-made"]), tmp_path / "signals")
    damage(folder)
    with pytest.raises(StoreError, match=message) as raised:
        artifact.load_signals(tmp_path / "signals")
    assert "recassist fit" in str(raised.value)


def test_the_current_pointer_cannot_leave_the_signals_folder(tmp_path):
    (tmp_path / "signals").mkdir()
    (tmp_path / "signals" / artifact.CURRENT).write_text("../elsewhere")
    with pytest.raises(StoreError, match="not a signals version"):
        artifact.load_signals(tmp_path / "signals")


def test_collab_vectors_reach_chroma_as_refit_puts_them(logs, tmp_path):
    fitted = fit_signals(logs["synthetic"])
    index = VectorIndex(open_chroma("persistent", path=str(tmp_path / "chroma")), "collab")
    index.upsert(["stale"], np.ones((1, fitted.collab_vectors.shape[1]), np.float32))
    artifact.sync_collab_index(index, fitted)
    assert sorted(index.all_ids()) == sorted(fitted.collab_ids())
    some = fitted.collab_ids()[:5]
    stored = index.get_vectors(some)
    assert all(np.allclose(stored[i], fitted.collab_vectors[n], atol=1e-6) for n, i in enumerate(some))


def test_a_reader_of_chromas_collab_copy_survives_its_rebuild(logs, tmp_path, caplog):
    store = logs["synthetic"]
    client = open_chroma("persistent", path=str(tmp_path / "chroma"))
    embedder = HashingEmbedder()
    fitted = fit_signals(store)
    artifact.sync_collab_index(VectorIndex(client, "collab"), fitted)
    # Nothing adopted: this retriever reads the collaborative vectors from Chroma's copy.
    reader = Retriever(store, embedder, VectorIndex(client, "content", embedder), VectorIndex(client, "collab"),
                       SequentialModel())
    reader.index_items(list(store.iter_items()))
    searched, search = [], reader.collab.query
    reader.collab.query = lambda *args, **kwargs: searched.append(1) or search(*args, **kwargs)

    def answer():
        return [c.item.id for c in reader.candidates("u0", Request(), k=10)]

    before = answer()
    assert before and searched
    artifact.sync_collab_index(VectorIndex(client, "collab"), fitted)  # another process's fit writes it anew
    with caplog.at_level("WARNING", logger="retrieval.candidates"):
        assert answer()  # the handle this reader held names the dropped collection: answered without it
    assert "collaborative signal skipped" in caplog.text
    searched.clear()
    assert answer() == before and searched  # the next request reads the new copy


def test_memory_mapped_arrays_survive_pruning(logs, tmp_path):
    root = tmp_path / "signals"
    artifact.publish(fit_signals(logs["hand-made"]), root)
    loaded = artifact.load_signals(root)
    for _ in range(3):
        artifact.publish(fit_signals(logs["hand-made"]), root, keep=1)
    assert float(np.asarray(loaded.trending).sum()) > 0  # the pruned files stay readable while mapped
    assert os.name != "posix" or not (root / loaded.version).exists()


def test_what_was_only_said_in_chat_never_trends_nor_ages_the_log(tmp_path):
    from retrieval.comention import CoMentionModel

    store = Store.open(f"sqlite:///{tmp_path / 'chat.db'}")
    store.upsert_items([Item(i, i.upper()) for i in "abc"])
    t0 = 1_600_000_000.0
    store.add_events([Event(f"u{k}", "like", t0, "a") for k in range(3)] + [Event("u9", "like", t0 - 10 * 86400, "b")]
                     + [Event(f"s{k}", "like", t0 + 5 * 365 * 86400, "c", text=f"chat s{k}") for k in range(4)])
    fitted = fit_signals(store)
    trending = dict(zip(fitted.item_ids, fitted.trending.tolist()))
    assert trending["c"] == 0.0  # said in chat, five years on: not trending
    assert trending["a"] == pytest.approx(3.0) and trending["b"] == pytest.approx(0.5 ** (10 / 180))  # ages from t0
    reference = CoMentionModel().fit(store.iter_events())
    ids, _, _, per_event = reference._state
    assert dict(zip(ids, per_event.tolist())) == pytest.approx({i: trending[i] for i in ids})
    store.close()
