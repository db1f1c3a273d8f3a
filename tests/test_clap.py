"""CLAP text tower: ours vs transformers' ClapTextModelWithProjection on the same converted weights."""

from __future__ import annotations

import gc
import time

import pytest
import torch
import torch.nn.functional as F

from audioldm_core.checkpoint import empty_component, load_state_strict
from audioldm_core.clap import PromptEncoder
from audioldm_core.errors import InputError
from audioldm_core.tokenizer import Tokenizer
from conftest import rel_err
from contrast import assert_separates, scaled_weight
from convert.cvssp import convert_component
from convert.cvssp import read_folder_config

TOL = 1e-5


def _pair(folder):
    from transformers import ClapTextModelWithProjection

    cfg = read_folder_config(folder)
    ours = load_state_strict(empty_component("clap", cfg), convert_component(folder, "clap", cfg), "clap")
    ref = ClapTextModelWithProjection.from_pretrained(str(folder / "text_encoder")).eval()
    return ours, ref, Tokenizer.from_folder(folder / "tokenizer")


def _prompts(n_words: list[int]) -> list[str]:
    words = "a dog barks while rain falls on a tin roof and birds chirp at dawn".split()
    return [" ".join(words[i % len(words)] for i in range(n)) for n in n_words]


def _check(ours, ref, tok, prompts, label):
    with torch.no_grad():
        ids, mask = tok(prompts, pad_to="max_length")
        r = ref(input_ids=ids, attention_mask=mask).text_embeds
        padded = ours(ids, mask)
        ids_u, mask_u = tok(prompts)
        unpadded = ours(ids_u, mask_u)
    err, rel = rel_err(padded, r)
    err_u, _ = rel_err(unpadded, r)
    err_pu, _ = rel_err(unpadded, padded)
    msg = (f"{label}: text_embeds max abs err {err:.2e} (rel {rel:.2e}) padded-to-512; unpadded vs reference "
           f"{err_u:.2e}; unpadded vs padded {err_pu:.2e}; token lengths {mask_u.sum(1).tolist()}")
    print("\n" + msg)
    assert err <= TOL and err_u <= TOL and err_pu <= TOL, msg


def _contrast(ours, ref, tok, label):
    """The tolerance separates right from wrong: against the reference's embedding of another prompt or
    with the word embedding table scaled by 1.01, ours is >= 100x the tolerance away. (The text tower
    draws no random numbers, so there is no seed to change.)"""
    prompt, other = "a dog barks while rain falls on a tin roof", "a dog barks while rain falls on a tin roof!"
    with torch.no_grad():
        ids, mask = tok([prompt])
        o = ours(ids, mask)
        ids_p, mask_p = tok([prompt], pad_to="max_length")
        ids_o, mask_o = tok([other], pad_to="max_length")
        right = rel_err(o, ref(input_ids=ids_p, attention_mask=mask_p).text_embeds)[0]
        wrong = {"other prompt (one character)": rel_err(o, ref(input_ids=ids_o, attention_mask=mask_o).text_embeds)[0]}
        with scaled_weight(ref, "text_model.embeddings.word_embeddings.weight"):
            wrong["word embeddings x 1.01"] = rel_err(o, ref(input_ids=ids_p, attention_mask=mask_p).text_embeds)[0]
    assert_separates(f"CLAP {label}", TOL, right, wrong, " (absolute)")


def test_tiny_tolerance_separates_right_from_wrong(cvssp_folder):
    _contrast(*_pair(cvssp_folder("tiny")), "tiny")


def test_tiny_parity_lengths_and_mixed_batch(cvssp_folder):
    ours, ref, tok = _pair(cvssp_folder("tiny"))
    _check(ours, ref, tok, _prompts([1]), "tiny 1 word")
    _check(ours, ref, tok, _prompts([1, 5, 40, 300, 600]), "tiny mixed batch up to 512 tokens")
    _check(ours, ref, tok, ["", "<s>x</s>", "🎵 café"], "tiny odd strings")


def test_prompt_encoder_normalises_and_caches_empty_prompt(cvssp_folder):
    ours, ref, tok = _pair(cvssp_folder("tiny"))
    enc = PromptEncoder(tok, ours)
    out = enc(["a dog", "", "rain"])
    assert torch.allclose(out.norm(dim=-1), torch.ones(3), atol=1e-6)
    with torch.no_grad():
        ids, mask = tok(["a dog", "", "rain"], pad_to="max_length")
        r = F.normalize(ref(input_ids=ids, attention_mask=mask).text_embeds, dim=-1)
    assert rel_err(out, r)[0] <= TOL
    cached = next(iter(enc._empty.values()))
    assert torch.equal(enc([""])[0], cached)
    ours.to(torch.float64)
    assert enc([""]).dtype == torch.float64  # the cache follows the model's dtype
    with pytest.raises(InputError):
        enc([3])


@pytest.mark.fullsize
def test_full_size_parity_and_speed(cvssp_folder):
    folder = cvssp_folder("s-full-v2")
    ours, ref, tok = _pair(folder)
    _check(ours, ref, tok, _prompts([1]), "full 1 word")
    _check(ours, ref, tok, _prompts([3, 17, 120]), "full mixed batch")
    _check(ours, ref, tok, _prompts([600]), "full 512 tokens (truncated)")
    _contrast(ours, ref, tok, "full size")
    enc = PromptEncoder(tok, ours)
    prompt = "a dog barks while rain falls on a tin roof"
    enc([prompt, ""])  # warm-up, fills the cache

    def ref_encode():
        with torch.no_grad():
            ids, mask = tok([prompt, ""], pad_to="max_length")
            return F.normalize(ref(input_ids=ids[:1], attention_mask=mask[:1]).text_embeds, dim=-1), \
                F.normalize(ref(input_ids=ids[1:], attention_mask=mask[1:]).text_embeds, dim=-1)

    times = {"ours": [], "ref": []}
    for _ in range(3):
        t0 = time.perf_counter()
        enc([prompt])
        enc([""])
        times["ours"].append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        ref_encode()
        times["ref"].append(time.perf_counter() - t0)
    o, r = min(times["ours"]), min(times["ref"])
    print(f"\ntext encoding, prompt + empty negative, full size: ours {o * 1e3:.1f} ms (unpadded, cached ''), "
          f"transformers padded to 512 {r * 1e3:.1f} ms, ratio {r / o:.1f}x")
    ours = ref = enc = None
    gc.collect()
