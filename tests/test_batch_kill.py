"""A batch run (``audioldm generate --prompts``) killed with SIGKILL at chosen points, then resumed, ends
with exactly the files of an uninterrupted run, bit for bit, each recorded once in the manifest, and
no temporary files.

Black box: the CLI runs in a subprocess; a small launcher (:data:`LAUNCHER`) makes the process kill
itself at a chosen event by wrapping what any batch implementation must call: ``soundfile.write`` (an
output being written), ``os.replace``/``os.rename`` (an output being put in place), ``os.write`` on
``manifest.jsonl`` (a manifest line being appended) and the UNet's forward (mid-generation).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

# argv: event, n, then the CLI's arguments. Dies with SIGKILL at the n-th occurrence of the event.
LAUNCHER = r'''
import os, signal, sys
event, nth = sys.argv[1], int(sys.argv[2])
sys.argv = ["audioldm", *sys.argv[3:]]
count = 0

def hit():
    global count
    count += 1
    return count == nth

def die():
    sys.stdout.flush()
    os.kill(os.getpid(), signal.SIGKILL)

def fd_path(fd):
    try:
        return os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return ""

AUDIO = (".wav", ".flac")
if event == "manifest-append":  # half of a manifest line reaches the disk, then the process dies
    real_write = os.write
    def write(fd, data):
        if fd_path(fd).endswith("manifest.jsonl") and hit():
            real_write(fd, bytes(data)[: len(data) // 2])
            os.fsync(fd)
            die()
        return real_write(fd, data)
    os.write = write
elif event == "after-manifest-append":  # a whole line is on disk, the next item has not started
    real_write = os.write
    def write(fd, data):
        n = real_write(fd, data)
        if fd_path(fd).endswith("manifest.jsonl") and hit():
            os.fsync(fd)
            die()
        return n
    os.write = write
elif event == "output-write":  # an output's (temporary) file is half written when the process dies
    import soundfile
    real_sf_write = soundfile.write
    def sf_write(file, *args, **kwargs):
        real_sf_write(file, *args, **kwargs)
        if hit():
            os.truncate(file, os.path.getsize(file) // 2)
            die()
    soundfile.write = sf_write
elif event == "output-rename":  # an output is completely written but not yet in place
    for name in ("replace", "rename"):
        real = getattr(os, name)
        def put(src, dst, *args, _real=real, **kwargs):
            if str(dst).endswith(AUDIO) and hit():
                die()
            return _real(src, dst, *args, **kwargs)
        setattr(os, name, put)
elif event == "unet-call":  # in the middle of an item's denoising loop
    from audioldm_core.unet import UNet
    real_forward = UNet.forward
    def forward(self, *args, **kwargs):
        if hit():
            die()
        return real_forward(self, *args, **kwargs)
    UNet.forward = forward
else:
    raise SystemExit(f"unknown event {event}")

import runpy
runpy.run_module("audioldm_core.cli", run_name="__main__")
'''

# Four items, one with two waveforms, one with its own output name: 5 output files.
ITEMS = ["a dog barks",
         json.dumps({"prompt": "rain on a tin roof", "n": 2, "seed": 11}),
         json.dumps({"prompt": "birds at dawn", "output": "birds.wav", "steps": 3}),
         "a car passes by"]
N_OUTPUTS = 5


def _cli(outdir: Path, prompts: Path) -> list[str]:
    return ["generate", "--prompts", str(prompts), "-o", str(outdir), "--model", "tiny", "--steps", "2",
            "--seconds", "1.0", "--seed", "5", "--threads", "1", "--no-progress"]


def _run(args: list[str], kill: tuple[str, int] | None = None) -> subprocess.CompletedProcess:
    cmd = ([sys.executable, "-c", LAUNCHER, kill[0], str(kill[1]), *args] if kill
           else [sys.executable, "-m", "audioldm_core.cli", *args])
    return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)


def _records(outdir: Path) -> tuple[list[dict], list[str]]:
    """(the manifest's records, its lines that do not parse)."""
    records, torn = [], []
    for line in (outdir / "manifest.jsonl").read_text().splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            torn.append(line)
    return records, torn


_SETTINGS = ("prompt", "seed", "seconds", "steps", "guidance", "negative", "sampler", "n", "outputs")


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    root = tmp_path_factory.mktemp("batch-ref")
    prompts = root / "prompts.txt"
    prompts.write_text("\n".join(ITEMS) + "\n")
    r = _run(_cli(root / "out", prompts))
    assert r.returncode == 0, r.stderr
    files = {p.name: p.read_bytes() for p in (root / "out").iterdir() if p.name != "manifest.jsonl"}
    assert len(files) == N_OUTPUTS, sorted(files)
    records, torn = _records(root / "out")
    assert not torn
    return prompts, files, records


@pytest.mark.parametrize("event,nth", [
    ("unet-call", 5),                # during the second item's generation
    ("output-write", 2),             # while the second item's first waveform is being written
    ("output-rename", 3),            # the second item's second waveform written, not in place
    ("manifest-append", 2),          # half of the second item's manifest line written
    ("after-manifest-append", 3),    # between the third and the fourth item
])
def test_killed_batch_resumes_to_the_uninterrupted_result(uninterrupted, tmp_path, event, nth):
    prompts, want, want_records = uninterrupted
    outdir = tmp_path / "out"
    killed = _run(_cli(outdir, prompts), kill=(event, nth))
    assert killed.returncode == -signal.SIGKILL, (event, killed.returncode, killed.stderr[-2000:])
    before = sorted(p.name for p in outdir.iterdir()) if outdir.exists() else []
    assert len([n for n in before if n.endswith(".wav")]) < N_OUTPUTS, f"{event}:{nth} killed too late: {before}"
    r = _run(_cli(outdir, prompts))
    assert r.returncode == 0, r.stderr
    got = {p.name: p.read_bytes() for p in outdir.iterdir() if p.name != "manifest.jsonl"}
    assert sorted(got) == sorted(want), f"after {event}:{nth} and a resume: {sorted(got)} (killed run left {before})"
    changed = [n for n in want if got[n] != want[n]]
    assert not changed, f"after {event}:{nth} and a resume these differ from the uninterrupted run: {changed}"
    records, torn = _records(outdir)
    # a line cut by the kill may stay (readers skip it), but it must not swallow the next record
    assert len(torn) <= (event == "manifest-append"), f"unparseable manifest lines after {event}:{nth}: {torn}"
    outputs = sorted(o for rec in records for o in rec["outputs"])
    assert outputs == sorted(want), f"each output recorded exactly once; manifest: {outputs}"
    by_output = {tuple(rec["outputs"]): {k: rec[k] for k in _SETTINGS} for rec in records}
    assert by_output == {tuple(rec["outputs"]): {k: rec[k] for k in _SETTINGS} for rec in want_records}
