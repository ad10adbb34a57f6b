"""`rgft-edge` command line. Flags are built from the config groups (`config.py`) and the policy
and backend registries, so `finetune`, `train` and `compile` share one vocabulary."""

from __future__ import annotations

import argparse
import json
import sys
import typing
from pathlib import Path

from .backend import backend_names
from .config import GROUPS, FinetuneConfig, flag_of, group_fields
from .errors import UserError
from .policies import option_fields, policy_specs
from .quiet import quiet_third_party

# Settings a compiled artifact fixes (its model, shapes, granularity): not `train` flags.
ARTIFACT_FIXED = ("model", "task", "adapter", "lora_r", "granularity", "train_embeddings",
                  "max_length", "batch_size", "image_size")


def _flag_type(tp):
    args = [a for a in typing.get_args(tp) if a is not type(None)]
    return args[0] if args else tp


def _adapter(text: str) -> str:
    return "none" if text == "full" else text  # `full` (the manifest's word) means no adapter


def _add(parser, key: str, tp, default, help_: str, choices=None) -> None:
    # Choices are listed in the help, not enforced by argparse: the config's validation refuses a
    # bad value with one clear line and exit status 2, the same for flags, resume and the API.
    flag = "--" + key.replace("_", "-")
    help_ = f"{help_}{'; one of ' + ', '.join(choices) if choices else ''} (default: {default})"
    if tp is bool:
        parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=default, help=help_)
        return
    kind = _adapter if key == "adapter" else _flag_type(tp)
    names = (flag, "--steps") if key == "max_steps" else (flag,)
    parser.add_argument(*names, type=kind, default=default, help=help_, dest=key)


def add_group_flags(parser: argparse.ArgumentParser, group: str, only: tuple[str, ...] | None = None,
                    exclude: tuple[str, ...] = (), defaults: dict | None = None) -> None:
    """One flag per field of a config group (`only` / `exclude` by flag key)."""
    cls = GROUPS[group]
    hints = typing.get_type_hints(cls)
    section = parser.add_argument_group(group)
    for f in group_fields(cls):
        key = flag_of(f)
        if key in exclude or (only is not None and key not in only):
            continue
        choices = f.metadata.get("choices")
        choices = choices() if callable(choices) else choices
        _add(section, key, hints[f.name], (defaults or {}).get(key, f.default), f.metadata.get("help", ""),
             list(choices) if choices else None)
    if group == "selection":
        add_policy_option_flags(parser)


def add_policy_option_flags(parser: argparse.ArgumentParser) -> None:
    section = parser.add_argument_group("policy options", "each used by the policies it names; "
                                        "policies: " + "; ".join(f"{n}: {s.summary}"
                                                                 for n, s in policy_specs().items()))
    for key, f in option_fields().items():
        _add(section, key, _option_type(f.type), f.default, f.metadata.get("help", ""))


def _option_type(annotation):
    """Option dataclasses may use postponed annotations: 'float | None' -> float."""
    if not isinstance(annotation, str):
        return _flag_type(annotation)
    return {"float": float, "int": int, "str": str, "bool": bool}.get(annotation.split("|")[0].strip(), str)


def add_config_flags(parser: argparse.ArgumentParser, exclude: tuple[str, ...] = ()) -> None:
    for group in GROUPS:
        add_group_flags(parser, group, exclude=exclude)


def config_from_args(ns: argparse.Namespace) -> FinetuneConfig:
    keys = set(FinetuneConfig().flat())
    values = {k: v for k, v in vars(ns).items() if k in keys}
    if values.get("max_train_examples") == 0:
        values["max_train_examples"] = None
    return FinetuneConfig.of(**values)


def resumed_config(run_dir: str) -> tuple[FinetuneConfig, dict]:
    """The interrupted run's own resolved configuration, writing into the same directory."""
    path = Path(run_dir) / "config.json"
    try:
        saved = json.loads(path.read_text())
        cfg = FinetuneConfig.of(**saved["config"])
    except (OSError, ValueError, KeyError, TypeError, UserError) as e:
        raise UserError(f"{path}: cannot resume from this run directory ({e})") from e
    cfg.output.out = str(run_dir)
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
    add_group_flags(co, "model", exclude=("train_embeddings",), defaults={"adapter": "lora", "granularity": None})
    add_group_flags(co, "data", only=("max_length", "batch_size", "image_size", "text_column", "label_column",
                                      "encoding"))
    add_group_flags(co, "limits", only=("profile",))
    out = co.add_argument_group("compile")
    out.add_argument("--backend", choices=backend_names(), default=None,
                     help="default: the profile's preferred backend, else executorch (torch for images)")
    out.add_argument("--quantize", choices=("int8", "none"), default=None,
                     help="int8: torchao int8 frozen base (default for text); none (default, and the only "
                     "choice, for --task image-classification)")
    out.add_argument("--labels", default=None, help="comma-separated label names (default: rotten,fresh)")
    out.add_argument("--labels-from", default=None, metavar="DATA",
                     help="take the label names from training data instead of typing them: an image "
                     "folder / .npz / orl-faces, or a text file (its --label-column)")
    out.add_argument("--lora-targets", default=None, help="comma-separated module names")
    out.add_argument("--programs", type=int, default=4, help="backprop cut depths to export")
    out.add_argument("--executorch-kernels", choices=("xnnpack", "optimized", "portable"), default="xnnpack",
                     help="executorch backend: lower the training programs to XNNPACK (default), or keep "
                     "them on the optimized / portable kernel libraries (docs/artifacts.md)")
    out.add_argument("--executorch-layout", choices=("auto", "stages", "cuts"), default="auto",
                     help="executorch backend: per-stage methods chained by the runner, so a step computes "
                     "weight gradients only for the components it trains (stages), or one joint method "
                     "per backprop cut depth (cuts); auto (default): stages for BERT-like classifiers and "
                     "Llama-like causal LMs, cuts for other models (docs/artifacts.md)")
    out.add_argument("--dropout", type=float, default=None, help="override every dropout rate (0: deterministic)")
    out.add_argument("--force", action="store_true", help="overwrite a non-empty output directory")
    out.add_argument("-o", "--out", required=True, help="artifact directory to write")

    tr = sub.add_parser("train", help="device: train a compiled artifact with RGFT selection")
    tr.add_argument("artifact", nargs="?", help="artifact directory written by `rgft-edge compile` "
                    "(not needed with --resume)")
    add_config_flags(tr, exclude=ARTIFACT_FIXED)
    tr.add_argument("--resume", default=None, metavar="RUN_DIR",
                    help="continue an interrupted run from its last checkpoint (its own config is used)")
    tr.set_defaults(budget=None)  # artifacts differ in forward share: default to half the backward
    tr.add_argument("--no-progress", action="store_true", help="no progress bar")

    rp = sub.add_parser("report", help="self-contained HTML report of run directories")
    rp.add_argument("run_dir")
    rp.add_argument("--compare", nargs="*", default=[], help="more run directories, side by side")
    rp.add_argument("-o", "--out", default=None, help="HTML file (default RUN_DIR/report.html)")

    from .fleet.cli import add_parser as add_fleet_parser

    add_fleet_parser(sub)
    pr = sub.add_parser("profiles", help="device profiles: list | show NAME | detect")
    pr.add_argument("action", choices=("list", "show", "detect"))
    pr.add_argument("name", nargs="?")
    return p


def _compile(args) -> int:
    from .device_profiles import load_profile
    from .export.compile import compile_artifact
    from .export.prepare import PrepareOptions
    from .models import resolve_model

    image = args.task == "image-classification"
    backend = args.backend
    if backend is None and image:
        backend = "torch"  # the one backend that runs image models
    elif backend is None:
        backend = load_profile(args.profile).preferred_backend if args.profile else "executorch"
    opts = PrepareOptions(task=args.task, labels=_compile_labels(args, image),
                          adapter="lora" if args.adapter == "lora" else "full",
                          quantize=args.quantize or ("none" if image else "int8"),
                          lora_r=args.lora_r, lora_alpha=2 * args.lora_r,
                          lora_targets=args.lora_targets.split(",") if args.lora_targets else None,
                          granularity=args.granularity, max_length=args.max_length,
                          batch_size=args.batch_size, dropout=args.dropout, image_size=args.image_size,
                          executorch_kernels=args.executorch_kernels,
                          executorch_layout=args.executorch_layout)
    model = (args.model or "efficientnet-lite0") if image else resolve_model(args.model)
    report = compile_artifact(model, args.out, backend, opts, force=args.force, max_programs=args.programs)
    print(format_report(report, args.out))
    return 0


def _compile_labels(args, image: bool) -> list[str]:
    """--labels typed out, or --labels-from read off the data the device will train on (the order
    `train` itself gives them: class folders sorted, .npz label_names, a text column's sorted values)."""
    if args.labels is not None and args.labels_from is not None:
        raise UserError("pass --labels or --labels-from, not both")
    if args.labels_from is None:
        return [x.strip() for x in (args.labels or "rotten,fresh").split(",") if x.strip()]
    if image:
        from .images import load_images

        return list(load_images(args.labels_from).label_names)
    from .data import load_dataset

    return list(load_dataset(args.labels_from, text_column=args.text_column, label_column=args.label_column,
                             encoding=args.encoding).label_names)


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


def _run(args) -> int:
    """finetune / train, fresh or resumed; prints the summary, returns the run's exit status."""
    from .session import format_summary

    saved: dict = {}
    if args.resume:
        cfg, saved = resumed_config(args.resume)
    else:
        cfg = config_from_args(args).validate()
    progress, resume = not args.no_progress, bool(args.resume)
    if args.command == "finetune":
        from .recipes.finetune import finetune

        summary = finetune(cfg, progress=progress, resume=resume)
    else:
        from .recipes.train import train_artifact

        artifact = saved.get("artifact") or args.artifact
        if not artifact:
            raise UserError("train needs an ARTIFACT directory (or --resume RUN_DIR)")
        summary = train_artifact(artifact, cfg, progress=progress, resume=resume)
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


def _report(args) -> int:
    from .runs.report import write_report

    runs = [args.run_dir, *args.compare]
    print(write_report(runs, args.out or Path(args.run_dir) / "report.html"))
    return 0


def _fleet(args) -> int:
    from .fleet.cli import run

    return run(args)


COMMANDS = {"finetune": _run, "train": _run, "compile": _compile, "profiles": _profiles, "report": _report,
            "fleet": _fleet}


def main(argv: list[str] | None = None) -> int:
    quiet_third_party()
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except UserError as e:
        print(f"rgft-edge: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("rgft-edge: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
