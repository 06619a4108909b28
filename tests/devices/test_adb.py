"""`edgeship profile --adb`: no phone is reachable here, so the command construction and the
benchmark_model parser are tested on REAL outputs pasted in public issue threads (tests/targets/data/,
each file names its source thread)."""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest

from edgeship.devices.android import (
    AdbTarget,
    adb_measurement,
    parse_adb_facts,
    parse_benchmark_model,
    parse_op_profile,
)
from edgeship.devices.layer_profile import layer_profile, tflite_benchmark_ops
from edgeship.errors import EdgeshipError
from edgeship.record import LayerProfile, Measurement

DATA = Path(__file__).with_name("data")


def load(name: str) -> str:
    return (DATA / name).read_text()


@pytest.mark.parametrize("name, threads, count, mean, std, lo, hi, init, first", [
    ("benchmark_model_android_4threads.txt", 4, 50, 33.2094, 0.45, 32.641, 34.005, 0.855, 49.06),
    ("benchmark_model_android_1thread.txt", 1, 1000, 1.0397, 0.022, 1.012, 1.19, 17.851, 2.104),
    ("benchmark_model_raspberrypi_int8.txt", 4, 50, 55.0432, 1.562, 53.077, 60.727, 18.777, 64.791),
    ("benchmark_model_info_prefix.txt", None, 50, 116.066, 1.906, 111.222, 121.324, 0.53, 124.02),
    ("benchmark_model_old_format.txt", None, 15, 66.7676, 0.039, 66.699, 66.838, 9.933, None),
])
def test_parser_reads_real_outputs(name, threads, count, mean, std, lo, hi, init, first):
    p = parse_benchmark_model(load(name))
    assert p["count"] == count  # the timed block, not the warm-up block before it
    assert p["mean_ms"] == pytest.approx(mean, abs=1e-3)
    assert p["std_ms"] == pytest.approx(std) and p["min_ms"] == pytest.approx(lo) and p["max_ms"] == pytest.approx(hi)
    assert p["init_ms"] == pytest.approx(init)
    assert p["first_ms"] == (None if first is None else pytest.approx(first))
    assert p.get("threads") == threads
    assert p["avg_ms"] == pytest.approx(mean, abs=1e-3)
    assert p["warmup_count"] > 0


def test_parser_reads_memory_lines_of_old_and_new_builds():
    parsed = parse_benchmark_model(load("benchmark_model_android_4threads.txt"))
    assert parsed["memory_overall_mb"] == pytest.approx(12.8672)
    p = parse_benchmark_model(load("benchmark_model_raspberrypi_int8.txt"))
    assert (p["memory_init_mb"], p["memory_overall_mb"]) == (pytest.approx(8.97656), pytest.approx(18.7227))
    assert p["model_size_mb"] == pytest.approx(3.67827)


def test_parser_reads_logcat_lines_and_percentiles():
    # benchmark_model run through the Android activity logs to logcat with this prefix; newer builds
    # add p5/median/p95 to the count line. Built from the real 4-thread output above.
    real = load("benchmark_model_android_4threads.txt")
    logcat = "\n".join(f"05-31 10:31:13.023 21767 21767 I tflite  : {ln}" for ln in real.splitlines())
    logcat = logcat.replace("avg=33209.4 std=450", "avg=33209.4 std=450 p5=32700 median=33150 p95=33900")
    p = parse_benchmark_model(logcat)
    assert p["count"] == 50 and p["threads"] == 4
    assert (p["p5_ms"], p["median_ms"], p["p95_ms"]) == (32.7, 33.15, 33.9)
    m = adb_measurement(p, 1000, 4, {})
    assert m.p50_ms == 33.15 and m.p90_ms == 33.9 and "upper bound" in m.p90_method


def test_parser_all_same_line():
    p = parse_benchmark_model("Running benchmark\ncount=3 curr=500(all same)\n"
                              "Running benchmark\ncount=5 curr=400(all same)\n")
    assert p["count"] == 5 and p["mean_ms"] == 0.4 and p["std_ms"] == 0.0 and p["max_ms"] == 0.4


def test_parser_without_statistics_is_a_clear_error():
    with pytest.raises(EdgeshipError, match="no timing statistics"):
        parse_benchmark_model("/system/bin/sh: /data/local/tmp/benchmark_model: not found\n")


def test_measurement_from_real_output_follows_the_report_contract():
    p = parse_benchmark_model(load("benchmark_model_raspberrypi_int8.txt"))
    m = adb_measurement(p, 3_678_270, 4, {"model": "Pixel 7"})
    assert isinstance(m, Measurement)  # the run record's schema (validated on construction)
    Measurement.model_validate_json(m.model_dump_json())  # and it survives report.json
    assert m.source == "device" and m.runs == 50 and m.samples_ms == []
    # no percentiles in this build: p90 from the normal approximation, said so
    assert m.p90_ms == pytest.approx(55.0432 + 1.2816 * 1.562, abs=1e-3) and "normal" in m.p90_method
    assert m.peak_rss_mb == pytest.approx(18.7227) and m.load_ms == pytest.approx(18.777)


def test_adb_commands_quote_everything_that_reaches_the_device_shell():
    t = AdbTarget("emulator-5554", adb="/opt/pt/adb", benchmark_binary="/data/local/tmp/my tools/benchmark_model",
                  device_dir="/data/local/tmp/edge ship;rm -rf x")
    push = t.push_cmd(Path("/runs/d/targets/t1/model.tflite"), "t1")
    assert push == ["/opt/pt/adb", "-s", "emulator-5554", "push", "/runs/d/targets/t1/model.tflite",
                    "/data/local/tmp/edge ship;rm -rf x/t1.tflite"]
    bench = t.bench_cmd("t1", 4, 30, 3)
    assert bench[:4] == ["/opt/pt/adb", "-s", "emulator-5554", "shell"] and len(bench) == 5
    words = shlex.split(bench[4])  # what the device's sh sees: each argument intact, nothing executed
    assert words == ["/data/local/tmp/my tools/benchmark_model", "--graph=/data/local/tmp/edge ship;rm -rf x/t1.tflite",
                     "--num_threads=4", "--num_runs=30", "--warmup_runs=3", "--use_xnnpack=true"]
    profiled = shlex.split(t.bench_cmd("t1", 4, 30, 3, op_profiling=True)[4])
    assert profiled == [*words, "--enable_op_profiling=true"]  # a run of its own: the timed one has no profiler
    assert shlex.split(t.mkdir_cmd()[-1]) == ["mkdir", "-p", "/data/local/tmp/edge ship;rm -rf x"]
    assert shlex.split(t.cleanup_cmd("t1")[-1]) == ["rm", "-f", "/data/local/tmp/edge ship;rm -rf x/t1.tflite"]


def test_adb_facts_parser():
    text = ("model=Pixel 7\nsoc=GS201\nandroid=14\nuname=Linux localhost 5.10.157 #1 SMP PREEMPT aarch64 Toybox\n"
            "governor=sched_pixel\ntemp=41500\n")
    f = parse_adb_facts(text)
    assert f["model"] == "Pixel 7" and f["governor"] == "sched_pixel" and f["temperature_c"] == {"zone0": 41.5}


def test_missing_adb_binary_is_a_clear_error(tmp_path):
    from edgeship.devices.android import profile_adb

    with pytest.raises(EdgeshipError, match="not found on this machine.*platform-tools"):
        profile_adb([], AdbTarget("X", adb=str(tmp_path / "no-adb")), 4, 10, 1)


BUILTIN_AVG_MS = [536.830, 20.083, 36.419, 36.473, 36.581, 36.718]


def test_op_profile_parser_reads_a_real_run_order_table():
    """benchmark_model's operator table as a phone printed it (builtin kernels): each operator in execution order,
    its average per run, as the measurement's layer profile."""
    ops = parse_op_profile(load("benchmark_model_op_profile_builtin.txt"))
    assert [o["type"] for o in ops] == ["DEPTHWISE_CONV_2D"] + ["CONV_2D"] * 5
    assert ops[0] == {"type": "DEPTHWISE_CONV_2D", "name": "[srnetwork/Conv/Relu]", "avg_ms": 536.83, "calls": 1.0}
    assert [o["avg_ms"] for o in ops] == BUILTIN_AVG_MS
    source, rows = tflite_benchmark_ops(ops, 50)
    prof = layer_profile(source, rows, int8_artifact=False)
    assert "benchmark_model" in prof["source"] and prof["runs"] == 50 and prof["layer_count"] == 6
    assert prof["total_ms"] == pytest.approx(sum(BUILTIN_AVG_MS) + 6 * 0.0005)  # each reading + half a microsecond
    assert prof["layers"][0]["op"] == "DEPTHWISE_CONV_2D" and prof["layers"][0]["kernel"] == "builtin"
    assert prof["layers"][0]["share"] == pytest.approx(536.8305 / (sum(BUILTIN_AVG_MS) + 0.003), abs=1e-4)
    assert len(prof["not_delegated"]) == 6  # outside XNNPACK, and said so
    m = adb_measurement(parse_benchmark_model(load("benchmark_model_op_profile_builtin.txt")), 1000, 4, {})
    m.profile = LayerProfile.model_validate(prof)
    Measurement.model_validate_json(m.model_dump_json())  # the run record keeps it


def test_op_profile_parser_reads_only_the_regular_runs_table():
    """A newer build prints the initialization's table first, then the regular runs' under their title, then the
    slowest operators again and a "Delegate internal" table: only the regular runs' Run Order is the operators'
    run times. Built from the two real outputs above (the initialization header of the 4-thread phone, the run
    table of the older build), with and without logcat's prefixes."""
    phone = load("benchmark_model_android_4threads.txt")
    header = next(ln for ln in phone.splitlines() if "[node type]" in ln)
    init = phone + "\t".join(["", "AllocateTensors", "0.000", "0.361", "0.361", "100.000%", "100.000%", "0.000",
                               "1", "AllocateTensors/0"]) + "\n"
    table = load("benchmark_model_op_profile_builtin.txt").split("count=50")[1].split("\n", 1)[1]
    run_order = table[table.index("=" * 30):]
    top = run_order.replace("Run Order", "Top by Computation Time")
    internal = ("Delegate internal: \n============================== Run Order ==============================\n"
                + header + "\n" + "\t".join(["", "DelegateOpInvoke", "0.000", "9.0", "9.0", "100%", "100%", "0",
                                              "1", "Delegate/Node:0"]) + "\n")
    text = init + "\nOperator-wise Profiling Info for Regular Benchmark Runs:\n" + run_order + "\n" + top + internal
    for variant in (text, "\n".join(f"05-31 10:31:13.023 21767 21767 I tflite  : {ln}" for ln in text.splitlines())):
        ops = parse_op_profile(variant)
        assert [o["avg_ms"] for o in ops] == BUILTIN_AVG_MS
    assert parse_op_profile(phone) == []  # profiling asked for, but the paste ends before the run table
    broken = text.replace("36.419", "nan").replace("36.473", "-1")  # what no runtime prints ends the table
    assert [o["avg_ms"] for o in parse_op_profile(broken)] == BUILTIN_AVG_MS[:2]
    assert parse_op_profile(load("benchmark_model_raspberrypi_int8.txt")) == []


@pytest.mark.slow
def test_xnnpack_operators_itemized_by_benchmark_model_pair_with_the_kernels(tmp_path):
    """From TF 2.9.1 on, benchmark_model's table itemizes XNNPACK's operators (``Delegate/<name>:<i>`` rows, by
    XNNPACK's names) beside the delegate's own row, which sums them (LiteRT's tflite/profiling/
    profile_summarizer.cc). No phone is reachable here and no public paste of such a table was found, so the table
    is laid out as that source writes it, from the operators LiteRT's own profiler timed on a real INT8 model on
    this machine (the events benchmark_model's summarizer reads): parsed, the delegate's sum is left out, every
    operator keeps XNNPACK's name and INT8 precision, and each pairs with its kernel read from the file (what an
    adb calibration fits its in-context forests on)."""
    from edgeship.devices import calibrate as cal
    from edgeship.devices import in_context
    from edgeship.devices.archs import random_arch
    from edgeship.devices.calibrate import lower
    from edgeship.devices.kernels import read

    a = random_arch(200_000)
    d = lower(a.model, a.input_shape, "tflite", "int8", tmp_path / "archs" / "fit200000", "m", tmp_path)
    timed = cal.measure_layers(cal.Plan("host", [("tflite", "int8")], [1], log=print), "tflite", tmp_path / "archs",
                               1)["fit200000"]

    def row(kind: str, ms: float, name: str) -> str:
        return "\t".join(["", kind.rjust(24), f"{ms:9.3f}", f"{ms:9.3f}", "  1.000%", "  1.000%", "     0.000",
                          "        1", name])

    lines = ["Operator-wise Profiling Info for Regular Benchmark Runs:",
             "============================== Run Order ==============================",
             "\t".join(["", "[node type]".rjust(24), "[first]".rjust(9), "[avg ms]".rjust(9), "[%]".rjust(8),
                        "[cdf%]".rjust(8), "[mem KB]".rjust(10), "[times called]", "[Name]"]),
             row("TfLiteXNNPackDelegate", sum(r["us"] for r in timed) / 1e3, "[logits]:7")]
    lines += [row(r["op"], (r["us"] - 0.5) / 1e3, f"Delegate/{r['op']}:{i}") for i, r in enumerate(timed)]
    ops = parse_op_profile("\n".join(lines) + "\n")
    source, rows = tflite_benchmark_ops(ops, 20)
    assert "itemized" in source and [r["op"] for r in rows] == [r["op"] for r in timed]  # the sum left out
    assert all(r["kernel"] == "XNNPACK" and r["delegated"] for r in rows)
    assert all(r["precision"] == "int8" for r in rows if r["compute"]) and any(r["compute"] for r in rows)
    ks = read(d / "model.tflite", "tflite")[0]
    times = in_context.kernel_times(ks, rows, "tflite")
    assert times == pytest.approx(in_context.kernel_times(ks, timed, "tflite"), abs=1e-3)
    assert all(t is not None and t > 0 for k, t in zip(ks, times) if k.type != "eltwise")  # (extras: no XNNPACK
    # operator is paired with an element-wise kernel)
    # an older build: only the delegate's row, kept as one layer for everything XNNPACK ran
    source, rows = tflite_benchmark_ops(parse_op_profile("\n".join(lines[:4]) + "\n"), 20)
    assert "not itemized" in source and [r["op"] for r in rows] == ["TfLiteXNNPackDelegate"]
