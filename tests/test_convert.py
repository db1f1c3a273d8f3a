"""The converter: cvssp folder / Hub repo id -> our checkpoint file; strict loading; bad input."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from audioldm_core.checkpoint import COMPONENTS, load_component, read_info
from audioldm_core.config import builtin_config
from audioldm_core.errors import CheckpointError, ConfigError, SourceNotFoundError
from convert.cli import main as convert_main
from convert.core import convert_source, convert_to_file
from convert.cvssp import read_tokenizer

REPO = Path(__file__).resolve().parent.parent


def _copy(folder: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "model"
    shutil.copytree(folder, dst)
    return dst


def _no_outputs(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_tiny_converts_and_loads_strictly(cvssp_folder, tmp_path, capsys):
    out = tmp_path / "tiny.safetensors"
    assert convert_main([str(cvssp_folder("tiny")), str(out)]) == 0
    printed = capsys.readouterr().out
    assert "wrote" in printed and "unet" in printed
    info = read_info(out)
    tiny = builtin_config("tiny")
    assert (info.config.clap, info.config.unet, info.config.vae, info.config.vocoder, info.config.schedule) == \
        (tiny.clap, tiny.unet, tiny.vae, tiny.vocoder, tiny.schedule)
    assert info.source["kind"] == "folder" and len(info.source["files"]) == 4
    assert all(len(h) == 64 for h in info.source["files"].values())
    assert info.tokenizer == read_tokenizer(cvssp_folder("tiny"))
    src = {k: v for k, v in load_file(str(out)).items()}
    for comp in COMPONENTS:
        module = load_component(out, comp)
        state = module.state_dict()
        assert len(state) == sum(1 for k in src if k.startswith(comp + "."))
        for k, v in state.items():
            assert torch.equal(v, src[f"{comp}.{k}"]), k
    assert _no_outputs(tmp_path) == ["tiny.safetensors"]


def test_python_dash_m_convert_is_the_cli(cvssp_folder, tmp_path):
    out = tmp_path / "t.safetensors"
    r = subprocess.run([sys.executable, "-m", "convert", str(cvssp_folder("tiny")), str(out), "--quiet"],
                       capture_output=True, text=True, cwd=REPO)
    assert r.returncode == 0, r.stderr
    assert out.is_file()


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_output_dtype(cvssp_folder, tmp_path, dtype):
    out = tmp_path / "t.safetensors"
    convert_to_file(str(cvssp_folder("tiny")), out, dtype=dtype)
    tensors = load_file(str(out))
    assert {v.dtype for v in tensors.values()} == {getattr(torch, dtype)}
    unet = load_component(out, "unet", dtype=torch.float32)
    assert next(unet.parameters()).dtype == torch.float32


def test_bin_and_fp16_variant_sources(cvssp_folder, tmp_path):
    st = convert_source(str(cvssp_folder("tiny")))
    binary = convert_source(str(cvssp_folder("tiny", weights="bin")))
    fp16 = convert_source(str(cvssp_folder("tiny", fp16_variant=True)), variant="fp16")
    assert binary.source["files"].keys() == {"text_encoder/pytorch_model.bin", "unet/diffusion_pytorch_model.bin",
                                             "vae/diffusion_pytorch_model.bin", "vocoder/pytorch_model.bin"}
    assert all(".fp16." in f for f in fp16.source["files"])
    for comp in COMPONENTS:
        for k, v in st.tensors[comp].items():
            assert torch.equal(binary.tensors[comp][k], v)
            assert fp16.tensors[comp][k].dtype == torch.float16
            assert torch.equal(fp16.tensors[comp][k], v.half())


# --- bad input: a clear error, no output file --------------------------------------------------------

def _expect_failure(src: Path, out_dir: Path, exc, match: str) -> None:
    out = out_dir / "out.safetensors"
    with pytest.raises(exc, match=match):
        convert_to_file(str(src), out)
    assert not out.exists()
    assert not [p for p in out_dir.iterdir() if p.name.startswith(".out.safetensors")], "temp file left"


@pytest.fixture
def tiny_copy(cvssp_folder, tmp_path):
    src = _copy(cvssp_folder("tiny"), tmp_path)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    return src, out_dir


def test_missing_component_folder(tiny_copy):
    src, out = tiny_copy
    shutil.rmtree(src / "vocoder")
    _expect_failure(src, out, SourceNotFoundError, r"vocoder/ is missing")


def test_missing_weight_file(tiny_copy):
    src, out = tiny_copy
    (src / "unet" / "diffusion_pytorch_model.safetensors").unlink()
    _expect_failure(src, out, SourceNotFoundError,
                    r"no weight file for unet .*diffusion_pytorch_model.safetensors, diffusion_pytorch_model.bin")


def test_truncated_safetensors(tiny_copy):
    src, out = tiny_copy
    f = src / "vae" / "diffusion_pytorch_model.safetensors"
    data = f.read_bytes()
    f.write_bytes(data[: len(data) // 2])
    _expect_failure(src, out, CheckpointError, r"not a readable safetensors file")


def _edit(path: Path, fn) -> None:
    state = load_file(str(path))
    fn(state)
    save_file(state, str(path))


def test_wrong_shape(tiny_copy):
    src, out = tiny_copy
    _edit(src / "unet" / "diffusion_pytorch_model.safetensors",
          lambda s: s.__setitem__("conv_in.weight", torch.zeros(16, 8, 3, 5)))
    _expect_failure(src, out, CheckpointError, r"shape mismatch.*conv_in.weight: \(16, 8, 3, 5\)")


def test_extra_unknown_key(tiny_copy):
    src, out = tiny_copy
    _edit(src / "vocoder" / "model.safetensors", lambda s: s.__setitem__("surprise.weight", torch.zeros(3)))
    _expect_failure(src, out, CheckpointError, r"vocoder.*1 unexpected key\(s\): surprise.weight")


def test_missing_key(tiny_copy):
    src, out = tiny_copy
    _edit(src / "unet" / "diffusion_pytorch_model.safetensors", lambda s: s.pop("conv_out.bias"))
    _expect_failure(src, out, CheckpointError, r"unet.*1 missing key\(s\): conv_out.bias")


def test_unsupported_config_value(tiny_copy):
    src, out = tiny_copy
    cfg_path = src / "unet" / "config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["resnet_time_scale_shift"] = "scale_shift"
    cfg_path.write_text(json.dumps(cfg))
    _expect_failure(src, out, ConfigError, r"resnet_time_scale_shift='scale_shift' is not supported")


def test_out_path_in_missing_folder(cvssp_folder, tmp_path, capsys):
    out = tmp_path / "nope" / "x.safetensors"
    assert convert_main([str(cvssp_folder("tiny")), str(out), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "output folder" in err and "does not exist" in err
    assert not (tmp_path / "nope").exists()


def test_source_neither_folder_nor_repo_id(tmp_path, capsys):
    assert convert_main([str(tmp_path / "missing" / "dir"), str(tmp_path / "o.safetensors")]) == 2
    assert "neither an existing folder nor a Hub repo id" in capsys.readouterr().err


def test_loader_rejects_foreign_and_damaged_files(cvssp_folder, converted_file, tmp_path):
    foreign = cvssp_folder("tiny") / "unet" / "diffusion_pytorch_model.safetensors"
    with pytest.raises(CheckpointError, match="not an audioldm-core checkpoint"):
        load_component(foreign, "unet")
    good = converted_file("tiny")
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(good.read_bytes()[:1000])
    with pytest.raises(CheckpointError):
        load_component(bad, "unet")
    with pytest.raises(SourceNotFoundError):
        load_component(tmp_path / "absent.safetensors", "unet")


# --- Hub repo ids, against a local huggingface_hub cache ---------------------------------------------

def _fake_hub_cache(folder: Path, cache: Path, repo_id: str) -> None:
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo_dir = cache / f"models--{repo_id.replace('/', '--')}"
    shutil.copytree(folder, repo_dir / "snapshots" / commit)
    (repo_dir / "refs").mkdir(parents=True)
    (repo_dir / "refs" / "main").write_text(commit)


def test_hub_repo_id_from_local_cache_offline(cvssp_folder, tmp_path):
    cache = tmp_path / "hub"
    _fake_hub_cache(cvssp_folder("tiny"), cache, "cvssp/audioldm-tiny-test")
    env = {k: v for k, v in os.environ.items() if not k.startswith("HF_")}
    env.update(HF_HUB_OFFLINE="1", HF_HUB_CACHE=str(cache), HF_HOME=str(tmp_path / "hf_home"))
    out = tmp_path / "hub.safetensors"
    r = subprocess.run([sys.executable, "-m", "convert", "cvssp/audioldm-tiny-test", str(out), "--quiet"],
                       capture_output=True, text=True, cwd=REPO, env=env)
    assert r.returncode == 0, r.stderr
    info = read_info(out)
    assert info.source["kind"] == "hub" and info.source["repo_id"] == "cvssp/audioldm-tiny-test"
    assert info.source["commit"] == "0123456789abcdef0123456789abcdef01234567"

    missing = tmp_path / "missing.safetensors"
    r = subprocess.run([sys.executable, "-m", "convert", "cvssp/audioldm-not-cached", str(missing), "--quiet"],
                       capture_output=True, text=True, cwd=REPO, env=env)
    assert r.returncode == 2
    assert "HF_HUB_OFFLINE=1" in r.stderr and str(cache) in r.stderr and "local cvssp-layout folder" in r.stderr
    assert r.stderr.count("\n") == 1
    assert not missing.exists()


@pytest.mark.fullsize
@pytest.mark.parametrize("weights", ["safetensors", "bin"])
def test_full_size_s_full_v2_converts_in_seconds_and_loads_strictly(cvssp_folder, tmp_path, weights):
    src = cvssp_folder("s-full-v2", weights=weights)
    out = tmp_path / "s.safetensors"
    t0 = time.perf_counter()
    summary = convert_to_file(str(src), out)
    seconds = time.perf_counter() - t0
    params = {c: s["params"] for c, s in summary["components"].items()}
    print(f"\nconverted s-full-v2 ({weights}) in {seconds:.1f} s; params {params}")
    assert seconds < 60, f"conversion took {seconds:.1f} s"
    assert abs(params["unet"] / 1e6 - 185.0) < 0.5 and abs(params["clap"] / 1e6 - 125.3) < 0.5
    assert abs(params["vae"] / 1e6 - 55.4) < 0.5 and abs(params["vocoder"] / 1e6 - 55.3) < 0.5
    for comp in COMPONENTS:
        module = load_component(out, comp)
        assert sum(p.numel() for p in module.parameters()) > 0
        del module


def test_hub_cache_blob_hashes_are_verified(cvssp_folder, tmp_path):
    """Files in the huggingface_hub cache are blobs named by the Hub's SHA-256; a damaged blob is refused."""
    import hashlib

    cache = tmp_path / "hub"
    commit = "89abcdef0123456789abcdef0123456789abcdef"
    repo_dir = cache / "models--cvssp--audioldm-hashed"
    snap = repo_dir / "snapshots" / commit
    (repo_dir / "blobs").mkdir(parents=True)
    for f in sorted(cvssp_folder("tiny").rglob("*")):
        if f.is_file():
            data = f.read_bytes()
            blob = repo_dir / "blobs" / hashlib.sha256(data).hexdigest()
            blob.write_bytes(data)
            link = snap / f.relative_to(cvssp_folder("tiny"))
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to(os.path.relpath(blob, link.parent))
    (repo_dir / "refs").mkdir()
    (repo_dir / "refs" / "main").write_text(commit)
    env = {k: v for k, v in os.environ.items() if not k.startswith("HF_")}
    env.update(HF_HUB_OFFLINE="1", HF_HUB_CACHE=str(cache), HF_HOME=str(tmp_path / "hf_home"))
    out = tmp_path / "ok.safetensors"
    cmd = [sys.executable, "-m", "convert", "cvssp/audioldm-hashed", str(out), "--quiet"]
    r = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, env=env)
    assert r.returncode == 0, r.stderr
    target = (snap / "vae" / "diffusion_pytorch_model.safetensors").resolve()
    data = bytearray(target.read_bytes())
    data[-1] ^= 1
    target.write_bytes(bytes(data))
    out2 = tmp_path / "bad.safetensors"
    r = subprocess.run(cmd[:-2] + [str(out2), "--quiet"], capture_output=True, text=True, cwd=REPO, env=env)
    assert r.returncode == 2 and "does not match the hash the Hub recorded" in r.stderr
    assert not out2.exists()


def test_source_kinds_and_misplaced_options(cvssp_folder, tmp_path, capsys):
    """A file that is not a .ckpt names the accepted sources; .ckpt-only options on a cvssp source refuse."""
    from convert.core import source_kind

    src = cvssp_folder("tiny")
    assert source_kind(str(src)) == "cvssp" and source_kind("cvssp/audioldm-s-full-v2") == "cvssp"
    other = tmp_path / "model.pt"
    other.write_bytes(b"x")
    out = tmp_path / "o.safetensors"
    assert convert_main([str(other), str(out), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "not an original AudioLDM checkpoint (.ckpt)" in err and "ppdiffusers folder" in err
    for extra in (["--tokenizer", str(src)], ["--model-name", "s-full"], ["--compat", "diffusers"], ["--no-ema"]):
        assert convert_main([str(src), str(out), "--quiet", *extra]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and extra[0] in err and "apply only to an original .ckpt" in err
    assert not out.exists()
