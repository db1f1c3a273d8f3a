"""Key table: cvssp text_encoder (transformers ClapTextModelWithProjection) -> audioldm_core names.

Our modules mirror transformers' names, so no renames are left; the saved ``position_ids`` and
``token_type_ids`` buffers are derived in forward (RoBERTa positions from the padding, type 0).
"""

from convert.remap import KeyTable

CVSSP = KeyTable(unused=(
    r"text_model\.embeddings\.position_ids",
    r"text_model\.embeddings\.token_type_ids",
))
