import numpy as np

from rgft_edge.fleet.client import choose_upload


def test_upload_choice_ranks_by_rms_gradient_per_byte_within_the_budget():
    scores = np.array([4.0, 1.0, 3.0, 0.5])
    nbytes = np.array([400, 4, 100, 4])  # RMS gradient per byte: 0.2, 0.5, 0.3, 0.25
    assert choose_upload(scores, nbytes, 110) == [1, 2, 3]
    assert choose_upload(scores, nbytes, 1000) == [0, 1, 2, 3]
    # the norm divided by the size would always take the two tiny components first, then stop
    assert choose_upload(scores, nbytes, 4) == [1]


def test_at_least_one_component_even_when_nothing_fits():
    assert choose_upload(np.array([1.0, 2.0]), np.array([50, 30]), 10) == [1]  # the smallest


def test_int8_coding_prices_a_component_at_a_byte_a_value_plus_one_scale_per_array():
    from types import SimpleNamespace

    from rgft_edge.fleet.client import sent_bytes

    fm = SimpleNamespace(component_bytes=np.array([400, 8]), component_keys=[["a|w", "a|b"], ["c|w"]])
    assert list(sent_bytes(fm, "none")) == [400, 8]
    assert list(sent_bytes(fm, "int8")) == [100 + 8, 2 + 4]
