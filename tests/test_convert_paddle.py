"""Paddle (ppdiffusers / PaddleNLP) converter: the ``.pdparams`` reader and the folder conversion.

Two kinds of fixtures:
* written by the real thing: with the Paddle venv the README's test command installs
  (``.venv-paddle``, pinned by ``tests/requirements-paddle.txt``; ``AUDIOLDM_PADDLE_PYTHON`` overrides
  the interpreter), a subprocess builds ppdiffusers' AudioLDM components (UNet2DConditionModel,
  AutoencoderKL; PaddleNLP's ClapTextModelWithProjection and SpeechT5HifiGan) at the tiny config with
  random weights, ``save_pretrained``s them and records their outputs on fixed inputs; ours must
  reproduce those outputs from the converted folder. ``paddle.save`` with pickle protocols 2-4 and
  bfloat16 tensors is checked the same way. Without such a Python these tests fail
  (``conftest.require``; ``AUDIOLDM_TEST_OPT_OUT=paddle`` skips them knowingly).
* written by the tests themselves in the documented format (always run): protocol 2-4 pickles of
  numpy arrays, big arrays split into ``@@.`` pieces under ``UnpackBigParamInfor@@``, bf16 as
  uint16, and a whole ppdiffusers-layout folder made from the cvssp reference (Linear weights
  transposed), which must convert to exactly the tensors the cvssp folder gives.
"""

from __future__ import annotations

import gc
import json
import os
import pickle
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from audioldm_core.checkpoint import empty_component, load_state_strict
from audioldm_core.errors import CheckpointError, SourceNotFoundError
from conftest import rel_err, require
from convert.core import convert_source
from convert.paddle import (BIG_PARAM_KEY, NAME_TABLE_KEY, convert_paddle_folder, read_pdparams,
                            to_torch_layout)
from reference import write_tokenizer_files

TOL = 1e-5
REPO = Path(__file__).resolve().parent.parent
# The Paddle venv the README's test command installs (tests/requirements-paddle.txt), unless overridden.
PADDLE_PYTHON = os.environ.get("AUDIOLDM_PADDLE_PYTHON", str(REPO / ".venv-paddle" / "bin" / "python"))

# Run by the Paddle Python: argv = cvssp config dir, output folder.
GEN_SCRIPT = r'''
import json, sys
from pathlib import Path
import numpy as np
import paddle
from ppdiffusers import AutoencoderKL, UNet2DConditionModel
from paddlenlp.transformers import ClapTextConfig, ClapTextModelWithProjection, SpeechT5HifiGan, SpeechT5HifiGanConfig

cfgdir, out = Path(sys.argv[1]), Path(sys.argv[2])
paddle.seed(0)
rng = np.random.default_rng(0)

def clean(d):
    return {k: v for k, v in d.items() if not k.startswith("_") and k not in ("architectures", "transformers_version", "torch_dtype")}

def perturb(m):
    sd = m.state_dict()
    new = {}
    for k, v in sd.items():
        a = v.numpy()
        if a.dtype.kind != "f" or a.size == 0:
            continue
        if (a == 0).all():
            new[k] = (rng.standard_normal(a.shape) * 0.05).astype(a.dtype)
        elif (a == 1).all():
            new[k] = (1 + rng.standard_normal(a.shape) * 0.1).astype(a.dtype)
    for k, a in new.items():
        sd[k].set_value(paddle.to_tensor(a))

unet = UNet2DConditionModel.from_config(json.load(open(cfgdir / "unet/config.json")))
vae = AutoencoderKL.from_config(json.load(open(cfgdir / "vae/config.json")))
te = ClapTextModelWithProjection(ClapTextConfig(**clean(json.load(open(cfgdir / "text_encoder/config.json")))))
vcfg = clean(json.load(open(cfgdir / "vocoder/config.json")))
voc = SpeechT5HifiGan(SpeechT5HifiGanConfig(**vcfg))
# HiFi-GAN: weights of std 1/sqrt(fan_in), so the waveform is not ~1e-6 (as tests/reference.py does)
sd = voc.state_dict()
for k, v in sd.items():
    if v.ndim == 3:
        shape = v.shape
        if k.startswith("upsampler."):
            fan_in = shape[0] * shape[2] / vcfg["upsample_rates"][int(k.split(".")[1])]
        else:
            fan_in = shape[1] * shape[2]
        v.set_value(paddle.to_tensor((rng.standard_normal(shape) / np.sqrt(fan_in)).astype("float32")))
for m in (unet, vae, te, voc):
    perturb(m)
    m.eval()
unet.save_pretrained(str(out / "unet"), safe_serialization=False)
vae.save_pretrained(str(out / "vae"), safe_serialization=False)
te.save_pretrained(str(out / "text_encoder"))
voc.save_pretrained(str(out / "vocoder"))
# the same weights as newer ppdiffusers / PaddleNLP save them by default: diffusion_paddle_model.safetensors
# (UNet, VAE) and model.safetensors (text encoder, vocoder), Linear weights still (in, out)
st = out / "safetensors-weights"
unet.save_pretrained(str(st / "unet"), safe_serialization=True)
vae.save_pretrained(str(st / "vae"), safe_serialization=True)
te.save_pretrained(str(st / "text_encoder"), safe_serialization=True)
voc.save_pretrained(str(st / "vocoder"), safe_serialization=True)

g = np.random.default_rng(1)
x = g.standard_normal((2, 8, 16, 16)).astype("float32")
t = np.array([10, 980], dtype="int64")
emb = g.standard_normal((2, vcfg and json.load(open(cfgdir / "unet/config.json"))["projection_class_embeddings_input_dim"])).astype("float32")
emb /= np.linalg.norm(emb, axis=1, keepdims=True)
z = g.standard_normal((1, 8, 8, 16)).astype("float32")
mel = (g.standard_normal((2, 48, 64)) * 2 - 4).astype("float32")
ids = g.integers(3, 1000, (2, 12)).astype("int64")
mask = np.ones_like(ids)
ids[:, 0] = 0
ids[0, 6], ids[0, 7:], mask[0, 7:] = 2, 1, 0
ids[1, 11] = 2
P = paddle.to_tensor
with paddle.no_grad():
    res = {
        "unet": unet(P(x), P(t), encoder_hidden_states=None, class_labels=P(emb)).sample.numpy(),
        "vae": vae.decode(P(z)).sample.numpy(),
        "vocoder": voc(P(mel)).numpy(),
        "clap": te(input_ids=P(ids), attention_mask=P(mask)).text_embeds.numpy(),
    }
np.savez(out / "io.npz", x=x, t=t, emb=emb, z=z, mel=mel, ids=ids, mask=mask, **{"out_" + k: v for k, v in res.items()})

# paddle.save itself: protocols 2-4, float32 and bfloat16
vals = {"a.weight": rng.standard_normal((5, 3)).astype("float32"), "b.bias": rng.standard_normal(7).astype("float32")}
for proto in (2, 3, 4):
    sd = {k: P(v) for k, v in vals.items()}
    paddle.save(sd, str(out / f"p{proto}.pdparams"), protocol=proto)
    paddle.save({k: v.astype("bfloat16") for k, v in sd.items()}, str(out / f"bf16_p{proto}.pdparams"), protocol=proto)
bf = {k: P(v).astype("bfloat16").astype("float32").numpy() for k, v in vals.items()}
np.savez(out / "saved.npz", **{"f32/" + k: v for k, v in vals.items()}, **{"bf16/" + k: v for k, v in bf.items()})
print("done")
'''


def _paddle_available() -> bool:
    if not Path(PADDLE_PYTHON).is_file():
        return False
    r = subprocess.run([PADDLE_PYTHON, "-c", "import paddle, ppdiffusers, paddlenlp"], capture_output=True)
    return r.returncode == 0


def make_paddle_folder(name: str, folder: Path) -> Path:
    """Run :data:`GEN_SCRIPT` for the cvssp config ``name`` and complete the folder (scheduler,
    tokenizer, model_index.json) as a ppdiffusers pipeline folder."""
    if not _paddle_available():
        require("paddle", f"no Python with paddlepaddle + ppdiffusers + paddlenlp at {PADDLE_PYTHON} "
                          f"(tests/requirements-paddle.txt in .venv-paddle, or set AUDIOLDM_PADDLE_PYTHON)")
    from convert.cvssp import shipped_config_dir

    cfg = shipped_config_dir(name)
    folder.mkdir(parents=True)
    home = folder.parent / (folder.name + "-home")  # Paddle/PaddleNLP write caches under ~: keep them here
    home.mkdir()
    r = subprocess.run([PADDLE_PYTHON, "-c", GEN_SCRIPT, str(cfg), str(folder)], capture_output=True, text=True,
                       timeout=1200, env=dict(os.environ, HOME=str(home), PPNLP_HOME=str(home / "paddlenlp")))
    if r.returncode != 0 or "done" not in r.stdout:
        raise RuntimeError(f"the Paddle fixture script failed:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}")
    shutil.copytree(cfg / "scheduler", folder / "scheduler")
    shutil.copyfile(cfg / "model_index.json", folder / "model_index.json")
    write_tokenizer_files(folder / "tokenizer")
    # the safetensors copy becomes a second pipeline folder beside this one (same configs and outputs)
    st, st_folder = folder / "safetensors-weights", folder.parent / (folder.name + "-safetensors")
    shutil.copytree(folder, st_folder, ignore=shutil.ignore_patterns("safetensors-weights", "*.pdparams"))
    for sub in ("unet", "vae", "text_encoder", "vocoder"):
        for f in (st / sub).glob("*.safetensors"):
            shutil.copyfile(f, st_folder / sub / f.name)
    shutil.rmtree(st)
    return folder


@pytest.fixture(scope="module")
def paddle_folder(tmp_path_factory):
    """A ppdiffusers AudioLDM folder (tiny config) written by Paddle itself, plus recorded outputs."""
    return make_paddle_folder("tiny", tmp_path_factory.mktemp("paddle") / "audioldm-tiny-paddle")


def _ours(conv, comp):
    return load_state_strict(empty_component(comp, conv.config), conv.tensors[comp], comp)


def check_against_paddle(folder: Path, label: str) -> None:
    """Ours from the converted Paddle files vs ppdiffusers/PaddleNLP's own recorded outputs."""
    conv = convert_paddle_folder(folder)
    io = np.load(folder / "io.npz")
    T = lambda k: torch.from_numpy(io[k])  # noqa: E731
    bad = {}
    with torch.no_grad():
        for comp, run in (("unet", lambda m: m(T("x"), T("t"), T("emb"))), ("vae", lambda m: m.decode(T("z"))),
                          ("vocoder", lambda m: m(T("mel"))), ("clap", lambda m: m(T("ids"), T("mask")))):
            model = _ours(conv, comp)
            err, rel = rel_err(run(model), T("out_" + comp))
            del model
            gc.collect()
            print(f"\npaddle {label} {comp}: max abs {err:.2e}, rel {rel:.2e}")
            if rel > TOL:
                bad[comp] = (err, rel)
    assert not bad, f"relative error above {TOL}: {bad}"


def test_ppdiffusers_parity(paddle_folder):
    check_against_paddle(paddle_folder, "tiny")


def test_ppdiffusers_safetensors_parity(paddle_folder):
    """The same components saved by ppdiffusers / PaddleNLP as safetensors (their default):
    ``diffusion_paddle_model.safetensors`` for the UNet and VAE, ``model.safetensors`` for the text
    encoder and vocoder. The folder is recognised as Paddle's, read through the safetensors branch, and
    gives the same outputs and the same tensors as the ``.pdparams`` copy."""
    from convert.core import source_kind
    from convert.paddle import find_paddle_weights

    folder = paddle_folder.parent / (paddle_folder.name + "-safetensors")
    assert source_kind(str(folder)) == "paddle"
    names = {c: find_paddle_weights(folder, c).name for c in ("unet", "vae", "clap", "vocoder")}
    assert names == {"unet": "diffusion_paddle_model.safetensors", "vae": "diffusion_paddle_model.safetensors",
                     "clap": "model.safetensors", "vocoder": "model.safetensors"}, names
    check_against_paddle(folder, "tiny (safetensors)")
    a, b = convert_paddle_folder(folder, hash_files=False), convert_paddle_folder(paddle_folder, hash_files=False)
    for comp, state in b.tensors.items():
        assert state.keys() == a.tensors[comp].keys() and all(torch.equal(a.tensors[comp][k], v)
                                                              for k, v in state.items()), comp


@pytest.mark.fullsize
def test_ppdiffusers_parity_fullsize(tmp_path):
    """s-full-v2 size: ppdiffusers writes ~1.7 GB of .pdparams; ours must match its outputs."""
    check_against_paddle(make_paddle_folder("s-full-v2", tmp_path / "s-full-v2-paddle"), "s-full-v2")


@pytest.mark.parametrize("proto", [2, 3, 4])
def test_paddle_save_protocols_and_bf16(paddle_folder, proto):
    saved = np.load(paddle_folder / "saved.npz")
    f32 = read_pdparams(paddle_folder / f"p{proto}.pdparams")
    bf16 = read_pdparams(paddle_folder / f"bf16_p{proto}.pdparams")
    for k in ("a.weight", "b.bias"):
        assert torch.equal(f32[k], torch.from_numpy(saved["f32/" + k]))
        assert bf16[k].dtype == torch.bfloat16
        assert torch.equal(bf16[k].float(), torch.from_numpy(saved["bf16/" + k]))


# --- files written by the tests in the documented format (no Paddle needed) --------------------------

def write_pdparams(path: Path, state: dict[str, np.ndarray], protocol: int, max_elements: int = 0) -> None:
    """What ``paddle.save(state_dict, path, protocol)`` writes (paddle/framework/io.py
    ``_build_saved_state_dict`` + io_utils.py ``_unpack_saved_dict``); ``max_elements`` lowers the
    split threshold (Paddle's is ``(2**30 - 1) // itemsize``) so tests can exercise splitting."""
    obj = dict(state)
    obj[NAME_TABLE_KEY] = {k: f"param_{i}" for i, k in enumerate(state)}
    info = {}
    if max_elements and 1 < protocol < 4:
        for k, v in state.items():
            if v.size > max_elements:
                flat = v.flatten()
                parts = [f"{k}@@.{i}" for i in range(-(-v.size // max_elements))]
                info[k] = {"OriginShape": v.shape, "slices": parts}
                del obj[k]
                for i, p in enumerate(parts):
                    obj[p] = flat[i * max_elements:(i + 1) * max_elements]
    if info:
        obj[BIG_PARAM_KEY] = info
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=protocol)


@pytest.mark.parametrize("proto", [2, 3, 4])
def test_read_documented_format(tmp_path, proto):
    rng = np.random.default_rng(proto)
    state = {"w": rng.standard_normal((6, 5)).astype(np.float32), "e.weight": rng.standard_normal((9, 4)),
             "i": np.arange(7, dtype=np.int64), "h": rng.standard_normal(3).astype(np.float16)}
    write_pdparams(tmp_path / "m.pdparams", state, proto, max_elements=8)
    got = read_pdparams(tmp_path / "m.pdparams")
    assert set(got) == set(state)
    for k, v in state.items():
        assert torch.equal(got[k], torch.from_numpy(v)), k


def test_bf16_stored_as_uint16(tmp_path):
    x = torch.randn(4, 3).bfloat16()
    raw = x.view(torch.int16).numpy().view(np.uint16)
    write_pdparams(tmp_path / "b.pdparams", {"x.weight": raw}, 4)
    got = read_pdparams(tmp_path / "b.pdparams")["x.weight"]
    assert got.dtype == torch.bfloat16 and torch.equal(got, x)


def test_split_pieces_checked(tmp_path):
    state = {"w": np.arange(20, dtype=np.float32).reshape(4, 5)}
    write_pdparams(tmp_path / "s.pdparams", state, 2, max_elements=6)
    with open(tmp_path / "s.pdparams", "rb") as f:
        obj = pickle.load(f)
    del obj["w@@.2"]
    with open(tmp_path / "s.pdparams", "wb") as f:
        pickle.dump(obj, f, protocol=2)
    with pytest.raises(CheckpointError, match=r"pieces of 'w' are missing: w@@\.2"):
        read_pdparams(tmp_path / "s.pdparams")


class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


@pytest.mark.parametrize("proto", [2, 4])
def test_only_numpy_globals_are_allowed(tmp_path, proto):
    marker = tmp_path / "pwned"
    with open(tmp_path / "e.pdparams", "wb") as f:
        pickle.dump({"w": np.zeros(3, np.float32), "x": _Evil(str(marker))}, f, protocol=proto)
    with pytest.raises(CheckpointError, match="mkdir is not allowed"):
        read_pdparams(tmp_path / "e.pdparams")
    assert not marker.exists()


def test_object_arrays_and_garbage_refused(tmp_path):
    write_pdparams(tmp_path / "o.pdparams", {"w": np.array([1, "a"], dtype=object)}, 4)
    with pytest.raises(CheckpointError, match="unsupported dtype object"):
        read_pdparams(tmp_path / "o.pdparams")
    (tmp_path / "g.pdparams").write_bytes(b"\x80\x04garbage")
    with pytest.raises(CheckpointError, match="not a readable .pdparams"):
        read_pdparams(tmp_path / "g.pdparams")
    with pytest.raises(SourceNotFoundError):
        read_pdparams(tmp_path / "missing.pdparams")


# The weights Paddle stores transposed: those of nn.Linear modules ((in, out) in Paddle), per component,
# written out from the module types of diffusers' UNet2DConditionModel and AutoencoderKL and
# transformers' ClapTextModelWithProjection and SpeechT5HifiGan (which has none), not from the converter.
# UNet: class_embedding is a Linear ("simple_projection"); ff.net.0.proj is GEGLU's Linear, ff.net.2 the
# output Linear. CLAP: embeddings are nn.Embedding, (num, dim) in both frameworks.
LINEAR_WEIGHTS = {
    "clap": re.compile(r"text_model\.encoder\.layer\.\d+\.(attention\.self\.(query|key|value)|attention\.output\.dense"
                       r"|intermediate\.dense|output\.dense)\.weight|text_model\.pooler\.dense\.weight"
                       r"|text_projection\.linear[12]\.weight"),
    "unet": re.compile(r"time_embedding\.linear_[12]\.weight|class_embedding\.weight"
                       r"|(down_blocks\.\d+|up_blocks\.\d+|mid_block)\.(resnets\.\d+\.time_emb_proj"
                       r"|attentions\.\d+\.transformer_blocks\.\d+\.(attn[12]\.(to_q|to_k|to_v|to_out\.0)"
                       r"|ff\.net\.0\.proj|ff\.net\.2))\.weight"),
    "vae": re.compile(r"(encoder|decoder)\.mid_block\.attentions\.0\.(query|key|value|proj_attn)\.weight"),
    "vocoder": re.compile(r"(?!)"),
}
TINY_LINEAR_COUNTS = {"clap": 15, "unet": 84, "vae": 8, "vocoder": 0}  # tiny: 2 text layers, 12 UNet transformer blocks
SOURCE_DIRS = {"clap": "text_encoder", "unet": "unet", "vae": "vae", "vocoder": "vocoder"}


def _tiny_source_states(cvssp: Path) -> dict[str, dict[str, torch.Tensor]]:
    from convert.cvssp import find_weight_file, read_weights

    return {comp: read_weights(find_weight_file(cvssp, comp)) for comp in SOURCE_DIRS}


def test_linear_weight_list_is_the_references_linear_modules(cvssp_folder):
    """The written-out list above names exactly the nn.Linear weights of the reference models."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import ClapTextModelWithProjection, SpeechT5HifiGan

    folder = cvssp_folder("tiny")
    states = _tiny_source_states(folder)
    models = {"clap": ClapTextModelWithProjection, "unet": UNet2DConditionModel, "vae": AutoencoderKL,
              "vocoder": SpeechT5HifiGan}
    for comp, cls in models.items():
        model = cls.from_pretrained(str(folder / SOURCE_DIRS[comp]))
        linear = {f"{name}.weight" for name, m in model.named_modules() if isinstance(m, torch.nn.Linear)}
        legacy = {"to_q": "query", "to_k": "key", "to_v": "value", "to_out.0": "proj_attn"}  # the VAE's saved names
        if comp == "vae":
            linear = {re.sub(r"(to_q|to_k|to_v|to_out\.0)(?=\.weight$)", lambda m: legacy[m[1]], k) for k in linear}
        listed = {k for k in states[comp] if LINEAR_WEIGHTS[comp].fullmatch(k)}
        assert listed == linear, (comp, sorted(listed ^ linear)[:10])
        assert len(listed) == TINY_LINEAR_COUNTS[comp], (comp, len(listed))


def test_converter_transposes_exactly_the_linear_weights(cvssp_folder):
    """Every key of the tiny source state dicts with a non-square 2-D stand-in (so a transpose shows):
    the converter's Paddle layout rule transposes the listed Linear weights and nothing else."""
    for comp, state in _tiny_source_states(cvssp_folder("tiny")).items():
        fake = {k: torch.zeros(2, 3) if v.ndim == 2 else torch.zeros(v.shape) for k, v in state.items()}
        out = to_torch_layout(fake)
        transposed = {k for k, v in out.items() if v.shape != fake[k].shape}
        want = {k for k in state if LINEAR_WEIGHTS[comp].fullmatch(k)}
        assert transposed == want, (comp, "transposed but not Linear:", sorted(transposed - want)[:5],
                                    "Linear but not transposed:", sorted(want - transposed)[:5])


def test_linear_weights_transposed_embeddings_not():
    s = {"a.to_q.weight": torch.zeros(3, 5), "text_model.embeddings.word_embeddings.weight": torch.zeros(3, 5),
         "conv.weight": torch.zeros(2, 3, 1, 1), "norm.weight": torch.zeros(5)}
    t = to_torch_layout(s)
    assert t["a.to_q.weight"].shape == (5, 3)
    assert t["text_model.embeddings.word_embeddings.weight"].shape == (3, 5)
    assert t["conv.weight"].shape == (2, 3, 1, 1) and t["norm.weight"].shape == (5,)


_PADDLE_ONLY = {"unet": {"data_format": "NCHW", "_ppdiffusers_version": "0.29.0"},
                "vae": {"force_upcast": True, "use_quant_conv": True, "latents_mean": None},
                "text_encoder": {"paddlenlp_version": None, "return_dict": True},
                "vocoder": {"paddlenlp_version": None, "return_dict": True}}


def paddle_copy_of(cvssp: Path, dest: Path, bf16: bool = False) -> Path:
    """A ppdiffusers-layout copy of a tiny cvssp folder: model_state.pdparams per component (the Linear
    weights of :data:`LINEAR_WEIGHTS` transposed, bf16 as uint16 when asked) and the configs with
    Paddle's extra fields."""
    shutil.copytree(cvssp, dest, ignore=shutil.ignore_patterns("*.safetensors", "*.bin"))
    for comp, state in _tiny_source_states(cvssp).items():
        sub = SOURCE_DIRS[comp]
        out = {}
        for k, v in state.items():
            if LINEAR_WEIGHTS[comp].fullmatch(k):  # the written-out list, not the converter's rule
                v = v.t()
            if bf16 and v.is_floating_point():
                out[k] = v.bfloat16().contiguous().view(torch.int16).numpy().view(np.uint16)
            else:
                out[k] = v.contiguous().numpy()
        write_pdparams(dest / sub / "model_state.pdparams", out, 4)
        cfg = json.loads((dest / sub / "config.json").read_text())
        cfg.update(_PADDLE_ONLY[sub])
        (dest / sub / "config.json").write_text(json.dumps(cfg))
    return dest


def test_paddle_layout_folder_equals_cvssp(cvssp_folder, tmp_path):
    src = cvssp_folder("tiny")
    ref = convert_source(str(src), hash_files=False)
    conv = convert_paddle_folder(paddle_copy_of(src, tmp_path / "pd"))
    assert conv.config.to_dict() | {"name": ""} == ref.config.to_dict() | {"name": ""}
    assert conv.tokenizer == ref.tokenizer and conv.source["kind"] == "paddle"
    for comp, state in ref.tensors.items():
        assert set(conv.tensors[comp]) == set(state), comp
        for k, v in state.items():
            assert torch.equal(conv.tensors[comp][k], v), f"{comp}.{k}"


def test_paddle_layout_bf16(cvssp_folder, tmp_path):
    src = cvssp_folder("tiny")
    ref = convert_source(str(src), hash_files=False)
    conv = convert_paddle_folder(paddle_copy_of(src, tmp_path / "pd", bf16=True), hash_files=False)
    for comp, state in ref.tensors.items():
        for k, v in state.items():
            got = conv.tensors[comp][k]
            if v.is_floating_point():
                assert got.dtype == torch.bfloat16 and torch.equal(got, v.bfloat16()), f"{comp}.{k}"


def test_paddle_nhwc_and_missing_files_refused(cvssp_folder, tmp_path):
    folder = paddle_copy_of(cvssp_folder("tiny"), tmp_path / "pd")
    cfg = json.loads((folder / "unet" / "config.json").read_text())
    (folder / "unet" / "config.json").write_text(json.dumps(cfg | {"data_format": "NHWC"}))
    with pytest.raises(CheckpointError, match="data_format='NHWC'"):
        convert_paddle_folder(folder)
    (folder / "unet" / "config.json").write_text(json.dumps(cfg))
    (folder / "vae" / "model_state.pdparams").unlink()
    with pytest.raises(SourceNotFoundError, match="model_state.pdparams"):
        convert_paddle_folder(folder)


# --- dispatch: audioldm-convert and AudioLDM.from_pretrained --------------------------------------

def test_cli_and_from_pretrained_take_a_paddle_folder(cvssp_folder, tmp_path, capsys):
    from audioldm_core import AudioLDM
    from audioldm_core.checkpoint import read_info
    from convert.cli import main as convert_main
    from convert.core import source_kind

    src = cvssp_folder("tiny")
    folder = paddle_copy_of(src, tmp_path / "pd")
    assert source_kind(str(folder)) == "paddle" and source_kind(str(src)) == "cvssp"
    out = tmp_path / "pd.safetensors"
    assert convert_main([str(folder), str(out), "--quiet"]) == 0
    info = read_info(out)
    assert info.source["kind"] == "paddle" and set(info.source["files"]) == {
        "text_encoder/model_state.pdparams", "unet/model_state.pdparams", "vae/model_state.pdparams",
        "vocoder/model_state.pdparams"}
    pipe = AudioLDM.from_pretrained(str(folder))
    assert pipe.source["kind"] == "paddle"
    ref = convert_source(str(src), hash_files=False)
    for name, v in pipe.unet.state_dict().items():
        assert torch.equal(v, ref.tensors["unet"][name]), name

    for extra in (["--tokenizer", str(src)], ["--compat", "original"], ["--no-ema"], ["--variant", "fp16"],
                  ["--revision", "main"]):
        assert convert_main([str(folder), str(tmp_path / "x.safetensors"), "--quiet", *extra]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and extra[0] in err, (extra, err)
    assert not (tmp_path / "x.safetensors").exists()
