"""The benchmark script on tiny sizes, so it cannot rot (figures are not asserted)."""

import subprocess
import sys

from helpers import ROOT, python_env


def test_bench_smoke(tmp_path):
    output = tmp_path / "performance.md"
    result = subprocess.run([sys.executable, "-m", "bench", "--quick", "--no-peers", "--no-gui",
                             "--output", str(output)], capture_output=True, text=True,
                            cwd=str(ROOT), env=python_env(), timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    text = output.read_text()
    assert "| limit |" in text and "| Shelf |" in text and "| Shelf, no fsync |" in text
    row = next(line for line in text.splitlines() if line.startswith("| Shelf |"))
    assert "—" not in row.split("|")[2]  # a download figure was measured
    assert (tmp_path / "performance.json").exists()
    listing = next(line for line in text.splitlines() if line.startswith("| Shelf | ")
                   and line.count("|") == 5)  # the LIST table: seconds, entries, ratio
    assert listing.split("|")[3].strip() == "10,000"
