"""dataset-spiders: clean, verified image datasets from the ISIC Archive and ImageNet URL lists."""

__version__ = "0.1.0"
