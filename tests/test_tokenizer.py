"""Our tokenizer vs transformers' RobertaTokenizer and RobertaTokenizerFast on the same files."""

from __future__ import annotations

import warnings

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from audioldm_core.errors import InputError, SourceNotFoundError
from audioldm_core.tokenizer import Tokenizer
from reference import write_tokenizer_files

PROMPTS = [
    "A dog barks in the distance while rain falls on a tin roof.",
    "Techno music with a strong, upbeat tempo and high melodic riffs",
    "a hammer is hitting a wooden surface",
    "  leading and trailing spaces  ",
    "UPPER CASE, numbers 1234 and punctuation!?;:",
    "emoji 🎵🔊 and accents: café naïve",
    "",
    "<s>",
    "literal </s> inside <pad> text <unk> and <mask>",
    "tabs\tand\nnewlines\r\n",
    "a" * 2000,
]


@pytest.fixture(scope="module")
def tokenizers(tmp_path_factory):
    from transformers import RobertaTokenizer, RobertaTokenizerFast

    folder = tmp_path_factory.mktemp("tok")
    write_tokenizer_files(folder)
    return (Tokenizer.from_folder(folder), RobertaTokenizer.from_pretrained(str(folder)),
            RobertaTokenizerFast.from_pretrained(str(folder)))


def _ref(tok, texts):
    enc = tok(texts, padding="max_length", max_length=512, truncation=True, return_tensors="pt")
    return enc.input_ids, enc.attention_mask


def _compare(toks, texts):
    ours, slow, fast = toks
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ids, mask = ours(texts, pad_to="max_length")
    for ref in (slow, fast):
        r_ids, r_mask = _ref(ref, texts)
        assert torch.equal(ids, r_ids), (texts, ids[:, :12], r_ids[:, :12])
        assert torch.equal(mask, r_mask)


@pytest.mark.parametrize("text", PROMPTS)
def test_fixed_prompts_identical_to_both_reference_tokenizers(tokenizers, text):
    _compare(tokenizers, [text])


def test_batch_identical_and_unpadded_form_is_a_prefix(tokenizers):
    _compare(tokenizers, PROMPTS[:6])
    ours = tokenizers[0]
    ids, mask = ours(PROMPTS[:6])
    full, full_mask = ours(PROMPTS[:6], pad_to="max_length")
    assert ids.shape[1] == int(mask.sum(1).max()) < 512
    assert torch.equal(full[:, :ids.shape[1]], ids) and torch.equal(full_mask[:, :ids.shape[1]], mask)


text_strategy = st.one_of(
    st.text(max_size=80),
    st.text(alphabet=st.characters(codec="utf-8"), max_size=40),
    st.lists(st.sampled_from(["<s>", "</s>", "<pad>", "<mask>", "<unk>", " ", "  ", "dog", "🎵", "\n", "é"]),
             max_size=12).map("".join),
)


@settings(max_examples=150, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(texts=st.lists(text_strategy, min_size=1, max_size=3))
def test_hypothesis_strings_identical_to_both_reference_tokenizers(tokenizers, texts):
    _compare(tokenizers, texts)


def test_long_prompt_truncated_with_warning_naming_the_cut(tokenizers):
    ours = tokenizers[0]
    with pytest.warns(UserWarning, match=r"truncated to 512 tokens.*removed"):
        ids, mask = ours(["word " * 700])
    assert ids.shape == (1, 512) and ids[0, -1].item() == 2 and int(mask.sum()) == 512


@pytest.mark.parametrize("bad,match", [(3, "string"), (["ok", 3], "every prompt"), ([], "non-empty"),
                                       (None, "string")])
def test_bad_prompts(tokenizers, bad, match):
    with pytest.raises(InputError, match=match):
        tokenizers[0](bad)


def test_missing_vocab_files(tmp_path):
    with pytest.raises(SourceNotFoundError, match="vocab.json"):
        Tokenizer.from_folder(tmp_path)
    with pytest.raises(InputError, match="special tokens"):
        Tokenizer({"a": 0}, [])
    with pytest.raises(InputError, match="malformed BPE merge"):
        Tokenizer({t: i for i, t in enumerate(["<s>", "<pad>", "</s>", "<unk>", "<mask>"])}, ["abc"])
