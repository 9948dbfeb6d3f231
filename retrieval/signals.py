"""The fitted signals as a published artifact: what a fitting job writes and an API worker reads.

A version is a folder of plain files under the signals root (DATA_DIR/signals by default):

    v001765012345678901-1234/   one fit: version = creation time in microseconds and the writer's pid
        items.json              item ids; every array below is indexed by position in this list
        popularity.npy          float64, the Retriever's popularity score of each catalog item
        trending.npy            float32, CoMentionModel's decayed count per item
        transitions.*.npy       CSR float32 (data, indices, indptr): SequentialModel's matrix
        neighbours.*.npy        CSR float32: CoMentionModel's neighbours
        collab_rows.npy         int32, the items that have a collaborative vector
        collab_vectors.npy      float32, their vectors (collab.fit_item_factors)
        content_rows.npy        int32, the items whose content vector the job read (optional)
        content_vectors.npy     float32, those vectors as the content collection holds them
        answer_rows.npy         int32, the most popular items whose content neighbours the job asked (optional)
        answer_hits.npy         int32 [rows, breadth], their neighbours as positions in items.json (-1: none)
        answer_scores.npy       float64 [rows, breadth], the similarities Chroma gave
        asked_terms.json        AskedModel's vocabulary (only when someone said something in words)
        asked_idf.npy           float32, its idf per term
        asked_postings.*.npy    CSR float32 [terms, moments]: each past moment's TF-IDF words (unit per moment)
        asked_labels.*.npy      CSR float32 [moments, items]: the items each moment led to
        manifest.json           written last: format, counts, event watermark, knobs, file sizes
    CURRENT                     the name of the version to serve

Publishing writes a hidden temporary folder, renames it into place, then replaces CURRENT
(`os.replace`, atomic): a reader sees the old version or the new one, and a fit that dies halfway
leaves a folder nobody points to, which later publishes prune. Arrays load memory-mapped: a
worker starts in the time it takes to read the item ids, and workers on one machine share pages.
"""

from __future__ import annotations

import json
import os
import shutil
import time
import uuid
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np

from core.errors import StoreError

FORMAT = 1
CURRENT = "CURRENT"
KEEP = 3  # versions kept: the current one and two before it (a worker may still be reading them)
STALE_TMP_S = 3600.0  # an unfinished folder this old belongs to a fit that died
_ARRAYS = ("popularity", "trending", "collab_rows", "collab_vectors")
_MATRICES = ("transitions", "neighbours")
ANSWERS = ("answer_rows", "answer_hits", "answer_scores")
ANSWERED_ITEMS = 20_000  # the most popular items whose content search a fit publishes
ANSWER_BREADTH = 100  # results each: a request asks 60-100 unless its user has seen many items


@dataclass
class Signals:
    """Every global signal, over one item vocabulary; what `Retriever.adopt` serves."""

    item_ids: list[str]
    catalog_items: int  # the first this many item ids are the catalog; popularity covers them
    popularity: np.ndarray  # float64 [catalog_items]
    confidence: float  # behaviour confidence 0..1, as Retriever._compute_popularity defines it
    transitions: object  # scipy CSR [items, items], float32
    neighbours: object  # scipy CSR [items, items], float32
    trending: np.ndarray  # float32 [items]
    collab_rows: np.ndarray  # int32 positions in item_ids
    collab_vectors: np.ndarray  # float32 [len(collab_rows), dim]
    manifest: dict = field(default_factory=dict)
    counters: dict[str, np.ndarray] = field(default_factory=dict)  # retrieval.live's raw counts, as counters.NAME.npy
    # AskedModel's (vocabulary, idf, postings CSR [terms, moments], labels CSR [moments, item_ids]), None when nobody said anything in words.
    asked: tuple | None = None
    # Content vectors read from the content collection at fit time (`attach_content`): a worker then
    # needs no Chroma `get` for a history's or a list's vectors. content_rows: int32 positions in
    # item_ids; empty when the job had no content collection to read.
    content_rows: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int32))
    content_vectors: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), np.float32))
    # The content search of each of the most popular items (its own vector as the query), as Chroma
    # answered it at fit time: a worker that just started serves them as one that ran for hours
    # would from its kept answers (retrieval.neighbours).
    answer_rows: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int32))
    answer_hits: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), np.int32))
    answer_scores: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), np.float64))

    @cached_property
    def index(self) -> dict[str, int]:
        """Item id -> position, shared by the models that adopt these signals."""
        return {item_id: n for n, item_id in enumerate(self.item_ids)}

    def popularity_scores(self) -> dict[str, float]:
        """Catalog item id -> popularity score (the Retriever's `_popularity`)."""
        return dict(zip(self.item_ids[: self.catalog_items], self.popularity.tolist()))

    def collab_ids(self) -> list[str]:
        return [self.item_ids[row] for row in self.collab_rows.tolist()]

    def content_ids(self) -> list[str]:
        return [self.item_ids[row] for row in self.content_rows.tolist()]

    @property
    def version(self) -> str | None:
        return self.manifest.get("version")

    @property
    def created_at(self) -> float | None:
        return self.manifest.get("created_at")


def publish(signals: Signals, root: str | Path, keep: int = KEEP) -> Path:
    """Write `signals` as a new version under `root`, make it current, prune old ones; returns its folder
    (and `signals.manifest` becomes the manifest written, version included)."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    created = time.time()
    stamp = time.time_ns() // 1000
    while any(root.glob(f"v{stamp:018d}-*")):  # two publishes in one microsecond: names stay in time order
        stamp += 1
    version = f"v{stamp:018d}-{os.getpid()}"
    tmp = root / f".tmp-{version}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        try:
            previous = current_version(root)
        except StoreError:  # a damaged pointer: this publish replaces it
            previous = None
        sizes = _write_arrays(signals, tmp, previous)
        sizes["items.json"] = _write_json(tmp / "items.json", signals.item_ids)
        if signals.asked is not None:
            sizes["asked_terms.json"] = _write_json(tmp / "asked_terms.json", list(signals.asked[0]))
        manifest = {
            **signals.manifest, "format": FORMAT, "version": version, "created_at": created,
            "items": len(signals.item_ids), "catalog_items": signals.catalog_items,
            "confidence": signals.confidence, "collab_dim": int(signals.collab_vectors.shape[1]),
            "transitions_nnz": int(signals.transitions.nnz), "neighbours_nnz": int(signals.neighbours.nnz),
            **({"asked_shape": list(signals.asked[2].shape[::-1])} if signals.asked is not None else {}),  # [moments, terms]
            "files": sizes,
        }
        _write_json(tmp / "manifest.json", manifest)
        _fsync_dir(tmp)
        final = root / version
        os.rename(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    pointer = root / f".{CURRENT}-{uuid.uuid4().hex[:8]}"
    pointer.write_text(version + "\n", encoding="utf-8")
    _fsync_file(pointer)
    os.replace(pointer, root / CURRENT)
    _fsync_dir(root)
    signals.manifest = manifest
    prune(root, keep)
    return final


def current_version(root: str | Path) -> Path | None:
    """The folder CURRENT names, or None when nothing was published yet."""
    root = Path(root)
    try:
        name = (root / CURRENT).read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        return None
    if not name.startswith("v") or "/" in name or "\\" in name or name in (".", ".."):
        raise StoreError(f"{root / CURRENT} names {name!r}, not a signals version; delete it and run `recassist fit`")
    return root / name


def read_manifest(root: str | Path) -> dict | None:
    """The current version's manifest (cheap: for deciding whether to refit), or None."""
    folder = current_version(root)
    return None if folder is None else _manifest(folder)


def load_signals(root: str | Path, mmap: bool = True, version: str | None = None) -> Signals | None:
    """The current published signals (arrays memory-mapped unless `mmap` is False), or None if none;
    `version` names another version under `root` to read instead (benchmarks compare versions)."""
    import scipy.sparse as sp

    folder = Path(root) / version if version else current_version(root)
    if folder is None:
        return None
    manifest = _manifest(folder)
    for name, size in manifest["files"].items():
        path = folder / name
        if not path.is_file() or path.stat().st_size != size:
            raise StoreError(f"signals version {folder} is damaged: {name} is missing or truncated; run `recassist fit`")
    mode = "r" if mmap else None

    def array(name: str) -> np.ndarray:
        return np.load(folder / f"{name}.npy", mmap_mode=mode, allow_pickle=False)

    item_ids = json.loads((folder / "items.json").read_text(encoding="utf-8"))
    n = len(item_ids)
    matrices = {
        name: sp.csr_matrix((array(f"{name}.data"), array(f"{name}.indices"), array(f"{name}.indptr")), shape=(n, n))
        for name in _MATRICES
    }
    asked = None
    if "asked_shape" in manifest:
        moments, terms = manifest["asked_shape"]

        def csr(name: str, shape: tuple[int, int]):
            return sp.csr_matrix((array(f"{name}.data"), array(f"{name}.indices"), array(f"{name}.indptr")), shape=shape)

        vocabulary = json.loads((folder / "asked_terms.json").read_text(encoding="utf-8"))
        asked = (vocabulary, array("asked_idf"), csr("asked_postings", (terms, moments)), csr("asked_labels", (moments, n)))
    return Signals(
        item_ids=item_ids, catalog_items=manifest["catalog_items"], popularity=array("popularity"),
        confidence=manifest["confidence"], transitions=matrices["transitions"], neighbours=matrices["neighbours"],
        trending=array("trending"), collab_rows=array("collab_rows"), collab_vectors=array("collab_vectors"),
        manifest=manifest, counters={name[9:-4]: array(name[:-4]) for name in manifest["files"] if name.startswith("counters.")},
        asked=asked,
        **({"content_rows": array("content_rows"), "content_vectors": array("content_vectors")}
           if "content_rows.npy" in manifest["files"] else {}),
        **({name: array(name) for name in ANSWERS} if "answer_rows.npy" in manifest["files"] else {}),
    )


def prune(root: str | Path, keep: int = KEEP) -> list[str]:
    """Remove all but the newest `keep` versions (never the current one) and dead temporary folders."""
    root = Path(root)
    current = current_version(root)
    versions = sorted(p for p in root.iterdir() if p.is_dir() and p.name.startswith("v"))
    doomed = [p for p in versions[: max(0, len(versions) - keep)] if p != current]
    now = time.time()
    doomed += [p for p in root.iterdir()
               if p.name.startswith((".tmp-", f".{CURRENT}-")) and now - p.stat().st_mtime > STALE_TMP_S]
    for path in doomed:
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
    return [p.name for p in doomed]


def sync_collab_index(index, signals: Signals) -> None:
    """Put the collaborative vectors in Chroma's collection, as `Retriever.refit` does: the
    collection is dropped and written anew. A refit changes every vector, and Chroma replaces an
    existing id by repairing its HNSW neighbours, 6.8x slower than adding it to a new graph (100k x
    64: 131 s against 19 s); dropping also removes the stale ids. Workers serve the published
    artifact, so nothing waits for this; a reader of the collection meanwhile finds it partial."""
    ids = signals.collab_ids()
    index.reset()
    if ids:
        index.upsert(ids, np.asarray(signals.collab_vectors))


def attach_content(signals: Signals, index, previous: Signals | None = None, answered: int = ANSWERED_ITEMS,
                   breadth: int = ANSWER_BREADTH) -> None:
    """Read the catalog's content vectors from `index` (a VectorIndex) into `signals`, and the
    content search of the `answered` most popular items (`breadth` results each): about 12 s for
    200,000 vectors from embedded Chroma, and 2.2 ms a search. A `previous` version read from the
    same unchanged collection lends the searches it already holds, so only items new to the most
    popular are searched again. The manifest names the collection; a worker adopts all this only
    while it serves that collection (one per embedding model)."""
    began = time.perf_counter()
    ids = signals.item_ids[: signals.catalog_items]
    positions, vectors = index.get_matrix(ids)
    signals.content_rows = np.asarray(positions, dtype=np.int32)
    signals.content_vectors = vectors
    signals.manifest["content_collection"] = index.name
    signals.manifest["content"] = {"vectors": len(positions), "searched": 0, "lent": 0, "seconds": round(time.perf_counter() - began, 3)}
    if not answered or not len(positions):
        return
    popularity = np.asarray(signals.popularity, dtype=np.float64)[signals.content_rows]
    order = np.argsort(-popularity, kind="stable")[:answered]  # rows of content_vectors, most popular first
    chosen = signals.content_rows[order]  # their positions in item_ids
    hits = np.full((len(chosen), breadth), -1, np.int32)
    scores = np.zeros((len(chosen), breadth), np.float64)
    lent = _lendable_answers(previous, signals, index.name, breadth)
    ask = []
    for n, position in enumerate(chosen.tolist()):
        old = lent.get(signals.item_ids[position])
        if old is None:
            ask.append(n)
        else:
            hits[n], scores[n] = old
    at = signals.index
    step = 256
    for start in range(0, len(ask), step):
        part = ask[start : start + step]
        answers = index.query_many(vectors[order[part]], breadth)
        for n, answer in zip(part, answers):
            got = [(at[i], s) for i, s in answer if i in at]
            hits[n, : len(got)] = [p for p, _ in got]
            scores[n, : len(got)] = [s for _, s in got]
    signals.answer_rows, signals.answer_hits, signals.answer_scores = chosen.astype(np.int32), hits, scores
    signals.manifest["answer_breadth"] = breadth
    signals.manifest["content"] = {"vectors": len(positions), "searched": len(ask), "lent": len(chosen) - len(ask),
                                   "seconds": round(time.perf_counter() - began, 3)}


def remap_published(signals: Signals, folder: str | Path) -> None:
    """Point `signals`' content arrays at the files `publish` wrote to `folder` (memory-mapped), so
    the process that fitted holds them as every other worker does, not as a private copy."""
    folder = Path(folder)
    for name in ("content_rows", "content_vectors", *ANSWERS):
        path = folder / f"{name}.npy"
        if path.is_file():
            setattr(signals, name, np.load(path, mmap_mode="r", allow_pickle=False))


def _lendable_answers(previous: Signals | None, signals: Signals, collection: str, breadth: int) -> dict:
    """Item id -> (hits, scores) of `previous`, re-expressed in `signals`' positions, when both read the
    same collection with the same vectors (the catalog did not change, so neither did the searches)."""
    if (previous is None or not len(previous.answer_rows) or previous.manifest.get("content_collection") != collection
            or previous.manifest.get("answer_breadth") != breadth or previous.content_ids() != signals.content_ids()
            or not np.array_equal(previous.content_vectors, signals.content_vectors)):
        return {}
    at = signals.index
    remap = np.array([at.get(i, -1) for i in previous.item_ids] + [-1], dtype=np.int32)  # -1 maps to -1
    out = {}
    for row, position in enumerate(np.asarray(previous.answer_rows).tolist()):
        old = np.asarray(previous.answer_hits[row])
        out[previous.item_ids[position]] = (remap[old], np.asarray(previous.answer_scores[row]))
    return out


def _manifest(folder: Path) -> dict:
    try:
        manifest = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise StoreError(f"signals version {folder} has no manifest (an unfinished publish); run `recassist fit`") from None
    if manifest.get("format") != FORMAT:
        raise StoreError(
            f"signals version {folder} has format {manifest.get('format')!r}; this recassist reads format {FORMAT}: "
            "run `recassist fit` with this version"
        )
    return manifest


SHARED = ("content_rows", "content_vectors", *ANSWERS)  # arrays that change with the catalog (and the most popular), rarely


def _write_arrays(signals: Signals, folder: Path, previous: Path | None = None) -> dict[str, int]:
    arrays = {name: getattr(signals, name) for name in _ARRAYS} | {f"counters.{k}": v for k, v in signals.counters.items()}
    if len(signals.content_rows):
        arrays |= {"content_rows": signals.content_rows, "content_vectors": signals.content_vectors}
    if len(signals.answer_rows):
        arrays |= {name: getattr(signals, name) for name in ANSWERS}
    matrices = {name: getattr(signals, name) for name in _MATRICES}
    if signals.asked is not None:
        arrays["asked_idf"] = np.asarray(signals.asked[1], dtype=np.float32)
        matrices |= {"asked_postings": signals.asked[2], "asked_labels": signals.asked[3]}
    for name, matrix in matrices.items():
        matrix = matrix.tocsr()
        arrays |= {f"{name}.data": matrix.data, f"{name}.indices": matrix.indices, f"{name}.indptr": matrix.indptr}
    sizes = {}
    for name, values in arrays.items():
        path = folder / f"{name}.npy"
        if name in SHARED and previous is not None and _same_array(previous / path.name, values):
            # The catalog did not change: one file for both versions (a link), so a fit writes no
            # second copy of every content vector and workers of either version share its pages.
            try:
                os.link(previous / path.name, path)
                sizes[path.name] = path.stat().st_size
                continue
            except OSError:  # a file system without hard links: write the copy
                pass
        with path.open("wb") as handle:
            np.save(handle, np.ascontiguousarray(values), allow_pickle=False)
            handle.flush()
            os.fsync(handle.fileno())
        sizes[path.name] = path.stat().st_size
    return sizes


def _same_array(path: Path, values: np.ndarray) -> bool:
    try:
        old = np.load(path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError):
        return False
    return old.shape == values.shape and old.dtype == values.dtype and bool(np.array_equal(old, values))


def _write_json(path: Path, value) -> int:
    with path.open("w", encoding="utf-8") as handle:
        json.dump(value, handle, ensure_ascii=False)
        handle.flush()
        os.fsync(handle.fileno())
    return path.stat().st_size


def _fsync_file(path: Path) -> None:
    with path.open("rb") as handle:
        os.fsync(handle.fileno())


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # Windows cannot open a folder; its renames are durable enough
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
