"""`rgft-edge` command line. Every `finetune` flag is one FinetuneConfig field (same name)."""

from __future__ import annotations

import argparse
import dataclasses
import sys
import typing

from .config import FinetuneConfig
from .errors import UserError
from .quiet import quiet_third_party

HELP = {
    "model": "HF model directory (default: the shipped all-MiniLM-L6-v2)",
    "data": "rotten-tomatoes, bbc-news, or a .csv/.tsv/.jsonl file",
    "policy": "top-p, scale, clip, rank, budget, full, random, static, head-only",
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


def add_config_flags(parser: argparse.ArgumentParser) -> None:
    hints = typing.get_type_hints(FinetuneConfig)
    for f in dataclasses.fields(FinetuneConfig):
        flag = "--" + f.name.replace("_", "-")
        tp = _flag_type(hints[f.name])
        help_ = HELP.get(f.name, "") + f" (default: {f.default})"
        if tp is bool:
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=f.default, help=help_)
        else:
            parser.add_argument(flag, type=tp, default=f.default, help=help_, dest=f.name)


def config_from_args(ns: argparse.Namespace) -> FinetuneConfig:
    values = {f.name: getattr(ns, f.name) for f in dataclasses.fields(FinetuneConfig)}
    if values.get("max_train_examples") == 0:
        values["max_train_examples"] = None
    return FinetuneConfig(**values)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="rgft-edge", description="Residual-Guided Fine-Tuning for edge devices")
    sub = p.add_subparsers(dest="command", required=True)
    ft = sub.add_parser("finetune", help="fine-tune a model with RGFT selection (eager torch)")
    add_config_flags(ft)
    ft.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def main(argv: list[str] | None = None) -> int:
    quiet_third_party()
    args = build_parser().parse_args(argv)
    try:
        if args.command == "finetune":
            from .recipes.finetune import finetune, format_summary

            summary = finetune(config_from_args(args).validate(), progress=not args.no_progress)
            print(format_summary(summary))
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
