"""Key table: cvssp unet weights -> audioldm_core names (filled in by the unet component work)."""

from convert.remap import KeyTable

CVSSP = KeyTable()
