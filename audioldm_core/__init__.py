"""audioldm-core: a from-scratch PyTorch implementation of AudioLDM text-to-audio.

Main entry points: :class:`AudioLDM` (the pipeline; ``AudioLDM.from_pretrained(source)``),
:func:`load_component` (one module from a converted file), and the component modules
``audioldm_core.clap``, ``.unet``, ``.vae``, ``.hifigan``, ``.samplers``.
"""

__version__ = "0.1.0"

from .checkpoint import load_component  # noqa: E402
from .errors import (AudioLDMError, CheckpointError, ConfigError, InputError, NumericalError,  # noqa: E402
                     SourceNotFoundError)
from .pipeline import AudioLDM, AudioOutput  # noqa: E402

__all__ = ["AudioLDM", "AudioOutput", "load_component", "AudioLDMError", "CheckpointError", "ConfigError",
           "InputError", "NumericalError", "SourceNotFoundError", "__version__"]
