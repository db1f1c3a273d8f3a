"""audioldm-core: a from-scratch PyTorch implementation of AudioLDM text-to-audio."""

__version__ = "0.1.0"
