"""How much of a NER teacher's probability its k best outputs hold (an analysis for
results/*/NOTES.md: when the k-best list holds nearly all the mass, Top-WK is close to matching
the teacher's whole distribution).

    python scripts/kbest_mass.py MODEL_DIR SENTENCES [--k 5] [--limit 1000]

Prints the mean and median over sentences of ``sum_{y in k-best} P_teacher(y)`` and the share of
sentences where it is at least 0.9. Cost: one teacher pass plus k-best decoding, O(k) times the
teacher's Viterbi, over ``--limit`` sentences.
"""

from __future__ import annotations

import argparse
import statistics

import torch

from structkd.data.conll import read_ner
from structkd.kd import kbest_weights
from structkd.models.checkpoint import load_model


def kbest_masses(model_dir: str, path: str, k: int, limit: int) -> list[float]:
    """Per sentence, the teacher's probability mass on its ``k`` best outputs."""
    model = load_model(model_dir).eval()
    sentences = [s.tokens for s in read_ner(path, "auto")][:limit]
    masses: list[float] = []
    with torch.no_grad():
        for i in range(0, len(sentences), 32):
            words = sentences[i : i + 32]
            structure = model.structure(model.collate(words))
            kbest = structure.topk(k)
            scores = torch.stack([structure.score(y) for y in kbest])  # [K, B]
            distinct = kbest_weights(kbest, len(words), scores.device) > 0  # repeats out
            probs = (scores - structure.log_partition).exp()
            masses += torch.where(distinct, probs, 0.0).sum(0).tolist()
    return masses


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model_dir")
    parser.add_argument("sentences", help="CoNLL, WikiAnn TSV or one sentence per line")
    parser.add_argument("--k", type=int, default=5)
    parser.add_argument("--limit", type=int, default=1000)
    args = parser.parse_args()
    torch.set_num_threads(1)
    masses = kbest_masses(args.model_dir, args.sentences, args.k, args.limit)
    share = sum(m >= 0.9 for m in masses) / len(masses)
    print(
        f"{args.model_dir}: {len(masses)} sentences, top-{args.k} mass mean "
        f"{statistics.mean(masses):.3f}, median {statistics.median(masses):.3f}, "
        f"share >= 0.9: {share:.2f}"
    )


if __name__ == "__main__":
    main()
