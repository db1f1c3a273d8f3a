"""Per-component key tables for each source format.

Each module here (``clap``, ``unet``, ``vae``, ``vocoder``) defines ``CVSSP``, the
:class:`~convert.remap.KeyTable` from the cvssp (diffusers/transformers) names to ours. Our modules
are named like the source, so the tables hold only the renames that are left.
"""

from __future__ import annotations

import importlib

from convert.remap import KeyTable


def cvssp_table(component: str) -> KeyTable:
    """The cvssp-format key table of one component (``clap``, ``unet``, ``vae``, ``vocoder``)."""
    return importlib.import_module(f"convert.tables.{component}").CVSSP
