"""``compat="original"``: the original AudioLDM code's sampling behaviours, on the built-in ``tiny`` model.

diffusers (the default) must stay bit-for-bit what it was; original must be reproducible for a
seeded generator and apply DDIM eta 1.0, the 10% unconditional swap and the latent clipping rule.
"""

from __future__ import annotations

import json

import pytest
import torch

from audioldm_core import AudioLDM
from audioldm_core.cli import main
from audioldm_core.errors import InputError
from audioldm_core.compat import COMPAT_MODES, original_clip, original_swap_mask

PROMPT = "a dog barks while rain falls on a tin roof"
SHORT = dict(audio_length_in_s=1.0, num_inference_steps=3, progress=False, output_type="pt")


@pytest.fixture(scope="module")
def pipe():
    return AudioLDM.from_pretrained("tiny")


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_default_is_diffusers_bit_for_bit(pipe):
    default = pipe(PROMPT, generator=gen(), **SHORT).audios
    explicit = pipe(PROMPT, generator=gen(), compat="diffusers", eta=0.0, **SHORT).audios
    assert torch.equal(default, explicit)
    # eta > 0 is untouched too: only compat="original" changes anything
    a = pipe(PROMPT, generator=gen(), eta=0.7, **SHORT).audios
    b = pipe(PROMPT, generator=gen(), eta=0.7, compat="diffusers", **SHORT).audios
    assert torch.equal(a, b)


def test_original_is_deterministic_and_defaults_to_eta_one(pipe):
    kw = dict(SHORT, num_waveforms_per_prompt=2)
    a = pipe(PROMPT, generator=gen(3), compat="original", **kw).audios
    b = pipe(PROMPT, generator=gen(3), compat="original", **kw).audios
    assert torch.equal(a, b)
    assert torch.equal(a, pipe(PROMPT, generator=gen(3), compat="original", eta=1.0, **kw).audios)
    assert not torch.equal(a, pipe(PROMPT, generator=gen(3), compat="original", eta=0.0, **kw).audios)
    assert not torch.equal(a, pipe(PROMPT, generator=gen(3), **kw).audios)


def test_both_modes_start_from_the_same_initial_latents(pipe, monkeypatch):
    seen = {}
    real = pipe.guided_eps

    def spy(cond, uncond, g):
        eps_fn = real(cond, uncond, g)
        return lambda x, t: (seen.setdefault(mode, x.clone()), eps_fn(x, t))[1]

    monkeypatch.setattr(pipe, "guided_eps", spy)
    for mode in COMPAT_MODES:  # the swap draws come after the initial noise
        next(iter(pipe.denoise(PROMPT, 1.0, 1, num_waveforms_per_prompt=4, generator=gen(5), compat=mode)))
    assert torch.equal(seen["diffusers"], seen["original"])


def test_swap_mask_rate_and_determinism():
    n = 20000
    mask = original_swap_mask(n, gen(0))
    assert mask.dtype == torch.bool and mask.shape == (n,)
    rate = mask.float().mean().item()
    assert 0.09 < rate < 0.11, rate  # 0.1 +- 4.7 sigma
    assert torch.equal(mask, original_swap_mask(n, gen(0)))
    assert not torch.equal(mask, original_swap_mask(n, gen(1)))
    # a list of generators: row i from generator i
    gens = [gen(s) for s in range(2000)]
    rows = original_swap_mask(len(gens), gens)
    assert 0.07 < rows.float().mean().item() < 0.13
    assert rows[17].item() == original_swap_mask(1, gen(17)).item()
    assert not original_swap_mask(100, gen(0), probability=0.0).any()
    assert original_swap_mask(100, gen(0), probability=1.0).all()
    with pytest.raises(InputError, match="generators"):
        original_swap_mask(3, [gen(0), gen(1)])


def test_swap_replaces_cond_rows_by_the_empty_prompt_only(pipe, monkeypatch):
    n = 32
    seen = {}
    real = pipe.guided_eps

    def spy(cond, uncond, g):
        seen["cond"], seen["uncond"] = cond.clone(), uncond.clone()
        return real(cond, uncond, g)

    monkeypatch.setattr(pipe, "guided_eps", spy)
    next(iter(pipe.denoise(PROMPT, 1.0, 1, negative_prompt="silence", num_waveforms_per_prompt=n,
                           generator=gen(7), compat="original")))
    # replay the generator: initial noise first, then one uniform per waveform
    g = gen(7)
    pipe.prepare_latents(n, pipe.lengths(1.0)[1], g)
    expected = original_swap_mask(n, g)
    assert 0 < expected.sum() < n  # this seed swaps some rows, not all
    text, empty, neg = (pipe.prompt_encoder([p])[0] for p in (PROMPT, "", "silence"))
    cond = seen["cond"]
    assert torch.equal(cond[expected], empty.expand(int(expected.sum()), -1))
    assert torch.equal(cond[~expected], text.expand(int((~expected).sum()), -1))
    assert torch.equal(seen["uncond"], neg.expand(n, -1))  # the negative prompt is never swapped
    # diffusers mode never swaps
    next(iter(pipe.denoise(PROMPT, 1.0, 1, num_waveforms_per_prompt=n, generator=gen(7))))
    assert torch.equal(seen["cond"], text.expand(n, -1))


def test_clip_rule():
    x = torch.linspace(-50, 50, 64).reshape(1, 1, 8, 8)
    assert original_clip(x) is x  # nothing above 100: untouched, values beyond 10 included
    y = x.clone()
    y[0, 0, 0, 0] = 150.0
    c = original_clip(y)
    assert c.abs().max().item() == 10.0 and torch.equal(c, y.clamp(-10, 10))
    # the trigger is batch-wide: one item above 100 clips every item
    batch = torch.cat([x, y])
    assert original_clip(batch)[0].abs().max().item() == 10.0


def test_clip_applies_to_final_latents_in_the_pipeline(pipe, monkeypatch):
    # a model that predicts huge noise drives the final latents far above 100
    monkeypatch.setattr(pipe, "guided_eps", lambda cond, uncond, g: (lambda x, t: torch.full_like(x, 1e4)))
    last = {}
    for mode in COMPAT_MODES:
        *_, final = pipe.denoise(PROMPT, 1.0, 3, generator=gen(), compat=mode)
        last[mode] = final.latents
    assert last["diffusers"].abs().max() > 100
    assert last["original"].abs().max() == 10.0
    decoded = {}
    monkeypatch.setattr(pipe, "decode", lambda z, n: decoded.setdefault("z", z.clone()) * 0)
    pipe(PROMPT, generator=gen(), compat="original", **SHORT)
    assert decoded["z"].abs().max() == 10.0


@pytest.mark.parametrize("bad", ["Original", "", None, 1])
def test_bad_compat_raises(pipe, bad):
    with pytest.raises(InputError, match="compat must be one of 'diffusers', 'original'"):
        pipe(PROMPT, compat=bad, **SHORT)
    with pytest.raises(InputError, match="compat must be one of"):
        next(iter(pipe.denoise(PROMPT, compat=bad)))


def test_cli_compat_flag_and_jsonl_key(tmp_path, monkeypatch):
    calls = []
    real = AudioLDM.__call__

    def record(self, *a, **kw):
        calls.append(kw.get("compat"))
        return real(self, *a, **kw)

    monkeypatch.setattr(AudioLDM, "__call__", record)
    base = ["--model", "tiny", "--seconds", "1.0", "--steps", "2", "--seed", "4", "--no-progress"]
    assert main(["generate", "a dog", "-o", str(tmp_path / "a.wav"), *base]) == 0
    assert main(["generate", "a dog", "-o", str(tmp_path / "b.wav"), "--compat", "original", *base]) == 0
    assert calls == ["diffusers", "original"]
    assert (tmp_path / "b.wav").read_bytes() != (tmp_path / "a.wav").read_bytes()
    with pytest.raises(SystemExit) as e:
        main(["generate", "a dog", "--compat", "orig", *base])
    assert e.value.code == 2
    # JSONL: a per-line key overrides --compat, recorded in the manifest; a bad value is refused
    prompts = tmp_path / "p.jsonl"
    prompts.write_text(json.dumps({"prompt": "rain", "compat": "original"}) + "\nbirds\n")
    calls.clear()
    assert main(["generate", "--prompts", str(prompts), "-o", str(tmp_path / "out"), *base]) == 0
    assert calls == ["original", "diffusers"]
    manifest = [json.loads(line) for line in (tmp_path / "out" / "manifest.jsonl").read_text().splitlines()]
    assert [m["compat"] for m in manifest] == ["original", "diffusers"]
    prompts.write_text(json.dumps({"prompt": "rain", "compat": "nope"}) + "\n")
    assert main(["generate", "--prompts", str(prompts), "-o", str(tmp_path / "out2"), *base]) == 2
