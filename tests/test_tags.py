"""Tags as code: README.md, conf/health/*.yaml and the notebooks name only tags that real runs write.

Short runs of both training scripts (every writer on: pretraining and adversarial steps, content
loss, EMA, skill with its regression baseline, weight images and their deltas, embeddings) are
read back through TensorBoard's EventAccumulator; every tag named in the documents, read as a
pattern (``<model>``, ``...``, ``{a,b}``, ``a|b`` and a trailing ``/`` are wildcards), must
match at least one written tag. A ghost tag (documented, watched by health, or plotted by a
notebook, but never written) fails with its file.
"""

from __future__ import annotations

import fnmatch
import itertools
import json
import re
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from diagnostics import tags
from diagnostics.core import COUNT_SUFFIXES
from tests.gan_helpers import ROOT, events, gan_cfg

# First path components of TensorBoard tags (not snapshot keys such as probe/ or scalar/).
KINDS = (
    "loss|gan|act|grad|weights|weights_img|weights_img_delta|slices|spectrum|spectrum2d|values"
    "|skill|health|perf|embed|frames|run|diagnostics"
)
TAG_RE = re.compile(rf"^(?:{KINDS})/")


def written(run_dir: Path) -> set[str]:
    """Every tag of the run's event file (text tags without TensorBoard's ``/text_summary``)."""
    out = set()
    for names in events(run_dir).Tags().values():
        if isinstance(names, list):
            out |= {n.removesuffix("/text_summary") for n in names}
    # NaN/Inf counts reach the event file only from their first non-zero value
    # (diagnostics.core.COUNT_SUFFIXES; tests/test_diagnostics.py proves both halves); every
    # write records them in the history health reads, so a layer's or model's are "written"
    for t in list(out):
        if re.fullmatch(r"act/[^/]+/.+/mean|grad/[^/]+/norm", t):
            base = t.rsplit("/", 1)[0]
            out |= {base + s for s in COUNT_SUFFIXES}
    return out


@pytest.fixture(scope="module")
def tags_written(cache_dir, tmp_path_factory) -> set[str]:
    from experiments import train_autoencoder, train_gan

    gan_dir = tmp_path_factory.mktemp("gan")
    train_gan.train(
        gan_cfg(
            cache_dir,
            "train.steps=3",
            "train.pretrain_steps=1",
            "train.content_weight=1",
            "train.ema_decay=0.5",
            "diagnostics.every=1",
            "log.slices_every=1",
            "log.physics_every=3",
            "log.weight_deltas=true",
            "embed.every=3",
        ),
        gan_dir,
    )
    ae_dir = tmp_path_factory.mktemp("ae")
    with initialize_config_dir(version_base="1.3", config_dir=str(ROOT / "conf" / "autoencoder")):
        cfg = compose(
            config_name="train_autoencoder",
            overrides=[
                "+exp=small",
                "train.n_epochs=1",
                "train.steps_per_epoch=10",
                "frames.every=10",
                "frames.weight_deltas=true",
                "checkpoint.every=10",
                "diagnostics.every=5",
                "diagnostics.record_every=5",
            ],
        )
    train_autoencoder.train(cfg, ae_dir)
    return written(gan_dir) | written(ae_dir)


def as_globs(name: str) -> list[str]:
    """fnmatch patterns for a documented tag: ``<x>``, ``{v}``, ``...`` and ``a|b`` become
    wildcards, ``{a,b}`` expands, a trailing ``/`` means "anything below"."""
    name = name.replace("...", "*")
    name = re.sub(r"<[^>]*>", "*", name)
    name = re.sub(r"\{[A-Za-z_]\w*\}", "*", name)  # a Python f-string field
    name = re.sub(r"[A-Za-z0-9]+(\|[A-Za-z0-9]+)+", "*", name)
    if name.endswith("/"):
        name += "*"
    parts = re.split(r"(\{[^}]*\})", name)
    choices = [p[1:-1].split(",") if p.startswith("{") else [p] for p in parts]
    return ["".join(c) for c in itertools.product(*choices)]


def readme_tags() -> set[str]:
    text = (ROOT / "README.md").read_text()
    found = set(re.findall(r"`([^`\s]+)`", text))
    return {t for t in found if TAG_RE.match(t) and not t.endswith(".py") and t != "diagnostics/"}


def notebook_tags() -> dict[str, set[str]]:
    out = {}
    for nb in sorted((ROOT / "notebooks").glob("*.ipynb")):
        cells = json.loads(nb.read_text())["cells"]
        src = "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "code")
        lits = re.findall(r"[\"']([^\"'\s]+)[\"']", src)
        out[nb.name] = {t for t in lits if TAG_RE.match(t)}
    return out


def health_patterns() -> dict[str, set[str]]:
    """Every tag pattern of conf/health/<name>.yaml, as the script composes it."""
    out = {}
    for name, script in (("gan", "train_gan"), ("autoencoder", "train_autoencoder")):
        with initialize_config_dir(config_dir=str(ROOT / "conf" / name), version_base="1.3"):
            cfg = OmegaConf.to_container(compose(config_name=script).health)
        pats = set()
        for check in cfg.values():
            for v in check.values() if isinstance(check, dict) else []:
                if isinstance(v, list):
                    pats |= {p for p in v if isinstance(p, str) and TAG_RE.match(p)}
        out[f"{name}.yaml"] = pats
    assert {p.name for p in (ROOT / "conf" / "health").glob("*.yaml")} == set(out)
    return out


def ghosts(names: set[str], have: set[str]) -> list[str]:
    return sorted(n for n in names if not any(fnmatch.filter(have, g) for g in as_globs(n)))


def test_pattern_reading_is_what_a_person_means():
    assert as_globs("act/<model>/<layer>/{mean,std}") == ["act/*/*/mean", "act/*/*/std"]
    assert as_globs("spectrum/<var>/ratio_low|mid|high") == ["spectrum/*/ratio_*"]
    assert as_globs("skill/{v}/w1") == ["skill/*/w1"]
    assert as_globs("loss/") == ["loss/*"] and as_globs("grad/...") == ["grad/*"]
    assert ghosts({"gan/wasserstein", "gan/g*"}, {"gan/gap"}) == ["gan/wasserstein"]
    # The documents are read at all (a reader that finds nothing would pass every check).
    assert len(readme_tags()) > 30 and "loss/D" in readme_tags()
    assert all(len(t) >= 4 for t in notebook_tags().values())
    assert all("act/*/std" in p for p in health_patterns().values())


def test_vocabulary_is_written(tags_written):
    consts = {v for k, v in vars(tags).items() if k.isupper() and isinstance(v, str) and "/" in v}
    # loss/G_content needs a content loss, loss/G_mse pretraining: both are on in the GAN run.
    assert consts <= tags_written, sorted(consts - tags_written)
    assert tags.act("G", "proj", "mean") in tags_written
    assert tags.grad("G", what="norm") in tags_written
    assert tags.gan("grad_norm/D") in tags_written and tags.slices("G", 0) in tags_written


def test_readme_names_only_written_tags(tags_written):
    assert ghosts(readme_tags(), tags_written) == []


@pytest.mark.parametrize("name", ["gan.yaml", "autoencoder.yaml"])
def test_health_configs_watch_only_written_tags(name, tags_written):
    assert ghosts(health_patterns()[name], tags_written) == []


@pytest.mark.parametrize("name", ["gan.ipynb", "autoencoder.ipynb"])
def test_notebooks_read_only_written_tags(name, tags_written):
    assert ghosts(notebook_tags()[name], tags_written) == []
