"""The finite mask floor every attention path uses: a fully masked row softmaxes to a uniform row, never NaN."""
MASK_FLOOR = -1e20
