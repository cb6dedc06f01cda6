"""The paper's own numbers for IR_CASIA (arXiv 2509.17457), as it prints them, for the report to set
beside this run's: the same quantities on both sides.

* :data:`IR_CASIA_SHARES`: Appendix B's IR_CASIA table (= the IR_CASIA columns of Tables 10 and 11
  at 100 % and 1 %): % of the selected pixels per FaRL class, mean over maps, all nine layers
  pooled, at each relevance level of :data:`LEVELS` (top-k % of the activated pixels; 100 = full
  activation).
* :data:`IR_CASIA_OCCLUSION`: Table 21's IR_CASIA column: mean cosine drop of IR_CASIA when the
  anchor's top LEAM pixels of IR_CASIA's first convolution (``leam``) or as many random pixels
  (``random``, over the whole image) are set to black, per occluded share of the image (%).
* The paper shows no BC/EMD for IR_CASIA (Tables 3-6 are the six IResNets only: "the obtained
  values were within the same range of magnitude").

Its parser is FaRL (19 classes); a run with another parser can compare only the classes both see.
"""

from __future__ import annotations

__all__ = ["LEVELS", "IR_CASIA_SHARES", "OCCLUSION_SIZES", "IR_CASIA_OCCLUSION", "BC_RANGE", "EMD_RANGE"]

#: Appendix B's relevance levels, % (100: every activated pixel, Table 10)
LEVELS = (0.01, 0.05, 0.1, 0.25, 0.5, 0.75, 1, 1.25, 1.5, 1.75, 2, 3, 5, 10, 100)

#: Appendix B, IR_CASIA: class -> share (%) at each of :data:`LEVELS`
IR_CASIA_SHARES: dict[str, tuple[float, ...]] = {
    "background": (4.27, 4.03, 3.99, 3.99, 4.05, 4.11, 4.17, 4.22, 4.27, 4.32, 4.37, 4.56, 4.89, 5.6, 10.95),
    "clothes": (0.78, 0.68, 0.65, 0.64, 0.64, 0.64, 0.65, 0.66, 0.66, 0.67, 0.67, 0.7, 0.75, 0.86, 1.74),
    "earrings": (0.02, 0.02, 0.02, 0.02, 0.02, 0.02, 0.02, 0.02, 0.02, 0.02, 0.02, 0.02, 0.03, 0.03, 0.06),
    "eyeglasses": (0.7, 0.69, 0.69, 0.7, 0.72, 0.73, 0.75, 0.76, 0.77, 0.78, 0.8, 0.83, 0.89, 0.94, 0.85),
    "face": (48.05, 47.81, 47.77, 48.12, 48.95, 49.77, 50.52, 51.19, 51.82, 52.4, 52.96, 54.86, 57.47, 60.4, 55.32),
    "hair": (4.2, 4.18, 4.18, 4.21, 4.29, 4.37, 4.43, 4.5, 4.56, 4.61, 4.67, 4.88, 5.26, 6.12, 12.09),
    "hat": (0.28, 0.28, 0.28, 0.28, 0.29, 0.29, 0.3, 0.3, 0.31, 0.31, 0.32, 0.33, 0.36, 0.43, 0.95),
    "inner mouth": (0.52, 0.51, 0.5, 0.51, 0.52, 0.54, 0.56, 0.57, 0.58, 0.6, 0.61, 0.65, 0.71, 0.79, 0.58),
    "left ear": (0.04, 0.03, 0.03, 0.04, 0.04, 0.04, 0.04, 0.05, 0.05, 0.05, 0.05, 0.06, 0.07, 0.1, 0.29),
    "left eye": (0.54, 0.57, 0.58, 0.6, 0.63, 0.65, 0.67, 0.68, 0.69, 0.7, 0.71, 0.74, 0.79, 0.8, 0.56),
    "left eyebrow": (2.59, 2.47, 2.39, 2.28, 2.19, 2.13, 2.09, 2.05, 2.03, 2, 1.99, 1.93, 1.86, 1.75, 1.32),
    "lower lip": (0.82, 0.86, 0.89, 0.94, 1, 1.04, 1.08, 1.11, 1.14, 1.16, 1.19, 1.28, 1.44, 1.74, 1.45),
    "neck": (0.84, 0.59, 0.55, 0.55, 0.56, 0.58, 0.59, 0.6, 0.62, 0.63, 0.64, 0.68, 0.75, 0.95, 2.24),
    "necklace": (0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0.01),
    "nose": (31.34, 32.48, 32.77, 32.57, 31.64, 30.65, 29.72, 28.86, 28.05, 27.29, 26.56, 24, 20.23, 15.04, 8.28),
    "right ear": (0.04, 0.04, 0.04, 0.05, 0.05, 0.05, 0.05, 0.06, 0.06, 0.06, 0.06, 0.07, 0.08, 0.11, 0.31),
    "right eyebrow": (3.13, 2.92, 2.8, 2.62, 2.47, 2.38, 2.32, 2.27, 2.23, 2.2, 2.17, 2.09, 1.99, 1.84, 1.35),
    "right eye": (0.61, 0.65, 0.67, 0.69, 0.71, 0.74, 0.75, 0.77, 0.78, 0.79, 0.8, 0.82, 0.84, 0.82, 0.56),
    "upper lip": (1.23, 1.21, 1.2, 1.21, 1.24, 1.27, 1.31, 1.34, 1.36, 1.39, 1.41, 1.49, 1.59, 1.65, 1.11),
}

#: Table 21's occlusion sizes, % of the image
OCCLUSION_SIZES = (0.01, 0.05, 0.1, 0.25, 0.5, 0.75, 1, 1.25, 1.5, 2, 5, 10)

#: Table 21, IR_CASIA as the target of IR_CASIA conv1 pixels: method -> mean drop at each size
IR_CASIA_OCCLUSION: dict[str, tuple[float, ...]] = {
    "leam": (0.0063, 0.0206, 0.0367, 0.0703, 0.1099, 0.1403, 0.1655, 0.1843, 0.2006, 0.2284, 0.3170, 0.3752),
    "random": (0.0003, 0.0022, 0.0040, 0.0081, 0.0180, 0.0267, 0.0355, 0.0425, 0.0508, 0.0678, 0.1286, 0.2224),
}

#: the paper's BC and EMD at top 1 % over the six IResNets' nine layers (Tables 3-6), (low, high)
BC_RANGE = {"same": (0.20, 0.57), "different": (0.04, 0.13)}
EMD_RANGE = {"same": (5.99, 14.77), "different": (11.54, 29.31)}
