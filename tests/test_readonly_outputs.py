"""Outputs into a folder that really refuses writes: every command fails with one line and exit status 2,
before loading a model, and leaves nothing behind.

The folder is made read-only with chmod. Root ignores permission bits (CAP_DAC_OVERRIDE), and CI runs
the tests as root, so there the command runs in a child process that has dropped the two capabilities
that bypass them (CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH: ``prctl(PR_CAPBSET_DROP)`` before exec); it
is still uid 0 and owns the folder, and the owner's bits (r-x) refuse the write, as for any user. A path
under a regular file, which nobody can write, is checked too.
"""

from __future__ import annotations

import ctypes
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

REPO = Path(__file__).resolve().parent.parent
_PR_CAPBSET_DROP = 24
_CAP_DAC_OVERRIDE, _CAP_DAC_READ_SEARCH = 1, 2


def _drop_root_override() -> None:
    """preexec_fn: drop the capabilities that let root write where the permission bits say no."""
    libc = ctypes.CDLL(None, use_errno=True)
    for cap in (_CAP_DAC_OVERRIDE, _CAP_DAC_READ_SEARCH):
        if libc.prctl(_PR_CAPBSET_DROP, cap, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), f"prctl(PR_CAPBSET_DROP, {cap})")


def _run(*args: str) -> subprocess.CompletedProcess:
    """Run a command of ours (``audioldm`` or ``audioldm-convert``) as a process that permission bits bind."""
    module = "convert" if args[0] == "convert" else "audioldm_core.cli"
    args = args[1:] if args[0] == "convert" else args
    return subprocess.run([sys.executable, "-m", module, *args], cwd=REPO, capture_output=True, text=True,
                          timeout=600, preexec_fn=_drop_root_override if os.geteuid() == 0 else None)


@pytest.fixture
def readonly(tmp_path):
    folder = tmp_path / "ro"
    folder.mkdir()
    (folder / "keep.txt").write_text("already here")
    folder.chmod(0o555)
    probe = _run_probe(folder)
    if probe != "refused":
        pytest.fail(f"could not make {folder} refuse writes for the command's process ({probe}); as root the "
                    f"test needs CAP_SETPCAP to drop CAP_DAC_OVERRIDE", pytrace=False)
    yield folder
    folder.chmod(0o755)


def _run_probe(folder: Path) -> str:
    code = f"import os\ntry:\n    open({str(folder / 'probe')!r}, 'w')\nexcept PermissionError:\n    print('refused')\n" \
           f"else:\n    os.unlink({str(folder / 'probe')!r})\n    print('written')"
    try:
        r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                           preexec_fn=_drop_root_override if os.geteuid() == 0 else None)
    except subprocess.SubprocessError as e:  # the capability drop itself failed
        return f"{type(e).__name__}: {e}"
    return r.stdout.strip() or r.stderr.strip()[-300:]


@pytest.fixture
def input_wav(tmp_path):
    path = tmp_path / "in.wav"
    sf.write(path, (0.1 * np.sin(np.arange(16000) / 7.0)).astype(np.float32), 16000)
    return path


def _one_line_error(r: subprocess.CompletedProcess, needle: str) -> None:
    """Exit 2 and one line on stderr (nothing else: no model was loaded, which would print a note)."""
    assert r.returncode == 2, (r.returncode, r.stderr[-2000:])
    assert r.stderr.strip().count("\n") == 0 and needle in r.stderr, r.stderr


def test_generate_into_a_readonly_folder(readonly):
    base = ["generate", "a dog", "--model", "tiny", "--steps", "1", "--seconds", "1", "--no-progress"]
    _one_line_error(_run(*base, "-o", str(readonly / "x.wav")), "writable")
    prompts = readonly.parent / "p.txt"
    prompts.write_text("a dog\na cat\n")
    _one_line_error(_run("generate", "--prompts", str(prompts), "-o", str(readonly), "--model", "tiny", "--steps",
                         "1", "--seconds", "1", "--no-progress"), "writable")
    assert sorted(p.name for p in readonly.iterdir()) == ["keep.txt"]


@pytest.mark.parametrize("command", [["transfer", "IN", "jazz"], ["inpaint", "IN", "a dog", "--start", "0.2",
                                                                   "--end", "0.5"], ["superres", "IN"]])
def test_edits_into_a_readonly_folder(readonly, input_wav, command):
    args = [str(input_wav) if a == "IN" else a for a in command]
    _one_line_error(_run(*args, "--model", "tiny", "--steps", "1", "--no-progress", "-o", str(readonly / "x.wav")),
                    "writable")
    assert sorted(p.name for p in readonly.iterdir()) == ["keep.txt"]


def test_convert_into_a_readonly_folder(readonly, cvssp_folder):
    r = _run("convert", str(cvssp_folder("tiny")), str(readonly / "x.safetensors"), "--quiet")
    _one_line_error(r, "writable")
    assert sorted(p.name for p in readonly.iterdir()) == ["keep.txt"]


def test_output_under_a_regular_file(tmp_path):
    """A path whose folder is a file: nobody, root included, can create it."""
    blocker = tmp_path / "notes.txt"
    blocker.write_text("a file, not a folder")
    r = subprocess.run([sys.executable, "-m", "audioldm_core.cli", "generate", "a dog", "--model", "tiny", "--steps",
                        "1", "--seconds", "1", "--no-progress", "-o", str(blocker / "x.wav")], cwd=REPO,
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 2 and r.stderr.strip().count("\n") == 0, r.stderr
    assert blocker.read_text() == "a file, not a folder" and sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]
