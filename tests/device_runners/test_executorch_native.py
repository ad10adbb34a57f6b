"""ExecuTorch's C++ runtime through the native shim: the same numbers as the Python bindings, clear
errors for a bad program or call, and the bindings when no compiler can build the shim."""

import os
import shutil

import numpy as np
import pytest

from rgft_edge.artifact import ArtifactError, load_artifact
from rgft_edge.device_runners.executorch_native import NativeProgram
from rgft_edge.device_runners.executorch_runner import ExecuTorchBackend

needs_compiler = pytest.mark.skipif(shutil.which(os.environ.get("CXX") or "g++") is None,
                                    reason="no C++ compiler to build the ExecuTorch shim")


def batch(art, seed=0):
    g = np.random.default_rng(seed)
    b = {"input_ids": g.integers(5, 20, (4, 12)), "attention_mask": np.ones((4, 12), np.int64),
         "token_type_ids": np.zeros((4, 12), np.int64), "labels": g.integers(0, 2, 4)}
    names = art.manifest["backend_info"]["data_inputs"]
    return {k: v for k, v in b.items() if k in names or k == "labels"}


@needs_compiler
def test_native_and_bindings_runtimes_give_the_same_numbers_for_every_program(tiny_artifacts):
    art = load_artifact(tiny_artifacts["executorch"])
    native, bindings = ExecuTorchBackend(art, 1, "native"), ExecuTorchBackend(art, 1, "bindings")
    assert native.environment()["executorch_runtime"] == "native" and "torch" not in native.environment()
    assert bindings.environment()["executorch_runtime"] == "bindings"
    depths = np.array(art.table.depths)
    b = batch(art)
    for prog in native.programs:
        mask = depths >= prog["min_depth"]
        o, t = native.train_step(b, mask, False), bindings.train_step(b, mask, False)
        assert o.loss == t.loss and set(o.grads) == set(t.grads) == set(prog["trainable_params"])
        for n in t.grads:
            np.testing.assert_array_equal(o.grads[n], t.grads[n])
    assert native.evaluate([b]).metrics == pytest.approx(bindings.evaluate([b]).metrics, abs=1e-6)
    native.close()
    bindings.close()


@needs_compiler
def test_a_damaged_program_and_a_wrong_call_are_refused_in_one_line(tiny_artifacts, tmp_path):
    pte = load_artifact(tiny_artifacts["executorch"]).path("executorch/train.pte")
    cut = tmp_path / "cut.pte"
    cut.write_bytes(pte.read_bytes()[:4096])
    with pytest.raises(ArtifactError, match="not a valid program"):
        NativeProgram(cut)
    with pytest.raises(ArtifactError, match="cannot map"):
        NativeProgram(tmp_path / "missing.pte")
    prog = NativeProgram(pte)
    with pytest.raises(RuntimeError, match="expects .* inputs, got 1"):
        prog.run("train_d0", [np.zeros((4, 12), np.int64)])
    with pytest.raises(RuntimeError, match="no method 'nope'"):
        prog.run("nope", [])


def test_without_a_compiler_the_bindings_run_it_and_say_so(tiny_artifacts, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("RGFT_EDGE_NATIVE_DIR", str(tmp_path / "empty-cache"))  # nothing built there yet
    monkeypatch.setenv("CXX", "no-such-compiler")
    et = ExecuTorchBackend(load_artifact(tiny_artifacts["executorch"]), 1)
    assert et.runtime == "bindings"
    assert "native runtime is unavailable" in capsys.readouterr().err
    monkeypatch.setenv("RGFT_EDGE_EXECUTORCH_RUNTIME", "fast")
    with pytest.raises(ArtifactError, match="RGFT_EDGE_EXECUTORCH_RUNTIME"):
        ExecuTorchBackend(load_artifact(tiny_artifacts["executorch"]), 1)
