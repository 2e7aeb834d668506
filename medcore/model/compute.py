"""How a training task uses the CPU: the precision picked for its instruction set, threads for its cores.

Precision (a profile's `precision`):
- `float32`: every op in float32.
- `mixed_bfloat16`: the Keras dtype policy. Convolutions and matmuls run in bfloat16 (oneDNN's
  brgemm kernels on AVX512-BF16 or AMX), variables stay float32. Keras 3's batch norm casts its
  input back to float32, so every one of DenseNet121's 120 batch norms pays two casts.
- `onednn_amp`: a float32 model; TensorFlow's oneDNN auto-mixed-precision graph rewrite
  (`auto_mixed_precision_onednn_bfloat16`) moves the ops it knows to be safe to bfloat16 when the
  training step's graph is optimised, and places the casts itself.
- `auto`: the mode `AUTO_PRECISION` names for the first CPU feature this machine has; the
  table's rows cite the measurement (bench/train_throughput.py) that chose them.

The mode used, and why, is recorded in training.json (`compute`).

Threads: a profile's `cores` is how many cores one training task takes (0: every core). The DAG
gives the task that many slots of the `training` pool (one slot per core), so large profiles train
alone and small ones side by side, and the task sizes TensorFlow's thread pools to match.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from medcore.config import settings

__all__ = [
    "PRECISIONS",
    "AUTO_PRECISION",
    "cpu_flags",
    "cpu_supports_bf16",
    "capped_flags",
    "effective_cpu_flags",
    "choose_precision",
    "choose_float32_speed",
    "FLOAT32_SPEED",
    "precision_mode",
    "task_cores",
    "chain_slots",
    "thread_settings",
    "configure_threads",
    "fused_batch_norm",
]

log = logging.getLogger(__name__)

PRECISIONS = ("auto", "float32", "mixed_bfloat16", "onednn_amp")
BF16_FLAGS = ("amx_bf16", "avx512_bf16")

# (CPU flag, mode, the measurement behind it). The first flag this CPU has wins; none: float32.
AUTO_PRECISION: tuple[tuple[str, str, str], ...] = (
    (
        "amx_bf16",
        "mixed_bfloat16",
        "Xeon with AMX, quiet, 2026-12-01 (bench/train_throughput.py): medcore's pipeline with mixed_bfloat16 "
        "and the fused batch norm ran 1.99x float32 at 128 px, in oneDNN's AMX kernels; without the fused "
        "batch norm bf16 ran 1.03x (the 0.85-1.02x measured here before issue 16)",
    ),
    (
        "avx512_bf16",
        "mixed_bfloat16",
        "AMD EPYC with AVX512-BF16, no AMX, quiet, 2026-11-30 (bench/train_throughput.py): medcore's pipeline "
        "with mixed_bfloat16 and the fused batch norm ran 2.05x float32 at 128 px and 2.4x at 64 px",
    ),
)
NO_BF16 = "no native bfloat16 on this CPU (emulated bf16 is slower than float32)"


def cpu_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> frozenset[str]:
    """The instruction-set flags of the first CPU listed in /proc/cpuinfo (empty where it is unreadable)."""
    try:
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("flags"):
                return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


# oneDNN's ISA levels, lowest first, with the CPU flags each adds (`ONEDNN_MAX_CPU_ISA` caps its kernels at one).
ONEDNN_ISAS: tuple[tuple[tuple[str, ...], tuple[str, ...]], ...] = (
    (("SSE41",), ()),
    (("AVX",), ("avx",)),
    (("AVX2",), ("avx2", "fma")),
    (("AVX2_VNNI",), ("avx_vnni",)),
    (("AVX2_VNNI_2",), ("avx_vnni_int8", "avx_ne_convert")),
    (("AVX512_CORE",), ("avx512f", "avx512bw", "avx512vl", "avx512dq", "avx512cd")),
    (("AVX512_CORE_VNNI",), ("avx512_vnni",)),
    (("AVX512_CORE_BF16",), ("avx512_bf16",)),
    (("AVX10_1_512", "AVX512_CORE_FP16"), ("avx512_fp16",)),
    (("AVX10_1_512_AMX", "AVX512_CORE_AMX"), ("amx_bf16", "amx_tile", "amx_int8")),
    (("AVX10_1_512_AMX_FP16", "AVX512_CORE_AMX_FP16"), ("amx_fp16",)),
)


def capped_flags(flags: frozenset[str], max_isa: str | None) -> frozenset[str]:
    """`flags` without what oneDNN may not use under `ONEDNN_MAX_CPU_ISA=max_isa` (None, ALL, unknown: no cap).

    A capped CPU (how an AVX2-only one is emulated on a newer one) trains as that CPU would, so the
    choices made from its flags (precision, float32 settings) must be that CPU's too.
    """
    names = [names for names, _ in ONEDNN_ISAS]
    level = next((i for i, aliases in enumerate(names) if (max_isa or "").upper() in aliases), None)
    if level is None:
        return flags
    dropped = {flag for _, added in ONEDNN_ISAS[level + 1 :] for flag in added}
    if level < names.index(("AVX512_CORE",)):
        dropped |= {flag for flag in flags if flag.startswith("avx512")}
    if level < names.index(("AVX10_1_512_AMX", "AVX512_CORE_AMX")):
        dropped |= {flag for flag in flags if flag.startswith("amx")}
    return frozenset(flags - dropped)


def effective_cpu_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> frozenset[str]:
    """This CPU's flags as oneDNN may use them: /proc/cpuinfo's, capped by `ONEDNN_MAX_CPU_ISA` where set."""
    return capped_flags(cpu_flags(cpuinfo), os.environ.get("ONEDNN_MAX_CPU_ISA"))


def cpu_supports_bf16(flags: frozenset[str] | None = None) -> bool:
    """True where the CPU has native bfloat16 arithmetic (AVX512-BF16 or AMX); else bf16 is emulated and slow."""
    return bool(set(BF16_FLAGS) & (effective_cpu_flags() if flags is None else flags))


def choose_precision(requested: str, flags: frozenset[str] | None = None) -> dict[str, str]:
    """The mode to train in for `requested` on a CPU with `flags`: {requested, mode, reason}.

    A bf16 mode asked for on a CPU without native bf16 falls back to float32 and says so.
    """
    if requested not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, not {requested!r}")
    flags = effective_cpu_flags() if flags is None else flags
    if requested == "auto":
        for flag, mode, why in AUTO_PRECISION:
            if flag in flags:
                return {"requested": requested, "mode": mode, "reason": f"auto for {flag}: {why}"}
        return {"requested": requested, "mode": "float32", "reason": f"auto: {NO_BF16}"}
    if requested != "float32" and not cpu_supports_bf16(flags):
        return {"requested": requested, "mode": "float32", "reason": f"{requested} refused: {NO_BF16}"}
    return {"requested": requested, "mode": requested, "reason": "asked for by the profile"}


# How float32 trains fastest, per CPU kind: (CPU flag, settings, the measurement behind them). The first flag
# this CPU has wins. Only float32 is chosen here: under bf16 the fused batch norm is what makes bf16 pay
# (AUTO_PRECISION's rows), and the profile's setting stands.
FLOAT32_SPEED: tuple[tuple[str, dict[str, bool], str], ...] = (
    (
        "avx512f",
        {"fused_batch_norm": True},
        "AVX-512 (AMD EPYC Zen 5, 2026-11-30, bench/train_throughput.py): the fused batch norm ran 1.33-1.50x "
        "Keras' in float32 plain fits; an XLA-compiled step ran 0.6x (PLATFORM.md)",
    ),
    (
        "avx2",
        {"fused_batch_norm": True},
        "AVX2 only (emulated, ONEDNN_MAX_CPU_ISA=AVX2 on a Zen 5, 2026-12-07, bench/avx2_speed.py, one slot, 128 px, "
        "per CPU-second): Keras' batch norm ran 0.82x the fused one, TF_ENABLE_ONEDNN_OPTS=0 0.73x, one task on "
        "both cores 0.93x, batch 64 1.02x, batch 16 0.96x; nothing tried ran measurably faster than this",
    ),
)
NO_ROW = "no measurement for this CPU kind: the profile's settings"


def choose_float32_speed(mode: str, fused_requested: bool, flags: frozenset[str] | None = None) -> dict[str, Any]:
    """How to train in `mode` on a CPU with `flags`: {fused_batch_norm, reason}.

    In float32 the first FLOAT32_SPEED row whose flag the CPU has decides (`avx512f` before `avx2`, so a
    CPU with AVX-512 never takes the AVX2 row); a profile that turns the fused batch norm off keeps it off.
    In any other mode, or on a CPU no row covers, the profile's setting applies.
    """
    flags = effective_cpu_flags() if flags is None else flags
    row = next(((flag, chosen, why) for flag, chosen, why in FLOAT32_SPEED if flag in flags), None)
    if mode != "float32" or row is None:
        why = NO_ROW if mode == "float32" else f"{mode}: the profile's settings"
        return {"fused_batch_norm": fused_requested, "reason": why}
    flag, chosen, why = row
    fused = chosen["fused_batch_norm"] and fused_requested
    off = "" if fused or not chosen["fused_batch_norm"] else "; the profile turned the fused batch norm off"
    return {"fused_batch_norm": fused, "reason": f"float32 on {flag}: {why}{off}"}


@contextlib.contextmanager
def precision_mode(mode: str) -> Iterator[str]:
    """Train in `mode` (float32, mixed_bfloat16 or onednn_amp) while the block runs; yield the Keras policy name.

    Build, compile and fit the model inside the block: the Keras policy decides each layer's dtype
    when it is built, and the graph rewrite applies when the training step is first traced.
    """
    import keras
    import tensorflow as tf

    if mode not in PRECISIONS[1:]:
        raise ValueError(f"cannot train in {mode!r}; resolve 'auto' with choose_precision first")
    previous_policy = keras.mixed_precision.global_policy().name
    previous_rewrite = tf.config.optimizer.get_experimental_options().get("auto_mixed_precision_onednn_bfloat16", False)
    policy = "mixed_bfloat16" if mode == "mixed_bfloat16" else "float32"
    keras.mixed_precision.set_global_policy(policy)
    tf.config.optimizer.set_experimental_options({"auto_mixed_precision_onednn_bfloat16": mode == "onednn_amp"})
    try:
        yield policy
    finally:
        keras.mixed_precision.set_global_policy(previous_policy)
        tf.config.optimizer.set_experimental_options({"auto_mixed_precision_onednn_bfloat16": previous_rewrite})


def task_cores(cores: int, available: int | None = None) -> int:
    """Cores one training task takes: the profile's `cores`, 0 meaning every core, never more than there are."""
    available = available or os.cpu_count() or 1
    return available if cores <= 0 else min(cores, available)


def chain_slots(profile_cores: Iterable[int], available: int | None = None) -> list[int]:
    """The distinct pool-slot counts the DAG needs a model chain for: each profile's cores, 0 meaning every core."""
    return sorted({task_cores(c, available) for c in profile_cores}) or [1]


def thread_settings(intra: int, inter: int) -> dict[str, int]:
    """TensorFlow (intra-op, inter-op) pool sizes for a task holding `intra` cores; 0 keeps TF's default.

    An inter-op pool of one thread serialises DenseNet121's independent branches (batch norm
    statistics, weight gradients), which cost ~20 % in PLATFORM.md; two are kept whenever the
    task has threads to give (bench/train_throughput.py measures the grid).
    """
    if intra and not inter:
        inter = 2
    return {"intra_op": intra, "inter_op": inter}


def configure_threads(intra: int = 0, inter: int = 0) -> dict[str, Any]:
    """Size TensorFlow's thread pools (0: `MEDCORE_THREADS` / `MEDCORE_INTER_THREADS`, else TF's default).

    Under the DAG, `MEDCORE_THREADS` is the number of `training` pool slots the task holds, which is
    its profile's `cores`. Returns the sizes that apply (None: TensorFlow's default).
    """
    import tensorflow as tf

    intra = intra or settings().threads
    inter = inter or settings().inter_threads
    wanted = thread_settings(intra, inter)
    try:
        if wanted["intra_op"]:
            tf.config.threading.set_intra_op_parallelism_threads(wanted["intra_op"])
        if wanted["inter_op"]:
            tf.config.threading.set_inter_op_parallelism_threads(wanted["inter_op"])
    except RuntimeError:
        # TensorFlow was already initialised in this process (Airflow's in-process `dags test`):
        # the pools keep their size, and the record says what they are.
        pass
    return {
        "intra_op": tf.config.threading.get_intra_op_parallelism_threads() or None,
        "inter_op": tf.config.threading.get_inter_op_parallelism_threads() or None,
    }


@contextlib.contextmanager
def fused_batch_norm(enabled: bool = True) -> Iterator[bool]:
    """While the block runs, Keras batch norm layers train through TensorFlow's fused kernel; yield whether they do.

    Keras 3 computes a training batch norm as separate moments, subtract, multiply and add ops (and,
    under mixed_bfloat16, casts to float32 and back around them), which on DenseNet121's 120 batch
    norms is a large share of the step. `FusedBatchNormV3` (oneDNN's on x86) does the same maths in
    one kernel, in bfloat16 where the input is. Only the training path changes: the layer's
    variables, its inference path and the saved model are Keras' own, so nothing downstream knows.
    The moving variance uses the biased batch variance, as Keras does.
    """
    import keras
    import tensorflow as tf

    layer = keras.layers.BatchNormalization
    keras_call = layer.call

    def call(self, inputs, training=None, mask=None):
        if (
            not (training and self.trainable)
            or mask is not None
            or self.renorm
            or len(inputs.shape) != 4
            or self.axis not in (-1, 3)
            or inputs.dtype not in (tf.float32, tf.bfloat16)
        ):
            return keras_call(self, inputs, training=training, mask=mask)
        channels = inputs.shape[-1]
        gamma = tf.cast(self.gamma, tf.float32) if self.scale else tf.ones((channels,), tf.float32)
        beta = tf.cast(self.beta, tf.float32) if self.center else tf.zeros((channels,), tf.float32)
        outputs, mean, variance = tf.compat.v1.nn.fused_batch_norm(
            inputs, gamma, beta, epsilon=self.epsilon, is_training=True
        )
        n = tf.cast(tf.size(inputs) // channels, tf.float32)
        variance = variance * (n - 1.0) / tf.maximum(n, 1.0)  # the kernel's is unbiased; Keras keeps the biased one
        self.moving_mean.assign(self.moving_mean * self.momentum + mean * (1.0 - self.momentum))
        self.moving_variance.assign(self.moving_variance * self.momentum + variance * (1.0 - self.momentum))
        return tf.cast(outputs, self.compute_dtype)

    if enabled:
        layer.call = call
    try:
        yield enabled
    finally:
        layer.call = keras_call
