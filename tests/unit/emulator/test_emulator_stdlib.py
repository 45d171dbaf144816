"""The emulator runs inside lab containers on Debian's bare python3: stdlib only."""

import ast
import subprocess
import sys
from pathlib import Path

import ecoscale.emulator

PACKAGE = Path(ecoscale.emulator.__file__).parent


def test_emulator_imports_only_the_standard_library_and_itself():
    for path in sorted(PACKAGE.glob("*.py")):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module]
            for name in names:
                top = name.split(".")[0]
                assert top in sys.stdlib_module_names or name.startswith("ecoscale.emulator"), (
                    f"{path.name} imports {name}: the emulator must stay stdlib-only"
                )


def test_emulator_starts_with_an_isolated_interpreter(tmp_path):
    # -I ignores site-packages and the environment: only the stdlib and the code itself.
    (tmp_path / "ecoscale").mkdir()
    (tmp_path / "ecoscale" / "__init__.py").write_text("")
    (tmp_path / "ecoscale" / "emulator").symlink_to(PACKAGE)
    done = subprocess.run([sys.executable, "-I", "-c",
                           f"import sys; sys.path.insert(0, {str(tmp_path)!r}); "
                           "import ecoscale.emulator.__main__ as m; print(m.build_parser().prog)"],
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert "ecoscale.emulator" in done.stdout
