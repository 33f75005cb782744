"""Domain errors for bad input. Nothing else escapes the core for a bad file."""


class CutoutError(Exception):
    """Base class: the input cannot be processed; the message says why and what to do."""


class UnsupportedImageError(CutoutError):
    """The bytes are not an image the core can read (empty, truncated, not an image)."""


class ImageTooLargeError(CutoutError):
    """The image header declares more pixels than the configured cap."""


class WeightsError(CutoutError):
    """Model weights are missing, or do not match the registered hash."""


class DeviceUnavailableError(RuntimeError):
    """The requested inference device cannot be used (e.g. cuda without a usable GPU)."""
