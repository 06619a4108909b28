"""`edgeship profile --adb`: no phone is reachable here, so the command construction and the
benchmark_model parser are tested on REAL outputs pasted in public issue threads (tests/targets/data/,
each file names its source thread)."""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest

from edgeship.devices.remote import AdbTarget, adb_measurement, parse_adb_facts, parse_benchmark_model
from edgeship.errors import EdgeshipError
from edgeship.record import Measurement

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
    assert shlex.split(t.mkdir_cmd()[-1]) == ["mkdir", "-p", "/data/local/tmp/edge ship;rm -rf x"]
    assert shlex.split(t.cleanup_cmd("t1")[-1]) == ["rm", "-f", "/data/local/tmp/edge ship;rm -rf x/t1.tflite"]


def test_adb_facts_parser():
    text = ("model=Pixel 7\nsoc=GS201\nandroid=14\nuname=Linux localhost 5.10.157 #1 SMP PREEMPT aarch64 Toybox\n"
            "governor=sched_pixel\ntemp=41500\n")
    f = parse_adb_facts(text)
    assert f["model"] == "Pixel 7" and f["governor"] == "sched_pixel" and f["temperature_c"] == {"zone0": 41.5}


def test_missing_adb_binary_is_a_clear_error(tmp_path):
    from edgeship.devices.remote import profile_adb

    with pytest.raises(EdgeshipError, match="not found on this machine.*platform-tools"):
        profile_adb([], AdbTarget("X", adb=str(tmp_path / "no-adb")), 4, 10, 1)
