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
        "seed 0": "bbe56984c25d776c78ad4a813ff8fd6fa7e115e46ed29b9f141a08f18ae8cd62",
        "seed 1": "2400dfef0fe75f11020169bb28b67e8f6d6ba821d252bdb41ea35abd0a344d1a",
        "seed 7": "e4fbfba0bc6fb5e287191aa225f69f1b2c7bd61c6c72eabcd5ef4e2e1842f994",
        "seed max": "b470ac3795d46731c8e9e8928625da4623d2c9acf2f01aa3c530ab8a5d1891a3",
        "seed 7 x4 t0.5": "816625975533ad77a32ceadc23d37cb6d5f7ba95225b96850af8f49bffef5b28",
        "grid": "ffd82f5416f864423c3d364b4ecf7d06582030e65a7bfa1b58b99e42a4992469",
        "gif": "5016ff06fbd59c565e26ed907255ffc5224b69dd71c14804f1b90af9273ac92c",
        "strip lerp": "8851ed21de1bbb4fcac8bd0c1b96a6870a4f5af2e7b8b898b39503dcd46ab39c",
        "seed 7 class 3": "ec0e8b1c2260283a506448badc15de46b35641234bafe2b92dbecf30c0d7e750",
        "mixed classes": "6775e404041cd1b98683a37d3360bdf3b774abb93b17275601aa8217f50134fb",
        "class blend": "97f97c71279c717521ebc8080a9a04eba399e8522e97775e53e7a8933eb4287f",
    },
    "fashion-gan": {
        "seed 0": "ae9f3688611aa6e0d1086cbe69d9727fa515c47823a8efb5f9fa18cab8a091ae",
        "seed 1": "adf7c9bd16d3e139fabe7bcd30f59db4da64c3dcfcbbcbdfdd9bac8959f270c8",
        "seed 7": "3a410a0cec55dda49176c59613d9afc5a902be999790d6b637f13737f20a528c",
        "seed max": "24ebf36f635e7fffd8cd784755629d20d1dea0e0a239caf9366849eab9b7124c",
        "seed 7 x4 t0.5": "b0002af6b6f4cfd858808dc20e3eb4451b14e81faf1a756145f1956f7c191c07",
        "grid": "3aace357572e0d07243c2ec087fe0facbec892fcafbebb92a713b45b1b388ef4",
        "gif": "c532852a801d810c2cbef5753ed595b90ada7fa1c6094572d09bab1eff97c383",
        "strip lerp": "5643555332921dfd166844f9b61b69ce42a30e1a7bdcba09c482f1afc4f13bef",
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
    "fashion-cgan": "1.3.0",
    "fashion-gan": "1.2.0",
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
