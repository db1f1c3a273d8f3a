"""Reference fixtures: random-weight diffusers/transformers AudioLDM components in the cvssp layout.

Nothing here is shipped: it needs the ``test`` extra (diffusers, transformers). A folder written by
:func:`write_cvssp_folder` has exactly the layout of the ``cvssp/audioldm*`` Hub repos
(``model_index.json``, ``scheduler/``, ``text_encoder/``, ``tokenizer/``, ``unet/``, ``vae/``,
``vocoder/``), with the real repos' ``config.json`` files (``convert/cvssp_configs/``) and seeded
random weights, so diffusers' ``AudioLDMPipeline.from_pretrained(folder)`` loads it as it would the
real repo.

Random init is made informative: every all-zero bias/buffer and every all-one norm scale is perturbed
(an implementation that drops a bias or a norm affine cannot match by accident), and the HiFi-GAN
convolutions are rescaled by fan-in (the library init gives waveforms near 1e-6).
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path
from typing import Optional

import torch

from convert.cvssp import BUILTIN_SOURCES, read_json, shipped_config_dir

REPO_ROOT = Path(__file__).resolve().parent.parent

# A small local corpus for the test tokenizer: prompt-like sentences, punctuation and unicode.
_CORPUS_WORDS = (
    "a dog barks in the distance while rain falls on a tin roof . birds chirp at dawn near a quiet "
    "river ; a car engine starts , then accelerates down the highway ! thunder rumbles over the city "
    "and people talk in a busy cafe ? an orchestra plays a slow waltz with violins and cello . "
    "footsteps on wooden stairs , a door creaks open , wind howls through the trees . a man speaks "
    "loudly into a microphone ; children laugh and play in a park . the ocean waves crash on the "
    "shore , seagulls cry overhead . a piano melody with soft drums and a bass line . electronic "
    "music with heavy synthesizer and a fast beat . a cat meows , a baby cries , glass breaks . "
    "water drips from a faucet into a metal sink . a train horn blows as it passes a crossing ."
)
_CORPUS_EXTRA = ["Café naïve über façade", "日本語のテキスト", "emoji 🎵🔊🐶", "tabs\tand\nnewlines",
                 "UPPER lower MiXeD 0123456789", "“quotes” — dashes – and … ellipses", "<s> </s> <pad>"]


def tokenizer_corpus() -> list[str]:
    """The deterministic local text the test tokenizer is trained on."""
    sentences = [s.strip() for s in _CORPUS_WORDS.split(" . ") if s.strip()]
    return sentences * 3 + [s.capitalize() for s in sentences] + _CORPUS_EXTRA


def write_tokenizer_files(folder: Path, vocab_size: int = 1000) -> None:
    """Train a RoBERTa-format byte-level BPE on the local corpus and write ``vocab.json`` +
    ``merges.txt`` (+ the real repos' tokenizer configs) into ``folder``.

    Special tokens as RoBERTa has them: ``<s> <pad> </s> <unk>`` at ids 0-3 and ``<mask>`` last.
    """
    from tokenizers import ByteLevelBPETokenizer

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tok = ByteLevelBPETokenizer()
    tok.train_from_iterator(tokenizer_corpus(), vocab_size=vocab_size - 1, min_frequency=1,
                            special_tokens=["<s>", "<pad>", "</s>", "<unk>"], show_progress=False)
    model = json.loads(tok.to_str())["model"]
    vocab = dict(model["vocab"])
    if [vocab[t] for t in ("<s>", "<pad>", "</s>", "<unk>")] != [0, 1, 2, 3]:
        raise RuntimeError("special tokens did not land at ids 0-3")
    vocab["<mask>"] = len(vocab)
    merges = [m if isinstance(m, str) else " ".join(m) for m in model["merges"]]
    (folder / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
    for f in ("tokenizer_config.json", "special_tokens_map.json"):
        shutil.copyfile(shipped_config_dir("s-full-v2") / "tokenizer" / f, folder / f)


def perturb_(module: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Make default-initialised constants informative, in place.

    Every floating parameter or buffer that is all zeros (biases, HiFi-GAN ``mean``) gets small
    random values, and every one that is all ones (norm scales, HiFi-GAN ``scale``) gets 1 ± noise.
    """
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, t in [*module.named_parameters(), *module.named_buffers()]:
            if not t.is_floating_point() or t.numel() == 0:
                continue
            if bool((t == 0).all()):
                t.copy_(torch.randn(t.shape, generator=g) * 0.05)
            elif bool((t == 1).all()):
                t.copy_(1 + torch.randn(t.shape, generator=g) * 0.1)
    return module


def rescale_hifigan_(vocoder: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Re-draw every HiFi-GAN convolution weight with std ``1 / sqrt(fan_in)``.

    The library init (normal, std 0.01) shrinks the signal at each of its ~40 convolutions, giving
    waveforms near 1e-6; this keeps a mel of realistic scale mapping to a waveform of std ~0.1-0.2 with no clipping.
    """
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in vocoder.modules():
            if isinstance(m, (torch.nn.Conv1d, torch.nn.ConvTranspose1d)):
                w = m.weight
                if isinstance(m, torch.nn.ConvTranspose1d):
                    # each output sample sees in_channels * kernel / stride inputs
                    fan_in = w.shape[0] * w.shape[2] / m.stride[0]
                else:
                    fan_in = w.shape[1] * w.shape[2]
                w.copy_(torch.randn(w.shape, generator=g) * (1.0 / math.sqrt(fan_in)))
    return vocoder


def rescale_text_encoder_(text_encoder: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Re-draw every Linear weight of the CLAP text tower with std ``1 / sqrt(fan_in)``.

    With the library init (std 0.02) attention is nearly uniform and the pooled first token hardly sees
    the other tokens: at full size two different prompts' embeddings had cosine similarity 0.999995, so
    no test could tell one prompt from another (a prompt changed the generated waveform by 2e-5). With
    this, 0.89 (a real CLAP separates prompts similarly).
    """
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in text_encoder.modules():
            if isinstance(m, torch.nn.Linear):
                m.weight.copy_(torch.randn(m.weight.shape, generator=g) / math.sqrt(m.weight.shape[1]))
    return text_encoder


def build_reference(name: str, seed: int = 0) -> dict[str, torch.nn.Module]:
    """Seeded random-weight reference components for a known checkpoint name (see
    ``convert.cvssp.BUILTIN_SOURCES``): ``text_encoder``, ``unet``, ``vae``, ``vocoder`` (fp32, eval)."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import ClapTextConfig, ClapTextModelWithProjection, SpeechT5HifiGan, SpeechT5HifiGanConfig

    cfg_dir = shipped_config_dir(name)
    out = {}
    torch.manual_seed(seed)
    te_cfg = {k: v for k, v in read_json(cfg_dir / "text_encoder" / "config.json").items()
              if k not in ("architectures", "_name_or_path", "transformers_version", "torch_dtype")}
    out["text_encoder"] = rescale_text_encoder_(ClapTextModelWithProjection(ClapTextConfig(**te_cfg)), seed + 5)
    torch.manual_seed(seed + 1)
    out["unet"] = UNet2DConditionModel.from_config(read_json(cfg_dir / "unet" / "config.json"))
    torch.manual_seed(seed + 2)
    out["vae"] = AutoencoderKL.from_config(read_json(cfg_dir / "vae" / "config.json"))
    torch.manual_seed(seed + 3)
    voc_cfg = {k: v for k, v in read_json(cfg_dir / "vocoder" / "config.json").items()
               if k not in ("architectures", "transformers_version", "torch_dtype")}
    out["vocoder"] = rescale_hifigan_(SpeechT5HifiGan(SpeechT5HifiGanConfig(**voc_cfg)), seed + 4)
    for i, (k, m) in enumerate(out.items()):
        perturb_(m, seed + 10 + i)
        m.eval().requires_grad_(False)
    return out


_LEGACY_VAE_ATTN = {"to_q": "query", "to_k": "key", "to_v": "value", "to_out.0": "proj_attn"}


def legacy_vae_state(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename the VAE mid-block attention to diffusers 0.15 names (``query``/``key``/``value``/
    ``proj_attn``), as the real cvssp repos store them."""
    out = {}
    for k, v in state.items():
        for new, old in _LEGACY_VAE_ATTN.items():
            marker = f".attentions.0.{new}."
            if marker in k:
                k = k.replace(marker, f".attentions.0.{old}.")
        out[k] = v
    return out


def write_cvssp_folder(folder: Path, name: str, seed: int = 0, *, weights: str = "safetensors",
                       fp16_variant: bool = False, legacy_vae_names: bool = True,
                       components: Optional[dict[str, torch.nn.Module]] = None) -> Path:
    """Write a complete cvssp-layout folder of seeded random weights and return it.

    weights: ``"safetensors"`` or ``"bin"`` (``diffusion_pytorch_model.*`` for unet/vae,
        ``model.safetensors``/``pytorch_model.bin`` for text_encoder/vocoder).
    fp16_variant: also write ``*.fp16.*`` files beside the fp32 ones.
    legacy_vae_names: store the VAE attention under the diffusers 0.15 names, as the real repos do.
    components: reuse already-built reference modules instead of building them.
    """
    from safetensors.torch import save_file

    if weights not in ("safetensors", "bin"):
        raise ValueError(f"weights must be 'safetensors' or 'bin', got {weights!r}")
    folder = Path(folder)
    cfg_dir = shipped_config_dir(name)
    comps = components if components is not None else build_reference(name, seed)
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(cfg_dir / "model_index.json", folder / "model_index.json")
    (folder / "scheduler").mkdir(exist_ok=True)
    shutil.copyfile(cfg_dir / "scheduler" / "scheduler_config.json", folder / "scheduler" / "scheduler_config.json")
    vocab = read_json(cfg_dir / "text_encoder" / "config.json")["vocab_size"]
    write_tokenizer_files(folder / "tokenizer", vocab_size=min(1000, vocab))
    files = {"text_encoder": "model", "vocoder": "model", "unet": "diffusion_pytorch_model",
             "vae": "diffusion_pytorch_model"}
    for comp, module in comps.items():
        sub = folder / comp
        sub.mkdir(exist_ok=True)
        shutil.copyfile(cfg_dir / comp / "config.json", sub / "config.json")
        state = {k: v.detach().contiguous() for k, v in module.state_dict().items()}
        if comp == "vae" and legacy_vae_names:
            state = legacy_vae_state(state)
        variants = [("", state)]
        if fp16_variant:
            variants.append((".fp16", {k: v.half() if v.is_floating_point() else v for k, v in state.items()}))
        for suffix, st in variants:
            if weights == "safetensors":
                save_file(st, str(sub / f"{files[comp]}{suffix}.safetensors"), metadata={"format": "pt"})
            else:
                stem = "pytorch_model" if files[comp] == "model" else files[comp]
                torch.save(st, sub / f"{stem}{suffix}.bin")
    return folder


def reference_pipeline(folder: Path, **kwargs):
    """diffusers ``AudioLDMPipeline`` loaded from a cvssp folder (fp32, CPU, no progress bar)."""
    from diffusers import AudioLDMPipeline

    pipe = AudioLDMPipeline.from_pretrained(str(folder), **kwargs)
    pipe.set_progress_bar_config(disable=True)
    return pipe


KNOWN = tuple(BUILTIN_SOURCES)
FULL_SIZE = ("s-full", "s-full-v2", "m-full", "l-full")


def diffusers_scheduler(name: str, scheduler_config):
    """The diffusers scheduler a user of AudioLDMPipeline swaps in for our sampler ``name``."""
    import diffusers

    classes = {
        "ddim": ("DDIMScheduler", {}),
        "pndm": ("PNDMScheduler", {"skip_prk_steps": True}),
        "lms": ("LMSDiscreteScheduler", {}),
        "euler": ("EulerDiscreteScheduler", {}),
        "euler_ancestral": ("EulerAncestralDiscreteScheduler", {}),
        "heun": ("HeunDiscreteScheduler", {}),
        "dpmsolver++": ("DPMSolverMultistepScheduler", {"algorithm_type": "dpmsolver++", "solver_order": 2}),
        "unipc": ("UniPCMultistepScheduler", {"solver_order": 2}),
    }
    cls, extra = classes[name]
    return getattr(diffusers, cls).from_config(scheduler_config, **extra)
