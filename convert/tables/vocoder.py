"""Key table: cvssp vocoder weights -> audioldm_core names (filled in by the vocoder component work)."""

from convert.remap import KeyTable

CVSSP = KeyTable()
