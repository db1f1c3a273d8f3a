"""CLAP text tower (Wu et al. 2023, "Large-scale contrastive language-audio pretraining"):
a RoBERTa encoder, a first-token pooler and a two-layer projection, as transformers'
``ClapTextModelWithProjection``.

Module names mirror the transformers checkpoint (``text_model.encoder.layer.N.attention.self.query``)
so the cvssp keys map to themselves. Attention runs through ``scaled_dot_product_attention`` with
the padding mask, so prompts need no padding to 512 tokens: :class:`PromptEncoder` pads a batch to
its longest prompt and caches the empty negative prompt's embedding.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .config import ClapTextConfig
from .errors import InputError


class Embeddings(nn.Module):
    """word + position (RoBERTa: counted from ``pad_id + 1`` over non-pad tokens) + token type, then
    LayerNorm. ids (B, L) int64 -> (B, L, D)."""

    def __init__(self, vocab: int, dim: int, max_pos: int, type_vocab: int, pad_id: int, eps: float):
        super().__init__()
        self.pad_id = pad_id
        self.word_embeddings = nn.Embedding(vocab, dim)
        self.position_embeddings = nn.Embedding(max_pos, dim)
        self.token_type_embeddings = nn.Embedding(type_vocab, dim)
        self.LayerNorm = nn.LayerNorm(dim, eps=eps)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        # fairseq/RoBERTa make_positions: padding tokens keep position pad_id
        not_pad = ids.ne(self.pad_id).long()
        positions = torch.cumsum(not_pad, dim=1) * not_pad + self.pad_id
        x = self.word_embeddings(ids) + self.position_embeddings(positions) + self.token_type_embeddings.weight[0]
        return self.LayerNorm(x)


class SelfAttention(nn.Module):
    """Multi-head self-attention with biases. x (B, L, D), keep (B, 1, 1, L) bool -> (B, L, D)."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.query = nn.Linear(dim, dim)
        self.key = nn.Linear(dim, dim)
        self.value = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        q, k, v = (p(x).view(b, n, self.heads, -1).transpose(1, 2) for p in (self.query, self.key, self.value))
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=keep)
        return out.transpose(1, 2).reshape(b, n, d)


class DenseNorm(nn.Module):
    """Post-LN residual output: LayerNorm(dense(h) + x). (B, L, in) and (B, L, D) -> (B, L, D)."""

    def __init__(self, in_dim: int, dim: int, eps: float):
        super().__init__()
        self.dense = nn.Linear(in_dim, dim)
        self.LayerNorm = nn.LayerNorm(dim, eps=eps)

    def forward(self, h: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(self.dense(h) + x)


class AttentionBlock(nn.Module):
    """``attention.self`` + ``attention.output`` of a BERT layer."""

    def __init__(self, dim: int, heads: int, eps: float):
        super().__init__()
        self.self = SelfAttention(dim, heads)
        self.output = DenseNorm(dim, dim, eps)

    def forward(self, x: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        return self.output(self.self(x, keep), x)


class Intermediate(nn.Module):
    """dense + exact (erf) GELU. (B, L, D) -> (B, L, I)."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.dense = nn.Linear(dim, hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.gelu(self.dense(x))


class Layer(nn.Module):
    """One post-LN transformer encoder layer (BERT/RoBERTa). (B, L, D) -> (B, L, D)."""

    def __init__(self, dim: int, heads: int, hidden: int, eps: float):
        super().__init__()
        self.attention = AttentionBlock(dim, heads, eps)
        self.intermediate = Intermediate(dim, hidden)
        self.output = DenseNorm(hidden, dim, eps)

    def forward(self, x: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        x = self.attention(x, keep)
        return self.output(self.intermediate(x), x)


class Encoder(nn.Module):
    """A stack of :class:`Layer`."""

    def __init__(self, n: int, dim: int, heads: int, hidden: int, eps: float):
        super().__init__()
        self.layer = nn.ModuleList(Layer(dim, heads, hidden, eps) for _ in range(n))


class Pooler(nn.Module):
    """tanh(dense(first token)). (B, L, D) -> (B, D)."""

    def __init__(self, dim: int):
        super().__init__()
        self.dense = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.dense(x[:, 0]))


class TextModel(nn.Module):
    """RoBERTa: embeddings, encoder, pooler."""

    def __init__(self, c: ClapTextConfig):
        super().__init__()
        self.embeddings = Embeddings(c.vocab_size, c.hidden_size, c.max_positions, c.type_vocab_size,
                                     c.pad_token_id, c.layer_norm_eps)
        self.encoder = Encoder(c.num_layers, c.hidden_size, c.num_heads, c.intermediate_size, c.layer_norm_eps)
        self.pooler = Pooler(c.hidden_size)


class Projection(nn.Module):
    """linear1 -> ReLU -> linear2. (B, D) -> (B, P)."""

    def __init__(self, dim: int, proj: int):
        super().__init__()
        self.linear1 = nn.Linear(dim, proj)
        self.linear2 = nn.Linear(proj, proj)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear2(F.relu(self.linear1(x)))


class ClapTextEncoder(nn.Module):
    """CLAP text tower: (input_ids, attention_mask) (B, L) int64 -> text_embeds (B, projection_dim),
    not normalised (exactly transformers' ``text_embeds``)."""

    def __init__(self, cfg: ClapTextConfig):
        super().__init__()
        self.cfg = cfg
        self.text_model = TextModel(cfg)
        self.text_projection = Projection(cfg.hidden_size, cfg.projection_dim)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        if input_ids.ndim != 2 or attention_mask.shape != input_ids.shape:
            raise InputError(f"input_ids and attention_mask must both be (B, L); got {tuple(input_ids.shape)} "
                             f"and {tuple(attention_mask.shape)}")
        if input_ids.shape[1] > self.cfg.max_positions - self.cfg.pad_token_id - 1:
            raise InputError(f"{input_ids.shape[1]} tokens exceed the {self.cfg.max_positions - 2} positions "
                             f"of this text encoder")
        tm = self.text_model
        x = tm.embeddings(input_ids)
        keep = attention_mask.bool()[:, None, None, :]
        for layer in tm.encoder.layer:
            x = layer(x, keep)
        return self.text_projection(tm.pooler(x))


class PromptEncoder:
    """Prompts -> L2-normalised CLAP embeddings (B, projection_dim) on the model's device and dtype.

    Pads each batch only to its longest prompt (the padding mask makes the result equal to padding
    to 512 tokens, at a fraction of the cost) and caches the empty prompt's embedding, which
    classifier-free guidance needs on every call; the cache follows the model's device and dtype.
    """

    def __init__(self, tokenizer, model: ClapTextEncoder):
        self.tokenizer = tokenizer
        self.model = model
        self._empty: dict[tuple, torch.Tensor] = {}

    def clear_cache(self) -> None:
        """Forget the cached empty-prompt embedding."""
        self._empty.clear()

    @torch.no_grad()
    def __call__(self, prompts: Sequence[str]) -> torch.Tensor:
        """prompts: list of B strings -> (B, projection_dim) unit-norm embeddings."""
        p = next(self.model.parameters())
        key = (p.device, p.dtype)
        prompts = [prompts] if isinstance(prompts, str) else list(prompts)
        rest = [q for q in prompts if q != ""]
        if "" in prompts and key not in self._empty:
            self._empty = {key: self._embed([""])[0]}
        out = self._embed(rest) if rest else None
        rows, j = [], 0
        for q in prompts:
            if q == "":
                rows.append(self._empty[key])
            else:
                rows.append(out[j])
                j += 1
        return torch.stack(rows)

    def _embed(self, prompts: list[str]) -> torch.Tensor:
        p = next(self.model.parameters())
        ids, mask = self.tokenizer(prompts)
        emb = self.model(ids.to(p.device), mask.to(p.device))
        return F.normalize(emb, dim=-1)
