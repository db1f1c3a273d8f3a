"""CLAP audio features on the tiny pipeline (``audioldm_core/rerank.py``): best-of-N selection for
prompt lists and several waveforms per prompt, CLAP scores, variations from one or several clips,
attaching a CLAP file, and the bad-input errors (before any sampling, no output)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from audioldm_core import rerank
from audioldm_core.clap_file import save_clap_audio
from audioldm_core.errors import AudioLDMError, InputError
from audioldm_core.htsat import HTSAT, ClapAudioConfig
from audioldm_core.pipeline import AudioLDM

TEST_CFG = ClapAudioConfig(embed_dim=8, depths=(2, 2, 2, 2), num_heads=(1, 1, 2, 2), projection_dim=16)


def _tower(cfg: ClapAudioConfig = TEST_CFG) -> HTSAT:
    torch.manual_seed(11)
    m = HTSAT(cfg).eval()
    with torch.no_grad():
        for p in m.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    return m


@pytest.fixture(scope="module")
def pipe():
    p = AudioLDM.from_pretrained("tiny")
    if p.config.clap.projection_dim != TEST_CFG.projection_dim:
        pytest.fail(f"the tiny model's CLAP width is {p.config.clap.projection_dim}; update TEST_CFG")
    tower = _tower()
    p.set_clap_audio(lambda: tower, "checkpoint")
    return p


def _g(seed=0):
    return torch.Generator().manual_seed(seed)


def _tone(seconds=1.0, f=440.0):
    t = np.arange(int(seconds * 16000)) / 16000
    return (0.3 * np.sin(2 * np.pi * f * t)).astype(np.float32)


KW = dict(audio_length_in_s=0.64, num_inference_steps=2, progress=False)


def test_best_of_keeps_each_prompts_best(pipe):
    prompts = ["a dog", "rain on a roof"]
    n_w, n_c = 2, 2
    per = n_w * n_c
    out = pipe(prompts, num_candidates=n_c, num_waveforms_per_prompt=n_w, generator=_g(1), **KW)
    assert out.audios.shape[0] == 2 * n_w and len(out.scores) == 2 * n_w and out.candidates == n_c
    # the same candidates, generated as one plain batch (prompt-major: prompt i's `per` consecutive)
    all_ = pipe(prompts, num_waveforms_per_prompt=per, generator=_g(1), **KW).audios
    scores = np.array(pipe.clap_score(list(all_), [p for p in prompts for _ in range(per)]))
    for i in range(2):
        block = scores[per * i:per * (i + 1)]
        best = np.argsort(-block, kind="stable")[:n_w]
        want = all_[per * i + best]
        err = np.abs(out.audios[n_w * i:n_w * (i + 1)] - want).max()
        assert err == 0, f"prompt {i}: kept waveforms differ from the {n_w} best candidates by {err}"
        assert np.allclose(out.scores[n_w * i:n_w * (i + 1)], block[best], atol=1e-6), (out.scores, block)
        assert out.scores[n_w * i] >= out.scores[n_w * i + 1]


def test_selection_matches_original_indexing():
    """The original (ldm.py generate_sample) lays candidates out candidate-major (c = cat([c] * N):
    prompt i's candidate j at i + j * B) and keeps argmax over similarity[i::B]; ours is
    prompt-major (i * N + j). The same similarities give the same choice per prompt."""
    b, n = 3, 4
    sim = torch.randn(b * n, generator=_g(5))  # original layout
    original = []
    for i in range(b):  # audioldm/ldm.py generate_sample, verbatim logic
        original.append(i + torch.argmax(sim[i::b]).item() * b)
    ours_layout = sim.view(n, b).T.reshape(-1)  # ours: prompt-major
    keep = rerank.select(ours_layout, b, 1, n)
    assert [k % n for k in keep] == [o // b for o in original], (keep, original)


def test_clap_score_is_cosine(pipe):
    a = [_tone(1.0), _tone(3.0, 880.0)]
    s = pipe.clap_score(a, ["a tone", "a high tone"])
    emb = rerank.audio_embeds(pipe, a)
    txt = pipe.prompt_encoder(["a tone", "a high tone"]).float()
    want = F.cosine_similarity(emb, txt, dim=-1)
    assert np.allclose(s, want.numpy(), atol=1e-6), (s, want)
    with pytest.raises(InputError, match="2 audio"):
        pipe.clap_score(a, ["x", "y", "z"])


def test_variation_is_generation_from_the_audio_embedding(pipe):
    clip = _tone(2.0)
    got = pipe.variation(clip, generator=_g(3), **KW).audios
    emb = rerank.audio_embeds(pipe, [clip])
    want = pipe(prompt_embeds=emb, negative_prompt_embeds=pipe.prompt_encoder([""]), generator=_g(3), **KW).audios
    assert np.abs(got - want).max() == 0
    # two clips, weights and text: the re-normalised mixes
    two = [clip, _tone(1.0, 880.0)]
    e = rerank.audio_embeds(pipe, two)
    m = F.normalize(0.7 * e[0] + 0.3 * e[1], dim=-1)
    t = pipe.prompt_encoder(["birds"])[0].float()
    m = F.normalize(0.75 * m + 0.25 * t, dim=-1)
    got = pipe.variation(two, weights=[0.7, 0.3], prompt="birds", text_weight=0.25, generator=_g(3), **KW).audios
    want = pipe(prompt_embeds=m[None], negative_prompt_embeds=pipe.prompt_encoder([""]), generator=_g(3), **KW).audios
    assert np.abs(got - want).max() < 1e-6


@pytest.mark.parametrize("call, msg", [
    (lambda p: p.variation([_tone(), _tone()], weights=[1.0], **KW), "1 weight"),
    (lambda p: p.variation([_tone(), _tone()], weights=[1.0, -1.0], **KW), ">= 0"),
    (lambda p: p.variation([_tone(), _tone()], weights=[0, 0], **KW), "all zero"),
    (lambda p: p.variation(np.zeros(16000, np.float32), **KW), "silent"),
    (lambda p: p.variation(np.full(16000, np.nan, np.float32), **KW), "NaN"),
    (lambda p: p.variation(np.ones(5, np.float32), **KW), "10 ms"),
    (lambda p: p.variation("/nonexistent.wav", **KW), "does not exist"),
    (lambda p: p.variation(_tone(), prompt="x", text_weight=2, **KW), "text_weight"),
    (lambda p: p("a dog", num_candidates=0, **KW), "num_candidates"),
    (lambda p: p(prompt_embeds=torch.zeros(1, 16), num_candidates=2, **KW), "text prompts"),
])
def test_bad_input(pipe, call, msg):
    with pytest.raises(AudioLDMError, match=msg):
        call(pipe)


def test_unreadable_audio(pipe, tmp_path):
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"not audio")
    with pytest.raises(InputError, match="cannot read"):
        pipe.clap_score(str(bad), "x")


def test_no_tower_and_external_tower(tmp_path):
    p = AudioLDM.from_pretrained("tiny")
    for call in (lambda: p("a", num_candidates=2, **KW), lambda: p.variation(_tone(), **KW),
                 lambda: p.clap_score([_tone()], "a")):
        with pytest.raises(InputError, match="no CLAP audio tower"):
            call()
    f = save_clap_audio(tmp_path / "c.safetensors", TEST_CFG, _tower().state_dict(), {"source": "test"})
    ext = AudioLDM.from_pretrained("tiny", clap=f)
    assert ext._clap_audio is None  # lazy: nothing read until used
    assert len(ext.clap_score([_tone()], "a")) == 1 and ext._clap_audio is not None
    with pytest.raises(InputError, match="cannot drive variations|not the one the UNet"):
        ext.variation(_tone(), **KW)
    wide = ClapAudioConfig(embed_dim=8, depths=(2, 2, 2, 2), num_heads=(1, 1, 2, 2), projection_dim=24)
    f2 = save_clap_audio(tmp_path / "w.safetensors", wide, _tower(wide).state_dict(), {"source": "test"})
    with pytest.raises(InputError, match="projects to 24"):
        AudioLDM.from_pretrained("tiny", clap=f2)


def test_cli_score_variation_candidates(tmp_path, capsys):
    """`audioldm score` over a batch folder's manifest (JSONL out), `variation` refused with an
    external CLAP (exit 2, no file), `generate --candidates 0` refused by the parser."""
    import json

    from audioldm_core.audio import write_audio
    from audioldm_core.cli import main

    f = save_clap_audio(tmp_path / "c.safetensors", TEST_CFG, _tower().state_dict(), {"source": "test"})
    folder = tmp_path / "batch"
    folder.mkdir()
    write_audio(folder / "a.wav", _tone(1.0))
    write_audio(folder / "b.wav", _tone(1.0, 880.0))
    (folder / "manifest.jsonl").write_text(json.dumps({"prompt": "a tone", "outputs": ["a.wav", "b.wav"]}) + "\n")
    out = tmp_path / "scores.jsonl"
    assert main(["score", str(folder), "--model", "tiny", "--clap", str(f), "-o", str(out)]) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["prompt"] for r in rows] == ["a tone", "a tone"] and all(-1 <= r["clap_score"] <= 1 for r in rows)
    var = tmp_path / "v.wav"
    assert main(["variation", str(folder / "a.wav"), "--model", "tiny", "--clap", str(f), "-o", str(var)]) == 2
    assert not var.exists() and "not drive variations" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        main(["generate", "x", "--model", "tiny", "--candidates", "0"])
    assert e.value.code == 2


def test_to_moves_the_audio_tower():
    """``pipe.to(dtype=...)`` casts a built tower; one not built yet is built in the text tower's
    dtype (and device) on first use."""
    p = AudioLDM.from_pretrained("tiny")
    built = []
    p.set_clap_audio(lambda: built.append(1) or _tower(), "checkpoint")
    p.to(dtype=torch.float64)
    assert not built  # still lazy
    s64 = p.clap_score([_tone()], "a tone")
    dtypes = {q.dtype for q in p.clap_audio.parameters()}
    assert built == [1] and dtypes == {torch.float64}, dtypes
    p.to(dtype=torch.float32)
    assert {q.dtype for q in p.clap_audio.parameters()} == {torch.float32}
    s32 = p.clap_score([_tone()], "a tone")
    assert abs(s32[0] - s64[0]) < 1e-5 and built == [1], (s32, s64)
