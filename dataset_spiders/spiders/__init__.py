"""The sources: one spider per kind of image list."""
