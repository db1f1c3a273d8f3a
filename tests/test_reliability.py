"""Reliability: hostile files, integrity checks, atomic outputs, determinism.

Fuzz budgets are fixed (no time-based stopping) so CI is repeatable; the counts are recorded in
tests/README.md.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from audioldm_core import AudioLDM
from audioldm_core.checkpoint import COMPONENTS, load_component, load_components, read_info, verify
from audioldm_core.errors import AudioLDMError, CheckpointError
from convert.cli import main as convert_main
from convert.cvssp import read_weights, verify_hub_blob

REPO = Path(__file__).resolve().parent.parent
FUZZ_EXAMPLES = int(os.environ.get("AUDIOLDM_FUZZ_EXAMPLES", "150"))
FUZZ = settings(max_examples=FUZZ_EXAMPLES, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


def _header(data: bytes) -> tuple[int, dict]:
    n = struct.unpack("<Q", data[:8])[0]
    return n, json.loads(data[8:8 + n])


def _with_header(data: bytes, header: dict | str) -> bytes:
    n = struct.unpack("<Q", data[:8])[0]
    text = header if isinstance(header, str) else json.dumps(header)
    raw = text.encode()
    raw += b" " * (-len(raw) % 8)
    return struct.pack("<Q", len(raw)) + raw + data[8 + n:]


def _only_our_errors(fn, path: Path) -> str:
    """Run fn(path); return 'ok' or the AudioLDMError class name; anything else fails the test."""
    try:
        fn(path)
        return "ok"
    except AudioLDMError as e:
        assert str(e), "an error must have a message"
        return type(e).__name__


def _load_all(path: Path) -> None:
    """Both readers, each on its own: per component (``load_component``) and the one-open mapped reader
    ``AudioLDM.from_pretrained`` uses (``load_components``). Only our errors may escape either."""
    def one_by_one(p: Path) -> None:
        info = read_info(p)
        for comp in COMPONENTS:
            load_component(p, comp, info=info)

    errors = []
    for reader in (one_by_one, load_components):
        try:
            reader(path)
        except AudioLDMError as e:
            errors.append(e)
    if errors:
        raise errors[0]


@st.composite
def mutations(draw, size: int, header_len: int):
    kind = draw(st.sampled_from(["truncate", "flip_header", "flip_data", "length_lie", "splice_zeros"]))
    if kind == "truncate":
        return kind, draw(st.integers(0, size - 1))
    if kind == "flip_header":
        return kind, (draw(st.integers(8, 8 + header_len - 1)), draw(st.integers(1, 255)))
    if kind == "flip_data":
        return kind, (draw(st.integers(8 + header_len, size - 1)), draw(st.integers(1, 255)))
    if kind == "length_lie":
        return kind, draw(st.one_of(st.integers(0, 2**64 - 1), st.integers(header_len - 64, header_len + 64)))
    return kind, (draw(st.integers(0, size - 1)), draw(st.integers(1, 4096)))


def _mutate(data: bytes, m) -> bytes:
    kind, arg = m
    if kind == "truncate":
        return data[:arg]
    if kind in ("flip_header", "flip_data"):
        pos, x = arg
        return data[:pos] + bytes([data[pos] ^ x]) + data[pos + 1:]
    if kind == "length_lie":
        return struct.pack("<Q", max(0, arg)) + data[8:]
    pos, n = arg
    return data[:pos] + b"\0" * n + data[pos + n:]


COUNTS: dict[str, dict[str, int]] = {}


def _count(family: str, outcome: str) -> None:
    COUNTS.setdefault(family, {}).setdefault(outcome, 0)
    COUNTS[family][outcome] += 1


def _content(data: bytes):
    """What a safetensors file means: (parsed header, tensor bytes); None if the header does not parse.
    Two files with equal content differ only in JSON whitespace."""
    try:
        n, header = _header(data)
    except Exception:
        return None
    return header, data[8 + n:]


def test_fuzz_our_checkpoint_bytes(converted_file, tmp_path):
    """Every byte mutation is caught: loading raises one of our errors or ``verify`` reports a problem,
    unless the file still means the same (JSON whitespace in the header); truncation and flipped tensor
    bytes are always reported by ``verify``, whether or not loading notices."""
    good = converted_file("tiny").read_bytes()
    n, _ = _header(good)
    target = tmp_path / "fuzz.safetensors"

    @FUZZ
    @given(m=mutations(len(good), n))
    def run(m):
        data = _mutate(good, m)
        target.write_bytes(data)
        outcome = _only_our_errors(_load_all, target)
        problems = verify(target)
        assert isinstance(problems, list) and all(isinstance(p, str) and p for p in problems)
        if data == good:  # e.g. a length "lie" equal to the real length
            assert outcome == "ok" and problems == [], (m, outcome, problems)
            _count("our file: byte mutations", "unchanged")
            return
        if m[0] in ("truncate", "flip_data"):
            assert problems, f"{m}: verify() did not report a truncated file or a changed tensor byte"
        if outcome == "ok" and not problems:
            assert _content(data) == _content(good), \
                f"{m}: the file changed, loaded without error and verify() reported nothing"
            outcome = "same content"
        _count("our file: byte mutations", outcome if outcome != "ok" else "verify: " + problems[0][:40])

    run()
    print("\nfuzz (our file, byte mutations):", COUNTS["our file: byte mutations"])


def test_verify_reports_changed_metadata(converted_file, tmp_path):
    """A changed tokenizer, config or source entry loads (it is well-formed) but ``verify`` reports it:
    the metadata has its own checksum."""
    good = converted_file("tiny").read_bytes()
    _, header = _header(good)
    def swap_two_tokens(tok):
        a, b = sorted(tok["vocab"])[:2]
        tok["vocab"][a], tok["vocab"][b] = tok["vocab"][b], tok["vocab"][a]

    edits = {"tokenizer": swap_two_tokens, "source": lambda src: src.update(path="/elsewhere"),
             "config": lambda cfg: cfg["clap"].update(layer_norm_eps=1e-5)}
    for key, edit in edits.items():
        h = json.loads(json.dumps(header))
        value = json.loads(h["__metadata__"][key])
        edit(value)
        assert json.dumps(value) != h["__metadata__"][key]
        h["__metadata__"][key] = json.dumps(value)
        path = tmp_path / f"{key}.safetensors"
        path.write_bytes(_with_header(good, h))
        assert _only_our_errors(_load_all, path) == "ok", key
        problems = verify(path)
        assert any("metadata" in p and "checksum" in p for p in problems), (key, problems)


HEADER_EDITS = ["offsets_out_of_range", "offsets_overlap", "bad_dtype", "huge_shape", "bad_config_json",
                "config_wrong_type", "duplicate_key", "drop_tensor", "negative_offset", "shape_mismatch_bytes"]


@pytest.mark.parametrize("edit", HEADER_EDITS)
def test_structured_header_attacks(converted_file, tmp_path, edit):
    good = converted_file("tiny").read_bytes()
    _, header = _header(good)
    names = sorted(k for k in header if k != "__metadata__")
    first, second = names[0], names[1]
    h = json.loads(json.dumps(header))
    text = None
    if edit == "offsets_out_of_range":
        h[first]["data_offsets"] = [0, len(good) * 4]
    elif edit == "offsets_overlap":
        h[second]["data_offsets"] = h[first]["data_offsets"]
    elif edit == "bad_dtype":
        h[first]["dtype"] = "Q17"
    elif edit == "huge_shape":
        h[first]["shape"] = [2**40, 2**40]
    elif edit == "bad_config_json":
        h["__metadata__"]["config"] = "{not json"
    elif edit == "config_wrong_type":
        cfg = json.loads(h["__metadata__"]["config"])
        cfg["unet"]["block_channels"] = "wide"
        h["__metadata__"]["config"] = json.dumps(cfg)
    elif edit == "duplicate_key":
        body = json.dumps(h)
        entry = json.dumps({first: h[first]})[1:-1]
        text = body[:-1] + ", " + entry + "}"
    elif edit == "drop_tensor":
        del h[first]
    elif edit == "negative_offset":
        h[first]["data_offsets"] = [-8, 8]
    elif edit == "shape_mismatch_bytes":
        h[first]["shape"] = [1]
    path = tmp_path / "x.safetensors"
    path.write_bytes(_with_header(good, text if text is not None else h))
    outcome = _only_our_errors(_load_all, path)
    assert outcome != "ok", f"{edit}: a damaged file loaded without error"
    assert verify(path), f"{edit}: verify found nothing wrong"


def test_fuzz_cvssp_source_files(cvssp_folder, tmp_path):
    """Every byte mutation of a source weight file is caught where it can be: reading raises one of our
    errors, or, for a file from the Hugging Face cache, the check against the Hub's SHA-256 (done before
    reading) refuses it. A mutated file that still reads must give different tensors unless it means the
    same (JSON whitespace)."""
    st_file = cvssp_folder("tiny") / "vocoder" / "model.safetensors"
    bin_file = cvssp_folder("tiny", weights="bin") / "vocoder" / "pytorch_model.bin"
    sources = {"safetensors": st_file.read_bytes(), "bin": bin_file.read_bytes()}
    originals = {"safetensors": read_weights(st_file), "bin": read_weights(bin_file)}
    digests = {k: hashlib.sha256(v).hexdigest() for k, v in sources.items()}

    @FUZZ
    @given(which=st.sampled_from(sorted(sources)), data=st.data())
    def run(which, data):
        raw = sources[which]
        n = struct.unpack("<Q", raw[:8])[0] if which == "safetensors" else min(len(raw) - 9, 512)
        m = data.draw(mutations(len(raw), max(n, 1)))
        mutated = _mutate(raw, m)
        # laid out as the Hub cache does: the blob's name is the SHA-256 the Hub recorded
        blob = tmp_path / "blobs" / digests[which]
        blob.parent.mkdir(exist_ok=True)
        blob.write_bytes(mutated)
        target = tmp_path / f"f.{which}"
        target.unlink(missing_ok=True)
        target.symlink_to(blob)
        outcome = _only_our_errors(read_weights, target)
        family = f"cvssp {which}: byte mutations"
        if mutated == raw:
            assert outcome == "ok", (m, outcome)
            _count(family, "unchanged")
            return
        with pytest.raises(CheckpointError, match="does not match the hash the Hub recorded"):
            verify_hub_blob(target, hashlib.sha256(mutated).hexdigest())
        if outcome == "ok":
            got, want = read_weights(target), originals[which]
            same = got.keys() == want.keys() and all(
                got[k].dtype == want[k].dtype and got[k].shape == want[k].shape and torch.equal(got[k], want[k])
                for k in want)
            if same:  # only bytes the reader ignores changed (source metadata, zip fields, whitespace)
                assert not (which == "safetensors" and m[0] == "flip_data"), \
                    f"{which} {m}: a changed tensor byte read back as the original tensors"
                outcome = "same tensors"
            else:
                outcome = "read, tensors differ (Hub hash refuses)"
        _count(family, outcome)

    run()
    print("\nfuzz (cvssp sources):", {k: v for k, v in COUNTS.items() if k.startswith("cvssp")})


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned > /tmp/audioldm-pwned",))


def test_pickle_that_runs_code_is_refused(tmp_path):
    path = tmp_path / "pytorch_model.bin"
    torch.save({"weight": torch.zeros(2), "evil": _Evil()}, path)
    marker = Path("/tmp/audioldm-pwned")
    marker.unlink(missing_ok=True)
    with pytest.raises(CheckpointError, match="weights_only"):
        read_weights(path)
    assert not marker.exists()
    raw = tmp_path / "raw.bin"
    raw.write_bytes(pickle.dumps(_Evil()))
    with pytest.raises(CheckpointError):
        read_weights(raw)
    assert not marker.exists()


def test_verify_ok_and_detects_changed_data(converted_file, tmp_path, capsys):
    good = converted_file("tiny")
    assert verify(good) == []
    assert convert_main(["--verify", str(good)]) == 0
    assert capsys.readouterr().out.strip().endswith("OK")
    data = bytearray(good.read_bytes())
    data[-3] ^= 0x55  # a tensor byte in the last stored tensor
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(bytes(data))
    problems = verify(bad)
    assert any("checksum mismatch" in p for p in problems), problems
    assert convert_main(["--verify", str(bad)]) == 1


def test_two_converters_writing_the_same_out_leave_one_valid_file(cvssp_folder, tmp_path):
    out = tmp_path / "same.safetensors"
    cmd = [sys.executable, "-m", "convert", str(cvssp_folder("tiny")), str(out), "--quiet"]
    procs = [subprocess.Popen(cmd, cwd=REPO) for _ in range(2)]
    assert [p.wait(timeout=300) for p in procs] == [0, 0]
    assert verify(out) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["same.safetensors"]


def test_resumed_batch_removes_the_temp_files_a_killed_run_left(tmp_path):
    """SIGKILL during a write leaves ``.<name>.<random>.tmp`` beside the output (tests/test_batch_kill.py
    kills there); the resumed batch deletes the ones of its outputs and nothing else."""
    prompts = tmp_path / "p.txt"
    prompts.write_text("prompt number 0\nprompt number 1\n")
    outdir = tmp_path / "out"
    outdir.mkdir()
    stale = outdir / ".0001-prompt-number-1.wav.k3y9x_2a.tmp"
    stale.write_bytes(b"RIFF half a file")
    foreign = outdir / ".notes.txt.abc.tmp"
    foreign.write_text("not the batch's")
    cmd = [sys.executable, "-m", "audioldm_core.cli", "generate", "--prompts", str(prompts), "-o", str(outdir),
           "--model", "tiny", "--steps", "2", "--seconds", "1.0", "--seed", "5", "--no-progress"]
    r = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert not stale.exists() and foreign.exists()
    assert sorted(p.name for p in outdir.glob("*.wav")) == ["0000-prompt-number-0.wav", "0001-prompt-number-1.wav"]


def test_determinism_same_seed_bit_identical_and_batch_order():
    pipe = AudioLDM.from_pretrained("tiny")
    kw = dict(num_inference_steps=3, audio_length_in_s=1.0, progress=False)
    a = pipe(["rain", "dog"], generator=[torch.Generator().manual_seed(s) for s in (1, 2)], **kw).audios
    b = pipe(["rain", "dog"], generator=[torch.Generator().manual_seed(s) for s in (1, 2)], **kw).audios
    assert np.array_equal(a, b), "same inputs and seeds must give bit-identical audio"
    c = pipe(["dog", "rain"], generator=[torch.Generator().manual_seed(s) for s in (2, 1)], **kw).audios
    err = float(np.abs(c[::-1] - a).max())
    assert err <= 1e-5, f"prompt order changed an item's audio by {err:.2e}"


def test_non_finite_latents_and_audio_raise_naming_step_and_component(monkeypatch):
    from audioldm_core.errors import NumericalError

    pipe = AudioLDM.from_pretrained("tiny")
    real = pipe.unet.forward
    calls = {"n": 0}

    def nan_on_second_call(x, t, emb):
        calls["n"] += 1
        out = real(x, t, emb)
        return out * float("nan") if calls["n"] == 2 else out

    monkeypatch.setattr(pipe.unet, "forward", nan_on_second_call)
    with pytest.raises(NumericalError, match=r"step 2/4 .*ddim"):
        pipe("x", num_inference_steps=4, audio_length_in_s=1.0, progress=False)
    monkeypatch.setattr(pipe.unet, "forward", real)
    monkeypatch.setattr(pipe.vocoder, "forward", lambda mel: torch.full((mel.shape[0], 100), float("inf")))
    with pytest.raises(NumericalError, match="vocoder"):
        pipe("x", num_inference_steps=1, audio_length_in_s=1.0, progress=False)
