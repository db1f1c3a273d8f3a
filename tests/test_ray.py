"""The resumable batch on Ray (``audioldm_core.batch.run(engine="ray")``, ``generate --ray``) against the
local batch, on a real local Ray runtime (2 CPUs, loopback only) started once for this module.

One prompts file serves every test: 12 good items with their own seeds, lengths, samplers (one with
two waveforms) and two bad lines (one refused when the file is read, one refused by the model).
The local batch's outputs are the reference; every Ray run must reproduce them byte for byte, with
each output recorded once in the manifest, whatever was killed on the way.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from audioldm_core import batch
from audioldm_core.cli import main
from audioldm_core.errors import MissingExtraError, SourceNotFoundError
from audioldm_core.samplers import SAMPLERS
from conftest import require

REPO = Path(__file__).resolve().parents[1]
GOOD = 12
COMMON = dict(model="tiny", seed=40, steps=2, seconds=1.0)


def _prompts_file(path: Path) -> Path:
    lines = []
    for i in range(GOOD):
        item = {"prompt": f"sound number {i}", "seed": 1000 + 7 * i, "seconds": 0.6 + 0.1 * (i % 5),
                "sampler": list(SAMPLERS)[i % len(SAMPLERS)], "steps": 2 + i % 2}
        if i == 5:
            item["n"] = 2
        lines.append(json.dumps(item))
        if i == 3:
            lines.append('{"prompt": 5}')  # refused when the file is read
        if i == 8:
            lines.append(json.dumps({"prompt": "too short", "seconds": 0.01}))  # refused by the model
    path.write_text("\n".join(lines) + "\n")
    return path


def _records(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (folder / "manifest.jsonl").read_text().splitlines()]


def _check_against(reference: dict[str, bytes], folder: Path) -> None:
    """Every reference output present and byte-identical, nothing else (no temp files), each output
    recorded exactly once, and the two bad lines recorded as failed."""
    names = sorted(p.name for p in folder.iterdir() if p.name != "manifest.jsonl")
    assert names == sorted(reference), f"files differ from the local batch: {names}"
    differ = [n for n in reference if (folder / n).read_bytes() != reference[n]]
    assert not differ, f"outputs not bit-identical to the local batch: {differ}"
    recs = _records(folder)
    outputs = [o for r in recs if not r.get("failed") for o in r["outputs"]]
    assert sorted(outputs) == sorted(reference), "each output recorded exactly once"
    failed = {r["line"] for r in recs if r.get("failed")}
    assert failed == {5, 11}, failed


@pytest.fixture(scope="module")
def ray_runtime():
    try:
        import ray
    except ImportError:
        require("ray", "ray (the [ray] extra) is missing")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, _node_ip_address="127.0.0.1")
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def local_reference(tmp_path_factory):
    """The prompts file and the local batch's outputs (1 torch thread, as each Ray worker uses)."""
    root = tmp_path_factory.mktemp("ray-local")
    prompts = _prompts_file(root / "prompts.jsonl")
    threads = torch.get_num_threads()
    try:
        res = batch.run(prompts, root / "out", threads=1, log=None, **COMMON)
    finally:
        torch.set_num_threads(threads)
    assert (res.generated, res.failed) == (GOOD, 2)
    errors = {r["line"]: r["error"] for r in res.records if r.get("failed")}
    assert '"prompt" must be a string' in errors[5] and "at least" in errors[11], errors
    reference = {p.name: p.read_bytes() for p in (root / "out").iterdir() if p.name != "manifest.jsonl"}
    assert len(reference) == GOOD + 1  # item 5 has two waveforms
    return prompts, reference


def _ray_run(prompts, out, log=None, **kw):
    return batch.run(prompts, out, engine="ray", workers=2, threads_per_worker=1, log=log, **COMMON, **kw)


def test_ray_batch_is_bit_identical_to_local_and_resumes(ray_runtime, local_reference, tmp_path):
    prompts, reference = local_reference
    t0 = time.perf_counter()
    res = _ray_run(prompts, tmp_path / "out")
    print(f"ray batch of {GOOD} tiny items on 2 workers: {time.perf_counter() - t0:.1f} s")
    assert (res.generated, res.skipped, res.failed) == (GOOD, 0, 2)
    _check_against(reference, tmp_path / "out")
    recs = _records(tmp_path / "out")
    assert len({r["worker"] for r in recs if not r.get("failed") and "worker" in r}) == 2, "both workers used"
    # the same records as the local batch's manifest, line by line, but for timing and worker
    local = {r["line"]: r for r in _records(prompts.parent / "out")}
    for r in recs:
        extra = {"generation_seconds", "worker", "model_hash"}
        assert {k: v for k, v in r.items() if k not in extra} == {k: v for k, v in local[r["line"]].items()
                                                                  if k not in extra}, r["line"]
    # a re-run generates nothing and records only the bad lines again
    before = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "out").iterdir()}
    res = _ray_run(prompts, tmp_path / "out")
    assert (res.generated, res.skipped, res.failed) == (0, GOOD, 2)
    after = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "out").iterdir() if p.name != "manifest.jsonl"}
    assert all(before[n] == t for n, t in after.items()), "a finished output was rewritten"


def _kill_mid_run(ray, tmp_path, how: str):
    """Run the batch on Ray; when the first item comes back, kill the other (still busy) worker."""
    pids: dict[str, str] = {}  # pid -> actor name
    killed, lines = [], []

    def log(line: str) -> None:
        lines.append(line)
        m = re.match(r"ray: worker (\S+) \(\S+:(\d+)\) loaded", line)
        if m:
            pids[m.group(2)] = m.group(1)
        m = re.match(r"\[\d+/\d+\] wrote .* on \S+:(\d+)$", line)
        if m and not killed:
            victim_pid = next(p for p in pids if p != m.group(1))
            if how == "ray.kill":
                ray.kill(ray.get_actor(pids[victim_pid]), no_restart=False)
            else:
                os.kill(int(victim_pid), signal.SIGKILL)
            killed.append(victim_pid)

    res = _ray_run(tmp_path / "prompts.jsonl", tmp_path / "out", log=log)
    assert killed, "no worker was killed"
    assert not [line for line in lines if "died" in line], "Ray's restart and retry should have covered the kill"
    return res, int(killed[0])


@pytest.mark.parametrize("how", ["ray.kill", "SIGKILL"])
def test_killed_worker_is_retried_without_partial_or_duplicate_outputs(ray_runtime, local_reference, tmp_path, how):
    prompts, reference = local_reference
    (tmp_path / "prompts.jsonl").write_bytes(prompts.read_bytes())
    res, victim = _kill_mid_run(ray_runtime, tmp_path, how)
    assert (res.generated, res.failed) == (GOOD, 2)
    _check_against(reference, tmp_path / "out")
    assert _gone([victim]), "the killed worker process is still running"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _gone(pids: list[int], timeout: float = 60) -> bool:
    """Whether every process in ``pids`` has exited (and been reaped) within ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while any(_alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.2)
    return not any(_alive(p) for p in pids)


def test_killed_driver_loses_nothing_and_the_rerun_finishes_the_rest(ray_runtime, local_reference, tmp_path):
    """The driver is a CLI process joining this module's Ray runtime; SIGKILL it after its third item,
    wait until its workers are gone, then re-run: only the missing items are generated."""
    prompts, reference = local_reference
    out = tmp_path / "out"
    address = ray_runtime.get_runtime_context().gcs_address
    cmd = [sys.executable, "-m", "audioldm_core.cli", "generate", "--prompts", str(prompts), "-o", str(out),
           "--model", "tiny", "--seed", "40", "--steps", "2", "--seconds", "1.0", "--no-progress",
           "--ray", address, "--workers", "2", "--threads-per-worker", "1"]
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                            env=dict(os.environ, PYTHONUNBUFFERED="1"), start_new_session=True)
    worker_pids, written = [], 0
    try:
        for line in proc.stdout:
            m = re.match(r"ray: worker \S+ \(\S+:(\d+)\) loaded", line)
            if m:
                worker_pids.append(int(m.group(1)))
            written += line.startswith("[") and " wrote " in line
            if written >= 3:
                proc.send_signal(signal.SIGKILL)
                break
    finally:
        proc.kill()
        proc.wait()
    assert written >= 3 and len(worker_pids) == 2, (written, worker_pids)
    assert _gone(worker_pids), "the killed driver's workers outlived it by 60 s"
    present = {p.name: p.stat().st_mtime_ns for p in out.glob("*.wav")}
    assert 0 < len(present) < len(reference), present
    res = _ray_run(prompts, out)
    done_items = {r["line"] for r in _records(out) if not r.get("failed")}
    assert res.generated + res.skipped == GOOD and res.failed == 2
    assert all(out.joinpath(n).stat().st_mtime_ns == t for n, t in present.items()), "a finished output was redone"
    assert res.generated == GOOD - res.skipped and len(done_items) == GOOD
    _check_against(reference, out)


def test_worker_that_cannot_read_the_model_fails_clearly(ray_runtime, tmp_path):
    prompts = tmp_path / "p.txt"
    prompts.write_text("a dog barks\n")
    with pytest.raises(SourceNotFoundError, match="readable by every node"):
        batch.run(prompts, tmp_path / "out", engine="ray", model="/nonexistent/model.safetensors", log=None)
    assert not list((tmp_path / "out").iterdir()), "nothing written"


def test_missing_ray_is_one_error_naming_the_extra(monkeypatch, tmp_path):
    prompts = tmp_path / "p.txt"
    prompts.write_text("a dog barks\n")
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError
    with pytest.raises(MissingExtraError, match=r"\[ray\]"):
        batch.run(prompts, tmp_path / "out", engine="ray", model="tiny", log=None)


@pytest.mark.parametrize("args,needle", [
    (["generate", "a dog", "--ray"], "--ray runs a batch"),
    (["generate", "--prompts", "P", "--workers", "2"], "need --ray"),
    (["generate", "--prompts", "P", "--ray", "--threads", "2"], "--threads-per-worker"),
    (["generate", "--prompts", "P", "--ray", "--workers", "999"], "999 workers x 1 threads"),
])
def test_cli_ray_argument_errors_exit_2(tmp_path, capsys, args, needle):
    prompts = tmp_path / "p.txt"
    prompts.write_text("a dog barks\n")
    args = [str(prompts) if a == "P" else a for a in args]
    assert main([*args, "--model", "tiny", "-o", str(tmp_path / "out"), "--no-progress"]) == 2
    assert needle in capsys.readouterr().err
