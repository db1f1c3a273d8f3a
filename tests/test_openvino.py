"""The OpenVINO backend (``backend="openvino"``, audioldm_core/onnx_backend.py): the ONNX Runtime backend's
cached graphs run in OpenVINO's CPU plugin at f32 precision. Parity with our eager modules per component
(UNet at two length plans, VAE decode/encode, vocoder, text tower) and end to end at tiny size; the graph
cache shared with ONNX Runtime; threads and precision of the compiled models; the missing extra.

Helpers and tolerances are test_onnx.py's (same graphs, another runtime: outputs differ by float
rounding only); each parity assert states the measured max abs and relative error, and a contrast (a
perturbed input, one sampler step fewer) shows the tolerance separates a right from a wrong output.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from audioldm_core import AudioLDM
from audioldm_core.errors import MissingExtraError
from audioldm_core.onnx_backend import OpenVINOSession, unet_plan
from conftest import require
from test_onnx import (COMP_TOL, TOL, WAVE_TOL, cli_refuses_missing_extra, component_cases, exports, generate,
                       rel_err)


@pytest.fixture(autouse=True)
def _need_openvino():
    if importlib.util.find_spec("openvino") is None or importlib.util.find_spec("onnx") is None:
        require("openvino", "openvino/onnx (the [openvino] extra) is missing")


def ov_pipe(source, cache, **kw):
    return AudioLDM.from_pretrained(source, backend="openvino", backend_options={"cache_dir": cache, **kw})


@pytest.fixture(scope="module")
def ov_tiny(converted_file, tmp_path_factory):
    """(cache folder, eager tiny, tiny on OpenVINO that exported its 5.12 s graphs into the cache)."""
    cache = tmp_path_factory.mktemp("ov-cache")
    ov = ov_pipe(converted_file("tiny"), cache)
    generate(ov)
    return cache, AudioLDM.from_pretrained(converted_file("tiny")), ov


# 32 latent frames: every upsampler exact 2x; 25: odd lengths at the lower levels (another UNet plan)
@pytest.mark.parametrize("frames", [32, 25])
@torch.no_grad()
def test_components_match_eager(ov_tiny, frames):
    _, eager, ov = ov_tiny
    for label, a, b, wrong in component_cases(eager, ov, frames):
        tol = TOL.get(label, COMP_TOL)
        rel_err(f"openvino tiny {label} ({frames} frames)", a, b, tol)
        assert a.shape == b.shape
        contrast = float((a - wrong).abs().max() / a.abs().max())
        assert contrast > 100 * tol, f"{label}: a perturbed input moved the output by only {contrast:.2e}"
    assert all(isinstance(s, OpenVINOSession) for m in (ov.clap, ov.unet, ov.vae, ov.vocoder) for s in m._sessions.values())


@pytest.mark.parametrize("seconds", [5.12, 3.3])
def test_end_to_end_matches_eager(ov_tiny, seconds):
    _, eager, ov = ov_tiny
    a, b = generate(eager, seconds), generate(ov, seconds)
    rel = rel_err(f"openvino tiny end to end {seconds} s", a, b, 1.0)
    err = rel * float(np.abs(a).max())
    assert err <= WAVE_TOL, f"max abs err {err:.2e} > {WAVE_TOL}"
    other = generate(ov, seconds, steps=2)  # contrast: one step fewer is far outside the tolerance
    assert float(np.abs(other - b).max()) > 100 * WAVE_TOL


def test_reuses_the_onnxruntime_cache(converted_file, ov_tiny, tmp_path):
    """Graphs exported by the onnxruntime backend are loaded by the openvino backend: no second export."""
    if importlib.util.find_spec("onnxruntime") is None:
        require("onnx", "onnxruntime (the [onnx] extra) is missing")
    path = converted_file("tiny")
    ort = AudioLDM.from_pretrained(path, backend="onnxruntime", backend_options={"cache_dir": tmp_path})
    a = generate(ort)
    assert exports(ort) >= 4
    ov = ov_pipe(path, tmp_path)
    b = generate(ov)
    assert exports(ov) == 0, "the openvino backend must load the graphs onnxruntime exported"
    assert ov.unet.graphs == ort.unet.graphs and ov.vae.graphs == ort.vae.graphs
    rel_err("openvino vs onnxruntime, same cached graphs, end to end", a, b, 1.0)
    np.testing.assert_allclose(b, generate(ov_tiny[1]), rtol=0, atol=WAVE_TOL)


def test_runs_without_onnxruntime(converted_file, ov_tiny, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import onnxruntime raises ImportError
    cache, _, warm = ov_tiny
    ov = ov_pipe(converted_file("tiny"), cache)
    np.testing.assert_array_equal(generate(ov), generate(warm))
    assert exports(ov) == 0


@torch.no_grad()
def test_threads_and_precision_of_the_compiled_models(converted_file, ov_tiny):
    cache, path = ov_tiny[0], converted_file("tiny")
    mel = torch.randn(1, 16, 64)
    threads = min(2, os.cpu_count() or 1)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        follows_torch, given = ov_pipe(path, cache), ov_pipe(path, cache, threads=threads)
        follows_torch.vocoder(mel), given.vocoder(mel)
    finally:
        torch.set_num_threads(before)
    for pipe, n in ((follows_torch, 1), (given, threads)):
        (sess,) = pipe.vocoder._sessions.values()
        assert int(sess.compiled.get_property("INFERENCE_NUM_THREADS")) == n
        assert str(sess.compiled.get_property("INFERENCE_PRECISION_HINT")) in ("<Type: 'float32'>", "f32")


def test_cli_generates_from_the_cached_graphs(converted_file, ov_tiny, tmp_path):
    import soundfile as sf

    from test_onnx import PROMPT

    cache, _, warm = ov_tiny
    entries = sorted(p.name for p in cache.iterdir())
    out = tmp_path / "o.wav"
    r = subprocess.run([sys.executable, "-m", "audioldm_core.cli", "generate", PROMPT, "--model",
                        str(converted_file("tiny")), "--backend", "openvino", "--threads", "1", "--seconds", "5.12",
                        "--steps", "3", "--seed", "0", "--no-progress", "-o", str(out)],
                       capture_output=True, text=True, timeout=300, env={**os.environ, "AUDIOLDM_ONNX_CACHE": str(cache)})
    assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in cache.iterdir()) == entries, "the CLI must run the cached graphs, not export"
    data, rate = sf.read(out, dtype="float32")
    api = generate(warm)[0]
    rel_err(f"openvino CLI wav ({sf.info(out).subtype}) vs API", api, data, 1.0)
    step = 1 / 32768 if sf.info(out).subtype == "PCM_16" else 0.0
    assert rate == 16000 and float(np.abs(data - api).max()) <= step + WAVE_TOL


@torch.no_grad()
def test_f32_hint_is_what_keeps_parity(ov_tiny):
    """Contrast for the precision hint: the same UNet graph compiled with OpenVINO's default hint. On CPUs
    with bf16 units (AVX-512-BF16, AMX) that default is bf16 and moves the output far beyond the
    tolerance; elsewhere the default is f32 and the two agree."""
    import openvino as ov

    _, eager, pipe = ov_tiny
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, eager.config.unet.in_channels, 32, 16, generator=g)
    emb = torch.nn.functional.normalize(torch.randn(2, eager.config.clap.projection_dim, generator=g), dim=-1)
    a, ours = eager.unet(x, 500, emb), pipe.unet(x, 500, emb)
    rel_err("openvino tiny unet, f32 hint", a, ours, COMP_TOL)
    graph = pipe.unet.graphs[("unet", unet_plan(eager.unet, 32, 16))]
    default = ov.Core().compile_model(str(graph), "CPU", {"INFERENCE_NUM_THREADS": 1})
    out = default.create_infer_request().infer({"x": x.numpy(), "t": np.full(2, 500, np.float32),
                                                "class_emb": emb.numpy()})[default.outputs[0]]
    hint = str(default.get_property("INFERENCE_PRECISION_HINT"))
    err = float((a - torch.from_numpy(out)).abs().max() / a.abs().max())
    print(f"\nopenvino tiny unet, default hint {hint}: rel err {err:.2e}")
    if "bf16" in hint or "bfloat16" in hint:
        assert err > 100 * COMP_TOL, f"the bf16 default moved the UNet output by only {err:.2e}"
    else:
        assert err <= COMP_TOL, f"default hint {hint}: rel err {err:.2e}"


# --- errors --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("module", ["openvino", "onnx"])
def test_missing_extra_is_one_clear_error(monkeypatch, tmp_path, module):
    monkeypatch.setitem(sys.modules, module, None)  # import <module> raises ImportError
    with pytest.raises(MissingExtraError, match=rf"pip install 'audioldm-core\[openvino\]' \({module} is not"):
        AudioLDM.from_pretrained(tmp_path / "absent.safetensors", backend="openvino")  # before loading


def test_missing_extra_cli_exits_2(tmp_path):
    cli_refuses_missing_extra(tmp_path, "openvino", "openvino", "openvino")
