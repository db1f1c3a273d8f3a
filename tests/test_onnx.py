"""The ONNX Runtime backend (audioldm_core/onnx_backend.py): parity with our eager modules, per component
and end to end (and with diffusers end to end at tiny size), the on-disk graph cache, and the errors.

Tolerances: the backend runs the same float32 graph in other kernels, so outputs differ by float
rounding only; each parity assert states the measured max abs error, and a contrast shows the tolerance
separates a right from a wrong output. Full-size cases (``fullsize``) export the real graphs once per
checkpoint into a temporary cache.
"""

from __future__ import annotations

import gc
import importlib.util
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch

from audioldm_core import AudioLDM
from audioldm_core.errors import InputError, MissingExtraError
from conftest import require
from reference import FULL_SIZE, reference_pipeline

WAVE_TOL = 1e-4  # waveform, end to end (the bound; measured below it by 1-2 orders)
# per component, max abs error relative to the output's peak (measured at full size: UNet 1e-6, VAE
# decode 2.5e-6, VAE encode 1.5e-6, vocoder 2.4e-6, text tower 1.3e-6 with the reference's fan-in scaled
# text weights; random-weight text embeddings of different prompts differ by well under 1%, so the text
# tower gets its own, tighter bound, still 100x below that contrast)
COMP_TOL = 2e-5
TOL = {"text": 5e-6}
PROMPT = "a dog barks while rain falls on a tin roof"
MEASURED: list[str] = []


@pytest.fixture(autouse=True)
def _need_onnx():
    if importlib.util.find_spec("onnxruntime") is None or importlib.util.find_spec("onnx") is None:
        require("onnx", "onnxruntime/onnx (the [onnx] extra) is missing")


def ort_pipe(source, cache, **kw):
    return AudioLDM.from_pretrained(source, backend="onnxruntime", backend_options={"cache_dir": cache, **kw})


def exports(pipe) -> int:
    from audioldm_core.onnx_backend import exports as count

    return count(pipe)


def generate(pipe, seconds=5.12, steps=3, **kw):
    return pipe(prompt=PROMPT, audio_length_in_s=seconds, num_inference_steps=steps,
                generator=torch.Generator().manual_seed(0), progress=False, **kw).audios


def rel_err(label, a, b, tol):
    """Max abs error of ``b`` against reference ``a``, relative to a's peak; asserts <= tol."""
    err = float((torch.as_tensor(a) - torch.as_tensor(b)).abs().max())
    peak = float(torch.as_tensor(a).abs().max())
    line = f"{label}: max abs err {err:.2e} (rel {err / peak:.2e}, peak {peak:.3g})"
    MEASURED.append(line)
    print("\n" + line)
    assert err / peak <= tol, line
    return err / peak


def component_cases(eager, ort, frames, batch=2, only=None):
    """(label, eager output, backend output, backend output on a perturbed input) per component: the
    UNet on a batch of 2 (as with guidance), the others on ``batch``; ``only``: just this label."""
    g = torch.Generator().manual_seed(1)
    cfg = eager.config
    xs = torch.randn(2, cfg.unet.in_channels, frames, 16, generator=g)
    x = xs[:batch]
    emb = torch.nn.functional.normalize(torch.randn(2, cfg.clap.projection_dim, generator=g), dim=-1)
    mel = torch.randn(batch, 4 * frames, 64, generator=g)
    ids, mask = eager.tokenizer([PROMPT, "rain"])
    bump = lambda a: a + 0.05 * torch.randn(a.shape, generator=g)  # noqa: E731
    if only == "unet":
        yield "unet", eager.unet(xs, 500, emb), ort.unet(xs, 500, emb), ort.unet(bump(xs), 500, emb)
        return
    yield "unet", eager.unet(xs, 500, emb), ort.unet(xs, 500, emb), ort.unet(bump(xs), 500, emb)
    yield "vae decode", eager.vae.decode(x), ort.vae.decode(x), ort.vae.decode(bump(x))
    mel4 = mel[:, None]
    yield "vae encode", eager.vae.encode(mel4)[0], ort.vae.encode(mel4)[0], ort.vae.encode(bump(mel4))[0]
    yield "vocoder", eager.vocoder(mel), ort.vocoder(mel), ort.vocoder(bump(mel))
    bad = ids.clone()
    bad[:, 1] = (bad[:, 1] + 7) % eager.config.clap.vocab_size
    yield "text", eager.clap(ids, mask), ort.clap(ids, mask), ort.clap(bad, mask)


# --- tiny: every run --------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def warm_cache(converted_file, tmp_path_factory):
    """A cache folder holding tiny's graphs for a 5.12 s generation, and the backend that filled it."""
    cache = tmp_path_factory.mktemp("onnx-cache")
    pipe = ort_pipe(converted_file("tiny"), cache)
    generate(pipe)
    return cache, pipe


@pytest.fixture(scope="module")
def tiny_pair(converted_file, warm_cache):
    return AudioLDM.from_pretrained(converted_file("tiny")), warm_cache[1]


def copy_cache(warm_cache, tmp_path):
    dst = tmp_path / "cache"
    shutil.copytree(warm_cache[0], dst)
    return dst


# 32 latent frames: every upsampler exact 2x; 25: odd lengths at the lower levels (another plan)
@pytest.mark.parametrize("frames", [32, 25])
@torch.no_grad()
def test_components_match_eager(tiny_pair, frames):
    eager, ort = tiny_pair
    for label, a, b, wrong in component_cases(eager, ort, frames):
        tol = TOL.get(label, COMP_TOL)
        rel_err(f"tiny {label} ({frames} frames)", a, b, tol)
        assert a.shape == b.shape
        contrast = float((a - wrong).abs().max() / a.abs().max())
        assert contrast > 100 * tol, f"{label}: a perturbed input moved the output by only {contrast:.2e}"


@pytest.mark.parametrize("seconds", [5.12, 3.3])
def test_end_to_end_matches_eager_and_diffusers(tiny_pair, cvssp_folder, seconds):
    eager, ort = tiny_pair
    a, b = generate(eager, seconds), generate(ort, seconds)
    rel = rel_err(f"tiny end to end {seconds} s, backend vs eager", a, b, 1.0)
    err = rel * float(np.abs(a).max())
    assert err <= WAVE_TOL, f"max abs err {err:.2e} > {WAVE_TOL}"
    ref = reference_pipeline(cvssp_folder("tiny"))
    r = ref(prompt=PROMPT, audio_length_in_s=seconds, num_inference_steps=3,
            generator=torch.Generator().manual_seed(0)).audios
    err_ref = float(np.abs(r - b).max())
    MEASURED.append(f"tiny end to end {seconds} s, backend vs diffusers: max abs err {err_ref:.2e}")
    assert err_ref <= WAVE_TOL, MEASURED[-1]
    other = generate(ort, seconds, steps=2)  # contrast: one step fewer is far outside the tolerance
    assert float(np.abs(other - b).max()) > 100 * WAVE_TOL


def test_edits_and_samplers_run_on_backend(tiny_pair):
    eager, ort = tiny_pair
    audio = generate(eager)[0]
    a = eager.transfer(audio, "rain", strength=0.5, num_inference_steps=4,
                       generator=torch.Generator().manual_seed(0), progress=False).audios
    b = ort.transfer(audio, "rain", strength=0.5, num_inference_steps=4,
                     generator=torch.Generator().manual_seed(0), progress=False).audios
    rel_err("tiny transfer (VAE encoder on the backend)", a, b, COMP_TOL)
    a, b = generate(eager, sampler="heun"), generate(ort, sampler="heun")
    rel_err("tiny heun sampler", a, b, COMP_TOL)


# --- cache ---------------------------------------------------------------------------------------------

def test_cache_hit_then_rebuild_on_changed_weights_or_setting(converted_file, warm_cache, tmp_path, monkeypatch):
    from audioldm_core import onnx_backend

    path = converted_file("tiny")
    assert exports(warm_cache[1]) >= 4  # text, unet, vae decoder, vocoder exported when the cache was empty
    cache = copy_cache(warm_cache, tmp_path)
    second = ort_pipe(path, cache)
    a = generate(second)
    assert exports(second) == 0, "a second load must reuse the cached graphs"
    np.testing.assert_array_equal(a, generate(warm_cache[1]))
    changed = ort_pipe(path, cache)
    with torch.no_grad():
        changed.unet.eager.conv_out.bias.add_(0.5)
    c = generate(changed)
    assert exports(changed) == 1, "changed UNet weights must re-export the UNet graph only"
    assert float(np.abs(c - a).max()) > 100 * WAVE_TOL
    monkeypatch.setattr(onnx_backend, "OPSET", 18)
    newer = ort_pipe(path, cache, components=("unet",))
    np.testing.assert_allclose(generate(newer), a, rtol=0, atol=WAVE_TOL)
    assert exports(newer) == 1, "a changed export setting must re-export"


@pytest.mark.parametrize("damage", ["truncate", "flip", "manifest", "delete"])
def test_damaged_cache_entry_is_rebuilt_with_a_warning(converted_file, warm_cache, tmp_path, damage):
    path = converted_file("tiny")
    cache = copy_cache(warm_cache, tmp_path)
    fresh = ort_pipe(path, cache)
    a = generate(fresh)
    (graph,) = fresh.unet.graphs.values()
    entry = graph.parent
    data = entry / "model.onnx.data"
    if damage == "truncate":
        data.write_bytes(data.read_bytes()[: data.stat().st_size // 2])
    elif damage == "flip":
        raw = bytearray(data.read_bytes())
        raw[len(raw) // 2] ^= 0x40  # one flipped bit in a weight: same size, loads fine, wrong output
        data.write_bytes(bytes(raw))
    elif damage == "manifest":
        (entry / "manifest.json").write_text("{")
    else:
        (entry / "model.onnx").unlink()
    again = ort_pipe(path, cache)
    with pytest.warns(UserWarning, match="not usable"):
        b = generate(again)
    assert exports(again) == 1
    np.testing.assert_array_equal(a, b)


def test_threads_follow_torch(converted_file, tmp_path):
    path = converted_file("tiny")
    pipe = ort_pipe(path, tmp_path)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        assert pipe.unet._settings.options().intra_op_num_threads == 1
    finally:
        torch.set_num_threads(before)
    assert ort_pipe(path, tmp_path, threads=3).unet._settings.options().intra_op_num_threads == 3


# --- errors --------------------------------------------------------------------------------------------

def test_missing_extra_is_one_clear_error(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import onnxruntime raises ImportError
    with pytest.raises(MissingExtraError, match=r"pip install 'audioldm-core\[onnx\]'"):
        AudioLDM.from_pretrained("tiny", backend="onnxruntime")


def cli_refuses_missing_extra(tmp_path, module: str, backend: str, extra: str) -> None:
    """``audioldm generate --backend BACKEND`` with ``module`` unimportable: exit 2, one error line
    naming ``audioldm-core[EXTRA]``, no output file."""
    code = (f"import sys; sys.modules[{module!r}] = None; from audioldm_core.cli import main; "
            f"sys.exit(main(['generate', 'x', '--model', 'tiny', '--backend', {backend!r}, "
            f"'-o', r'{tmp_path / 'o.wav'}']))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert r.returncode == 2, r.stderr
    errors = [line for line in r.stderr.splitlines() if "error" in line]
    assert len(errors) == 1 and f"audioldm-core[{extra}]" in errors[0], r.stderr
    assert not (tmp_path / "o.wav").exists()


def test_missing_extra_cli_exits_2(tmp_path):
    cli_refuses_missing_extra(tmp_path, "onnxruntime", "onnxruntime", "onnx")


@pytest.mark.parametrize("backend", ["onnxruntime", "openvino"])
def test_bad_backend_arguments(backend):
    with pytest.raises(InputError, match="backend must be one of"):
        AudioLDM.from_pretrained("tiny", backend="tensorrt")
    with pytest.raises(InputError, match=f"{backend} backend runs float32 on the CPU"):
        AudioLDM.from_pretrained("tiny", backend=backend, dtype=torch.bfloat16)
    with pytest.raises(InputError, match="compile"):
        AudioLDM.from_pretrained("tiny", backend=backend, compile=True)


def test_backend_options_are_checked_before_loading():
    """A missing source would raise otherwise."""
    missing = "/nonexistent/model.safetensors"
    cases = [("torch", {"threads": 2}, "apply to the onnxruntime and openvino backends"),
             ("onnxruntime", {"thread": 2}, r"\['thread'\] do not apply to the onnxruntime backend"),
             ("onnxruntime", {"runtime": "openvino"}, "choose the runtime with backend="),
             ("onnxruntime", {"threads": 0}, "threads must be a positive integer"),
             ("onnxruntime", {"optimization": "max"}, "optimization must be one of"),
             ("onnxruntime", {"components": ["unet", "tokenizer"]}, r"unknown components \['tokenizer'\]"),
             ("openvino", {"spinning": False}, "optimization and spinning are ONNX Runtime's")]
    for backend, options, msg in cases:
        with pytest.raises(InputError, match=msg):
            AudioLDM.from_pretrained(missing, backend=backend, backend_options=options)


def test_backend_refuses_a_moved_model(converted_file, tmp_path):
    pipe = ort_pipe(converted_file("tiny"), tmp_path)
    pipe.to(dtype=torch.bfloat16)
    with pytest.raises(InputError, match="float32 on the CPU"):
        generate(pipe)


# --- full size ---------------------------------------------------------------------------------------

def test_only_the_unet_differs_between_sizes():
    """Why the full-size cases export the text tower, VAE and vocoder at s-full-v2 only: the four
    checkpoints share their architecture (the configs are equal), so the graphs differ only in weights."""
    from audioldm_core.config import builtin_config

    cfgs = [builtin_config(n) for n in FULL_SIZE]
    for part in ("clap", "vae", "vocoder"):
        assert all(getattr(c, part) == getattr(cfgs[0], part) for c in cfgs), part


@pytest.mark.fullsize
@pytest.mark.parametrize("name", ["s-full-v2", "l-full"])
@torch.no_grad()
def test_full_size_parity(name, converted_file, tmp_path):
    """The backend per component and end to end (5.12 s, 2 DDIM steps, guidance) at full size: every
    component at s-full-v2, the UNet alone at l-full (the largest UNet; s-full and m-full differ from
    these only in UNet width, and each export costs minutes of CI time)."""
    every = name == "s-full-v2"
    path = converted_file(name)
    eager = AudioLDM.from_pretrained(path)
    ort = ort_pipe(path, tmp_path, components=("clap", "unet", "vae", "vocoder") if every else ("unet",))
    for label, a, b, wrong in component_cases(eager, ort, 128, batch=1, only=None if every else "unet"):
        tol = TOL.get(label, COMP_TOL)
        rel_err(f"{name} {label}", a, b, tol)  # 128 latent frames: 5.12 s
        contrast = float((a - wrong).abs().max() / a.abs().max())
        assert contrast > 100 * tol, f"{name} {label}: a perturbed input moved the output by only {contrast:.2e}"
    a, b = generate(eager, steps=2), generate(ort, steps=2)
    err = float(np.abs(a - b).max())
    line = f"{name} end to end 5.12 s, 2 steps: max abs err {err:.2e} (peak {float(np.abs(a).max()):.3f})"
    MEASURED.append(line)
    print("\n" + line)
    assert err <= WAVE_TOL, line
    del ort
    gc.collect()
    if every:  # the same cached graphs under OpenVINO (backend="openvino"): no second export
        if importlib.util.find_spec("openvino") is None:
            require("openvino", "openvino is missing (the [openvino] extra)")
        else:
            ov = AudioLDM.from_pretrained(path, backend="openvino", backend_options={"cache_dir": tmp_path})
            for label, x, y, _ in component_cases(eager, ov, 128, batch=1):
                rel_err(f"{name} openvino {label}", x, y, TOL.get(label, COMP_TOL))
            c = generate(ov, steps=2)
            err = float(np.abs(a - c).max())
            line = f"{name} openvino end to end 5.12 s, 2 steps: max abs err {err:.2e}"
            MEASURED.append(line)
            assert err <= WAVE_TOL, line
            assert exports(ov) == 0, "OpenVINO exported again instead of loading the cached graphs"
            del ov
    del eager
    gc.collect()


def teardown_module(module):
    for line in MEASURED:
        print(line)
