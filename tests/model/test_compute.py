"""medcore.model.compute: precision picked per CPU feature set, cores and threads per task, the fused batch norm."""

from __future__ import annotations

import numpy as np
import pytest

from medcore.model import compute
from medcore.pipeline import jobs_by_slots

AMX = frozenset({"avx512f", "avx512_bf16", "amx_bf16", "amx_tile"})
AVX512_BF16 = frozenset({"avx512f", "avx512_bf16"})
PLAIN = frozenset({"avx2", "fma"})


def test_auto_follows_the_table_row_of_the_first_flag_the_cpu_has():
    table = {flag: mode for flag, mode, _ in compute.AUTO_PRECISION}
    assert compute.choose_precision("auto", AMX)["mode"] == table["amx_bf16"]
    assert compute.choose_precision("auto", AVX512_BF16)["mode"] == table["avx512_bf16"]
    chosen = compute.choose_precision("auto", PLAIN)
    assert chosen["mode"] == "float32" and "no native bfloat16" in chosen["reason"]


@pytest.mark.parametrize("mode", ["mixed_bfloat16", "onednn_amp"])
def test_a_bf16_mode_falls_back_to_float32_without_native_bf16_and_says_why(mode):
    chosen = compute.choose_precision(mode, PLAIN)
    assert chosen == {"requested": mode, "mode": "float32", "reason": chosen["reason"]}
    assert mode in chosen["reason"] and "refused" in chosen["reason"]
    assert compute.choose_precision(mode, AVX512_BF16)["mode"] == mode


def test_unknown_precision_is_refused():
    with pytest.raises(ValueError, match="precision must be one of"):
        compute.choose_precision("float16", AMX)


def test_cpu_flags_are_read_from_cpuinfo(tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nflags\t\t: fpu avx2 avx512_bf16\n\nprocessor\t: 1\nflags\t\t: fpu\n")
    assert compute.cpu_flags(info) == {"fpu", "avx2", "avx512_bf16"}
    assert compute.cpu_flags(tmp_path / "absent") == frozenset()
    assert compute.cpu_supports_bf16(compute.cpu_flags(info)) and not compute.cpu_supports_bf16(PLAIN)


ZEN5 = frozenset({"avx", "avx2", "fma", "avx_vnni", "avx512f", "avx512bw", "avx512vbmi", "avx512_vnni", "avx512_bf16"})


@pytest.mark.parametrize("cap", ["AVX2", "avx2"])
def test_an_avx2_cap_leaves_an_avx2_cpu_so_auto_trains_in_float32(cap):
    capped = compute.capped_flags(ZEN5, cap)
    assert capped == {"avx", "avx2", "fma"}
    assert compute.choose_precision("auto", capped)["mode"] == "float32"


def test_a_cap_keeps_what_its_level_allows_and_no_cap_keeps_everything():
    assert "avx512_bf16" in compute.capped_flags(ZEN5, "AVX512_CORE_BF16")
    assert compute.capped_flags(AMX, "AVX512_CORE_BF16") == AMX - {"amx_bf16", "amx_tile"}
    assert compute.capped_flags(AMX, "AVX512_CORE_AMX") == AMX
    for cap in (None, "", "ALL", "DEFAULT", "NOT_AN_ISA"):
        assert compute.capped_flags(ZEN5, cap) == ZEN5


def test_the_cap_in_the_environment_applies_to_this_machines_flags(tmp_path, monkeypatch):
    info = tmp_path / "cpuinfo"
    info.write_text("flags\t\t: fpu avx2 fma avx512f avx512_bf16\n")
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")
    assert compute.effective_cpu_flags(info) == {"fpu", "avx2", "fma"}
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA")
    assert compute.effective_cpu_flags(info) == compute.cpu_flags(info)


def test_float32_speed_follows_the_row_of_the_first_flag_the_cpu_has_and_says_why():
    table = {flag: chosen for flag, chosen, _ in compute.FLOAT32_SPEED}
    avx2 = compute.choose_float32_speed("float32", True, PLAIN)
    assert avx2["fused_batch_norm"] is table["avx2"]["fused_batch_norm"] and avx2["reason"].startswith(
        "float32 on avx2"
    )
    # A CPU with AVX-512 takes its own row, never the AVX2 one, though it has avx2 too.
    zen5 = compute.choose_float32_speed("float32", True, ZEN5)
    assert zen5["fused_batch_norm"] is table["avx512f"]["fused_batch_norm"] and "on avx512f" in zen5["reason"]
    # ... and capped to AVX2 it is an AVX2 CPU.
    assert compute.choose_float32_speed("float32", True, compute.capped_flags(ZEN5, "AVX2")) == avx2


def test_float32_speed_never_turns_on_what_the_profile_turned_off_and_leaves_bf16_alone():
    for flags in (PLAIN, ZEN5, AMX):
        assert compute.choose_float32_speed("float32", False, flags)["fused_batch_norm"] is False
    for requested in (True, False):
        chosen = compute.choose_float32_speed("mixed_bfloat16", requested, AMX)
        assert chosen == {"fused_batch_norm": requested, "reason": "mixed_bfloat16: the profile's settings"}
    unknown = compute.choose_float32_speed("float32", True, frozenset({"sse4_2"}))
    assert unknown["fused_batch_norm"] is True and unknown["reason"] == compute.NO_ROW


def test_cores_zero_means_every_core_and_never_more_than_there_are():
    assert compute.task_cores(0, available=4) == 4
    assert compute.task_cores(1, available=4) == 1
    assert compute.task_cores(8, available=2) == 2
    assert compute.chain_slots([1, 0, 1], available=2) == [1, 2]
    assert compute.chain_slots([], available=2) == [1]


def test_every_job_goes_to_exactly_one_chain():
    jobs = [
        {"profile": "small", "cores": 1},
        {"profile": "large", "cores": 2},
        {"profile": "new", "cores": 3},
        {"profile": "old"},
    ]
    routed = jobs_by_slots(jobs, [1, 2])
    assert [j["profile"] for j in routed["slots_1"]] == ["small", "old"]
    assert [j["profile"] for j in routed["slots_2"]] == ["large", "new"]
    assert jobs_by_slots(jobs[:1], [2]) == {"slots_2": jobs[:1]}  # nothing smaller: the smallest chain takes it


def test_precision_mode_applies_and_restores_policy_and_graph_rewrite():
    import keras
    import tensorflow as tf

    option = "auto_mixed_precision_onednn_bfloat16"
    with compute.precision_mode("mixed_bfloat16") as policy:
        assert policy == keras.mixed_precision.global_policy().name == "mixed_bfloat16"
    with compute.precision_mode("onednn_amp") as policy:
        assert policy == "float32" and tf.config.optimizer.get_experimental_options().get(option) is True
    assert keras.mixed_precision.global_policy().name == "float32"
    assert not tf.config.optimizer.get_experimental_options().get(option, False)
    with pytest.raises(ValueError, match="resolve 'auto'"), compute.precision_mode("auto"):
        pass


def _conv_bn(seed: int):
    import keras

    keras.utils.set_random_seed(seed)
    inputs = keras.Input((6, 6, 3))
    x = keras.layers.Conv2D(4, 3, padding="same")(inputs)
    x = keras.layers.BatchNormalization(name="bn")(x)
    outputs = keras.layers.Dense(1)(keras.layers.GlobalAveragePooling2D()(x))
    model = keras.Model(inputs, outputs)
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
    return model


def test_fused_batch_norm_trains_like_keras_and_leaves_the_layer_as_it_was():
    """Same loss, same moving statistics and weights after a few steps; the patch ends with the block."""
    import keras

    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(16, 6, 6, 3)).astype("float32"), rng.normal(size=(16, 1)).astype("float32")
    original = keras.layers.BatchNormalization.call
    keras_model = _conv_bn(1)
    keras_loss = keras_model.fit(x, y, batch_size=8, epochs=2, verbose=0, shuffle=False).history["loss"]
    with compute.fused_batch_norm() as on:
        assert on and keras.layers.BatchNormalization.call is not original
        fused_model = _conv_bn(1)
        fused_loss = fused_model.fit(x, y, batch_size=8, epochs=2, verbose=0, shuffle=False).history["loss"]
    assert keras.layers.BatchNormalization.call is original
    np.testing.assert_allclose(fused_loss, keras_loss, rtol=1e-4)
    for mine, theirs in zip(fused_model.get_layer("bn").get_weights(), keras_model.get_layer("bn").get_weights()):
        np.testing.assert_allclose(mine, theirs, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(
        fused_model.predict(x, verbose=0), keras_model.predict(x, verbose=0), rtol=1e-3, atol=1e-4
    )


def _training_op_types(model) -> set[str]:
    import tensorflow as tf

    step = tf.function(lambda x: model(x, training=True))
    return {op.type for op in step.get_concrete_function(tf.TensorSpec((2, 6, 6, 3))).graph.get_operations()}


def test_fused_batch_norm_really_runs_the_fused_kernel_only_inside_the_block():
    model = _conv_bn(2)
    assert "FusedBatchNormV3" not in _training_op_types(model)
    with compute.fused_batch_norm():
        assert "FusedBatchNormV3" in _training_op_types(model)
    with compute.fused_batch_norm(False) as on:
        assert not on and "FusedBatchNormV3" not in _training_op_types(model)
