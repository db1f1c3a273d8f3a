"""Key table: cvssp UNet weights -> audioldm_core names. Our UNet is named like diffusers'
``UNet2DConditionModel``, so no rename is left and no source key is unused."""

from convert.remap import KeyTable

CVSSP = KeyTable()
