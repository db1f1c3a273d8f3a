"""Config dataclasses and the cvssp config translation."""

from __future__ import annotations

import copy
import json

import pytest

from audioldm_core.config import BUILTIN_NAMES, AudioLDMConfig, builtin_config
from audioldm_core.errors import ConfigError
from convert import cvssp
from convert.cvssp import BUILTIN_SOURCES, read_folder_config, read_json, shipped_config_dir


@pytest.mark.parametrize("name", BUILTIN_NAMES)
def test_builtin_config_equals_translation_of_shipped_cvssp_files(name):
    translated = read_folder_config(shipped_config_dir(name), name=name)
    assert builtin_config(name) == translated


def test_builtin_names_cover_the_four_checkpoints_and_tiny():
    assert set(BUILTIN_NAMES) == set(BUILTIN_SOURCES)
    sizes = {n: builtin_config(n).unet.block_channels for n in ("s-full", "s-full-v2", "m-full", "l-full")}
    assert sizes == {"s-full": (128, 256, 384, 640), "s-full-v2": (128, 256, 384, 640),
                     "m-full": (192, 384, 576, 960), "l-full": (256, 512, 768, 1280)}
    # diffusers reads attention_head_dim=8 as 8 heads at every level
    assert builtin_config("l-full").unet.num_heads == (8, 8, 8, 8)
    assert builtin_config("s-full-v2").vae.scaling_factor == pytest.approx(0.9392935633659363)


def test_unknown_builtin_name_lists_choices():
    with pytest.raises(ConfigError, match="s-full-v2"):
        builtin_config("xl-full")


def test_config_json_round_trip():
    cfg = builtin_config("tiny")
    assert AudioLDMConfig.from_json(cfg.to_json()) == cfg
    data = cfg.to_dict()
    data["unet"]["bogus"] = 1
    with pytest.raises(ConfigError, match="bogus"):
        AudioLDMConfig.from_dict(data)
    data = cfg.to_dict()
    data["unet"]["layers_per_block"] = "two"
    with pytest.raises(ConfigError, match="layers_per_block"):
        AudioLDMConfig.from_dict(data)
    with pytest.raises(ConfigError, match="not valid JSON"):
        AudioLDMConfig.from_json("{")


def _unet_cfg():
    return read_json(shipped_config_dir("s-full-v2") / "unet" / "config.json")


@pytest.mark.parametrize("field,value", [
    ("class_embed_type", "timestep"),
    ("resnet_time_scale_shift", "scale_shift"),
    ("use_linear_projection", True),
    ("class_embeddings_concat", False),
    ("flip_sin_to_cos", False),
    ("time_embedding_type", "fourier"),
    ("only_cross_attention", True),
    ("transformer_layers_per_block", 2),
])
def test_unsupported_unet_value_names_field_and_supported_values(field, value):
    cfg = _unet_cfg()
    cfg[field] = value
    with pytest.raises(ConfigError) as e:
        cvssp.unet_config(cfg)
    assert field in str(e.value) and "supported" in str(e.value)


def test_unet_structural_errors():
    cfg = _unet_cfg()
    cfg["down_block_types"] = ["DownBlock2D", "SimpleCrossAttnDownBlock2D", "CrossAttnDownBlock2D",
                               "CrossAttnDownBlock2D"]
    with pytest.raises(ConfigError, match="SimpleCrossAttnDownBlock2D"):
        cvssp.unet_config(cfg)
    cfg = _unet_cfg()
    cfg["up_block_types"] = list(reversed(cfg["up_block_types"]))
    with pytest.raises(ConfigError, match="mirror"):
        cvssp.unet_config(cfg)
    cfg = _unet_cfg()
    cfg["cross_attention_dim"] = 768
    with pytest.raises(ConfigError, match="cross_attention_dim"):
        cvssp.unet_config(cfg)
    cfg = _unet_cfg()
    cfg["some_future_option"] = 3
    with pytest.raises(ConfigError, match="some_future_option"):
        cvssp.unet_config(cfg)


def test_unet_attention_head_dim_list_and_newer_diffusers_keys():
    cfg = _unet_cfg()
    cfg["attention_head_dim"] = [4, 8, 8, 8]
    cfg.update(addition_embed_type=None, dropout=0.0, attention_type="default", num_attention_heads=None)
    assert cvssp.unet_config(cfg).num_heads == (4, 8, 8, 8)


def test_vae_and_vocoder_and_clap_unsupported_values():
    vae = read_json(shipped_config_dir("s-full-v2") / "vae" / "config.json")
    vae["act_fn"] = "gelu"
    with pytest.raises(ConfigError, match="act_fn"):
        cvssp.vae_config(vae)
    clap = read_json(shipped_config_dir("s-full-v2") / "text_encoder" / "config.json")
    clap["projection_hidden_act"] = "gelu"
    with pytest.raises(ConfigError, match="projection_hidden_act"):
        cvssp.clap_config(clap)
    clap = read_json(shipped_config_dir("s-full-v2") / "text_encoder" / "config.json")
    clap["position_embedding_type"] = "relative_key"
    with pytest.raises(ConfigError, match="position_embedding_type"):
        cvssp.clap_config(clap)
    voc = read_json(shipped_config_dir("s-full-v2") / "vocoder" / "config.json")
    voc["upsample_kernel_sizes"] = [16, 16]
    with pytest.raises(ConfigError, match="upsample_kernel_sizes"):
        cvssp.vocoder_config(voc)


def test_schedule_spacing_absent_is_not_a_value():
    sched = read_json(shipped_config_dir("s-full-v2") / "scheduler" / "scheduler_config.json")
    assert "timestep_spacing" not in sched
    assert cvssp.schedule_config(sched).timestep_spacing is None
    for spacing in ("leading", "trailing", "linspace"):
        assert cvssp.schedule_config(dict(sched, timestep_spacing=spacing)).timestep_spacing == spacing
    with pytest.raises(ConfigError, match="timestep_spacing"):
        cvssp.schedule_config(dict(sched, timestep_spacing="karras"))
    with pytest.raises(ConfigError, match="thresholding"):
        cvssp.schedule_config(dict(sched, thresholding=True))


def test_folder_cross_checks(tmp_path):
    import shutil

    folder = tmp_path / "m"
    shutil.copytree(shipped_config_dir("tiny"), folder)
    for sub in ("text_encoder", "unet", "vae", "vocoder", "scheduler", "tokenizer"):
        (folder / sub).chmod(0o755)
    unet = read_json(folder / "unet" / "config.json")
    bad = copy.deepcopy(unet)
    bad["projection_class_embeddings_input_dim"] = 7
    (folder / "unet" / "config.json").write_text(json.dumps(bad))
    with pytest.raises(ConfigError, match="projection_dim"):
        read_folder_config(folder)
    (folder / "unet" / "config.json").write_text("{not json")
    with pytest.raises(ConfigError, match="not valid JSON"):
        read_folder_config(folder)
