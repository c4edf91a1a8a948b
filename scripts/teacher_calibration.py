"""Is a NER teacher's confidence honest? Mean max-marginal against accuracy on labeled data (an
analysis for results/*/NOTES.md: an over-confident teacher gains from a temperature above 1).

    python scripts/teacher_calibration.py MODEL_DIR LABELED_FILE [--limit 1000]

For every token, the teacher's most probable tag under its marginals and that probability; prints
the mean probability (confidence) and the share of correct tags (accuracy), over all tokens and
over the tokens of gold entities. Gold tags are converted to the model's tag scheme first. Cost:
one forward-backward pass of the teacher over ``--limit`` sentences.
"""

from __future__ import annotations

import argparse

import torch

from structkd.data.conll import read_ner
from structkd.models.checkpoint import load_model
from structkd.structures.tags import from_spans, to_spans


def calibration(model_dir: str, path: str, limit: int) -> dict[str, tuple[float, float]]:
    """``{"all": (confidence, accuracy), "entity": (confidence, accuracy)}``."""
    model = load_model(model_dir).eval()
    sentences = read_ner(path, "auto")[:limit]
    sums = {"all": [0.0, 0.0, 0], "entity": [0.0, 0.0, 0]}
    outside = model.vocab.tag_index["O"]
    with torch.no_grad():
        for i in range(0, len(sentences), 32):
            batch = sentences[i : i + 32]
            marginals = model.structure(model.collate([s.tokens for s in batch])).marginals
            for b, sentence in enumerate(batch):
                assert sentence.tags is not None, f"{path}: sentence {i + b + 1} has no tags"
                n = len(sentence.tokens)
                tags = from_spans(to_spans(sentence.tags), n, model.vocab.tag_scheme)
                gold = torch.tensor([model.vocab.tag_index.get(t, -1) for t in tags])
                confidence, best = marginals[b, :n].max(-1)  # [n] each
                for name, keep in (("all", gold == gold), ("entity", gold != outside)):
                    sums[name][0] += float(confidence[keep].sum())
                    sums[name][1] += float((best[keep] == gold[keep]).sum())
                    sums[name][2] += int(keep.sum())
    return {k: (c / max(n, 1), a / max(n, 1)) for k, (c, a, n) in sums.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model_dir")
    parser.add_argument("labeled", help="CoNLL or WikiAnn TSV file with tags")
    parser.add_argument("--limit", type=int, default=1000)
    args = parser.parse_args()
    torch.set_num_threads(1)
    result = calibration(args.model_dir, args.labeled, args.limit)
    print(
        f"{args.model_dir}: "
        + "; ".join(
            f"{name} tokens: confidence {c:.3f}, accuracy {a:.3f}"
            for name, (c, a) in result.items()
        )
    )


if __name__ == "__main__":
    main()
