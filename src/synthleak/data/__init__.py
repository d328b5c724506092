"""Data layer: challenge layout discovery, image loading and the run-file format."""
from .dicom import Window, parse_window
from .images import ImageSet, load_folder, load_image, natural_key
from .layout import AuditData, discover

__all__ = ["AuditData", "ImageSet", "Window", "discover", "load_folder", "load_image", "natural_key", "parse_window"]
