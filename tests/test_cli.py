"""The ``audioldm`` command line, on the built-in ``tiny`` model (offline, seconds)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import soundfile as sf

from audioldm_core.cli import main

REPO = Path(__file__).resolve().parent.parent


def run(*args, **kw):
    """Run the CLI in a subprocess (as a user would): returns CompletedProcess."""
    return subprocess.run([sys.executable, "-m", "audioldm_core.cli", *args], capture_output=True, text=True,
                          cwd=kw.pop("cwd", REPO), **kw)


def test_help_and_samplers():
    r = run("--help")
    assert r.returncode == 0 and "generate" in r.stdout
    r = run("samplers")
    assert r.returncode == 0
    for name in ("ddim", "pndm", "lms", "euler", "euler_ancestral", "heun", "dpmsolver++", "unipc"):
        assert name in r.stdout


def test_generate_tiny_writes_16k_wav_of_the_right_length(tmp_path):
    out = tmp_path / "dog.wav"
    r = run("generate", "a dog barks", "--model", "tiny", "-o", str(out), "--seconds", "1.5", "--steps", "2",
            "--seed", "7", "--no-progress")
    assert r.returncode == 0, r.stderr
    assert "random weights" in r.stderr and "noise" in r.stderr
    assert f"wrote {out}" in r.stdout and "seed 7" in r.stdout
    data, rate = sf.read(out)
    assert rate == 16000 and data.shape == (24000,)
    assert sf.info(out).format == "WAV"


def test_generate_n_files_flac_and_seed_reproducible(tmp_path):
    out = tmp_path / "x.flac"
    args = ["a cat", "--model", "tiny", "-o", str(out), "--seconds", "1.0", "--steps", "2", "-n", "2",
            "--seed", "3", "--no-progress", "--sampler", "euler"]
    assert main(["generate", *args]) == 0
    files = sorted(tmp_path.glob("x-*.flac"))
    assert [f.name for f in files] == ["x-0.flac", "x-1.flac"]
    first = sf.read(files[0])[0]
    assert main(["generate", *args]) == 0
    assert (sf.read(files[0])[0] == first).all()
    assert sf.info(files[0]).format == "FLAC" and sf.info(files[0]).samplerate == 16000


def test_batch_file_with_manifest_and_resume(tmp_path):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a dog barks\n\n"
                       + json.dumps({"prompt": "rain on a roof", "seed": 11, "seconds": 1.2, "n": 2}) + "\n"
                       + "birds at dawn\n")
    outdir = tmp_path / "out"
    args = ["generate", "--prompts", str(prompts), "-o", str(outdir), "--model", "tiny", "--seconds", "1.0",
            "--steps", "2", "--seed", "100", "--no-progress"]
    r = run(*args)
    assert r.returncode == 0, r.stderr
    manifest = [json.loads(line) for line in (outdir / "manifest.jsonl").read_text().splitlines()]
    assert len(manifest) == 3
    assert manifest[0]["seed"] == 100 and manifest[2]["seed"] == 102 and manifest[1]["seed"] == 11
    assert manifest[1]["outputs"] == ["0001-rain-on-a-roof-0.wav", "0001-rain-on-a-roof-1.wav"]
    assert sf.read(outdir / "0001-rain-on-a-roof-1.wav")[0].shape == (19200,)
    for rec in manifest:
        assert rec["model"] == "tiny" and rec["steps"] == 2 and rec["model_hash"] and rec["generation_seconds"] > 0
    # Resume: delete one output; only it is regenerated, the manifest gains exactly one line.
    victim = outdir / "0002-birds-at-dawn.wav"
    before = victim.read_bytes()
    victim.unlink()
    r = run(*args)
    assert r.returncode == 0, r.stderr
    assert "1 generated, 2 already present" in r.stdout
    assert victim.read_bytes() == before
    lines = (outdir / "manifest.jsonl").read_text().splitlines()
    assert len(lines) == 4


@pytest.mark.parametrize("args,needle", [
    (["--seconds", "-1"], "--seconds"),
    (["--steps", "0"], "--steps"),
    (["--sampler", "nope"], "unknown sampler 'nope'"),
    (["-o", "/nonexistent-dir/x.wav"], "does not exist"),
    (["--format", "mp3"], "--format"),
])
def test_bad_arguments_one_line_nonzero_no_file(tmp_path, args, needle):
    if "-o" not in args:
        args = [*args, "-o", str(tmp_path / "o.wav")]
    r = run("generate", "a dog", "--model", "tiny", "--no-progress", *args)
    assert r.returncode == 2
    assert needle in r.stderr
    assert r.stderr.strip().count("\n") == 0, r.stderr
    assert not list(tmp_path.iterdir())


def test_missing_model_says_how_to_go_offline(tmp_path):
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_HUB_CACHE=str(tmp_path / "cache"), HF_HOME=str(tmp_path))
    r = run("generate", "a dog", "-o", str(tmp_path / "x.wav"), "--steps", "1", "--no-progress", env=env)
    assert r.returncode == 2
    assert "HF_HUB_OFFLINE" in r.stderr and "--model tiny" in r.stderr
    assert r.stderr.strip().count("\n") == 0, r.stderr


def test_full_disk_while_writing_leaves_no_partial_file(tmp_path, monkeypatch, capsys):
    import errno

    import soundfile

    real_write = soundfile.write

    def full_disk(file, *a, **kw):
        with open(file, "wb") as f:  # some bytes reach the temp file, then the disk is full
            f.write(b"RIFF\0\0")
        raise OSError(errno.ENOSPC, "No space left on device", str(file))

    monkeypatch.setattr(soundfile, "write", full_disk)
    out = tmp_path / "x.wav"
    code = main(["generate", "a", "--model", "tiny", "-o", str(out), "--steps", "1", "--seconds", "1",
                 "--no-progress"])
    monkeypatch.setattr(soundfile, "write", real_write)
    assert code == 2
    errors = [ln for ln in capsys.readouterr().err.splitlines() if "error" in ln]
    assert len(errors) == 1 and "No space left on device" in errors[0] and str(out) in errors[0]
    assert list(tmp_path.iterdir()) == []


def test_absurd_length_refused_with_memory_estimate(tmp_path):
    r = run("generate", "a", "--model", "tiny", "-o", str(tmp_path / "x.wav"), "--seconds", "3600",
            "--window", "none", "--no-progress")
    assert r.returncode == 2 and "GB" in r.stderr and "--allow-long" in r.stderr
    assert not list(tmp_path.iterdir())


def test_outputs_get_the_usual_permissions(tmp_path):
    out = tmp_path / "p.wav"
    assert main(["generate", "a", "--model", "tiny", "-o", str(out), "--steps", "1", "--seconds", "1",
                 "--no-progress"]) == 0
    umask = os.umask(0)
    os.umask(umask)
    assert (out.stat().st_mode & 0o777) == (0o666 & ~umask)


@pytest.mark.parametrize("command", ["generate", "batch", "transfer", "inpaint", "superres", "convert"])
@pytest.mark.parametrize("bad", ["folder", "extension", "missing parent"])
def test_bad_output_path_refused_before_any_work(tmp_path, capsys, command, bad):
    """Every command that writes checks its output path first: exit 2, one line worded for the output
    kind, nothing written. The model (or conversion source) does not exist, so reaching the loading
    step would fail with a different message."""
    import numpy as np

    from convert.cli import main as convert_main

    src = tmp_path / "in.wav"
    sf.write(src, np.zeros(16000, dtype=np.float32), 16000)
    out_dir = tmp_path / "outputs"
    out_dir.mkdir()
    kind = "checkpoint" if command == "convert" else "audio"
    ext = ".safetensors" if command == "convert" else ".wav"
    out = {"folder": out_dir, "extension": out_dir / "x.mp4",
           "missing parent": tmp_path / "no-such-dir" / f"x{ext}"}[bad]
    no_model = str(tmp_path / "no-such-model")
    if command == "convert":
        code = convert_main([str(tmp_path / "no-such-source"), str(out), "--quiet"])
    elif command == "batch":
        prompts = tmp_path / "prompts.jsonl"
        target = {"folder": "sub", "extension": "x.mp4", "missing parent": "no-such-dir/x.wav"}[bad]
        if bad == "folder":
            (out_dir / "sub").mkdir()
        prompts.write_text(json.dumps({"prompt": "a dog", "output": target}) + "\n")
        code = main(["generate", "--prompts", str(prompts), "-o", str(out_dir), "--model", no_model])
    else:
        extra = {"generate": [], "transfer": [str(src)], "inpaint": [str(src)], "superres": [str(src)]}[command]
        rest = {"inpaint": ["--start", "0.1", "--end", "0.5"]}.get(command, [])
        prompt = ["--prompt", "a dog"] if command == "superres" else ["a dog"]
        args = [command, *extra, *prompt, *rest] if command != "generate" else [command, "a dog"]
        code = main([*args, "-o", str(out), "--model", no_model, "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.strip().count("\n") == 0, err
    want = {"folder": "is a folder", "extension": "must end in", "missing parent": "does not exist"}[bad]
    assert f"{kind} output" in err and want in err, err
    assert not any(p.is_file() for p in tmp_path.rglob("*") if p != src and p.name != "prompts.jsonl")
