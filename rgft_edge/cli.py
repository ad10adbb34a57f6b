"""`rgft-edge` command line. Every `finetune` flag is one FinetuneConfig field (same name)."""

from __future__ import annotations

import argparse
import dataclasses
import sys
import typing
from pathlib import Path

from .config import FinetuneConfig
from .errors import UserError
from .quiet import quiet_third_party

HELP = {
    "model": "HF model directory, or a shipped model: minilm (default, all-MiniLM-L6-v2), "
             "smollm2-135m (SmolLM2-135M-Instruct, Llama-like; use with --task causal-lm)",
    "data": "rotten-tomatoes, bbc-news, or a .csv/.tsv/.jsonl file",
    "policy": "top-p, scale, clip, rank, budget, full, random, static, head-only; baselines at the "
              "budget: random-budget, static-budget, elastic (ElasticTrainer-style)",
    "top_p": "fraction of components per step for top-p/rank/random/static, in (0, 1]",
    "budget": "per-step cost budget as a fraction of a full step (budget policy)",
    "granularity": "layer, block (attention vs FFN), head, lora",
    "estimator": "grad-norm or activation (||dL/dh||*||h||)",
    "max_train_examples": "cap on training examples (0: all)",
    "out": "run directory (default runs/<data>-<policy>-<time>)",
}


def _flag_type(tp):
    args = [a for a in typing.get_args(tp) if a is not type(None)]
    base = args[0] if args else tp
    return base


# Fields fixed by a compiled artifact (its model, shapes, granularity) are not `train` flags.
ARTIFACT_FIXED = ("model", "max_length", "granularity", "train_embeddings", "batch_size", "task",
                  "adapter", "lora_r")


def add_config_flags(parser: argparse.ArgumentParser, exclude: tuple[str, ...] = ()) -> None:
    hints = typing.get_type_hints(FinetuneConfig)
    for f in dataclasses.fields(FinetuneConfig):
        if f.name in exclude:
            continue
        flag = "--" + f.name.replace("_", "-")
        tp = _flag_type(hints[f.name])
        help_ = HELP.get(f.name, "") + f" (default: {f.default})"
        if tp is bool:
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=f.default, help=help_)
        else:
            parser.add_argument(flag, type=tp, default=f.default, help=help_, dest=f.name)


def config_from_args(ns: argparse.Namespace) -> FinetuneConfig:
    values = {f.name: getattr(ns, f.name) for f in dataclasses.fields(FinetuneConfig) if hasattr(ns, f.name)}
    if values.get("max_train_examples") == 0:
        values["max_train_examples"] = None
    return FinetuneConfig(**values)


def resumed_config(run_dir: str) -> tuple[FinetuneConfig, dict]:
    """The interrupted run's own resolved configuration, writing into the same directory."""
    import json

    path = Path(run_dir) / "config.json"
    try:
        saved = json.loads(path.read_text())
        cfg = FinetuneConfig(**saved["config"])
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise UserError(f"{path}: cannot resume from this run directory ({e})") from e
    cfg.out = str(run_dir)
    return cfg.validate(), saved


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="rgft-edge", description="Residual-Guided Fine-Tuning for edge devices")
    sub = p.add_subparsers(dest="command", required=True)
    ft = sub.add_parser("finetune", help="fine-tune a model with RGFT selection (eager torch)")
    add_config_flags(ft)
    ft.add_argument("--no-progress", action="store_true", help="no progress bar")
    ft.add_argument("--resume", default=None, metavar="RUN_DIR",
                    help="continue an interrupted run from its last checkpoint (its own config is used)")

    co = sub.add_parser("compile", help="host: quantize, add adapters, partition, export an artifact")
    co.add_argument("--model", default=None, help="HF model directory or minilm / smollm2-135m (default: minilm)")
    co.add_argument("--backend", choices=("torch", "executorch", "onnxruntime"), default=None,
                    help="default: the profile's preferred backend, else executorch")
    co.add_argument("--quantize", choices=("int8", "none"), default="int8")
    co.add_argument("--adapter", choices=("lora", "full"), default="lora")
    co.add_argument("--granularity", choices=("layer", "block", "head", "lora"), default=None,
                    help="default: lora for LoRA adapters, block for full")
    co.add_argument("--profile", default=None, help="device profile name or YAML file")
    co.add_argument("--task", choices=("sequence-classification", "causal-lm"), default="sequence-classification")
    co.add_argument("--labels", default="rotten,fresh", help="comma-separated label names")
    co.add_argument("--max-length", type=int, default=64)
    co.add_argument("--batch-size", type=int, default=16)
    co.add_argument("--lora-r", type=int, default=8)
    co.add_argument("--lora-targets", default=None, help="comma-separated module names")
    co.add_argument("--programs", type=int, default=4, help="backprop cut depths to export")
    co.add_argument("--dropout", type=float, default=None, help="override every dropout rate (0: deterministic)")
    co.add_argument("--force", action="store_true", help="overwrite a non-empty output directory")
    co.add_argument("-o", "--out", required=True, help="artifact directory to write")

    tr = sub.add_parser("train", help="device: train a compiled artifact with RGFT selection")
    tr.add_argument("artifact", nargs="?", help="artifact directory written by `rgft-edge compile` "
                    "(not needed with --resume)")
    tr.add_argument("--steps", type=int, default=None, dest="steps", help="stop after N steps")
    add_config_flags(tr, exclude=ARTIFACT_FIXED + ("max_steps",))
    tr.add_argument("--resume", default=None, metavar="RUN_DIR",
                    help="continue an interrupted run from its last checkpoint (its own config is used)")
    tr.set_defaults(budget=None)  # artifacts differ in forward share: default to half the backward
    tr.add_argument("--no-progress", action="store_true", help="no progress bar")

    rp = sub.add_parser("report", help="self-contained HTML report of run directories")
    rp.add_argument("run_dir")
    rp.add_argument("--compare", nargs="*", default=[], help="more run directories, side by side")
    rp.add_argument("-o", "--out", default=None, help="HTML file (default RUN_DIR/report.html)")

    pr = sub.add_parser("profiles", help="device profiles: list | show NAME | detect")
    pr.add_argument("action", choices=("list", "show", "detect"))
    pr.add_argument("name", nargs="?")
    return p


def _compile(args) -> int:
    from .device_profiles import load_profile
    from .export.compile import compile_artifact
    from .export.prepare import PrepareOptions
    from .models import resolve_model

    backend = args.backend
    if backend is None:
        backend = load_profile(args.profile).preferred_backend if args.profile else "executorch"
    opts = PrepareOptions(task=args.task, labels=[x.strip() for x in args.labels.split(",") if x.strip()],
                          adapter=args.adapter, quantize=args.quantize, lora_r=args.lora_r,
                          lora_alpha=2 * args.lora_r,
                          lora_targets=args.lora_targets.split(",") if args.lora_targets else None,
                          granularity=args.granularity, max_length=args.max_length,
                          batch_size=args.batch_size, dropout=args.dropout)
    report = compile_artifact(resolve_model(args.model), args.out, backend, opts,
                              force=args.force, max_programs=args.programs)
    print(format_report(report, args.out))
    return 0


def format_report(r: dict, out: str) -> str:
    lines = [f"artifact               {out} ({r['backend']}, quantize {r['quantize']}, adapter {r['adapter']}, "
             f"{r['granularity']} granularity)",
             f"programs               {r['programs']}",
             f"model on disk          {r['weights_bytes'] / 1e6:.1f} MB (weights + programs) = "
             f"{r['weights_vs_fp32']:.3f} of the fp32 weights ({r['fp32_model_bytes'] / 1e6:.1f} MB); "
             f"{len(r.get('int8_weights', []))} int8 weights",
             f"artifact total         {r['artifact_bytes'] / 1e6:.1f} MB",
             f"time                   prepare {r['prepare_time_s']:.1f} s, export {r['export_time_s']:.1f} s"]
    big = sorted(r["files"].items(), key=lambda kv: -kv[1])[:6]
    lines += [f"  {size / 1e6:8.2f} MB  {name}" for name, size in big]
    return "\n".join(lines)


def _train(args) -> int:
    from .recipes.train import train_artifact

    if args.resume:
        cfg, saved = resumed_config(args.resume)
        summary = train_artifact(saved.get("artifact") or args.artifact, cfg, progress=not args.no_progress,
                                 resume=True)
    else:
        if not args.artifact:
            raise UserError("train needs an ARTIFACT directory (or --resume RUN_DIR)")
        cfg = config_from_args(args)
        cfg.max_steps = args.steps
        summary = train_artifact(args.artifact, cfg, progress=not args.no_progress)
    from .session import format_summary

    print(format_summary(summary))
    return summary["exit_code"]


def _profiles(args) -> int:
    from .device_profiles import detect, list_profiles, load_profile

    if args.action == "list":
        for name in list_profiles():
            print(f"{name:18s} {load_profile(name).description}")
    elif args.action == "show":
        if not args.name:
            raise UserError("profiles show needs a NAME")
        print(Path(load_profile(args.name).source).read_text())
    else:
        prof, why = detect()
        print(f"{prof.name}  ({why})")
    return 0


def main(argv: list[str] | None = None) -> int:
    quiet_third_party()
    args = build_parser().parse_args(argv)
    try:
        if args.command == "finetune":
            from .recipes.finetune import finetune
            from .session import format_summary

            if args.resume:
                cfg, _ = resumed_config(args.resume)
                summary = finetune(cfg, progress=not args.no_progress, resume=True)
            else:
                summary = finetune(config_from_args(args).validate(), progress=not args.no_progress)
            print(format_summary(summary))
            return summary["exit_code"]
        if args.command == "compile":
            return _compile(args)
        if args.command == "train":
            return _train(args)
        if args.command == "profiles":
            return _profiles(args)
        if args.command == "report":
            from .report import write_report

            runs = [args.run_dir, *args.compare]
            for r in runs:
                if not Path(r).is_dir():
                    raise UserError(f"run directory not found: {r}")
            print(write_report(runs, args.out or Path(args.run_dir) / "report.html"))
            return 0
    except UserError as e:
        print(f"rgft-edge: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("rgft-edge: interrupted", file=sys.stderr)
        return 130
    return 1


if __name__ == "__main__":
    sys.exit(main())
