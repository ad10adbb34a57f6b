"""Host compiler: prepared model -> artifact directory (manifest + weights + tokenizer + programs).

    compile_artifact(model_dir, out_dir, backend="executorch", PrepareOptions(...))

Backends write their programs through `export/<backend>_backend.py`; this module owns the shared
parts (weights, tokenizer, component table, cut-depth plan, manifest, export report).
"""

from __future__ import annotations

import json
import os
import shutil
import time
import warnings
from pathlib import Path

import torch

import rgft_edge
from rgft_edge.artifact import load_artifact, write_manifest
from rgft_edge.backend import backend_names, get_backend
from rgft_edge.components import ComponentTable
from rgft_edge.errors import UserError

from .image import IMAGE_TASK, check_image_backend, image_input_spec, prepare_image, save_buffers
from .prepare import PreparedModel, PrepareOptions, prepare
from .weights import save_weights

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt")


def cut_depth_plan(table: ComponentTable, max_programs: int = 4) -> list[int]:
    """Backprop cut depths to export: the bottom (everything trainable), the head alone, and
    evenly spaced depths between, so a step whose selection lies high runs a short backward."""
    depths = sorted(set(table.depths))
    if len(depths) <= max_programs:
        return depths
    picks = {depths[0], depths[-1]}
    inner = depths[1:-1]
    for j in range(1, max_programs - 1):
        picks.add(inner[round(j * (len(inner) - 1) / (max_programs - 1))])
    return sorted(picks)


def _copy_tokenizer(model_dir: Path, out: Path) -> list[str]:
    dest = out / "tokenizer"
    dest.mkdir(parents=True, exist_ok=True)
    copied = []
    for name in TOKENIZER_FILES:
        if (model_dir / name).is_file():
            shutil.copyfile(model_dir / name, dest / name)
            copied.append(name)
    if "tokenizer.json" not in copied:
        raise UserError(f"{model_dir}: no tokenizer.json; the device tokenizes with `tokenizers` "
                        "and needs the fast tokenizer file")
    return copied


def _fp32_bytes(model: torch.nn.Module) -> int:
    return int(sum(p.numel() for p in model.parameters()) * 4)


def compile_artifact(model_dir: str, out_dir: str | Path, backend: str = "executorch",
                     opts: PrepareOptions | None = None, force: bool = False,
                     max_programs: int = 4) -> dict:
    """Compile and validate an artifact; returns the export report (also saved in the directory)."""
    if backend not in backend_names():
        raise UserError(f"--backend must be one of {', '.join(backend_names())}, got {backend!r}")
    opts = opts or PrepareOptions()
    image = opts.task == IMAGE_TASK
    if image:
        check_image_backend(backend)
    final = Path(out_dir)
    if final.exists() and (not final.is_dir() or any(final.iterdir())) and not force:
        raise UserError(f"{final} exists and is not empty; pass --force to overwrite")
    # Build in a sibling folder and swap it in at the end: a refusal or a crash mid-export leaves
    # no half-written artifact, and what --force would replace stays until the new one is whole.
    final.parent.mkdir(parents=True, exist_ok=True)
    out = final.parent / f".{final.name}.partial-{os.getpid()}"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir()
    try:
        report = _compile_into(out, model_dir, backend, opts, image, max_programs)
    except BaseException:
        shutil.rmtree(out, ignore_errors=True)
        raise
    if final.is_dir():
        shutil.rmtree(final)
    elif final.exists():
        final.unlink()
    os.replace(out, final)
    load_artifact(final)  # what we wrote must validate where it now lives
    return report


def _compile_into(out: Path, model_dir: str, backend: str, opts: PrepareOptions, image: bool,
                  max_programs: int) -> dict:
    t0 = time.perf_counter()
    prep = (prepare_image if image else prepare)(model_dir, opts)
    opts = prep.options  # with what prepare resolved (the image size)
    t_prep = time.perf_counter() - t0
    weights = save_weights(prep.model, out / "weights")
    if image:  # no tokenizer; BatchNorm statistics travel as buffers
        weights.update(save_buffers(prep.model, out / "weights"))
    tok = [] if image else _copy_tokenizer(Path(model_dir), out)
    cuts = cut_depth_plan(prep.table, max_programs)

    t1 = time.perf_counter()
    programs, backend_info = _export_backend(backend, prep, out, cuts)
    t_export = time.perf_counter() - t1

    manifest = {
        "backend": backend,
        "rgft_edge_version": rgft_edge.__version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "source_model": prep.source or {"path": str(model_dir), "family": prep.family,
                                        "architecture": type(_base(prep.model)).__name__, "task": opts.task,
                                        "config": json.loads(_base(prep.model).config.to_json_string())},
        "adapter": ({"kind": "lora", "r": opts.lora_r, "alpha": opts.lora_alpha,
                     "targets": prep.lora_targets} if opts.adapter == "lora" else {"kind": "full"}),
        "quantization": ({"scheme": "int8-weight-only", "tool": "torchao", "granularity": "per-channel",
                          "weights": prep.quantized} if prep.quantized else {"scheme": "none"}),
        "labels": opts.labels if opts.task != "causal-lm" else None,
        "input_spec": image_input_spec(prep.encoder, opts.batch_size) if image else
        {"names": _input_names(prep), "dtype": "int64", "batch_size": opts.batch_size,
         "max_length": opts.max_length, "padding": "max_length", "tokenizer": [f"tokenizer/{n}" for n in tok]},
        "components": prep.table.to_dict(),
        "trainable": sorted(prep.table.param_names()),
        "programs": programs,
        "backend_info": backend_info,
    }
    sizes = {p.relative_to(out).as_posix(): p.stat().st_size for p in sorted(out.rglob("*")) if p.is_file()}
    fp32 = _fp32_bytes(_base(prep.model))
    weights_bytes = sum(v for k, v in sizes.items() if not k.startswith("tokenizer/"))
    report = {"backend": backend, "quantize": opts.quantize, "adapter": opts.adapter,
              "granularity": prep.table.granularity, "programs": len(programs),
              "prepare_time_s": round(t_prep, 2), "export_time_s": round(t_export, 2),
              "fp32_model_bytes": fp32, "weights_bytes": weights_bytes,  # everything but the tokenizer
              "weights_vs_fp32": round(weights_bytes / fp32, 4),
              "artifact_bytes": int(sum(sizes.values())), "files": sizes, **weights,
              "total_time_s": round(time.perf_counter() - t0, 2)}
    (out / "export_report.json").write_text(json.dumps(report, indent=1))
    write_manifest(out, manifest)
    load_artifact(out)  # what we wrote must validate
    return report


def _base(model: torch.nn.Module) -> torch.nn.Module:
    get = getattr(model, "get_base_model", None)
    return get() if get is not None else model


def _input_names(prep: PreparedModel) -> list[str]:
    from .prepare import example_inputs

    return list(example_inputs(prep.model, prep.options))


def _export_backend(backend: str, prep: PreparedModel, out: Path, cuts: list[int]):
    export_programs = get_backend(backend).exporter_fn()
    with warnings.catch_warnings():  # tracer and exporter chatter about code paths we do not use
        warnings.simplefilter("ignore")
        return export_programs(prep, out, cuts)
