"""Image data: class folders and .npz arrays load with clear errors; the encoder's shapes and scaling."""

import numpy as np
import pytest

from rgft_edge.errors import DataError
from rgft_edge.images import ImageEncoder, is_image_source, load_image_folder, load_images, load_npz

PIL = pytest.importorskip("PIL.Image")


def write_folder(root, classes=("cat", "dog"), per_class=3, size=(20, 14)):
    rng = np.random.default_rng(0)
    for c in classes:
        (root / c).mkdir(parents=True)
        for i in range(per_class):
            arr = rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
            PIL.fromarray(arr).save(root / c / f"{i}.{'png' if i % 2 else 'jpg'}")
    return root


def test_class_folders_become_labels(tmp_path):
    ds = load_image_folder(write_folder(tmp_path / "imgs"))
    assert ds.label_names == ["cat", "dog"] and len(ds) == 6 and ds.labels.count(1) == 3
    assert is_image_source(str(tmp_path / "imgs"))


def test_a_broken_image_is_skipped_and_counted_or_refused(tmp_path):
    root = write_folder(tmp_path / "imgs")
    (root / "dog" / "broken.png").write_bytes(b"\x89PNG not really")
    assert load_image_folder(root).skipped_rows == 1
    with pytest.raises(DataError, match="broken.png"):
        load_image_folder(root, on_bad_row="error")


def test_folder_errors_name_the_problem(tmp_path):
    with pytest.raises(DataError, match="not found"):
        load_image_folder(tmp_path / "nope")
    root = write_folder(tmp_path / "one", classes=("cat",))
    with pytest.raises(DataError, match="at least two classes"):
        load_image_folder(root)
    root = write_folder(tmp_path / "three", classes=("cat", "dog", "eel"))
    with pytest.raises(DataError, match="eel"):
        load_image_folder(root, labels=["cat", "dog"])


def test_npz_arrays_load_and_bad_ones_are_refused(tmp_path):
    x = np.random.default_rng(0).integers(0, 255, (10, 16, 16, 3), dtype=np.uint8)
    np.savez(tmp_path / "ok.npz", images=x, labels=np.arange(10) % 2, label_names=np.array(["a", "b"]))
    ds = load_npz(tmp_path / "ok.npz")
    assert ds.label_names == ["a", "b"] and len(ds) == 10 and ds.texts[3].shape == (16, 16, 3)
    np.savez(tmp_path / "gray.npz", x=np.random.default_rng(0).random((6, 8, 8)), y=np.arange(6) % 3)
    assert load_images(str(tmp_path / "gray.npz")).label_names == ["0", "1", "2"]
    np.savez(tmp_path / "nolabels.npz", images=x)
    with pytest.raises(DataError, match="label array"):
        load_npz(tmp_path / "nolabels.npz")
    np.savez(tmp_path / "short.npz", images=x, labels=np.arange(3))
    with pytest.raises(DataError, match="3 labels"):
        load_npz(tmp_path / "short.npz")
    np.savez(tmp_path / "nan.npz", images=np.full((4, 8, 8), np.nan), labels=np.arange(4) % 2)
    with pytest.raises(DataError, match="NaN"):
        load_npz(tmp_path / "nan.npz")
    np.savez(tmp_path / "pickled.npz", images=np.array([{"a": 1}] * 4, dtype=object), labels=np.arange(4) % 2)
    with pytest.raises(DataError, match="plain arrays"):  # never unpickled
        load_npz(tmp_path / "pickled.npz")


def test_npz_label_names_are_mapped_onto_the_expected_labels(tmp_path):
    x = np.zeros((4, 8, 8), np.uint8)
    np.savez(tmp_path / "a.npz", images=x, labels=np.array([0, 1, 1, 0]), label_names=np.array(["dark", "bright"]))
    ds = load_npz(tmp_path / "a.npz", ["bright", "dark"])  # e.g. an artifact's labels, in its order
    assert ds.label_names == ["bright", "dark"] and ds.labels == [1, 0, 0, 1]
    with pytest.raises(DataError, match=r"\['dark'\] are not among"):
        load_npz(tmp_path / "a.npz", ["bright", "grey"])
    np.savez(tmp_path / "b.npz", images=x, labels=np.array([0, 1, 2, 0]))  # no names: indices into the labels
    with pytest.raises(DataError, match=r"in \[0, 2\)"):
        load_npz(tmp_path / "b.npz", ["a", "b"])


def test_encoder_spec_rebuilds_the_encoder():
    enc = ImageEncoder(20, mean=(0.1, 0.2, 0.3), std=(0.4, 0.5, 0.6), crop=0.875)
    again = ImageEncoder.from_spec(enc.spec())
    img = np.random.default_rng(0).integers(0, 255, (30, 26, 3), dtype=np.uint8)
    assert np.array_equal(again.encode([img])["pixel_values"], enc.encode([img])["pixel_values"])


def test_encoder_resizes_crops_and_normalises(tmp_path):
    ds = load_image_folder(write_folder(tmp_path / "imgs", size=(40, 24)))
    enc = ImageEncoder(16, mean=(0.5,) * 3, std=(0.5,) * 3, crop=0.875)
    x = enc.encode(ds.texts[:4])["pixel_values"]
    assert x.shape == (4, 3, 16, 16) and x.dtype == np.float32
    assert -1.0 <= x.min() and x.max() <= 1.0
    white = np.full((10, 30), 255, np.uint8)  # a greyscale array becomes RGB
    assert np.allclose(enc.encode([white])["pixel_values"], 1.0)
    assert enc.widen({"pixel_values": x}) is not None
    with pytest.raises(ValueError):
        ImageEncoder(4)
