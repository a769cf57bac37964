"""sign-vq: discrete FSQ codes for sign-language poses (MediaPipe Holistic)."""

__version__ = "0.1.0"
