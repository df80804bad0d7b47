"""What clients see, pinned as literals: the seed contract's latents and the exact bytes of the
shipped models' PNGs, grids, GIFs and strips.

Every other determinism test builds its expectations with the product's own `latent_for_seed`
and encoders, so it cannot notice if those change. These literals can: a rewrite of the request
path must leave every one of them as it is. A model's new version updates its literals in the
same commit (regenerate them with `python -m tests.test_pinned_bytes`).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import sys
from pathlib import Path

import numpy as np
import pytest

from service.runtime.card import ModelCard, latent_for_seed
from service.settings import Settings
from tests.service.conftest import serve_in_process

MODELS_DIR = Path(__file__).resolve().parent.parent / "models"
MAX_SEED = 2**63 - 1

# numpy.random.default_rng(seed).standard_normal(d, dtype=float32)[:3], the documented contract.
LATENT_PREFIXES = {
    0: [1.1176220178604126, -1.3871248960494995, -0.4265716075897217],
    1: [1.7291035652160645, -1.4284534454345703, 1.0277447700500488],
    MAX_SEED: [-0.3000846207141876, -0.11347315460443497, -0.3361496031284332],
}

# sha256 of what each request below answers, per shipped model and version.
PINNED = {
    "fashion-cgan": {
        "seed 0": "33a4df243f5cb55767ac5bec3acd242375aa4d39d976b33cd58180ab7dd1231e",
        "seed 1": "02f281884b241666d058828a4317c55391ca10a346a93b937e5b69c215d7bcf4",
        "seed 7": "dda71d7a460a2c36f8fd009cc71fbb0320c25635d809a207f8372f35392f85c1",
        "seed max": "9bfa88e807b0011eac186e36cc323881401e78eb0cac997d1188e05671a71e0e",
        "seed 7 x4 t0.5": "5295e21dcb19f5eb54c89f9b3718ff3cbda3694cdf9ed6de8e782402f395ae66",
        "grid": "007b302068c3b72c5c247969c07c94414d95ff613b9dc24e41dcc445f7ab83c8",
        "gif": "f811e80a365893386d95748bb2339e793e14036098f2d23d8a26f459890d68fd",
        "strip lerp": "4af6c6d6f7600ca6ec6e63fbb525fe73e24b108f3ed54ddc44685b490e5d3339",
        "seed 7 class 3": "671856fedc07b7926e21122f4dbc3ca6e00f50aee0512faf9bdb7bc337e2a793",
        "mixed classes": "36524c755da5ccd230a92d39c6d8236cf51dbe45bf7f477d9dd1a9ec74d992d9",
        "class blend": "17d5a902143a973b29400d0c0d32aaf1a1d5f7f4477c198e4c47c43631f13fce",
    },
    "fashion-gan": {
        "seed 0": "19b056dcb2e19e58e042de6c2442295d894260ac9a5c2e2b0f45e24a7d5f7714",
        "seed 1": "a57e2396f94511c2569c116b248a4aa0e8f5599a03ce789daf0ddea91e6713ff",
        "seed 7": "da0f4113dc2c1dbeebfc73d220c870749bfc6de17dcd97a3b90f0ecb4cbdc35d",
        "seed max": "a2fd1d9c711b40ce04f6447ed34169ee545a686aea778225dd5a27b6ce980c79",
        "seed 7 x4 t0.5": "4fab838220bdb833780d2d59284ac763c6c751f9c9020ce2bb41f05568f9ef55",
        "grid": "b5634d302981ce9793619b037c366ed61b86d2a8824f4798b8d5a886c17ae228",
        "gif": "a5dc823598a513f93decb814bfe3cf7b6fce0b38ce2d909c75dc5e4f47044b5d",
        "strip lerp": "dac9e22ec197141df474fcecaa82ecfd768585a3061c24809591327b8eb66504",
    },
    "fashion-vae": {
        "seed 0": "0fe173eac585d5e70e2f1fd813ff9a68165a9c3559a8254f2f1b22bf59e64877",
        "seed 1": "e62b9974bfd79545e228da5be58cb3461336f77a676fbf176000dfd06fdc496a",
        "seed 7": "3639471736a6cc74fc50e36cd00066120e9f097804bdcb6274b63ca7ed538f4b",
        "seed max": "21afb67d15d933d09a9a35276d7f3e6473925c6068c2f6d7b83b8302d672ae95",
        "seed 7 x4 t0.5": "659f129555366c59a54463913371ec8c61fd3c3d49a67e826530d026b3a41567",
        "grid": "f78956914731cbb6ff6435a5a66e057fc211396dcb388a3b34cc265ed2f100d8",
        "gif": "54786ba05bf8cf82cc83e6f86e4e392812f3d65877457da227053a01dbbf7e1b",
        "strip lerp": "034e24a5b883adb307e29d229cc6a02a12c6853773194ec8b90f1436733a7b0a",
    },
    "mnist-cgan": {
        "seed 0": "643568cee2108c5e5ff409e6995175c23f90a56349e306a28f189ad684c0901a",
        "seed 1": "715992b9aabaeeb794ef1b37db9997c947a62810df6e576f81b083b29a898be5",
        "seed 7": "215e11fe67622418f1e43a6b0535cd14e33fae96234cfdc7644d9bceab8a36cf",
        "seed max": "c2c576f256bc5bd8bed096341928255aac7896edcddb9c9c14bf2c2133e993c6",
        "seed 7 x4 t0.5": "7eee65b8ba5c1d4a0dcc2fd6da882b42ed4abeca9d9d36f1ffdcfe048e186f01",
        "grid": "e9021f97f8aa7457b1c8a5c42d04314d63728fe37736d15a00e01e4af03cbe66",
        "gif": "71d7011fb91dce076dc2b6fa0a1ffc18453543eec27aef0f603da1e78afa3b67",
        "strip lerp": "397647358bb84c868f948df16051d94c70732620c8d72cab3d9a4ac5c02f1a30",
        "seed 7 class 3": "2ea094badc2130d3572f71fc18c395cf770010b01eaddec357df718f18c7bb45",
        "mixed classes": "e33153e8bd678213473d04bbc5fd1934faf0713bea58f3ab8152354b469c901d",
        "class blend": "68d45e12bf98c7d669de1e80b6baa988929df3a10a815ca68c48271942013cb2",
    },
    "mnist-gan": {
        "seed 0": "7b4d1a46121bdf4f9f3473872fa6fed97580948983108d0f769fc104172a1cc3",
        "seed 1": "64e75a2a6b09649d9ff3c4ba793b88a65ca6330cf5576338ffc65ba5430d45ef",
        "seed 7": "9bc1ee300fcafe5fd06cb1c538f3493d0c5048c8424885aabd602ef057bf0309",
        "seed max": "d302e3a1bb132992d1e80b03155cc409ba0ba5fdcc8548d8941eb9106c272ced",
        "seed 7 x4 t0.5": "ae4b2080c395cd72dd5e2a4461286081f13798374e1e12239f0ea7c7a3b61b4a",
        "grid": "76dc513fe5c4f44d38642adfb1dfbd5cbe4979f58e1a71cb5697b041e6e8bbfe",
        "gif": "41aaa7f8f2326ad85362d6b0a5360cbe5f0d2e6965520fe233966117fb76341b",
        "strip lerp": "8260fe92710918ed05a92627c1e02480dcac0d2dbf6ccd3134362c1e0f7cf5e9",
    },
    "mnist-vae": {
        "seed 0": "c61d6fedff14c6c5309d5508fc413a6bf4c2e2e52b469b76ad89522555fe286d",
        "seed 1": "d3e052ca4d8067aab14da88ca57da10d10d71f4a613fbe092379d08a6663f774",
        "seed 7": "0cfee78627f9b637ab29b59d0eaf81b68b17a3d80bf6e22c4e9218b1e3e9d319",
        "seed max": "4678a32ae56d9a6dfa96da1eaf50b671245e8982a2d0b988637018d751006495",
        "seed 7 x4 t0.5": "e8602dbf9bc0daf728b75b5562557bcbbd8672206f26845253fb7503fe255a95",
        "grid": "7b520efa95149b1d6653a07f2c85330c63f5951396744e0cb4de23dcba93fcbd",
        "gif": "d2c3737684cf415ff720b54e8e2afb9521a5ba976d262d1e984db4b24e41f87f",
        "strip lerp": "0f464ab0a1a0beda65d9e47568440300f34b45473af681d4d2fb621c6e82811c",
    },
}
VERSIONS = {
    "mnist-cgan": "1.0.0",
    "fashion-cgan": "1.2.0",
    "fashion-gan": "1.1.0",
    "fashion-vae": "1.0.0",
    "mnist-gan": "1.2.0",
    "mnist-vae": "1.0.0",
}

SEEDS = {"0": 0, "1": 1, "7": 7, "max": MAX_SEED}
# (label, method, path under /v1/models/{model}, JSON body or None, Accept or None)
REQUESTS: list[tuple[str, str, str, dict[str, object] | None, str | None]] = [
    *(
        (f"seed {label}", "POST", "/generate", {"seed": seed}, None)
        for label, seed in SEEDS.items()
    ),
    (
        "seed 7 x4 t0.5",
        "POST",
        "/generate",
        {"seed": 7, "scale": 4, "truncation": 0.5},
        None,
    ),
    (
        "seed 7 x4 t0.5",
        "GET",
        "/images/7.png?scale=4&truncation=0.5",
        None,
        None,
    ),
    (
        "grid",
        "POST",
        "/generate/batch",
        {"count": 16, "seed": 100, "columns": 4, "scale": 2},
        "image/png",
    ),
    (
        "gif",
        "POST",
        "/interpolate",
        {"start": {"seed": 7}, "end": {"seed": 42}, "steps": 8},
        "image/gif",
    ),
    (
        "strip lerp",
        "POST",
        "/interpolate",
        {"start": {"seed": 7}, "end": {"seed": 42}, "steps": 8, "method": "lerp"},
        None,
    ),
]


# Class-conditional models answer these too (classes by index, so any 10-class model can).
CLASS_REQUESTS: list[tuple[str, str, str, dict[str, object] | None, str | None]] = [
    ("seed 7 class 3", "POST", "/generate", {"seed": 7, "class": 3}, None),
    ("seed 7 class 3", "GET", "/images/7.png?class=3", None, None),
    (
        "mixed classes",
        "POST",
        "/generate/batch",
        {"seeds": [5, 5, 6, 7], "classes": [0, 9, 2, 7], "columns": 4},
        "image/png",
    ),
    (
        "class blend",
        "POST",
        "/interpolate",
        {"start": {"seed": 7, "class": 7}, "end": {"seed": 7, "class": 9}, "steps": 6},
        None,
    ),
]


@pytest.mark.parametrize("seed", sorted(LATENT_PREFIXES))
@pytest.mark.parametrize("latent_dim", [4, 16, 64])
def test_seed_latents_are_the_documented_ones(seed: int, latent_dim: int) -> None:
    latent = latent_for_seed(seed, latent_dim)
    assert latent.dtype == np.float32 and latent.shape == (latent_dim,)
    expected = np.random.default_rng(seed).standard_normal(latent_dim, dtype=np.float32)
    np.testing.assert_array_equal(latent, expected)
    prefix = LATENT_PREFIXES[seed][: min(3, latent_dim)]
    assert [float(x) for x in latent[: len(prefix)]] == prefix


async def answers(name: str) -> dict[str, list[str]]:
    """sha256 of each pinned request's body, by label (a label may be asked several ways)."""
    digests: dict[str, list[str]] = {}
    settings = Settings(models_dir=MODELS_DIR, max_batch_delay_ms=1)
    conditional = ModelCard.load(MODELS_DIR / name / "model.json").conditioning is not None
    async with serve_in_process(settings) as http:
        for label, method, path, body, accept in REQUESTS + (CLASS_REQUESTS if conditional else []):
            headers = {"Accept": accept} if accept else {}
            url = f"/v1/models/{name}{path}"
            response = await http.request(method, url, json=body, headers=headers)
            assert response.status_code == 200, (label, response.text)
            digests.setdefault(label, []).append(hashlib.sha256(response.content).hexdigest())
    return digests


def test_every_shipped_model_is_pinned() -> None:
    shipped = {p.parent.name: ModelCard.load(p).version for p in MODELS_DIR.glob("*/model.json")}
    assert shipped == VERSIONS, "a model changed: regenerate its literals in the same commit"


@pytest.mark.parametrize("name", sorted(PINNED))
async def test_served_bytes_are_the_pinned_ones(name: str) -> None:
    digests = await answers(name)
    for label, expected in PINNED[name].items():
        assert digests[label] == [expected] * len(digests[label]), f"{name}: {label}"


if __name__ == "__main__":  # print fresh literals for a model's new version
    for model in sorted(p.parent.name for p in MODELS_DIR.glob("*/model.json")):
        found = asyncio.run(answers(model))
        json.dump({model: {k: v[0] for k, v in found.items()}}, sys.stdout, indent=4)
        print()
