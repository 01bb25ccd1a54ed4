"""An async client for the hosted Real-ESRGAN image-upscaling gateway."""

from ._version import __version__

__all__ = ["__version__"]
