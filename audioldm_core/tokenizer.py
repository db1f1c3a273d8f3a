"""The RoBERTa byte-level BPE tokenizer that CLAP's text tower uses, on the ``tokenizers`` library.

Built from the checkpoint's ``vocab.json`` + ``merges.txt`` (or our checkpoint's stored copy): byte-level
pre-tokenisation without a prefix space, ``<s> ... </s>`` around each text, the special tokens
``<s> <pad> </s> <unk> <mask>`` recognised literally inside text, truncation at ``model_max_length``
(a warning names what was cut). It tokenizes exactly as transformers' ``RobertaTokenizer`` and
``RobertaTokenizerFast`` do on the same files (tests/test_tokenizer.py).
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any, Optional, Sequence, Union

import torch

from .errors import InputError, SourceNotFoundError

SPECIALS = ("<s>", "<pad>", "</s>", "<unk>", "<mask>")


class Tokenizer:
    """Batch tokenizer: ``tok(prompts) -> (input_ids, attention_mask)``, each (B, L) int64."""

    def __init__(self, vocab: dict[str, int], merges: Sequence[str], model_max_length: int = 512):
        from tokenizers import AddedToken, Tokenizer as _Tok, decoders, models, pre_tokenizers, processors

        missing = [t for t in SPECIALS if t not in vocab]
        if missing:
            raise InputError(f"tokenizer vocabulary lacks the special tokens {missing}")
        pairs = []
        for m in merges:
            parts = m.split(" ")
            if len(parts) != 2:
                raise InputError(f"malformed BPE merge {m!r}: expected two tokens separated by a space")
            pairs.append((parts[0], parts[1]))
        tok = _Tok(models.BPE(vocab=dict(vocab), merges=pairs, unk_token=None, fuse_unk=False))
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        tok.post_processor = processors.RobertaProcessing(("</s>", vocab["</s>"]), ("<s>", vocab["<s>"]),
                                                          trim_offsets=True, add_prefix_space=False)
        tok.add_special_tokens([AddedToken(t, lstrip=(t == "<mask>"), rstrip=False, normalized=False,
                                           single_word=False) for t in SPECIALS])
        self._tok = tok
        self.model_max_length = int(model_max_length)
        self.pad_id = vocab["<pad>"]
        self.vocab_size = len(vocab)

    @classmethod
    def from_dict(cls, data: dict[str, Any], model_max_length: int = 512) -> "Tokenizer":
        """From ``{"vocab": {token: id}, "merges": ["a b", ...]}`` (as our checkpoints store it)."""
        if not isinstance(data, dict) or not isinstance(data.get("vocab"), dict) \
                or not isinstance(data.get("merges"), list):
            raise InputError("tokenizer data must be {'vocab': {token: id}, 'merges': [str, ...]}")
        return cls(data["vocab"], data["merges"], model_max_length)

    @classmethod
    def from_folder(cls, folder: Union[str, Path]) -> "Tokenizer":
        """From a cvssp ``tokenizer/`` folder: vocab.json + merges.txt (or tokenizer.json), and
        ``model_max_length`` from tokenizer_config.json (default 512)."""
        folder = Path(folder)
        vocab_path, merges_path, tj = folder / "vocab.json", folder / "merges.txt", folder / "tokenizer.json"
        if vocab_path.is_file() and merges_path.is_file():
            vocab = json.loads(vocab_path.read_text(encoding="utf-8"))
            merges = [ln for ln in merges_path.read_text(encoding="utf-8").splitlines()
                      if ln and not ln.startswith("#version")]
        elif tj.is_file():
            model = json.loads(tj.read_text(encoding="utf-8")).get("model", {})
            vocab = model.get("vocab", {})
            merges = [m if isinstance(m, str) else " ".join(m) for m in model.get("merges", [])]
        else:
            raise SourceNotFoundError(f"no tokenizer files in {folder}: need vocab.json + merges.txt, "
                                      f"or tokenizer.json")
        max_len = 512
        cfg = folder / "tokenizer_config.json"
        if cfg.is_file():
            max_len = int(json.loads(cfg.read_text()).get("model_max_length", 512))
        return cls(vocab, merges, max_len)

    def __call__(self, prompts: Union[str, Sequence[str]], pad_to: Optional[str] = None
                 ) -> tuple[torch.Tensor, torch.Tensor]:
        """Tokenize a prompt or a list of prompts.

        pad_to: None pads to the longest sequence of the batch; ``"max_length"`` pads every
            sequence to ``model_max_length`` (what diffusers' pipeline does).
        Returns input_ids (B, L) int64 and attention_mask (B, L) int64 (1 = token, 0 = padding).
        Texts longer than ``model_max_length`` tokens are truncated with a warning.
        """
        if isinstance(prompts, str):
            prompts = [prompts]
        if not isinstance(prompts, (list, tuple)) or not prompts:
            raise InputError(f"prompts must be a string or a non-empty list of strings, got {type(prompts).__name__}")
        bad = sorted({type(p).__name__ for p in prompts if not isinstance(p, str)})
        if bad:
            raise InputError(f"every prompt must be a string; found {', '.join(bad)}")
        if pad_to not in (None, "max_length"):
            raise InputError(f"pad_to must be None or 'max_length', got {pad_to!r}")
        encs = self._tok.encode_batch(list(prompts))
        limit = self.model_max_length
        ids = []
        for p, e in zip(prompts, encs):
            seq = e.ids
            if len(seq) > limit:
                cut = self._tok.decode(seq[limit - 1:-1])
                cut = cut if len(cut) <= 80 else cut[:77] + "..."
                warnings.warn(f"prompt truncated to {limit} tokens (CLAP's limit); removed "
                              f"{len(seq) - limit} tokens: {cut!r}", stacklevel=2)
                seq = seq[:limit - 1] + seq[-1:]
            ids.append(seq)
        width = limit if pad_to == "max_length" else max(len(s) for s in ids)
        input_ids = torch.full((len(ids), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(ids), width), dtype=torch.long)
        for i, s in enumerate(ids):
            input_ids[i, :len(s)] = torch.tensor(s, dtype=torch.long)
            mask[i, :len(s)] = 1
        return input_ids, mask

    def decode(self, ids: Sequence[int]) -> str:
        """Token ids -> text (special tokens kept)."""
        return self._tok.decode(list(ids), skip_special_tokens=False)
