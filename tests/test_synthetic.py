"""The synthetic month: deterministic, shaped as documented, storable."""

from datetime import datetime, timedelta, timezone

import polars as pl

from voxtrail.demo.synthetic import NODES, SyntheticMonth, generate
from voxtrail.store.api import Store

END = datetime(2026, 3, 1, tzinfo=timezone.utc)


def _all(**params) -> pl.DataFrame:
    return pl.concat([b.frame for b in generate(SyntheticMonth(end=END, **params))], how="vertical_relaxed")


def test_same_seed_same_events_and_chunks():
    a = _all(events=20_000, chunk_size=7_000, seed=5)
    b = _all(events=20_000, chunk_size=7_000, seed=5)
    assert a.equals(b)
    assert a.height == 20_000
    assert a["request_id"].n_unique() == 20_000
    assert not a.equals(_all(events=20_000, chunk_size=7_000, seed=6))


def test_shape_of_the_month():
    df = _all(events=200_000, texts=True)
    assert df["ts"].min() >= (END - timedelta(days=30)).replace(tzinfo=None)
    assert df["ts"].max() < END.replace(tzinfo=None)
    assert df["ts"].is_sorted()
    assert set(df["node"].unique()) == set(NODES)
    assert set(df["model_version"].unique()) == {"2.0", "2.1"}
    # Emotion control "speaker" carries no emotion label; the others do.
    assert df.filter(pl.col("emotion_control") == "speaker")["emotion"].null_count() == \
        df.filter(pl.col("emotion_control") == "speaker").height
    assert df.filter(pl.col("emotion_control") != "speaker")["emotion"].null_count() == 0
    failed = df.filter(pl.col("status") == "failed")
    assert 0.003 < failed.height / df.height < 0.05
    assert failed["error_type"].null_count() == 0 and failed["audio_length_ms"].null_count() == failed.height
    assert (df["text_input"].str.len_chars() == df["text_length"]).all()
    # Longer texts take longer.
    short = df.filter(pl.col("text_length") < 50)["latency_ms"].median()
    long = df.filter(pl.col("text_length") > 150)["latency_ms"].median()
    assert long > 2 * short
    # The bad hour: tts-c fails far more often than usual.
    bad = SyntheticMonth(end=END).resolved_bad_hour().replace(tzinfo=None)
    in_bad = df.filter((pl.col("ts") >= bad) & (pl.col("ts") < bad + timedelta(hours=1)) & (pl.col("node") == "tts-c"))
    assert in_bad.height > 10
    assert (in_bad["status"] == "failed").mean() > 0.25


def test_written_twice_stored_once(sqlite_url):
    with Store.open(sqlite_url) as store:
        for _ in range(2):
            for batch in generate(SyntheticMonth(events=3_000, end=END, chunk_size=1_000)):
                store.write(batch)
        assert store.count() == 3_000
