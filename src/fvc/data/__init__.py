"""Getting videos in: manifests, download, archives, the index, video decoding, demo data."""
