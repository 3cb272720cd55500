"""Keys made before the device left the run keys (cache.legacy_run_key)."""
from pathlib import Path

import pytest

from harness import cache, experiments, spec

REPO = Path(__file__).resolve().parent.parent
CLAIMS = REPO / "claims"

# The cuda keys of primary runs before the device left the keys (commit 8463b7d; the committed
# H100 part is keyed by them): legacy_run_key must go on giving them, or old entries are lost.
LEGACY = [("ntk.toml", "ntk_mlp", "full", "cfbac5a79dc9f7c514a6c4c4"),
          ("ntk.toml", "ntk_mlp", "smoke", "c2175ae9a5ce1ecd66285dc1"),
          ("double_descent.toml", "dd_mlp", "full", "7caba4240b0949a271db4378"),
          ("double_descent.toml", "dd_mlp", "smoke", "7e16bc93144e33005ad9bed3"),
          ("double_descent.toml", "dd_cnn", "full", "b00229b5c74636e5d201fc16"),
          ("batch_size.toml", "bs_sweep", "full", "5f733da9c07e9852efb2392a"),
          ("lottery.toml", "ticket", "full", "a6b089107f9bb98143ee5c67")]


@pytest.mark.parametrize("file,name,tier,key", LEGACY)
def test_legacy_keys_are_the_old_cuda_keys_and_the_new_keys_the_cpu_ones(file, name, tier, key):
    exp = spec.load(CLAIMS / file, with_claims=False).experiments[name]
    gpu, cpu = experiments.expand(exp, tier, "cuda")[0], experiments.expand(exp, tier, "cpu")[0]
    assert cache.legacy_run_key(gpu) == key
    assert cache.run_key(gpu) == cache.run_key(cpu) == cache.legacy_run_key(cpu) != key


def test_the_legacy_movement_measurement_key():
    exp = spec.load(CLAIMS / "ntk.toml", with_claims=False).experiments["ntk_mlp"]
    cfg = experiments.expand(exp, "full", "cuda")[0]
    opts = spec.measurement_options("movement", exp.resolved("full")["instruments"]["movement"])
    extra = {"measure_of": cache.legacy_run_key(cfg), "instrument": "movement", "options": opts}
    assert cache.legacy_run_key(cfg, extra) == "710a8ad0c861172829dccebd"
