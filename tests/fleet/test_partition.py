import numpy as np
import pytest

from rgft_edge.errors import DataError, UserError
from rgft_edge.fleet import FleetConfig, dirichlet_split


def test_dirichlet_split_covers_every_example_once_and_is_non_iid():
    labels = np.repeat(np.arange(5), 200)
    parts = dirichlet_split(labels, 10, 0.3, seed=0)
    joined = np.sort(np.concatenate(parts))
    assert np.array_equal(joined, np.arange(len(labels)))
    assert min(len(p) for p in parts) >= 2
    # alpha 0.3: most clients are dominated by one or two labels
    top_share = [np.bincount(labels[p], minlength=5).max() / len(p) for p in parts]
    assert np.median(top_share) > 0.5
    iid = dirichlet_split(labels, 10, 1000.0, seed=0)
    assert np.median([np.bincount(labels[p], minlength=5).max() / len(p) for p in iid]) < 0.35


def test_dirichlet_split_is_deterministic_in_seed():
    labels = np.repeat(np.arange(3), 50)
    a, b, c = (dirichlet_split(labels, 4, 0.5, seed=s) for s in (1, 1, 2))
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not all(np.array_equal(x, y) for x, y in zip(a, c))


def test_too_little_data_is_refused():
    with pytest.raises(DataError, match="cannot give 10 clients"):
        dirichlet_split([0, 1, 0], 10, 0.3, seed=0)


def test_fleet_config_round_trips_through_flower_run_config_and_refuses_bad_values():
    cfg = FleetConfig(method="rgft-lora", rounds=3, upload_budget=0.05, coding="int8", resume=True)
    back = FleetConfig.from_run_config({k: str(v) for k, v in cfg.to_run_config().items()})
    assert back == cfg
    with pytest.raises(UserError, match="unknown fleet method"):
        FleetConfig(method="fedsgd")
    with pytest.raises(UserError, match="unknown fleet setting"):
        FleetConfig.from_run_config({"no-such-key": 1})
    with pytest.raises(UserError, match="upload_budget"):
        FleetConfig(upload_budget=0)
    with pytest.raises(UserError, match="is not a int"):
        FleetConfig.from_run_config({"rounds": "many"})
