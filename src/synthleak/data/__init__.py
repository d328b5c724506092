"""Data layer: challenge layout discovery, image loading and the run-file format."""
from .images import ImageSet, load_folder, load_image, natural_key
from .layout import AuditData, discover

__all__ = ["AuditData", "ImageSet", "discover", "load_folder", "load_image", "natural_key"]
