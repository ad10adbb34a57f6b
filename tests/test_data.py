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
    ds = load_file(p, encoding="utf-8")
    assert len(ds) == 2 and ds.skipped_rows == 3
    with pytest.raises(DataError, match=r"bad.csv:3: empty 'text'"):
        load_file(p, on_bad_row="error")
    j = tmp_path / "bad.jsonl"
    j.write_text('{"text": "a", "label": "x"}\n{not json\n{"text": "b", "label": "y"}\n')
    with pytest.raises(DataError, match=r"bad.jsonl:2: not valid JSON"):
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


def test_text_that_is_not_utf8_is_decoded_not_dropped(tmp_path):
    p = tmp_path / "tweets.csv"
    p.write_bytes(b"text,label\ncaf\xe9 was great,pos\nfine,pos\n\x93quoted\x94 awful,neg\nbad,neg\n")
    auto = load_file(p)  # UTF-8, the rows that are not read as cp1252 (a Windows export)
    assert auto.texts == ["caf\u00e9 was great", "fine", "\u201cquoted\u201d awful", "bad"]
    assert auto.skipped_rows == 0 and auto.notes["recoded_rows"] == 2 and auto.notes["rows_read"] == 4
    strict = load_file(p, encoding="utf-8")  # a codec named: what it cannot decode is skipped, by reason
    assert len(strict) == 2 and strict.notes["skipped"] == {"not decodable as utf-8": {"rows": 2, "first_line": 2}}
    with pytest.raises(DataError, match=r"tweets.csv:2: not decodable as utf-8"):
        load_file(p, encoding="utf-8", on_bad_row="error")
    assert load_file(p, encoding="cp1252").texts[0] == "caf\u00e9 was great"
    u16 = tmp_path / "u16.jsonl"
    u16.write_text('{"text": "\u00e9t\u00e9", "label": "a"}\n{"text": "b", "label": "c"}\n', encoding="utf-16")
    assert load_file(u16, encoding="utf-16").texts == ["\u00e9t\u00e9", "b"]
    with pytest.raises(DataError, match="unknown --encoding 'klingon'"):
        load_file(p, encoding="klingon")


def test_skipped_rows_are_counted_per_reason_with_their_first_line(tmp_path):
    p = tmp_path / "mixed.csv"
    p.write_text("text,label\na,x\n,x\nb,\nc,y\n,y\nd,y,extra\n")
    ds = load_file(p)
    assert ds.notes["skipped"] == {"empty 'text'": {"rows": 2, "first_line": 3},
                                   "missing 'label'": {"rows": 1, "first_line": 4},
                                   "wrong number of fields": {"rows": 1, "first_line": 7}}
    assert ds.skipped_rows == 4 and ds.notes["rows_read"] == 6


def test_data_summary_says_what_was_read_skipped_and_split(tmp_path):
    from rgft_edge.config import FinetuneConfig
    from rgft_edge.splits import data_summary, load_splits

    p = tmp_path / "d.csv"
    rows = [f"review {i},{'pos' if i % 3 else 'neg'}" for i in range(40)] + [",pos"] * 5
    p.write_bytes(("text,label\n" + "\n".join(rows) + "\n").encode() + b"caf\xe9,neg\n")
    cfg = FinetuneConfig.of(data=str(p), eval_examples=6)
    text = data_summary(load_splits(cfg))
    assert "46 rows read, 41 usable, 5 skipped" in text
    assert "5 \u00d7 empty 'text' (first: line 42)" in text
    assert "1 rows not UTF-8, read as cp1252" in text
    assert "labels                 2: neg 15, pos 26" in text
    assert "train 35, held-out 6" in text
    assert "warning: 11% of the rows" in text and "--on-bad-row error" in text


def test_data_summary_counts_a_separate_eval_file_from_its_own_rows(tmp_path, sentiment_csv):
    from rgft_edge.config import FinetuneConfig
    from rgft_edge.splits import data_summary, load_splits

    test = tmp_path / "test.csv"
    test.write_text("review,sentiment\n" + "\n".join(f"good film {i},pos" for i in range(20)) + "\n,neg\n,pos\n")
    cfg = FinetuneConfig.of(data=str(sentiment_csv), text_column="review", label_column="sentiment",
                            eval_data=str(test), eval_examples=5)
    text = data_summary(load_splits(cfg))
    assert "test.csv: 22 rows read, 20 usable, 2 skipped" in text  # not the capped 5 it evaluates
    assert "held-out 5" in text
