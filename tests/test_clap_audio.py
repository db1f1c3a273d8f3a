"""CLAP audio tower (``audioldm_core/htsat.py``), its front-end (``audioldm_core/clap_frontend.py``)
and converter (``convert/clap_audio.py``) against their references, with random weights:

- the tower alone vs transformers ``ClapAudioModelWithProjection`` (the same log-mel in), at a
  test size and the real HTSAT-tiny and HTSAT-base sizes, through our transformers-layout converter;
- the resampler vs ``torchaudio.functional.resample`` (the original's call, its defaults);
- waveform -> embedding, front-end included, vs the original package: its ``HTSAT_Swin_Transformer``
  (torchlibrosa log-mel inside), its ``get_audio_features(..., "fusion", "repeatpad")`` and
  ``CLAP.get_audio_embedding``, fed as ``CLAPAudioEmbeddingClassifierFreev2.forward`` feeds them,
  for inputs shorter than, equal to and longer than 10 s, through our original-layout converter;
- contrasts: a 1.01-scaled weight moves the output at least 100x the tolerance.
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import math
import os
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from conftest import require
from audioldm_core.clap_frontend import CLAP_SAMPLES, clap_mel, log_mel_48k, resample
from audioldm_core.errors import CheckpointError, InputError
from audioldm_core.htsat import HTSAT, ClapAudioConfig
from convert import clap_audio as conv

TOL = 1e-5  # relative (max abs error / max abs reference) on the embedding, the bound

# name -> (embed_dim, depths, heads); "test" is small enough for every run
SIZES = {
    "test": (8, (2, 2, 2, 2), (1, 1, 2, 2)),
    "htsat-tiny": (96, (2, 2, 6, 2), (4, 8, 16, 32)),
    "htsat-base": (128, (2, 2, 12, 2), (4, 8, 16, 32)),
}


def _rel(a: torch.Tensor, b: torch.Tensor) -> tuple[float, float]:
    err = (a - b).abs().max().item()
    return err, err / b.abs().max().item()


@torch.no_grad()
def _jitter(module: torch.nn.Module, seed: int) -> None:
    """Random weights everywhere (not the init's ones and zeros), incl. batch-norm statistics."""
    g = torch.Generator().manual_seed(seed)
    for name, t in module.state_dict().items():
        if not t.is_floating_point() or "relative_position_index" in name or "extractor" in name \
                or name.endswith("attn_mask"):
            continue
        if name.endswith("running_var"):
            t.copy_(torch.rand(t.shape, generator=g) + 0.5)
        elif name.endswith("running_mean"):
            t.copy_(torch.randn(t.shape, generator=g) * 5 - 20)
        else:
            t.add_(torch.randn(t.shape, generator=g) * 0.02)


# --- transformers ---------------------------------------------------------------------------------

def _transformers_tower(size: str):
    import transformers  # the test extra; a missing one fails, never skips
    emb, depths, heads = SIZES[size]
    cfg = transformers.ClapAudioConfig(patch_embeds_hidden_size=emb, depths=list(depths),
                                       num_attention_heads=list(heads), hidden_size=emb * 8)
    torch.manual_seed(0)
    ref = transformers.ClapAudioModelWithProjection(cfg).eval()
    _jitter(ref, 1)
    return ref


@pytest.mark.parametrize("size", list(SIZES))
def test_tower_matches_transformers(size):
    ref = _transformers_tower(size)
    cfg, state = conv.from_transformers(ref.state_dict())
    emb, depths, heads = SIZES[size]
    assert (cfg.embed_dim, cfg.depths, cfg.num_heads, cfg.hidden_size) == (emb, depths, heads, emb * 8), cfg
    ours = HTSAT(cfg).eval()
    ours.load_state_dict(state, strict=True)
    mel = torch.randn(2, 1001, 64, generator=torch.Generator().manual_seed(2)) * 10 - 30
    with torch.no_grad():
        want = ref(input_features=mel[:, None]).audio_embeds
        got = ours.audio_projection(ours.features(mel))
        err, rel = _rel(got, want)
        assert rel <= TOL, f"{size}: projected embedding max abs error {err:.3g}, relative {rel:.3g} > {TOL}"
        unit = ours(mel)
        n_err, _ = _rel(unit, F.normalize(want, dim=-1))
        assert n_err <= TOL, f"{size}: normalised embedding max abs error {n_err:.3g}"
        # contrast: the tolerance separates right from wrong
        ours.audio_projection.linear1.weight.mul_(1.01)
        _, moved = _rel(ours.audio_projection(ours.features(mel)), want)
    assert moved >= 100 * TOL, f"{size}: a 1.01-scaled linear1 moved the output only {moved:.3g} (relative)"


def test_converter_names_bad_tensors():
    ref = _transformers_tower("test")
    state = dict(ref.state_dict())
    state["audio_model.audio_encoder.extra.weight"] = torch.zeros(1)
    del state["audio_model.audio_encoder.norm.bias"]
    with pytest.raises(CheckpointError, match=r"extra\.weight.*|norm\.bias"):
        conv.from_transformers(state)
    with pytest.raises(CheckpointError, match="not a CLAP HTS-AT"):
        conv.from_transformers({"x": torch.zeros(1)})


def test_config_round_trip_and_bad_config():
    cfg = ClapAudioConfig(embed_dim=8, depths=(2, 2, 2, 2), num_heads=(1, 1, 2, 2))
    assert ClapAudioConfig.from_dict(cfg.to_dict()) == cfg
    from audioldm_core.errors import ConfigError
    with pytest.raises(ConfigError, match="unknown clap_audio config"):
        ClapAudioConfig.from_dict({"embed": 8})
    with pytest.raises(ConfigError, match="equal length"):
        HTSAT(ClapAudioConfig(depths=(2, 2), num_heads=(1,)))


def test_bad_mel_and_waveforms():
    m = HTSAT(ClapAudioConfig(embed_dim=8, depths=(2, 2, 2, 2), num_heads=(1, 1, 2, 2)))
    with pytest.raises(InputError, match=r"\(B, T, 64\)"):
        m(torch.zeros(1, 2000, 64))
    for bad, msg in ((np.zeros(16000, np.float32), "silent"), (np.full(16000, np.nan, np.float32), "NaN"),
                     (np.ones(10, np.float32), "at least 10 ms"), (np.ones((1, 2, 3)), r"\(n,\) or \(B, n\)")):
        with pytest.raises(InputError, match=msg):
            clap_mel(bad)


# --- torchaudio's resampler (the original's) -------------------------------------------------------

def torchaudio_resample():
    """``torchaudio.functional.resample``: the installed torchaudio, else its pure-python
    ``functional/functional.py`` from an unpacked torchaudio wheel in ``<venv>/torchaudio-original``
    (or ``$AUDIOLDM_TORCHAUDIO_DIR``), loaded without torchaudio's compiled extension, which needs
    the torch it was built for."""
    try:
        import torchaudio.functional as AF
        return AF.resample
    except Exception:
        pass
    root = Path(os.environ.get("AUDIOLDM_TORCHAUDIO_DIR", Path(sys.prefix) / "torchaudio-original"))
    src = root / "torchaudio" / "functional" / "functional.py"
    if not src.is_file():
        require("torchaudio", f"torchaudio's resample (the original CLAP front-end's) is missing: no {src}")
    names = ("torchaudio", "torchaudio.functional", "torchaudio.functional.filtering",
             "torchaudio.functional.functional")
    saved = {k: sys.modules.get(k) for k in names}
    stub, pkg = types.ModuleType("torchaudio"), types.ModuleType("torchaudio.functional")
    stub.__path__, pkg.__path__ = [], [str(src.parent)]
    filtering = types.ModuleType("torchaudio.functional.filtering")  # resample does not use it
    filtering.highpass_biquad = filtering.treble_biquad = None
    sys.modules.update({"torchaudio": stub, "torchaudio.functional": pkg, "torchaudio.functional.filtering": filtering})
    try:
        spec = importlib.util.spec_from_file_location("torchaudio.functional.functional", src)
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
    finally:
        for k, v in saved.items():
            if v is None:
                sys.modules.pop(k, None)
            else:
                sys.modules[k] = v
    return mod.resample


@pytest.mark.parametrize("n", [16000, 160000, 163840, 12345])
def test_resampler_matches_torchaudio(n):
    ta = torchaudio_resample()
    x = torch.randn(2, n, generator=torch.Generator().manual_seed(n)) * 0.3
    want = ta(x, 16000, 48000)
    got = resample(x, 16000, 48000)
    assert got.shape == want.shape, (got.shape, want.shape)
    err = (got - want).abs().max().item()
    assert err <= 1e-6, f"16->48 kHz resampler: max abs error {err:.3g} vs torchaudio (samples ~0.3)"


# --- the original package ------------------------------------------------------------------------

def _original_root() -> Path:
    target = Path(sys.prefix) / "audioldm-original" / "audioldm"
    if not target.is_dir():
        require("original", f"the original audioldm package is missing: no {target}")
    return target


def original_htsat_module():
    """``audioldm/clap/open_clip/htsat.py`` imported without the package ``__init__`` files (they
    need torchvision, torchaudio, ...); ``open_clip/utils.py`` imports torchvision only for
    ``FrozenBatchNorm2d``, which HTS-AT does not use, so a stub stands in while it imports."""
    root = _original_root()
    for name, path in (("audioldm", root), ("audioldm.clap", root / "clap"),
                       ("audioldm.clap.open_clip", root / "clap" / "open_clip")):
        if name not in sys.modules or not hasattr(sys.modules[name], "__path__"):
            mod = types.ModuleType(name)
            mod.__path__ = [str(path)]
            sys.modules[name] = mod
    from transformers import BartModel, BertModel, RobertaModel  # noqa: F401  (model.py's; imported before the stub)

    names = ("torchvision", "torchvision.ops", "torchvision.ops.misc")
    saved = {k: sys.modules.get(k) for k in names}
    if saved["torchvision"] is None:
        for k in names:
            sys.modules[k] = types.ModuleType(k)
        sys.modules["torchvision.ops.misc"].FrozenBatchNorm2d = torch.nn.Module
    try:
        return importlib.import_module("audioldm.clap.open_clip.htsat"), \
            importlib.import_module("audioldm.clap.open_clip.model")
    finally:
        for k, v in saved.items():
            if v is None:
                sys.modules.pop(k, None)


def original_get_audio_features(record: list):
    """``clap/training/data.py`` ``get_audio_features`` itself, compiled from the file's source
    into a namespace of its own (the module imports pandas, torchvision datasets, webdataset...).
    Its fusion-mode mel (``get_mel``, torchaudio) and ``torchvision`` resize only feed
    ``mel_fusion``, which the unfused HTS-AT ignores; stand-ins give the right shapes. Every
    crop offset it draws with ``np.random.randint`` is appended to ``record``."""
    src = (_original_root() / "clap" / "training" / "data.py").read_text()
    fn = next(n for n in ast.parse(src).body if isinstance(n, ast.FunctionDef) and n.name == "get_audio_features")

    def randint(lo, hi):
        v = int(np.random.randint(lo, hi))
        record.append(v)
        return v

    resize = lambda size: (lambda x: x[:, :size[0], :size[1]])  # noqa: E731
    ns = {"np": types.SimpleNamespace(random=types.SimpleNamespace(randint=randint, choice=np.random.choice),
                                      array_split=np.array_split),
          "torch": torch, "F": F,
          "get_mel": lambda audio, cfg: torch.zeros(len(audio) // cfg["hop_size"] + 1, 64),
          "torchvision": types.SimpleNamespace(transforms=types.SimpleNamespace(Resize=resize))}
    exec(compile(ast.Module(body=[fn], type_ignores=[]), "data.py", "exec"), ns)
    return ns["get_audio_features"]


AUDIO_CFG = dict(audio_length=1024, clip_samples=480000, mel_bins=64, sample_rate=48000, window_size=1024,
                 hop_size=480, fmin=50, fmax=14000, class_num=527, model_type="HTSAT", model_name="tiny")


class OriginalClapAudio(torch.nn.Module):
    """The audio half of open_clip's ``CLAP``: ``audio_branch`` (HTSAT_Swin_Transformer, as
    ``create_htsat_model`` builds it) and ``audio_projection``; embeddings via the original
    ``CLAP.get_audio_embedding`` / ``encode_audio`` called on this object."""

    def __init__(self, size: str):
        super().__init__()
        htsat, model = original_htsat_module()
        emb, depths, heads = SIZES[size]
        cfg = types.SimpleNamespace(**AUDIO_CFG)
        self.audio_branch = htsat.HTSAT_Swin_Transformer(
            spec_size=256, patch_size=4, patch_stride=(4, 4), num_classes=527, embed_dim=emb, depths=list(depths),
            num_heads=list(heads), window_size=8, config=cfg, enable_fusion=False, fusion_type="None")
        self.audio_projection = torch.nn.Sequential(torch.nn.Linear(emb * 8, 512), torch.nn.ReLU(),
                                                    torch.nn.Linear(512, 512))
        self._clap = model.CLAP

    def encode_audio(self, audio, device):
        return self._clap.encode_audio(self, audio, device)

    @torch.no_grad()
    def embed(self, batch: torch.Tensor, resample_fn, get_audio_features) -> tuple[torch.Tensor, torch.Tensor]:
        """``CLAPAudioEmbeddingClassifierFreev2.forward`` with ``embed_mode="audio"``: batch (B, n)
        16 kHz -> ((B, 512) ``get_audio_embedding`` output, (B, 512) the same before its L2 norm)."""
        batch = resample_fn(batch, orig_freq=16000, new_freq=48000)
        dicts = [get_audio_features({}, w, 480000, data_truncating="fusion", data_filling="repeatpad",
                                    audio_cfg=AUDIO_CFG) for w in batch]
        unit = self._clap.get_audio_embedding(self, dicts)
        joined = {k: torch.cat([d[k].unsqueeze(0) for d in dicts]) for k in dicts[0]}  # as get_audio_embedding
        raw = self.audio_projection(self.encode_audio(joined, device="cpu")["embedding"])
        return unit, raw


def _converted(orig: OriginalClapAudio) -> HTSAT:
    state = {k: v for k, v in orig.state_dict().items()}
    cfg, ours = conv.from_original(state)
    model = HTSAT(cfg).eval()
    model.load_state_dict(ours, strict=True)
    return model


@pytest.mark.parametrize("size, seconds", [("test", 3.0), ("test", 10.0), ("test", 10.24), ("htsat-tiny", 10.24)])
def test_waveform_embedding_matches_original(size, seconds):
    resample_fn = torchaudio_resample()
    offsets: list[int] = []
    features = original_get_audio_features(offsets)
    torch.manual_seed(0)
    orig = OriginalClapAudio(size).eval()
    _jitter(orig, 3)
    ours = _converted(orig)
    n = int(round(seconds * 16000))
    g = torch.Generator().manual_seed(4)
    wave = torch.randn(2, n, generator=g) * 0.1 + 0.3 * torch.sin(torch.arange(n) / 16000 * 2 * math.pi * 440)
    np.random.seed(5)
    want, want_raw = orig.embed(wave.clone(), resample_fn, features)
    # the original crops > 10 s at a random offset; ours takes it as an argument
    assert len(offsets) == (2 if n * 3 > CLAP_SAMPLES else 0), offsets
    mel = torch.cat([clap_mel(w, offset=offsets[i] if offsets else 0) for i, w in enumerate(wave)])
    with torch.no_grad():
        got, got_raw = ours(mel), ours.audio_projection(ours.features(mel))
        ours.audio_projection.linear2.weight.mul_(1.01)
        _, moved = _rel(ours.audio_projection(ours.features(mel)), want_raw)
    err, rel = _rel(got, want)
    assert rel <= TOL, f"{size}, {seconds} s: embedding max abs error {err:.3g}, relative {rel:.3g} > {TOL}"
    err, rel = _rel(got_raw, want_raw)
    assert rel <= TOL, f"{size}, {seconds} s: before L2 norm: max abs error {err:.3g}, relative {rel:.3g} > {TOL}"
    assert moved >= 100 * TOL, f"a 1.01-scaled linear2 moved the projection only {moved:.3g} (relative)"


def test_log_mel_matches_torchlibrosa():
    """The log-mel alone vs the original HTS-AT's own torchlibrosa extractors."""
    orig = OriginalClapAudio("test")
    x = torch.randn(2, CLAP_SAMPLES, generator=torch.Generator().manual_seed(6)) * 0.3
    with torch.no_grad():
        want = orig.audio_branch.logmel_extractor(orig.audio_branch.spectrogram_extractor(x))[:, 0]
    got = log_mel_48k(x)
    err = (got - want).abs().max().item()
    assert err <= 1e-4, f"log-mel (dB, |values| up to {want.abs().max().item():.1f}): max abs error {err:.3g}"


# --- standalone CLAP audio file -------------------------------------------------------------------

def test_clap_file_round_trip_from_transformers_folder(tmp_path):
    """A transformers ClapModel folder (text half included) -> our CLAP audio file -> the same
    embedding; a damaged file is refused by its checksum."""
    import transformers  # the test extra; a missing one fails, never skips
    from audioldm_core.clap_file import load_clap_audio
    emb, depths, heads = SIZES["test"]
    cfg = transformers.ClapConfig(
        text_config=dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=37,
                         vocab_size=100),
        audio_config=dict(patch_embeds_hidden_size=emb, depths=list(depths), num_attention_heads=list(heads),
                          hidden_size=emb * 8))
    torch.manual_seed(0)
    ref = transformers.ClapModel(cfg).eval()
    _jitter(ref, 7)
    ref.save_pretrained(tmp_path / "clap")
    from convert.clap_source import convert_clap_source
    out, c = convert_clap_source(str(tmp_path / "clap"), tmp_path / "clap_audio.safetensors")
    model = load_clap_audio(out)
    mel = torch.randn(1, 1001, 64, generator=torch.Generator().manual_seed(8)) * 10 - 30
    with torch.no_grad():
        want = F.normalize(ref.audio_projection(ref.audio_model(input_features=mel[:, None]).pooler_output), dim=-1)
        err, rel = _rel(model(mel), want)
    assert rel <= TOL, f"converted file: max abs error {err:.3g}, relative {rel:.3g}"
    data = bytearray(out.read_bytes())
    data[-5] ^= 0xFF
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="checksum"):
        load_clap_audio(bad)
