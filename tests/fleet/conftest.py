import os
from pathlib import Path

import pytest

from rgft_edge.fleet import FleetConfig
from tests.conftest import save_tiny_model_dir, write_sentiment_csv

ROOT = Path(__file__).resolve().parents[2]
# Ray's simulation workers and Flower's app processes import `tests.*` (the test's own ClientApp)
os.environ["PYTHONPATH"] = os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])


@pytest.fixture(scope="session")
def tiny_fleet(tmp_path_factory):
    """A 4-client fleet over a tiny random BERT and a synthetic review file (seconds per round)."""
    root = tmp_path_factory.mktemp("fleet")
    model = save_tiny_model_dir(root / "tiny-bert")
    data = write_sentiment_csv(root / "reviews.csv", n=240)
    return FleetConfig(model=str(model), data=str(data), text_column="review", label_column="sentiment",
                       clients=4, min_clients=4, rounds=2, local_steps=3, batch_size=8, held_out=40, validation=20, lr=1e-3,
                       upload_budget=0.3, round_timeout_s=60)
