"""Loss families. Each module holds per-sample math and its declarations only; importing a
module registers its losses in ``losskit.registry``, from which the public names are derived."""

from . import binary, classification, contrastive, counts, ctc, distributional, divergence, embedding, focal, lovasz, margin, multilabel, poly, ranking, regression, relative, robust, segmentation, sparsemax  # noqa: F401  (registers the losses)
