"""xnat-ml: segmentation models trained and used inside an XNAT archive."""

__version__ = "0.1.0"
