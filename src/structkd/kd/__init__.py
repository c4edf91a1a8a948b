"""Knowledge distillation between structures: projections, Structural KD and baselines."""

from structkd.kd.arc_labels import LabeledArcs
from structkd.kd.losses import (
    has_local_scores,
    kbest_nll,
    kbest_targets,
    kbest_weights,
    posterior_kd_loss,
    posterior_kd_loss_from_marginals,
    structural_kd_loss,
    structural_kd_loss_from_marginals,
    substructure_mse_loss,
    token_kd_loss,
    token_kd_loss_from_probs,
    token_kd_targets,
    topk_kd_loss,
)
from structkd.kd.projections import local_temper, project, register_projection, supported_pairs
from structkd.kd.span_projection import (
    span_tag_marginals,
    span_tag_pair_marginals,
    spans_to_tags,
    tag_names,
)

__all__ = [
    "has_local_scores",
    "LabeledArcs",
    "kbest_nll",
    "kbest_targets",
    "kbest_weights",
    "local_temper",
    "posterior_kd_loss",
    "posterior_kd_loss_from_marginals",
    "project",
    "register_projection",
    "span_tag_marginals",
    "span_tag_pair_marginals",
    "spans_to_tags",
    "structural_kd_loss",
    "structural_kd_loss_from_marginals",
    "substructure_mse_loss",
    "supported_pairs",
    "tag_names",
    "token_kd_loss",
    "token_kd_loss_from_probs",
    "token_kd_targets",
    "topk_kd_loss",
]
