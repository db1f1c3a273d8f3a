"""Original AudioLDM ``.ckpt`` converter: ours vs the original model classes, component by component.

The reference is the original code itself (the ``audioldm`` 0.1.1 package, installed without its
dependencies into ``.venv/audioldm-original``): a real ``LatentDiffusion`` (openaimodel UNet with
FiLM conditioning, LitEma, first-stage AutoencoderKL with its HiFi-GAN) with random weights, saved
as the release did (a Lightning dict with ``state_dict``, EMA weights under ``model_ema.*``). Only
its CLAP conditioner is a stand-in: the real one downloads roberta-base; the stand-in holds the same
sub-modules under the same names (``model.text_branch`` = transformers ``RobertaModel``,
``model.text_projection`` = Linear-ReLU-Linear, ``model.audio_branch`` = the original
``HTSAT_Swin_Transformer`` at a small test size, ``model.audio_projection``) and the text path is
``open_clip/model.py CLAP.encode_text`` for roberta: pooler output -> text_projection -> normalise.
"""

from __future__ import annotations

import gc
import importlib
import math
import os
import sys
import types
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from audioldm_core.checkpoint import empty_component, load_state_strict
from audioldm_core.errors import CheckpointError, InputError
from conftest import rel_err, require
from convert.original import convert_original, read_lightning_checkpoint
from reference import perturb_, rescale_hifigan_, write_tokenizer_files

TOL = 1e-5


# --- importing the original package ---------------------------------------------------------------

def _einops_shim() -> types.ModuleType:
    """The two einops patterns the original UNet/VAE forward uses (einops is not in our test env)."""
    mod = types.ModuleType("einops")

    def rearrange(x, pattern, **axes):
        if pattern == "b c h w -> b (h w) c":
            b, c, h, w = x.shape
            return x.reshape(b, c, h * w).transpose(1, 2)
        if pattern == "b (h w) c -> b c h w":
            b, _, c = x.shape
            return x.transpose(1, 2).reshape(b, c, axes["h"], axes["w"])
        raise NotImplementedError(f"einops shim: {pattern}")

    def repeat(x, pattern, **axes):
        raise NotImplementedError(f"einops shim: {pattern}")

    mod.rearrange, mod.repeat = rearrange, repeat
    return mod


def original_package():
    """``audioldm.ldm`` imported without the package ``__init__`` (which needs torchaudio, yaml, ...)."""
    target = Path(sys.prefix) / "audioldm-original" / "audioldm"
    spec = importlib.util.find_spec("audioldm") if "audioldm" not in sys.modules else None
    root = target if target.is_dir() else Path(spec.submodule_search_locations[0]) if spec else None
    if root is None:
        require("original", "the original audioldm package is not installed in .venv/audioldm-original")
    if "audioldm" not in sys.modules or not hasattr(sys.modules["audioldm"], "__path__"):
        pkg = types.ModuleType("audioldm")
        pkg.__path__ = [str(root)]
        sys.modules["audioldm"] = pkg
    for name, factory in (("einops", _einops_shim), ("progressbar", lambda: types.ModuleType("progressbar"))):
        try:
            importlib.import_module(name)
        except ImportError:
            sys.modules[name] = factory()
    return importlib.import_module("audioldm.ldm")


class _MLP(nn.Module):
    """open_clip MLPLayers: ``sequential`` = Linear, ReLU, Dropout, Linear (names as saved)."""

    def __init__(self, d: int):
        super().__init__()
        self.sequential = nn.Sequential(nn.Linear(d, d), nn.ReLU(), nn.Dropout(0.1), nn.Linear(d, d))


class FakeClapConditioner(nn.Module):
    """Stand-in for clap/encoders.CLAPAudioEmbeddingClassifierFreev2 with the same state-dict names."""

    def __init__(self, hidden=768, layers=12, heads=12, intermediate=3072, vocab=50265, **_ignored):
        super().__init__()
        from transformers import RobertaConfig, RobertaModel

        m = nn.Module()
        # roberta-base's config (what RobertaModel.from_pretrained("roberta-base") builds)
        m.text_branch = RobertaModel(RobertaConfig(vocab_size=vocab, hidden_size=hidden, num_hidden_layers=layers,
                                                   num_attention_heads=heads, intermediate_size=intermediate,
                                                   max_position_embeddings=514, type_vocab_size=1, pad_token_id=1,
                                                   layer_norm_eps=1e-5))
        m.text_transform = _MLP(512)
        m.text_projection = nn.Sequential(nn.Linear(hidden, 512), nn.ReLU(), nn.Linear(512, 512))
        from test_clap_audio import OriginalClapAudio  # the original HTS-AT at a test size (64-wide)

        audio = OriginalClapAudio("test")
        m.audio_branch, m.audio_projection = audio.audio_branch, audio.audio_projection
        m.audio_transform = _MLP(512)
        m.logit_scale_a = nn.Parameter(torch.tensor(math.log(1 / 0.07)))
        m.logit_scale_t = nn.Parameter(torch.tensor(math.log(1 / 0.07)))
        self.model = m

    @torch.no_grad()
    def text_embedding(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """open_clip/model.py CLAP.encode_text (roberta) + get_text_embedding's normalisation."""
        x = self.model.text_branch(input_ids=ids, attention_mask=mask)["pooler_output"]
        return nn.functional.normalize(self.model.text_projection(x), dim=-1)


_fake = types.ModuleType("_audioldm_fake_cond")
_fake.FakeClapConditioner = FakeClapConditioner
sys.modules["_audioldm_fake_cond"] = _fake

# Sizes: "tiny" for the fast tests; "s-full" is the original default_audioldm_config("audioldm-s-full").
SIZES = {
    "tiny": dict(unet=dict(model_channels=64, channel_mult=[1, 2], attention_resolutions=[2], num_head_channels=32),
                 vae=dict(ch=32, ch_mult=[1, 2]), clap=dict(hidden=128, layers=2, heads=2, intermediate=256, vocab=1000)),
    "s-full": dict(unet={}, vae={}, clap={}),
}


def build_original(size: str, seed: int = 0):
    """A random-weight original LatentDiffusion at ``size`` (eval, CPU), EMA weights distinct from the
    model's, every all-zero/all-one tensor perturbed, HiFi-GAN rescaled to a realistic output level."""
    ldm = original_package()
    from audioldm.utils import default_audioldm_config

    params = default_audioldm_config("audioldm-s-full")["model"]["params"]
    params["device"] = "cpu"
    params["unet_config"]["params"].update(SIZES[size]["unet"])
    params["first_stage_config"]["params"]["ddconfig"].update(SIZES[size]["vae"])
    params["cond_stage_config"] = {"target": "_audioldm_fake_cond.FakeClapConditioner",
                                   "params": SIZES[size]["clap"]}
    torch.manual_seed(seed)
    model = ldm.LatentDiffusion(**params)
    rescale_hifigan_(model.first_stage_model.vocoder, seed + 1)
    perturb_(model, seed + 2)
    g = torch.Generator().manual_seed(seed + 3)
    with torch.no_grad():  # EMA = model + noise, so a converter taking the wrong copy fails
        for name, p in model.model.named_parameters():
            ema = getattr(model.model_ema, model.model_ema.m_name2s_name[name])
            ema.copy_(p + 0.02 * torch.randn(p.shape, generator=g))
    return model.eval().requires_grad_(False)


def save_release_ckpt(model, path: Path, extra=None) -> Path:
    """torch.save a Lightning-style checkpoint as the release files are."""
    ckpt = {"epoch": 3, "global_step": 123456, "pytorch-lightning_version": "1.7.7",
            "state_dict": model.state_dict(), "optimizer_states": [], "lr_schedulers": [],
            "callbacks": {"ModelCheckpoint{'monitor': 'val/loss', 'mode': 'min'}": {"best_model_score": torch.tensor(0.1)}}}
    # transformers < 4.31 (the release's) saved RoBERTa's position_ids buffer
    ckpt["state_dict"]["cond_stage_model.model.text_branch.embeddings.position_ids"] = torch.arange(514)[None]
    ckpt.update(extra or {})
    torch.save(ckpt, path)
    return path


def use_ema(model) -> None:
    """What the original's ema_scope does (LitEma.copy_to, which needs requires_grad): EMA -> model."""
    with torch.no_grad():
        for name, p in model.model.named_parameters():
            p.copy_(getattr(model.model_ema, model.model_ema.m_name2s_name[name]))


def _ours(conv, comp):
    return load_state_strict(empty_component(comp, conv.config), conv.tensors[comp], comp)


def compare_all(model, conv, label: str, frames: int = 32) -> dict[str, tuple[float, float]]:
    """UNet (FiLM), VAE decode, vocoder and CLAP text embedding: ours vs the original modules."""
    g = torch.Generator().manual_seed(7)
    errs = {}
    # the original samples inside ema_scope: the EMA weights are the model
    use_ema(model)
    with torch.no_grad():
        cfg = conv.config
        ids = torch.randint(3, min(cfg.clap.vocab_size, 1000), (2, 512), generator=g)
        ids[:, 0], mask = 0, torch.ones_like(ids)
        for i, n in enumerate((9, 40)):  # </s> then padding, as RobertaTokenizer pads to 512
            ids[i, n], ids[i, n + 1:], mask[i, n + 1:] = 2, 1, 0
        ref = model.cond_stage_model.text_embedding(ids, mask)
        ours = nn.functional.normalize(_ours(conv, "clap")(ids, mask), dim=-1)
        errs["clap"] = rel_err(ours, ref)

        x = torch.randn(2, 8, frames, 16, generator=g)
        t = torch.tensor([10, 980])
        emb = nn.functional.normalize(torch.randn(2, 512, generator=g), dim=-1)
        ref = model.model.diffusion_model(x, timesteps=t, y=emb)
        errs["unet"] = rel_err(_ours(conv, "unet")(x, t, emb), ref)
        # and through the DiffusionWrapper's FiLM path, as apply_model calls it
        ref_w = model.model(x, t, c_film=[emb[:, None]])
        errs["unet (wrapper)"] = rel_err(_ours(conv, "unet")(x, t, emb), ref_w)

        z = torch.randn(1, 8, frames // 2, 16, generator=g)
        errs["vae decode"] = rel_err(_ours(conv, "vae").decode(z), model.first_stage_model.decode(z))

        mel = torch.randn(2, 64, 48, generator=g) * 2 - 4
        errs["vocoder"] = rel_err(_ours(conv, "vocoder")(mel.transpose(1, 2)),
                                  model.first_stage_model.vocoder(mel)[:, 0])
    for k, (a, r) in errs.items():
        print(f"\n{label} {k}: max abs {a:.2e}, rel {r:.2e}")
    return errs


def tiny_release(root: Path):
    """The original's tiny model, its release ``.ckpt`` and a tokenizer folder under ``root``:
    (model, ckpt path, tokenizer folder)."""
    model = build_original("tiny")
    ckpt = save_release_ckpt(model, root / "audioldm-tiny.ckpt")
    write_tokenizer_files(root / "tok")
    return model, ckpt, root / "tok"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return tiny_release(tmp_path_factory.mktemp("original"))


def test_tiny_parity(tiny):
    model, ckpt, tok = tiny
    conv = convert_original(ckpt, tokenizer_dir=tok)
    assert conv.config.unet.num_heads == (2, 4)  # channels / 32, the original's head count
    assert conv.config.vae.scaling_factor == pytest.approx(float(model.scale_factor))
    assert conv.config.clap.layer_norm_eps == 1e-5
    assert conv.source["ema"] is True and conv.source["kind"] == "original"
    errs = compare_all(model, conv, "tiny")
    bad = {k: v for k, v in errs.items() if v[1] > TOL}
    assert not bad, f"relative error above {TOL}: {bad}"


def test_ema_weights_are_taken(tiny):
    model, ckpt, tok = tiny
    state = torch.load(ckpt, weights_only=True)["state_dict"]
    key = "input_blocks.1.0.in_layers.2.weight"
    ema = state["model_ema.diffusion_model" + key.replace(".", "")]
    raw = state["model.diffusion_model." + key]
    conv = convert_original(ckpt, tokenizer_dir=tok, hash_files=False)
    got = conv.tensors["unet"]["down_blocks.0.resnets.0.conv1.weight"]
    assert torch.equal(got, ema) and not torch.equal(got, raw)
    conv = convert_original(ckpt, tokenizer_dir=tok, use_ema=False, hash_files=False)
    assert torch.equal(conv.tensors["unet"]["down_blocks.0.resnets.0.conv1.weight"], raw)
    assert conv.source["ema"] is False


def test_diffusers_compat_config(tiny):
    """compat="diffusers" gives the config diffusers' conversion gives: 8 heads, eps 1e-12. With the
    same weights the UNet output then differs from the original's (the head-count difference)."""
    model, ckpt, tok = tiny
    conv = convert_original(ckpt, tokenizer_dir=tok, compat="diffusers", hash_files=False)
    assert conv.config.unet.num_heads == (8, 8) and conv.config.clap.layer_norm_eps == 1e-12
    use_ema(model)
    g = torch.Generator().manual_seed(1)
    x, emb = torch.randn(1, 8, 16, 16, generator=g), torch.randn(1, 512, generator=g)
    with torch.no_grad():
        _, rel = rel_err(_ours(conv, "unet")(x, 500, emb), model.model.diffusion_model(x, torch.tensor([500]), y=emb))
    print(f"\n8 heads instead of the original's 2/4: rel difference {rel:.2e}")
    assert rel > 1e-3


def test_tokenizer_is_required(tiny):
    _, ckpt, _ = tiny
    with pytest.raises(InputError, match="--tokenizer"):
        convert_original(ckpt)


def test_tokenizer_from_cvssp_folder_layout(tiny, tmp_path):
    _, ckpt, tok = tiny
    write_tokenizer_files(tmp_path / "repo" / "tokenizer")
    a = convert_original(ckpt, tokenizer_dir=tok, hash_files=False).tokenizer
    b = convert_original(ckpt, tokenizer_dir=tmp_path / "repo", hash_files=False).tokenizer
    assert a == b and len(a["vocab"]) > 100


def test_model_name_checked(tiny):
    _, ckpt, tok = tiny
    with pytest.raises(CheckpointError, match="base channels"):
        convert_original(ckpt, tokenizer_dir=tok, model_name="s-full")  # tiny has 64, s-full 128
    with pytest.raises(InputError, match="unknown original model name"):
        convert_original(ckpt, tokenizer_dir=tok, model_name="xl-full")


def test_unknown_and_missing_keys_are_named(tiny, tmp_path):
    model, _, tok = tiny
    bad = save_release_ckpt(model, tmp_path / "extra.ckpt")
    ck = torch.load(bad, weights_only=True)
    ck["state_dict"]["some_new_head.weight"] = torch.zeros(3)
    torch.save(ck, bad)
    with pytest.raises(CheckpointError, match="some_new_head.weight"):
        convert_original(bad, tokenizer_dir=tok, hash_files=False)
    del ck["state_dict"]["some_new_head.weight"]
    del ck["state_dict"]["first_stage_model.decoder.up.0.block.1.conv2.bias"]
    torch.save(ck, bad)
    with pytest.raises(CheckpointError, match=r"decoder\.up_blocks\.1\.resnets\.1\.conv2\.bias"):
        convert_original(bad, tokenizer_dir=tok, hash_files=False)


def test_partial_ema_is_refused(tiny, tmp_path):
    model, _, tok = tiny
    path = save_release_ckpt(model, tmp_path / "ema.ckpt")
    ck = torch.load(path, weights_only=True)
    del ck["state_dict"]["model_ema.diffusion_modelout2weight"]
    torch.save(ck, path)
    with pytest.raises(CheckpointError, match="without EMA"):
        convert_original(path, tokenizer_dir=tok, hash_files=False)


class _FakeWrapper:
    """Pickled under an OmegaConf name, as a Lightning checkpoint's hyper_parameters can be."""

    def __init__(self, content):
        self.content = content


def test_lightning_wrapper_types_are_admitted_inertly(tiny, tmp_path, monkeypatch):
    model, _, tok = tiny
    fake_mod = types.ModuleType("omegaconf.dictconfig")
    _FakeWrapper.__module__, _FakeWrapper.__qualname__ = "omegaconf.dictconfig", "DictConfig"
    fake_mod.DictConfig = _FakeWrapper
    parent = types.ModuleType("omegaconf")
    parent.__path__, parent.dictconfig = [], fake_mod
    monkeypatch.setitem(sys.modules, "omegaconf", parent)
    monkeypatch.setitem(sys.modules, "omegaconf.dictconfig", fake_mod)
    path = save_release_ckpt(model, tmp_path / "hp.ckpt", {"hyper_parameters": _FakeWrapper({"lr": 1e-4})})
    monkeypatch.delitem(sys.modules, "omegaconf.dictconfig")
    monkeypatch.delitem(sys.modules, "omegaconf")
    with pytest.raises(Exception):
        torch.load(path, weights_only=True)  # plain weights_only refuses it ...
    state = read_lightning_checkpoint(path)  # ... we admit it as an inert stand-in
    assert "model.diffusion_model.out.2.weight" in state


class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


def test_arbitrary_code_is_refused(tiny, tmp_path):
    model, _, tok = tiny
    marker = tmp_path / "pwned"
    path = save_release_ckpt(model, tmp_path / "evil.ckpt", {"hyper_parameters": _Evil(str(marker))})
    with pytest.raises(CheckpointError, match="mkdir"):
        convert_original(path, tokenizer_dir=tok, hash_files=False)
    assert not marker.exists()


def test_plain_state_dict_and_garbage(tiny, tmp_path):
    model, _, tok = tiny
    flat = tmp_path / "flat.ckpt"
    sd = model.state_dict()
    torch.save(sd, flat)
    assert convert_original(flat, tokenizer_dir=tok, hash_files=False).stats["unet"]["tensors"] > 0
    junk = tmp_path / "junk.ckpt"
    junk.write_bytes(b"not a checkpoint at all")
    with pytest.raises(CheckpointError, match="could not be read"):
        convert_original(junk, tokenizer_dir=tok)


def test_converted_saves_and_loads(tiny, tmp_path):
    from audioldm_core.checkpoint import save_checkpoint

    _, ckpt, tok = tiny
    conv = convert_original(ckpt, tokenizer_dir=tok)
    out = tmp_path / "ours.safetensors"
    save_checkpoint(out, conv.tensors, conv.config, conv.tokenizer, conv.source, extra_metadata=conv.extra_metadata)
    assert out.stat().st_size > 0


def test_clap_audio_kept_and_dropped(tiny, tmp_path):
    """The audio tower of the .ckpt becomes the optional ``clap_audio`` component: its embedding
    equals the original audio branch + projection (get_audio_embedding) on the same mel;
    ``clap_audio=False`` (CLI --no-clap-audio) drops it; verify() checks its checksum."""
    from audioldm_core.checkpoint import verify
    from audioldm_core.clap_file import has_clap_audio, load_clap_audio
    from convert.core import convert_to_file

    model, ckpt, tok = tiny
    out = tmp_path / "with.safetensors"
    convert_to_file(str(ckpt), out, tokenizer=str(tok))
    assert has_clap_audio(out) and verify(out) == []
    from audioldm_core.pipeline import AudioLDM

    pipe = AudioLDM.from_pretrained(out)  # the file's own tower: attached, not read until used
    assert pipe.clap_audio_source == "checkpoint" and pipe._clap_audio is None
    ours = load_clap_audio(out)
    clap = model.cond_stage_model.model
    wave = torch.randn(1, 480000, generator=torch.Generator().manual_seed(1)) * 0.3
    with torch.no_grad():
        want = F.normalize(clap.audio_projection(clap.audio_branch({"waveform": wave}, device="cpu")["embedding"]),
                           dim=-1)
        from audioldm_core.clap_frontend import log_mel_48k
        got = ours(log_mel_48k(wave))
    err = (got - want).abs().max().item()
    assert err <= 1e-5, f"clap_audio from the .ckpt: max abs error {err:.3g} vs the original audio branch"
    without = tmp_path / "without.safetensors"
    convert_to_file(str(ckpt), without, tokenizer=str(tok), clap_audio=False)
    assert not has_clap_audio(without) and verify(without) == []


@pytest.mark.fullsize
def test_s_full_parity(tmp_path):
    """The s-full configuration of the original code (2.4 GB checkpoint with EMA) end to end."""
    model = build_original("s-full")
    ckpt = save_release_ckpt(model, tmp_path / "audioldm-s-full.ckpt")
    write_tokenizer_files(tmp_path / "tok")
    conv = convert_original(ckpt, tokenizer_dir=tmp_path / "tok")
    assert conv.config.name == "s-full"
    assert conv.config.unet.block_channels == (128, 256, 384, 640)
    assert conv.config.unet.num_heads == (4, 8, 12, 20)
    assert conv.config.clap.num_layers == 12 and conv.config.clap.num_heads == 12
    errs = compare_all(model, conv, "s-full")
    del model, conv
    gc.collect()
    bad = {k: v for k, v in errs.items() if v[1] > TOL}
    assert not bad, f"relative error above {TOL}: {bad}"


# Real sizes on the meta device (shapes only, no memory): every release name's original model maps
# onto ours, the config derived from its shapes is what diffusers' conversion gave the cvssp repos
# (compat="diffusers"), and the original's head counts otherwise.
_CVSSP_OF = {"s-full": "s-full", "s-full-v2": "s-full-v2", "m-full": "m-full", "l-full": "l-full",
             "s-text-ft": "s-full", "m-text-ft": "m-full"}


@pytest.mark.parametrize("name", list(_CVSSP_OF))
def test_release_sizes_map_on_meta(name, monkeypatch):
    from audioldm_core.config import builtin_config
    from convert.original import convert_state

    original_package()
    from audioldm.utils import default_audioldm_config, instantiate_from_config

    from convert.tables.original import ema_key

    params = default_audioldm_config(f"audioldm-{name}")["model"]["params"]
    ae, hifigan = importlib.import_module("audioldm.variational_autoencoder.autoencoder"), importlib.import_module(
        "audioldm.hifigan.utilities")

    def meta_vocoder(config, device):  # hifigan/utilities.get_vocoder without its .to(device)
        voc = hifigan.hifigan.Generator(hifigan.hifigan.AttrDict(hifigan.HIFIGAN_16K_64))
        voc.remove_weight_norm()
        return voc

    monkeypatch.setattr(ae, "get_vocoder", meta_vocoder)
    with torch.device("meta"):  # the LatentDiffusion's parts (its own __init__ computes on the schedule)
        unet = instantiate_from_config(params["unet_config"]).state_dict()
        vae = instantiate_from_config(params["first_stage_config"]).state_dict()
    clap = FakeClapConditioner().state_dict()  # small; torchlibrosa's STFT cannot be built on meta
    state = {"model.diffusion_model." + k: v for k, v in unet.items()}
    state |= {ema_key(k): v for k, v in unet.items()}
    state |= {"first_stage_model." + k: v for k, v in vae.items()}
    state |= {"cond_stage_model." + k: v for k, v in clap.items()}
    state["betas"] = torch.linspace(0.0015 ** 0.5, 0.0195 ** 0.5, 1000, dtype=torch.float64).float() ** 2
    state["scale_factor"] = torch.tensor(0.5)
    want = builtin_config(_CVSSP_OF[name])
    cfg, tensors, ema = convert_state(state, file_name=f"audioldm-{name}.ckpt", compat="diffusers")
    assert ema and cfg.name == name and cfg.vae.scaling_factor == 0.5
    assert (cfg.unet, cfg.clap, cfg.vocoder, cfg.schedule) == (want.unet, want.clap, want.vocoder, want.schedule)
    assert {k: v for k, v in cfg.vae.__dict__.items() if k != "scaling_factor"} == \
        {k: v for k, v in want.vae.__dict__.items() if k != "scaling_factor"}
    assert {c: len(t) for c, t in tensors.items()} == {c: len(empty_component(c, want).state_dict()) for c in tensors}
    cfg, _, _ = convert_state(state, file_name=f"audioldm-{name}.ckpt")
    head = 64 if name.startswith("l-") else 32
    assert cfg.unet.num_heads == tuple(c // head for c in want.unet.block_channels)
    assert cfg.clap.layer_norm_eps == 1e-5
    print(f"\n{name}: original heads {cfg.unet.num_heads}, diffusers {want.unet.num_heads}")


def test_weight_normed_vocoder(tiny, tmp_path):
    """A checkpoint saved before hifigan's remove_weight_norm (weight_g/weight_v) converts to the
    vocoder that remove_weight_norm gives."""
    model, _, tok = tiny
    hifigan = importlib.import_module("audioldm.hifigan")
    from audioldm.hifigan.utilities import HIFIGAN_16K_64

    torch.manual_seed(3)
    voc = hifigan.Generator(hifigan.AttrDict(HIFIGAN_16K_64)).eval()
    normed = {k: v.clone() for k, v in voc.state_dict().items()}
    assert any(k.endswith("weight_g") for k in normed)
    voc.remove_weight_norm()
    path = save_release_ckpt(model, tmp_path / "wn.ckpt")
    ck = torch.load(path, weights_only=True)
    sd = {k: v for k, v in ck["state_dict"].items() if not k.startswith("first_stage_model.vocoder.")}
    ck["state_dict"] = sd | {"first_stage_model.vocoder." + k: v for k, v in normed.items()}
    torch.save(ck, path)
    conv = convert_original(path, tokenizer_dir=tok, hash_files=False)
    mel = torch.randn(1, 64, 20, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        err, rel = rel_err(_ours(conv, "vocoder")(mel.transpose(1, 2)), voc(mel)[:, 0])
    print(f"\nweight-normed vocoder: max abs {err:.2e}, rel {rel:.2e}")
    assert rel <= TOL


# --- through audioldm-convert --------------------------------------------------------------------

def test_cli_converts_a_ckpt(tiny, tmp_path, capsys):
    """``audioldm-convert x.ckpt out --tokenizer DIR`` writes our format; the loaded UNet is the original's."""
    from audioldm_core.checkpoint import load_component, read_info
    from convert.cli import main as convert_main

    model, ckpt, tok = tiny
    out = tmp_path / "orig.safetensors"
    assert convert_main([str(ckpt), str(out), "--tokenizer", str(tok), "--quiet"]) == 0
    info = read_info(out)
    assert info.source["kind"] == "original" and info.source["compat"] == "original" and info.source["ema"]
    assert info.config.unet.num_heads == (2, 4) and info.config.clap.layer_norm_eps == 1e-5
    use_ema(model)
    g = torch.Generator().manual_seed(2)
    x, emb = torch.randn(1, 8, 16, 16, generator=g), nn.functional.normalize(torch.randn(1, 512, generator=g), dim=-1)
    with torch.no_grad():
        _, rel = rel_err(load_component(out, "unet")(x, torch.tensor([300]), emb),
                         model.model.diffusion_model(x, torch.tensor([300]), y=emb))
    assert rel <= TOL

    out2 = tmp_path / "diffusers.safetensors"
    assert convert_main([str(ckpt), str(out2), "--tokenizer", str(tok), "--compat", "diffusers", "--no-ema",
                         "--model-name", "audioldm-tiny", "--quiet"]) == 2  # unknown name
    assert "unknown original model name" in capsys.readouterr().err
    assert convert_main([str(ckpt), str(out2), "--tokenizer", str(tok), "--compat", "diffusers", "--no-ema",
                         "--quiet"]) == 0
    info = read_info(out2)
    assert info.config.unet.num_heads == (8, 8) and info.config.clap.layer_norm_eps == 1e-12
    assert info.source["compat"] == "diffusers" and info.source["ema"] is False


def test_cli_ckpt_option_errors(tiny, tmp_path, capsys):
    from convert.cli import main as convert_main

    _, ckpt, tok = tiny
    out = tmp_path / "x.safetensors"
    assert convert_main([str(ckpt), str(out), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--tokenizer" in err and "no tokenizer" in err
    assert convert_main([str(ckpt), str(out), "--tokenizer", str(tok), "--variant", "fp16", "--quiet"]) == 2
    assert "--variant apply to Hub repos and cvssp folders" in capsys.readouterr().err
    assert convert_main([str(ckpt), str(out), "--tokenizer", str(tmp_path / "nowhere"), "--quiet"]) == 2
    assert "neither a folder nor a Hub repo id" in capsys.readouterr().err
    assert not out.exists()


def test_tokenizer_from_hub_cache(tiny, tmp_path, monkeypatch):
    """``--tokenizer cvssp/...`` fetches only the repo's tokenizer/ (here from an offline cache)."""
    import huggingface_hub.constants as hc

    _, ckpt, tok = tiny
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "hub" / "models--cvssp--audioldm-tok"
    write_tokenizer_files(repo / "snapshots" / commit / "tokenizer")
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    monkeypatch.setattr(hc, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(hc, "HF_HUB_OFFLINE", True)
    a = convert_original(ckpt, tokenizer_dir="cvssp/audioldm-tok", hash_files=False).tokenizer
    assert a == convert_original(ckpt, tokenizer_dir=tok, hash_files=False).tokenizer
    with pytest.raises(Exception, match="HF_HUB_OFFLINE"):
        convert_original(ckpt, tokenizer_dir="cvssp/not-cached", hash_files=False)
