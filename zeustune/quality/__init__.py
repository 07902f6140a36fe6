"""The quality layer: scoring a schedule against full steps on a model.

- ``metrics``: the quality metrics (lpips, st-lpips, gmsd, psnr, ssim) and their fallbacks;
- ``stlpips``: the shift-tolerant LPIPS network, read from its package's shipped weights;
- ``errors``: MetricUnavailable, raised by both of the above (metrics imports stlpips, not back);
- ``references``: the on-disk cache of full-step references, keyed by everything that makes them;
- ``evaluate``: sampling, references, scores, interleaved timing, ``zeustune eval``'s reports.

Submodules import torch; import them by name (nothing is loaded here).
"""
