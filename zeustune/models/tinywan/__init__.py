"""tiny-wan: a toy text-to-video model with the Wan 2.1 architecture, trained on CPU on synthetic clips."""
