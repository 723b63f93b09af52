"""Weight files: fp16 export and lean, streamed loading."""
