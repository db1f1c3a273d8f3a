"""The benchmark harness's --quick mode runs (so it never rots); it asserts nothing about speed."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def test_benchmark_quick_mode(tmp_path):
    out = tmp_path / "quick.json"
    r = subprocess.run([sys.executable, "benchmarks/run.py", "--quick", "--work", str(tmp_path / "work"),
                        "--out", str(out)], capture_output=True, text=True, cwd=REPO, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    res = json.loads(out.read_text())
    assert res["model"] == "tiny"
    for row in ("model load", "end-to-end 1 s", "UNet step (batch 2)", "VAE decode", "vocoder",
                "text encoding (prompt + negative)"):
        assert row in res["rows"] and res["rows"][row]["ratio"] > 0
    assert max(res["max_abs_diff"].values()) < 1e-4
    assert res["peak_rss_mib"]["ours"] > 0 and res["peak_rss_mib"]["diffusers"] > 0
    assert "diffusers/ours" in r.stdout
