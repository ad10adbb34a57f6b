"""Nothing on any code path may unpickle or execute code from an artifact or a checkpoint."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SOURCES = [p for d in ("rgft_edge", "export", "device_runners") for p in (ROOT / d).rglob("*.py")]
FORBIDDEN = [
    (re.compile(r"^\s*import pickle|^\s*from pickle|\bpickle\.loads?\("), "pickle"),
    (re.compile(r"torch\.load\((?![^)]*weights_only\s*=\s*True)"), "torch.load without weights_only=True"),
    (re.compile(r"(?<![\w.])(eval|exec)\("), "eval/exec"),
    (re.compile(r"allow_pickle\s*=\s*True"), "numpy allow_pickle=True"),
    (re.compile(r"\bdill\b|\bcloudpickle\b|\bjoblib\.load"), "pickle-based loader"),
]


def test_sources_were_found():
    assert len(SOURCES) > 20


def test_no_unpickling_or_code_execution_anywhere():
    hits = []
    for path in SOURCES:
        for n, line in enumerate(path.read_text().splitlines(), 1):
            code = line.split("#", 1)[0]
            for pattern, what in FORBIDDEN:
                if pattern.search(code):
                    hits.append(f"{path.relative_to(ROOT)}:{n}: {what}: {line.strip()}")
    assert not hits, "\n".join(hits)
