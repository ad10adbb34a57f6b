"""Train / test / validation splits, including a separate test file (`--eval-data`)."""

import pytest

from rgft_edge.config import FinetuneConfig
from rgft_edge.errors import DataError, UserError
from rgft_edge.splits import load_splits
from tests.conftest import write_sentiment_csv


def _cfg(train_csv, **kw):
    return FinetuneConfig.of(data=str(train_csv), text_column="review", label_column="sentiment",
                             max_train_examples=0, **kw)


def test_eval_file_is_the_test_set_and_all_of_data_trains(tmp_path):
    train_csv = write_sentiment_csv(tmp_path / "train.csv", n=80, seed=1)
    test_csv = write_sentiment_csv(tmp_path / "test.csv", n=30, seed=2)
    s = load_splits(_cfg(train_csv, eval_data=str(test_csv), eval_examples=1000))
    assert len(s.held_out) == 30 and len(s.train) == 80 and s.validation is None
    assert s.held_out.source.endswith("test.csv")
    capped = load_splits(_cfg(train_csv, eval_data=str(test_csv), eval_examples=12, validation_examples=10))
    assert len(capped.held_out) == 12 and len(capped.validation) == 10 and len(capped.train) == 70


def test_eval_file_with_other_labels_is_refused(tmp_path):
    train_csv = write_sentiment_csv(tmp_path / "train.csv", n=40)
    other = tmp_path / "other.csv"
    other.write_text("review,sentiment\nfine film,neutral\ngreat plot,neutral\n")
    with pytest.raises(DataError, match="no usable rows"):
        load_splits(_cfg(train_csv, eval_data=str(other)))
    strict = _cfg(train_csv, eval_data=str(other), on_bad_row="error")
    with pytest.raises(DataError, match="unknown label"):
        load_splits(strict)
    with pytest.raises((DataError, UserError), match="not found"):
        load_splits(_cfg(train_csv, eval_data=str(tmp_path / "missing.csv")))
