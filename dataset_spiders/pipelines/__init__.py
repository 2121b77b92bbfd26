"""The stages an image goes through, in order: download, validate, placeholders, commit, describe, record."""
