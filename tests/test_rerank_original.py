"""Variations and best-of-N re-ranking against the original AudioLDM code end to end.

The reference is a real original ``LatentDiffusion`` at tiny size with random weights
(``build_original("tiny")`` of test_convert_original: its UNet, VAE, HiFi-GAN and DDPM schedule, EMA
weights in place), and the pipeline under test is that model's ``.ckpt`` converted by our converter
(CLAP audio tower included). The original's own code runs:

- ``LatentDiffusion.generate_sample`` (ldm.py): ``get_input`` (first-stage encode of the dummy fbank,
  the conditioning), ``torch.cat([c] * n)``, ``get_unconditional_condition``, the >100 clip, decode,
  vocoder and, for candidates, ``cos_similarity`` and its argmax selection;
- its conditioner ``CLAPAudioEmbeddingClassifierFreev2`` (clap/encoders.py, compiled from its source,
  ``__init__`` included) with ``unconditional_prob=0``: the random swap disabled, its ``torch.rand``
  draws still made. It runs over the original model's CLAP modules (audio: ``HTSAT_Swin_Transformer``
  at the test size; text: the roberta stand-in of test_convert_original) through open_clip's
  ``CLAP.get_text_embedding`` / ``get_audio_embedding`` / ``encode_*``, with torchaudio's
  ``resample`` and data.py's ``get_audio_features`` (test_clap_audio);
- pipeline.py ``make_batch_for_text_to_audio``, ``set_cond_audio``, ``set_cond_text``, and
  audio/tools.py ``normalize_wav`` + ``pad_wav`` (``read_wav_file`` after its ``torchaudio.load``,
  which soundfile's read replaces: both give int16 / 32768);
- ``DDIMSampler`` (ddim.py) with its ``register_buffer`` kept on the CPU.

Stand-ins: ``sample_log`` (an attribute of the model instance) makes the same ``sample`` call on the
CPU sampler and records torch's RNG state before it; the variation test also hands it a fixed x_T.
``cos_similarity`` gets its waveform wrapped so that its ``.cuda()`` returns the tensor. roberta-base's
tokenizer is the test tokenizer (the files our converted model carries). The batch's unused dummy
fbank is 8 frames, not 1024, and ``latent_t_size``/``latent_f_size`` are set for the tiny 2x VAE
(``duration_to_latent_t_size`` assumes the release's 4x).

Noise: the original draws everything from torch's global RNG. Ours gets a generator set to the
recorded state so it consumes the same stream: for re-ranking (``compat="diffusers"``, ``eta=1``, no
swap draw; the original draws its swap decisions per prompt before ``torch.cat([c] * n)``, two for a
single prompt, ours with ``compat="original"`` one per candidate row; asserted: its clip stays off)
from where the original draws x_T; for variations (``compat="original"``: its swap draw, eta 1, its
clip, exercised on and off) from where the conditioner draws its swap decision, with x_T given to
both sides.
"""

from __future__ import annotations

import ast
import importlib
import types
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
import torch.nn.functional as F
from torch import nn

from audioldm_core import rerank
from audioldm_core.compat import original_audio_prompt, original_swap_mask
from audioldm_core.pipeline import AudioLDM
from test_clap_audio import AUDIO_CFG, _original_root, original_get_audio_features, original_htsat_module, \
    torchaudio_resample
from test_convert_original import tiny_release, use_ema

STEPS = 5  # divides 1000: the original's DDIM timesteps are diffusers' (compat only changes eta/swap/clip)
GUIDANCE = 2.5
DURATION = 1.25  # the original's duration: 128 mel frames, an audio prompt padded to 20480 samples
# ours: 128 mel frames too, and int(1.282 * 16000) = 20512 samples kept: the tiny vocoder's whole output
# (32 samples past 128 * 160), which the original returns and scores untrimmed
SECONDS = 1.282
# Max abs error relative to the reference's max: measured 2.0e-6 to 2.5e-6 (final latents, up to ~110
# before the clip), 3.5e-6 to 5.6e-6 (waveforms of the variations and the candidates): float32 rounding
# through 5 DDIM steps (the original's alpha-bar is a float64 cumprod rounded to float32, ours float32).
TOL = 1e-5
SCORE_TOL = 1e-6  # cosine similarity of the same waveforms, absolute; measured 1e-8 to 2e-8


def _source(path: Path, names: tuple[str, ...], ns: dict) -> dict:
    """Compile the named top-level functions/classes of an original source file into ``ns``."""
    tree = ast.parse(path.read_text())
    body = [n for n in tree.body if isinstance(n, (ast.FunctionDef, ast.ClassDef)) and n.name in names]
    if sorted(n.name for n in body) != sorted(names):
        raise RuntimeError(f"{path}: expected {names}")
    exec(compile(ast.Module(body=body, type_ignores=[]), str(path), "exec"), ns)
    return ns


class _NoCuda:
    """What ``cos_similarity`` gets as its waveform: ``.cuda()`` returns the CPU tensor."""

    def __init__(self, t: torch.Tensor):
        self.t = t

    def cuda(self):
        return self.t


def _original_clap(fake):
    """open_clip's ``CLAP`` methods over the original model's CLAP modules (roberta text branch)."""
    _, model = original_htsat_module()
    clap = model.CLAP

    class Clap(nn.Module):
        text_branch_type = "roberta"
        get_text_embedding, get_audio_embedding = clap.get_text_embedding, clap.get_audio_embedding
        encode_text, encode_audio = clap.encode_text, clap.encode_audio

        def __init__(self):
            super().__init__()
            for k in ("text_branch", "text_projection", "audio_branch", "audio_projection"):
                setattr(self, k, getattr(fake.model, k))

    return Clap().eval()


def _conditioner_class(clap, tok_dir: Path):
    """``CLAPAudioEmbeddingClassifierFreev2`` from its source; create_model gives ``clap``."""
    from transformers import RobertaTokenizer

    tokenizer = RobertaTokenizer(str(tok_dir / "vocab.json"), str(tok_dir / "merges.txt"))
    ns = {"torch": torch, "nn": nn, "F": F,
          "torchaudio": types.SimpleNamespace(functional=types.SimpleNamespace(resample=torchaudio_resample())),
          "get_audio_features": original_get_audio_features([]),
          "create_model": lambda *a, **k: (clap, {"audio_cfg": AUDIO_CFG}),
          "RobertaTokenizer": types.SimpleNamespace(from_pretrained=lambda name: tokenizer)}
    base = _source(_original_root() / "clap" / "encoders.py", ("CLAPAudioEmbeddingClassifierFreev2",), ns)[
        "CLAPAudioEmbeddingClassifierFreev2"]

    class Conditioner(base):
        record: dict

        def forward(self, batch, key=None):
            self.record.setdefault("swap_rng", torch.get_rng_state())  # before its first swap draw
            return super().forward(batch, key)

        def cos_similarity(self, waveform, text):
            self.record["candidates"] = waveform.clone()
            self.record["similarity"] = super().cos_similarity(_NoCuda(waveform), text)
            return self.record["similarity"]

    return Conditioner


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    from convert.core import convert_to_file

    root = tmp_path_factory.mktemp("rerank_original")
    model, ckpt, tok = tiny_release(root)
    convert_to_file(str(ckpt), root / "tiny.safetensors", tokenizer=str(tok))
    pipe = AudioLDM.from_pretrained(root / "tiny.safetensors")
    assert pipe.clap_audio_source == "checkpoint"
    use_ema(model)  # what generate_sample's ema_scope does (its copy_to refuses the frozen parameters)
    model.use_ema = False
    cond_cls = _conditioner_class(_original_clap(model.cond_stage_model), root / "tok")
    model.cond_stage_model = cond_cls(embed_mode="text", unconditional_prob=0.0).eval()
    ddim = importlib.import_module("audioldm.latent_diffusion.ddim")  # importable once build_original ran
    ns = _source(_original_root() / "pipeline.py", ("make_batch_for_text_to_audio", "set_cond_audio",
                                                    "set_cond_text"), {"torch": torch})
    assert pipe.vae_scale_factor == 2
    tools = _source(_original_root() / "audio" / "tools.py", ("normalize_wav", "pad_wav"), {"np": np})
    ns.update(normalize_wav=tools["normalize_wav"], pad_wav=tools["pad_wav"])

    class CpuDDIM(ddim.DDIMSampler):
        def register_buffer(self, name, attr):  # the original moves every buffer to CUDA
            setattr(self, name, attr)

    def sample_log(self, cond, batch_size, ddim, ddim_steps, unconditional_guidance_scale=1.0,
                   unconditional_conditioning=None, use_plms=False, mask=None, **kwargs):
        """ldm.py sample_log's DDIM branch, on the CPU sampler."""
        assert ddim and not use_plms and mask is None
        rec = self.cond_stage_model.record
        rec["x_T_rng"] = torch.get_rng_state()
        if rec.get("x_T") is not None:
            kwargs["x_T"] = rec["x_T"]
        samples, inter = CpuDDIM(self).sample(ddim_steps, batch_size, (self.channels, self.latent_t_size,
                                                                       self.latent_f_size), cond, verbose=False,
                                               unconditional_guidance_scale=unconditional_guidance_scale,
                                               unconditional_conditioning=unconditional_conditioning, mask=mask,
                                               **kwargs)
        rec["samples"] = samples
        return samples, inter

    model.sample_log = types.MethodType(sample_log, model)
    return model, pipe, ns, root


def _run_original(model, ns, batch, cond, seed, n_candidates, x_T=None):
    """text_to_audio's steps after reading: seed, set the condition key, generate_sample."""
    # the batch's dummy fbank is only VAE-encoded for its batch size (and a posterior draw before the
    # RNG states are recorded): 8 frames instead of make_batch's 1024 (most of the run time)
    batch = (torch.zeros(batch[0].shape[0], 8, 64),) + tuple(batch[1:])
    model.cond_stage_model.record = {"x_T": x_T}
    # duration_to_latent_t_size assumes the release's 4x VAE; the tiny one downsamples 2x
    model.latent_t_size, model.latent_f_size = int(DURATION * 102.4) // 2, 64 // 2
    model = ns["set_cond_audio" if cond == "audio" else "set_cond_text"](model)
    torch.manual_seed(seed)
    np.random.seed(seed)
    with torch.no_grad():
        wave = model.generate_sample([batch], unconditional_guidance_scale=GUIDANCE, ddim_steps=STEPS,
                                     n_candidate_gen_per_text=n_candidates, duration=DURATION)
    return torch.from_numpy(np.asarray(wave))[:, 0], model.cond_stage_model.record


def _gen(state: torch.Tensor) -> torch.Generator:
    g = torch.Generator()
    g.set_state(state)
    return g


def _err(a, ref):
    e = float((a - ref).abs().max())
    return e, e / float(ref.abs().max())


def _clip(tmp: Path, seconds: float, f: float, seed: int) -> Path:
    n = int(seconds * 16000)
    t = np.arange(n) / 16000
    w = 0.3 * np.sin(2 * np.pi * f * t) + 0.05 * np.random.default_rng(seed).standard_normal(n) + 0.02
    path = tmp / f"clip{seed}.wav"
    sf.write(path, w.astype(np.float32), 16000, subtype="PCM_16")
    return path


@pytest.mark.parametrize("x_seed, clipped", [(0, False), (6, True)])
def test_variation_matches_original_audio_conditioned_generation(setup, x_seed, clipped):
    """pipeline.py text_to_audio with original_audio_file_path (cond_stage_key "waveform", embed_mode
    "audio"; the unconditional embedding is the empty prompt's text embedding) vs
    ``pipe.variation(path, compat="original")`` (its audio prompt preparation, eta 1, swap, clip), from
    an x_T whose final latents stay below the original's clip trigger (100) and one that crosses it."""
    model, pipe, ns, root = setup
    path = _clip(root, 0.8, 440.0, 1)  # shorter than the 1.28 s generated: zero-padded by the original
    seg = int(DURATION * 102.4) * 160
    assert seg == pipe.lengths(SECONDS)[1] * 160 and pipe.lengths(SECONDS)[2] == 20512

    def original(p: Path, seed: int):
        wav = sf.read(p, dtype="float32")[0]  # read_wav_file: torchaudio.load; 16 kHz, no resampling
        wav = ns["normalize_wav"](wav)[None]
        wav = ns["pad_wav"](wav, seg)
        wav = 0.5 * wav / np.max(np.abs(wav))
        batch = ns["make_batch_for_text_to_audio"]("", waveform=wav, batchsize=1)
        return _run_original(model, ns, batch, "audio", seed, 1, x_T=x_T)

    x_T = torch.randn(1, 8, 64, 32, generator=torch.Generator().manual_seed(x_seed))
    seed = 8
    ref, rec = original(path, seed)
    assert not original_swap_mask(1, _gen(rec["swap_rng"])).any(), "pick a seed whose swap draw keeps the clip"
    last = {}
    out = pipe.variation(str(path), compat="original", audio_length_in_s=SECONDS, num_inference_steps=STEPS,
                         guidance_scale=GUIDANCE, latents=x_T, generator=_gen(rec["swap_rng"]), output_type="pt",
                         progress=False, callback=lambda i, t, x: last.update(x=x.clone()))
    samples = rec["samples"]
    assert bool(samples.abs().max() > 1e2) == clipped, f"the original's final latents reach {samples.abs().max():.1f}"
    lat_abs = _err(last["x"], samples.clamp(-10, 10) if clipped else samples)[0]
    lat_err = lat_abs, lat_abs / float(samples.abs().max())  # relative to the latents before the clip
    err, rel = _err(out.audios, ref)
    print(f"\nvariation: latents max abs {lat_err[0]:.2e} (rel {lat_err[1]:.2e}), waveform max abs {err:.2e} "
          f"(rel {rel:.2e}), original clip {'on' if clipped else 'off'}")
    assert lat_err[1] < TOL, f"final latents: max abs error {lat_err[0]:.3e}, relative {lat_err[1]:.2e} (tol {TOL:g})"
    assert rel < TOL, f"waveform: max abs error {err:.3e}, relative {rel:.2e} (tol {TOL:g})"
    # contrasts: another clip, and the same clip through a tower with one weight perturbed
    other, _ = original(_clip(root, 0.8, 1500.0, 2), seed)
    moved = _err(out.audios, other)[1]
    print(f"variation contrasts (relative): another clip {moved:.2e}", end="")
    assert moved > 100 * TOL, f"another clip moves the original's output by only {moved:.2e} (relative)"
    w = pipe.clap_audio.audio_projection.linear1.weight
    kept = w.detach().clone()
    with torch.no_grad():
        w.add_(0.01 * torch.randn(w.shape, generator=torch.Generator().manual_seed(4)))
    try:
        bent = pipe.variation(str(path), compat="original", audio_length_in_s=SECONDS, num_inference_steps=STEPS,
                              guidance_scale=GUIDANCE, latents=x_T, generator=_gen(rec["swap_rng"]),
                              output_type="pt", progress=False).audios
    finally:
        with torch.no_grad():
            w.copy_(kept)
    moved = _err(bent, ref)[1]
    print(f", a perturbed projection weight {moved:.2e}")
    assert moved > 100 * TOL, f"noise (std 0.01) on a projection weight moves ours by only {moved:.2e} (relative)"


def test_best_of_three_matches_original_generate_sample(setup):
    """One prompt, 3 candidates: the original's candidates (generate_sample, n_candidate_gen_per_text=3),
    its cos_similarity scores and its kept waveform vs ours (``num_candidates=3``) on the same noise."""
    model, pipe, ns, root = setup
    prompt = "a dog barks in the rain"
    batch = ns["make_batch_for_text_to_audio"](prompt, batchsize=1)
    ref, rec = _run_original(model, ns, batch, "text", 23, 3)
    top = float(rec["samples"].abs().max())  # measured 85.8
    assert top < 1e2, f"the original clipped (latents reach {top:.1f}); ours (compat='diffusers') does not"
    kw = dict(audio_length_in_s=SECONDS, num_inference_steps=STEPS, guidance_scale=GUIDANCE, eta=1.0,
              progress=False, output_type="pt")
    cands = pipe(prompt, num_waveforms_per_prompt=3, generator=_gen(rec["x_T_rng"]), **kw).audios
    err, rel = _err(cands, rec["candidates"])
    assert rel < TOL, f"candidates: max abs error {err:.3e}, relative {rel:.2e} (tol {TOL:g})"
    ours_scores = torch.tensor(pipe.clap_score(list(rec["candidates"]), [prompt] * 3))
    s_err = float((ours_scores - rec["similarity"]).abs().max())
    assert s_err < SCORE_TOL, f"scores {ours_scores.tolist()} vs the original's {rec['similarity'].tolist()}: " \
                              f"max abs error {s_err:.2e}"
    out = pipe(prompt, num_candidates=3, generator=_gen(rec["x_T_rng"]), **kw)
    best = int(torch.argmax(rec["similarity"]))
    k_err, k_rel = _err(out.audios, ref)
    print(f"\nbest of 3: candidates max abs {err:.2e} (rel {rel:.2e}), scores {s_err:.2e}, kept #{best} "
          f"max abs {k_err:.2e}; scores {[round(x, 4) for x in rec['similarity'].tolist()]}")
    assert k_rel < TOL and torch.equal(out.audios, cands[best:best + 1]), \
        f"kept waveform: max abs error {k_err:.3e} vs the original's choice #{best}"
    assert abs(out.scores[0] - float(rec["similarity"][best])) < SCORE_TOL
    # contrast: the candidates differ from each other far beyond the tolerance, so the choice matters
    spread = min(_err(cands[i], cands[j])[1] for i in range(3) for j in range(i + 1, 3))
    assert spread > 100 * TOL, f"candidates differ by only {spread:.2e} (relative)"
    margin = float(torch.sort(rec["similarity"], descending=True).values[:2].diff().abs())
    assert margin > 10 * SCORE_TOL, f"the two best scores are within {margin:.2e}: the choice is not tested"


def test_several_prompts_per_prompt_argmax(setup):
    """Two prompts, 2 candidates each: the original lays candidates out candidate-major
    (``torch.cat([c] * n)``: prompt i's candidate j at row i + j * B) and keeps, per prompt,
    argmax over rows i::B; ours is prompt-major (row i * n + j). Our scores of the original's own
    candidates, through ``rerank.select``, pick the original's rows and kept waveforms."""
    model, pipe, ns, root = setup
    prompts = ["a dog barks in the rain", "wind and birds"]
    b, n = len(prompts), 2
    batch = list(ns["make_batch_for_text_to_audio"]("", batchsize=b))
    batch[-1] = prompts
    ref, rec = _run_original(model, ns, tuple(batch), "text", 33, n)
    cands, sim = rec["candidates"], rec["similarity"]
    assert cands.shape[0] == b * n and ref.shape[0] == b
    texts = [prompts[r % b] for r in range(b * n)]  # the original's text * n
    ours = torch.tensor(pipe.clap_score(list(cands), texts))
    s_err = float((ours - sim).abs().max())
    assert s_err < SCORE_TOL, f"scores: max abs error {s_err:.2e} vs the original's {sim.tolist()}"
    to_original = [i + j * b for i in range(b) for j in range(n)]  # our prompt-major row -> original row
    keep = [to_original[k] for k in rerank.select(ours[to_original], b, 1, n)]
    want = [i + int(torch.argmax(sim[i::b])) * b for i in range(b)]  # generate_sample's best_index
    print(f"\n{b} prompts x {n}: scores max abs error {s_err:.2e}, kept original rows {want}")
    assert keep == want, f"ours keeps original rows {keep}, the original {want} (scores {sim.tolist()})"
    # contrast: the prompts keep different candidates, and reading the original's rows as prompt-major
    # would keep other ones
    assert len({k // b for k in want}) == b, want
    assert rerank.select(ours, b, 1, n) != want, "the layouts are not told apart by these scores"
    margin = min(float((sim[i::b].max() - sim[i::b]).sort().values[1]) for i in range(b))
    assert margin > 10 * SCORE_TOL, f"a prompt's two best scores are within {margin:.2e}"
    assert torch.equal(cands[keep], ref), "the original's kept waveforms are not the rows it selected"


def test_cli_variation_compat_original(setup, tmp_path):
    """``audioldm variation --compat original`` writes what ``pipe.variation(..., compat="original")`` gives."""
    from audioldm_core.audio import load_audio
    from audioldm_core.cli import main

    _, pipe, _, root = setup
    clip, out = _clip(root, 0.8, 440.0, 1), tmp_path / "v.wav"
    args = ["variation", str(clip), "--model", str(root / "tiny.safetensors"), "--compat", "original",
            "--seconds", str(SECONDS), "--steps", str(STEPS), "--seed", "5", "--no-progress", "-o", str(out)]
    assert main(args) == 0
    want = pipe.variation(str(clip), compat="original", audio_length_in_s=SECONDS, num_inference_steps=STEPS,
                          generator=torch.Generator().manual_seed(5), progress=False).audios[0]
    err = np.abs(load_audio(out)[0] - want).max()
    assert err <= 2 / 32768, f"max abs error {err:.2e} (16-bit file)"
    plain = pipe.variation(str(clip), audio_length_in_s=SECONDS, num_inference_steps=STEPS,
                           generator=torch.Generator().manual_seed(5), progress=False).audios[0]
    assert np.abs(plain - want).max() > 100 / 32768  # compat matters


@pytest.mark.parametrize("n", [8000, 20480, 30000])
def test_audio_prompt_preparation_matches_original(n):
    """``compat.original_audio_prompt`` vs the original's normalize_wav + pad_wav + peak 0.5 for a clip
    shorter than, equal to and longer than the 20480 generated samples (longer ones stay whole)."""
    tools = _source(_original_root() / "audio" / "tools.py", ("normalize_wav", "pad_wav"), {"np": np})
    w = (0.2 * np.random.default_rng(n).standard_normal(n) + 0.05).astype(np.float32)
    want = tools["pad_wav"](tools["normalize_wav"](w)[None], 20480)
    want = torch.FloatTensor(0.5 * want / np.max(np.abs(want)))[0]  # make_batch_for_text_to_audio's cast
    got = torch.from_numpy(original_audio_prompt(w, 20480))
    assert got.shape == want.shape, (got.shape, want.shape)
    err = float((got - want).abs().max())
    assert err <= 1e-7, f"{n} samples: max abs error {err:.2e} (peak 0.5)"
