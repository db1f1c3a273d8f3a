"""Key table: cvssp clap weights -> audioldm_core names (filled in by the clap component work)."""

from convert.remap import KeyTable

CVSSP = KeyTable()
