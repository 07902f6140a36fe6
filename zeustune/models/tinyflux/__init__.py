"""tiny-flux: a toy text-to-image model with the FLUX architecture, trained on CPU on synthetic scenes."""
