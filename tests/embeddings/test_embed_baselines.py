"""Embeddings (mammo.embed), fusion training, and the classical baselines (mammo.baselines)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from tests.conftest import SMALL_DEMO, console_of, last_line, run_cli, train_tiny

EMBED = ["embed.backbone=test_efficientnet", "img_size=64", "data.num_workers=0", *SMALL_DEMO]


@pytest.fixture(scope="module")
def embedded(tmp_path_factory, demo_root):
    from mammo.embed import main

    out = tmp_path_factory.mktemp("embed")
    args = [
        *EMBED,
        f"paths.output_dir={out}",
        f"paths.demo_dir={demo_root}",
        "embed.projections=[pca,tsne,umap]",
    ]
    code, console = console_of(main, args)
    assert code == 0
    folder = out / "embeddings_test_efficientnet"
    assert last_line(console) == (
        f"Embeddings: {folder / 'features.npy'} | next: python -m mammo.baselines embeddings_dir={folder}"
        "  (classical baselines)"
    )
    return out, folder


def test_features_and_joined_rows_align(embedded):
    _, folder = embedded
    features = np.load(folder / "features.npy", mmap_mode="r")
    joined = pd.read_csv(folder / "joined.csv")
    manifest = json.loads((folder / "data_manifest.json").read_text())
    assert features.dtype == np.float32 and features.shape == (manifest["num_images"], 256)
    assert list(joined["row"]) == list(range(len(features)))
    assert list(joined["image_id"]) == [f["image_id"] for f in manifest["files"]]
    flat = joined[[f"f{i}" for i in range(features.shape[1])]].to_numpy()
    np.testing.assert_allclose(flat, features, rtol=1e-6, atol=1e-7)
    assert set(joined["label"]) == {1, 2, 3, 4}
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["experiment_type"] == "embedding_extraction" and summary["status"] == "completed"
    assert summary["embedding_dim"] == 256 and summary["num_images"] == len(features)
    for name in ("embeddings_pca.png", "embeddings_tsne.png", "embeddings_umap.png", "sample_grid.png"):
        assert (folder / "preview" / name).read_bytes()[:4] == b"\x89PNG"
    assert "Embedded" in (folder / "run.log").read_text()


def test_clustering_metrics_match_sklearn(embedded):
    from sklearn.metrics import calinski_harabasz_score, davies_bouldin_score, silhouette_score

    _, folder = embedded
    metrics = json.loads((folder / "clustering_metrics.json").read_text())
    features = np.load(folder / "features.npy").astype(np.float64)
    labels = pd.read_csv(folder / "joined.csv", usecols=["label"])["label"].to_numpy()
    assert metrics["k"] == 4 and set(metrics["kmeans"]) == {
        "silhouette",
        "davies_bouldin",
        "calinski_harabasz",
    }
    assert metrics["true_labels"]["silhouette"] == pytest.approx(silhouette_score(features, labels))
    assert metrics["true_labels"]["davies_bouldin"] == pytest.approx(davies_bouldin_score(features, labels))
    assert metrics["true_labels"]["calinski_harabasz"] == pytest.approx(
        calinski_harabasz_score(features, labels)
    )


def test_fusion_trains_and_saves_val_embeddings(embedded, demo_root, tmp_path):
    _, folder = embedded
    run = train_tiny(
        tmp_path,
        demo_root,
        "epochs=1",
        "model.embeddings_fusion=true",
        f"data.embeddings_dir={folder}",
        "save_embeddings=true",
    )
    summary = json.loads((run / "summary.json").read_text())
    assert (
        summary["model_config"]["embeddings_fusion"] is True
        and summary["model_config"]["embedding_dim"] == 256
    )
    val = np.load(run / "embeddings_val.npy")
    preds = pd.read_csv(run / "val_predictions.csv")
    assert val.shape == (len(preds), 256 + 256)  # tiny backbone features + the embedding
    # the second half of each row is that image's precomputed embedding
    joined = pd.read_csv(folder / "joined.csv", usecols=["row", "image_id"])
    rows = joined.set_index("image_id").loc[preds["image_id"], "row"].to_numpy()
    np.testing.assert_allclose(val[:, 256:], np.load(folder / "features.npy")[rows], rtol=1e-6)


def test_fusion_rejects_a_missing_embedding(embedded, demo_root, tmp_path):
    from mammo.train import main
    from tests.conftest import TINY

    _, folder = embedded
    broken = tmp_path / "emb"
    broken.mkdir()
    (broken / "features.npy").write_bytes((folder / "features.npy").read_bytes())
    joined = pd.read_csv(folder / "joined.csv")
    joined.iloc[1:].to_csv(broken / "joined.csv", index=False)
    args = [*TINY, *SMALL_DEMO, "epochs=1", "model.embeddings_fusion=true", f"data.embeddings_dir={broken}"]
    assert run_cli(main, [*args, f"paths.output_dir={tmp_path}", f"paths.demo_dir={demo_root}"]) == 1
    summary = json.loads(next(tmp_path.glob("mammo_tiny_density/results_*/summary.json")).read_text())
    assert f"no embedding for 1 image(s), e.g. '{joined['image_id'][0]}'" in summary["error"]["message"]


@pytest.fixture(scope="module")
def baselines(embedded):
    from mammo.baselines import main

    out, folder = embedded
    code, console = console_of(main, [f"paths.output_dir={out}", f"embeddings_dir={folder}", "folds=3"])
    assert code == 0
    done = out / "embeddings_baselines"
    assert last_line(console) == (
        f"Baselines: {done / 'statistical_tests.json'} | next: python -m mammo.runs {out}"
        "  (every run's table)"
    )
    return done


def test_baselines_write_every_file_and_the_statistics_agree_with_scipy(baselines):
    for kind in ("embeddings", "classical"):
        for model in ("lr", "svm"):
            result = json.loads((baselines / f"{kind}_{model}_metrics.json").read_text())
            assert len(result["folds"]) == 3
            for name, block in result["metrics"].items():
                values = [f[name] for f in result["folds"]]
                assert block["values"] == values and block["mean"] == pytest.approx(np.mean(values))
                assert block["std"] == pytest.approx(np.std(values, ddof=1))
    tests = json.loads((baselines / "statistical_tests.json").read_text())["tests"]
    assert len(tests) == 2 * 4
    for t in tests:
        a = json.loads((baselines / f"embeddings_{t['model']}_metrics.json").read_text())["metrics"][
            t["metric"]
        ]["values"]
        b = json.loads((baselines / f"classical_{t['model']}_metrics.json").read_text())["metrics"][
            t["metric"]
        ]["values"]
        assert t["paired_t_test"]["p_value"] == pytest.approx(stats.ttest_rel(a, b).pvalue)
        assert t["wilcoxon_signed_rank"]["p_value"] == pytest.approx(stats.wilcoxon(a, b).pvalue)
        diff = np.subtract(a, b)
        assert t["cohens_dz"] == pytest.approx(diff.mean() / diff.std(ddof=1))
    report = (baselines / "report.md").read_text()
    assert "| embeddings | lr |" in report and "| classical | svm |" in report


def test_no_transform_is_fitted_on_a_validation_fold():
    """Record every row each pipeline step is fitted on: never a row of the fold being scored."""
    from sklearn.preprocessing import StandardScaler

    from mammo.embeddings.classical import evaluate, fold_indices, make_pipeline

    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(4), 10)
    groups = np.arange(40) // 2
    x = np.column_stack([np.arange(40), rng.normal(size=(40, 30)) + y[:, None]])  # column 0 = row id
    seen: list[set] = []

    class Recording(StandardScaler):
        def fit(self, X, y=None, **kw):
            seen.append(set(np.rint(X[:, 0]).astype(int)))  # column 0 of the stats block: the row id
            return super().fit(X, y, **kw)

    folds = fold_indices(y, groups, 4, seed=0)

    def factory():
        pipeline = make_pipeline("lr", 11, 5, 0)
        pipeline.steps[0][1].transformers[0] = ("stats", Recording(), slice(0, 11))
        return pipeline

    evaluate(x, y, folds, factory, 4)
    assert len(seen) == 4
    for (_, val), fitted in zip(folds, seen):
        assert fitted and not fitted & set(val.tolist())


def test_the_silhouette_is_sampled_above_its_sample_size_and_exact_below():
    from sklearn.metrics import silhouette_score

    from mammo.embeddings.extract import clustering_metrics

    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(300, 8)), rng.integers(0, 4, 300)
    exact = clustering_metrics(x, y, 4, seed=0)
    assert exact["silhouette_sample"] is None
    assert exact["true_labels"]["silhouette"] == pytest.approx(silhouette_score(x, y))
    sampled = clustering_metrics(x, y, 4, seed=0, silhouette_sample=100)
    assert sampled["silhouette_sample"] == 100
    assert sampled["true_labels"]["silhouette"] == pytest.approx(
        silhouette_score(x, y, sample_size=100, random_state=0)
    )
    assert sampled == clustering_metrics(x, y, 4, seed=0, silhouette_sample=100)  # seeded: repeatable
