"""Key table: cvssp vocoder (transformers SpeechT5HifiGan) -> audioldm_core names.

Our HiFiGAN mirrors transformers' names, so no renames are left. A source saved with weight norm
still applied (``X.weight_g``/``X.weight_v``, or torch's newer ``X.parametrizations.weight.original0``
/``original1``) is folded into plain ``X.weight = g * v / ||v||`` (norm over every dim but 0, torch's
``weight_norm`` default) before remapping.
"""

import re

import torch

from convert.remap import KeyTable

_OLD = re.compile(r"(.+)\.weight_([gv])")
_NEW = re.compile(r"(.+)\.parametrizations\.weight\.original([01])")


def fold_weight_norm(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Replace every weight-norm (g, v) pair by the weight it stands for; other keys pass through."""
    pairs: dict[str, dict[str, torch.Tensor]] = {}
    out = {}
    for key, value in state.items():
        m = _OLD.fullmatch(key) or _NEW.fullmatch(key)
        if m is None:
            out[key] = value
            continue
        part = {"g": "g", "v": "v", "0": "g", "1": "v"}[m.group(2)]
        pairs.setdefault(m.group(1), {})[part] = value
    for prefix, gv in pairs.items():
        if set(gv) != {"g", "v"}:
            # leave the lone half in place so the strict remapper names it as unexpected
            out.update({f"{prefix}.weight_{k}": v for k, v in gv.items()})
            continue
        g, v = gv["g"].float(), gv["v"].float()
        norm = v.norm(dim=tuple(range(1, v.ndim)), keepdim=True)
        out[f"{prefix}.weight"] = (g * v / norm).to(gv["v"].dtype)
    return out


CVSSP = KeyTable(prepare=fold_weight_norm)
