"""Key table: cvssp VAE weights -> audioldm_core names.

The real cvssp repos were saved by diffusers 0.15, which names the mid-block attention
``query``/``key``/``value``/``proj_attn`` (and has no ``attn.`` level); newer saves use
``to_q``/``to_k``/``to_v``/``to_out.0``. Both map to our ``attentions.0.attn.*``.
"""

from convert.remap import KeyTable

_MID = r"(encoder|decoder)\.mid_block\.attentions\.0\."

CVSSP = KeyTable(renames=(
    (_MID + r"(?:query|to_q)\.(weight|bias)", r"\1.mid_block.attentions.0.attn.to_q.\2"),
    (_MID + r"(?:key|to_k)\.(weight|bias)", r"\1.mid_block.attentions.0.attn.to_k.\2"),
    (_MID + r"(?:value|to_v)\.(weight|bias)", r"\1.mid_block.attentions.0.attn.to_v.\2"),
    (_MID + r"(?:proj_attn|to_out\.0)\.(weight|bias)", r"\1.mid_block.attentions.0.attn.to_out.0.\2"),
))
