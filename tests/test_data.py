import json

import pytest

from rgft_edge.data import bbc_news, load_file, rotten_tomatoes, split
from rgft_edge.errors import DataError


def test_rotten_tomatoes_is_the_real_corpus():
    ds = rotten_tomatoes()
    assert len(ds) == 12808 and ds.label_names == ["rotten", "fresh"]
    assert sum(ds.labels) == 7403  # fresh snippets


def test_bbc_news_has_five_topics():
    ds = bbc_news()
    assert len(ds) == 2225 and len(ds.label_names) == 5


def test_csv_and_jsonl_with_custom_columns(tmp_path, sentiment_csv):
    ds = load_file(sentiment_csv, "review", "sentiment")
    assert len(ds) == 120 and ds.label_names == ["neg", "pos"]
    p = tmp_path / "d.jsonl"
    p.write_text("\n".join(json.dumps({"t": f"text {i}", "y": i % 3}) for i in range(9)))
    ds = load_file(p, "t", "y")
    assert ds.label_names == ["0", "1", "2"] and ds.labels[:4] == [0, 1, 2, 0]


def test_bad_rows_skipped_with_count_or_refused_with_line(tmp_path):
    p = tmp_path / "bad.csv"
    p.write_bytes(b"text,label\nfine movie,pos\n,neg\nno label,\nbad bytes \xff\xfe,pos\nawful,neg\n")
    ds = load_file(p)
    assert len(ds) == 2 and ds.skipped_rows == 3
    with pytest.raises(DataError, match=r"bad.csv:3: empty 'text'"):
        load_file(p, on_bad_row="error")
    j = tmp_path / "bad.jsonl"
    j.write_text('{"text": "a", "label": "x"}\n{not json\n{"text": "b", "label": "y"}\n')
    with pytest.raises(DataError, match=r"bad.jsonl:2: malformed"):
        load_file(j, on_bad_row="error")
    skipped = load_file(j, labels=["x", "z"])  # skip mode: the bad row and the unknown label counted
    assert len(skipped) == 1 and skipped.skipped_rows == 2
    k = tmp_path / "k.jsonl"
    k.write_text('{"text": "a", "label": "x"}\n{"text": "b", "label": "y"}\n')
    with pytest.raises(DataError, match=r"k.jsonl:2: unknown label"):
        load_file(k, labels=["x", "z"], on_bad_row="error")


def test_clear_errors(tmp_path, sentiment_csv):
    with pytest.raises(DataError, match="not found"):
        load_file(tmp_path / "nope.csv")
    with pytest.raises(DataError, match="no column 'label'"):
        load_file(sentiment_csv, "review", "label")
    empty = tmp_path / "empty.csv"
    empty.write_text("text,label\n")
    with pytest.raises(DataError, match="empty"):
        load_file(empty)
    one = tmp_path / "one.csv"
    one.write_text("text,label\na,x\nb,x\n")
    with pytest.raises(DataError, match="two distinct labels"):
        load_file(one)
    with pytest.raises(DataError, match="unsupported"):
        (tmp_path / "d.xml").write_text("<a/>")
        load_file(tmp_path / "d.xml")


def test_split_is_seeded_and_disjoint(sentiment_csv):
    ds = load_file(sentiment_csv, "review", "sentiment")
    a_train, a_test = split(ds, 20, seed=1)
    b_train, b_test = split(ds, 20, seed=1)
    assert a_test.texts == b_test.texts and len(a_train) == 100
    with pytest.raises(DataError):
        split(ds, 500, seed=1)
