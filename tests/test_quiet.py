"""Loading a model keeps packages it does not need (scipy, torchao) out of the process's memory,
and leaves them importable afterwards."""

import subprocess
import sys

from tests.conftest import save_tiny_model_dir


def test_model_load_leaves_optional_packages_unimported_but_importable(tmp_path):
    model_dir = save_tiny_model_dir(tmp_path / "m")
    code = ("import sys;"
            "from rgft_edge.quiet import OPTIONAL_FOR_LOADING;"
            "from rgft_edge.export.prepare import load_hf;"
            f"m = load_hf({str(model_dir)!r}, 'sequence-classification', ['a', 'b']);"
            "print(sorted(n for n in OPTIONAL_FOR_LOADING if n in sys.modules));"
            "import importlib; [importlib.import_module(n) for n in OPTIONAL_FOR_LOADING];"
            "from transformers.utils import import_utils as iu;"
            "print(iu.is_scipy_available(), iu.is_torchao_available())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["[]", "True", "True"], out.stdout + out.stderr
