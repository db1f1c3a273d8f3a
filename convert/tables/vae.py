"""Key table: cvssp vae weights -> audioldm_core names (filled in by the vae component work)."""

from convert.remap import KeyTable

CVSSP = KeyTable()
