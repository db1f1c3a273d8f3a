"""README claims that no parity test covers on its own, each checked where it can fail: parameter
counts of the four configs against the published sizes, the float16 dtype policy, a string negative
prompt on a list of prompts, and the CLI flags and JSONL keys taking effect (tiny model, seconds)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from audioldm_core import AudioLDM
from audioldm_core.audio import write_audio
from audioldm_core.checkpoint import COMPONENTS, empty_component
from audioldm_core.cli import main
from audioldm_core.config import builtin_config
from reference import FULL_SIZE, diffusers_scheduler, reference_pipeline

# The published sizes (the reference facts' table, e.g. "| cvssp/audioldm (s-full) | 128, 256, 384, 640 |
# 185.0 M | 421 M |"): UNet and total parameters per repo, the shared components' parameters (M), and
# the fp32 weight-file sizes of cvssp/audioldm (MiB).
PUBLISHED_UNET_M = {"s-full": 185.0, "s-full-v2": 185.0, "m-full": 416.0, "l-full": 739.1}
PUBLISHED_TOTAL_M = {"s-full": 421, "s-full-v2": 421, "m-full": 652, "l-full": 975}
PUBLISHED_SHARED_M = {"clap": 125.3, "vae": 55.4, "vocoder": 55.3}
PUBLISHED_FP32_MIB = {"clap": 478.0, "unet": 705.9, "vae": 211.3, "vocoder": 210.8}  # cvssp/audioldm


@pytest.mark.parametrize("name", FULL_SIZE)
def test_parameter_counts_match_published_sizes(name):
    """Our modules built from each built-in config (meta device: no memory) have the published
    parameter counts, to the published precision (0.1 M per component, 1 M in total)."""
    cfg = builtin_config(name)
    params = {c: sum(p.numel() for p in empty_component(c, cfg).parameters()) for c in COMPONENTS}
    got = {c: n / 1e6 for c, n in params.items()}
    want = dict(PUBLISHED_SHARED_M, unet=PUBLISHED_UNET_M[name])
    msg = f"{name}: ours {', '.join(f'{c} {v:.2f} M' for c, v in got.items())}; published {want}"
    assert all(abs(got[c] - want[c]) <= 0.05 for c in COMPONENTS), msg
    assert abs(sum(got.values()) - PUBLISHED_TOTAL_M[name]) <= 0.5, msg
    if name == "s-full":  # fp32 state-dict bytes vs the published file sizes (safetensors adds its header)
        mib = {c: sum(t.numel() for t in empty_component(c, cfg).state_dict().values()) * 4 / 2**20
               for c in COMPONENTS}
        assert all(abs(mib[c] - PUBLISHED_FP32_MIB[c]) <= 0.1 for c in COMPONENTS), (mib, PUBLISHED_FP32_MIB)


# --- float16: text encoder and UNet in half precision, VAE and vocoder in float32 ---------------------

def test_float16_keeps_vae_and_vocoder_in_float32(converted_file):
    expected = {"clap": torch.float16, "unet": torch.float16, "vae": torch.float32, "vocoder": torch.float32}
    fp32 = AudioLDM.from_pretrained(converted_file("tiny"))
    with pytest.warns(UserWarning, match="float16 on the CPU"):
        loaded = {"file": AudioLDM.from_pretrained(converted_file("tiny"), dtype=torch.float16),
                  "builtin": AudioLDM.from_pretrained("tiny", dtype=torch.float16)}
    with pytest.warns(UserWarning, match="float16 on the CPU"):
        loaded["to()"] = AudioLDM.from_pretrained(converted_file("tiny")).to(dtype=torch.float16)
    for how, pipe in loaded.items():
        got = {c: {p.dtype for p in getattr(pipe, c).parameters()} for c in COMPONENTS}
        assert got == {c: {d} for c, d in expected.items()}, (how, got)
    bf16 = AudioLDM.from_pretrained(converted_file("tiny"), dtype=torch.bfloat16)
    assert {p.dtype for c in COMPONENTS for p in getattr(bf16, c).parameters()} == {torch.bfloat16}
    # The decoder and vocoder run in float32: the half-precision pipeline's waveform is the float32
    # pipeline's decode of its (half-precision) latents, bit for bit.
    pipe = loaded["file"]
    seen = {}

    def record(comp):
        def hook(module, args):
            seen[comp] = args[0].dtype
        return hook

    hook = pipe.vocoder.register_forward_pre_hook(record("vocoder"))
    vae_decode = pipe.vae.decode
    pipe.vae.decode = lambda z, *a, **k: (record("vae")(None, (z,)), vae_decode(z, *a, **k))[1]
    steps = list(pipe.denoise("a dog barks", num_inference_steps=1, audio_length_in_s=1.0,
                              generator=torch.Generator().manual_seed(0)))
    latents = steps[-1].latents
    audio = pipe.decode(latents, steps[-1].num_samples)
    hook.remove()
    del pipe.vae.decode
    assert latents.dtype == torch.float16 and seen == {"vae": torch.float32, "vocoder": torch.float32}, seen
    assert audio.dtype == torch.float32
    assert torch.equal(audio, fp32.decode(latents.float(), steps[-1].num_samples))


# --- a string negative prompt applies to every prompt of a list -----------------------------------------

def test_string_negative_prompt_applies_to_every_prompt(cvssp_folder, converted_file):
    ours = AudioLDM.from_pretrained(converted_file("tiny"))
    prompts = ["a dog barks while rain falls", "birds chirp at dawn"]
    kw = dict(num_inference_steps=3, audio_length_in_s=1.0, num_waveforms_per_prompt=2, progress=False)

    def run(negative):
        return ours(prompts, negative_prompt=negative, generator=torch.Generator().manual_seed(4), **kw).audios

    one, listed, none = run("thunder"), run(["thunder", "thunder"]), run(None)
    assert np.array_equal(one, listed), "a string negative prompt must equal the same string for every prompt"
    moved = float(np.abs(one - none).max())
    assert moved > 1e-3, f"the negative prompt changed the audio by only {moved:.2e}"
    ref = reference_pipeline(cvssp_folder("tiny"))  # diffusers takes the list form (it refuses the string)
    ref.scheduler = diffusers_scheduler("ddim", ref.scheduler.config)
    r = ref(prompts, negative_prompt=["thunder", "thunder"], generator=torch.Generator().manual_seed(4),
            num_inference_steps=3, audio_length_in_s=1.0, num_waveforms_per_prompt=2).audios
    err = float(np.abs(one - r).max())
    assert err <= 1e-5, f"string negative vs diffusers with the list: max abs err {err:.2e}"


# --- CLI flags and JSONL keys take effect -------------------------------------------------------------

PROMPT = "a dog barks"
BASE = dict(prompt=PROMPT, seed=3, seconds=1.0, steps=2, guidance=2.5, negative=None, sampler="ddim")


def _api(settings: dict, dtype=torch.float32) -> np.ndarray:
    """What the Python API gives for the CLI's settings (same seed rule: one CPU generator per item)."""
    pipe = AudioLDM.from_pretrained("tiny", dtype=dtype)
    return pipe(settings["prompt"], audio_length_in_s=settings["seconds"], num_inference_steps=settings["steps"],
                guidance_scale=settings["guidance"], negative_prompt=settings["negative"], sampler=settings["sampler"],
                generator=torch.Generator().manual_seed(settings["seed"]), progress=False).audios[0]


def _as_written(audio: np.ndarray, path: Path) -> np.ndarray:
    write_audio(path, audio)
    return sf.read(path, dtype="int16")[0]


def _cli_args(settings: dict) -> list[str]:
    args = [settings["prompt"], "--model", "tiny", "--seed", str(settings["seed"]), "--seconds",
            str(settings["seconds"]), "--steps", str(settings["steps"]), "--no-progress"]
    return args


@pytest.fixture
def keep_threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize("flag,value,change", [
    ("--guidance", "4.0", {"guidance": 4.0}),
    ("--negative", "thunder and rain", {"negative": "thunder and rain"}),
    ("--sampler", "euler", {"sampler": "euler"}),
    ("--steps", "3", {"steps": 3}),
    ("--dtype", "bfloat16", {}),
    ("--dtype", "float16", {}),
])
def test_cli_flag_takes_effect(tmp_path, flag, value, change, keep_threads):
    """The file the CLI writes is the API's output under the flag's setting, and that differs from the
    default's: the flag reached the pipeline."""
    settings = dict(BASE, **change)
    dtype = getattr(torch, value) if flag == "--dtype" else torch.float32
    out = tmp_path / "cli.wav"
    args = ["generate", *_cli_args(BASE), flag, value, "-o", str(out)]
    if flag == "--dtype" and value == "float16":
        with pytest.warns(UserWarning, match="float16 on the CPU"):
            assert main(args) == 0
            want = _as_written(_api(settings, dtype), tmp_path / "api.wav")
    else:
        assert main(args) == 0
        want = _as_written(_api(settings, dtype), tmp_path / "api.wav")
    got = sf.read(out, dtype="int16")[0]
    default = _as_written(_api(BASE), tmp_path / "default.wav")
    assert np.array_equal(got, want), f"{flag} {value}: the CLI's file is not the API's output for that setting"
    assert not np.array_equal(want, default), f"{flag} {value} does not change the output; the test cannot tell"


def test_cli_threads_and_device(tmp_path, keep_threads, monkeypatch):
    seen = {}
    real = AudioLDM.from_pretrained.__func__

    def spy(cls, source, **kw):
        seen.update(kw, threads=torch.get_num_threads())
        pipe = real(cls, source, **kw)
        seen["pipe_device"] = pipe.device
        return pipe

    monkeypatch.setattr(AudioLDM, "from_pretrained", classmethod(spy))
    torch.set_num_threads(2)
    assert main(["generate", *_cli_args(BASE), "--threads", "1", "--device", "cpu", "-o", str(tmp_path / "a.wav")]) == 0
    assert seen["threads"] == 1 and torch.get_num_threads() == 1, seen
    assert seen["device"] == "cpu" and seen["pipe_device"] == torch.device("cpu"), seen
    monkeypatch.undo()
    # a device this machine does not have: one line, exit 2, before any work, no file
    missing = "cuda" if not torch.cuda.is_available() else "cuda:999"
    r = _run_cli("generate", *_cli_args(BASE), "--device", missing, "-o", str(tmp_path / "b.wav"))
    assert r.returncode == 2 and missing in r.stderr and r.stderr.strip().count("\n") == 0, r.stderr
    r = _run_cli("generate", *_cli_args(BASE), "--device", "nonsense", "-o", str(tmp_path / "c.wav"))
    assert r.returncode == 2 and "nonsense" in r.stderr and r.stderr.strip().count("\n") == 0, r.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.wav"]


def _run_cli(*args):
    import subprocess
    import sys

    return subprocess.run([sys.executable, "-m", "audioldm_core.cli", *args], capture_output=True, text=True,
                          cwd=Path(__file__).resolve().parent.parent, timeout=600)


def test_jsonl_keys_take_effect(tmp_path, keep_threads):
    """Each JSONL key changes its item as the same setting does in the API; "output" names the file."""
    items = {"steps": {"steps": 3}, "guidance": {"guidance": 4.0}, "negative": {"negative": "thunder"},
             "sampler": {"sampler": "heun"}}
    lines = [json.dumps({"prompt": PROMPT, "seed": BASE["seed"], "output": f"{key}.wav", **change})
             for key, change in items.items()]
    lines.append(json.dumps({"prompt": PROMPT, "seed": BASE["seed"], "output": "plain.wav"}))
    prompts = tmp_path / "p.jsonl"
    prompts.write_text("\n".join(lines) + "\n")
    outdir = tmp_path / "out"
    assert main(["generate", "--prompts", str(prompts), "-o", str(outdir), "--model", "tiny", "--seconds", "1.0",
                 "--steps", "2", "--no-progress"]) == 0
    assert sorted(p.name for p in outdir.glob("*.wav")) == sorted(f"{k}.wav" for k in [*items, "plain"])
    default = _as_written(_api(BASE), tmp_path / "default.wav")
    assert np.array_equal(sf.read(outdir / "plain.wav", dtype="int16")[0], default)
    for key, change in items.items():
        want = _as_written(_api(dict(BASE, **change)), tmp_path / f"api-{key}.wav")
        got = sf.read(outdir / f"{key}.wav", dtype="int16")[0]
        assert np.array_equal(got, want), f"JSONL key {key!r}: the file is not the API's output for it"
        assert not np.array_equal(want, default), f"{key}: no change; the test cannot tell"
    records = [json.loads(x) for x in (outdir / "manifest.jsonl").read_text().splitlines()]
    assert [r["outputs"] for r in records] == [[f"{k}.wav"] for k in [*items, "plain"]]
    assert records[0]["steps"] == 3 and records[1]["guidance"] == 4.0 and records[2]["negative"] == "thunder"
    assert records[3]["sampler"] == "heun"
