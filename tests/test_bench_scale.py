"""`bench/profile.py --scale`: the 10M estimate from saved 1M and 3M runs, and its warning when
the two runs were taken on machines of different speed; the estimate from paired runs."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
from bench import profile


def _save(path: Path, rates: tuple[float | None, float | None]) -> None:
    def run(p99: float, rate: float | None) -> dict[str, object]:
        row: dict[str, object] = {"substring_p99": p99, "profile8_rate": 800.0}
        if rate is not None:
            row[profile.MACHINE] = rate
        return row

    saved = {
        "postgres": {"1000000": {"2": run(10.0, rates[0])}, "3000000": {"2": run(15.0, rates[1])}}
    }
    path.write_text(json.dumps(saved))


def _note(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    rates: tuple[float | None, float | None],
) -> str:
    results = tmp_path / "profile-results.json"
    _save(results, rates)
    monkeypatch.setattr(profile, "RESULTS", results)
    profile.scale_note()
    return capsys.readouterr().out


def test_the_estimate_extrapolates_the_growth_from_1m_to_3m(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    out = _note(tmp_path, monkeypatch, capsys, (70_000.0, 72_000.0))
    lines = {line.split()[0]: line for line in out.splitlines() if line.startswith("    ")}
    # 10 -> 15 ms over x3 is x1.5; x10/3 more: 15 * 1.5^(log(10/3) / log 3) = 23.39 ms.
    assert lines["substring_p99"].split()[1:4] == ["10.00", "15.00", "23.39"]
    assert "x2.34 worse (NOT met" in lines["substring_p99"]
    assert "x1.00 worse (met" in lines["profile8_rate"]
    assert profile.MACHINE not in lines
    assert "WARNING" not in out


def test_runs_on_machines_of_different_speed_are_flagged(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    out = _note(tmp_path, monkeypatch, capsys, (150_000.0, 70_000.0))
    assert "WARNING: the machine ran validate() at 150,000/s for the 1M run and 70,000/s" in out


def test_runs_without_the_reference_figure_are_flagged(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    out = _note(tmp_path, monkeypatch, capsys, (None, 70_000.0))
    assert "a run without the machine's reference figure" in out


def test_the_estimate_takes_the_median_of_the_runs_kept_at_each_size(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # One slow run among three at 3M moves the median nothing; a file from before runs were
    # kept as lists (one run, a dict) is read as one run.
    def run(p99: float) -> dict[str, object]:
        return {"substring_p99": p99, profile.MACHINE: 70_000.0, "at": "2026-11-26T00:00:00"}

    saved = {
        "postgres": {
            "1000000": {"2": run(10.0)},
            "3000000": {"2": [run(15.0), run(45.0), run(14.0)]},
        }
    }
    results = tmp_path / "profile-results.json"
    results.write_text(json.dumps(saved))
    monkeypatch.setattr(profile, "RESULTS", results)
    profile.scale_note()
    out = capsys.readouterr().out
    assert "medians of 1 and 3 run(s)" in out
    line = next(line for line in out.splitlines() if "substring_p99" in line)
    assert line.split()[1:4] == ["10.00", "15.00", "23.39"]


def test_saving_keeps_the_latest_runs_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    results = tmp_path / "profile-results.json"
    monkeypatch.setattr(profile, "RESULTS", results)
    store = profile.Store("sqlite", "sqlite:///x", 1_000_000, 200_000, "2026-11-26", {}, [])
    monkeypatch.setattr(profile, "_row", lambda figures: {"profile8_rate": figures.rate})

    class Figures:
        database, workers = "sqlite", 2

        def __init__(self, rate: float) -> None:
            self.rate = rate

    for n in range(profile.KEEP_RUNS + 2):
        profile.save({"sqlite": store}, [Figures(float(n))], 70_000.0)  # type: ignore[list-item]
    runs = json.loads(results.read_text())["sqlite"]["1000000"]["2"]
    kept = list(range(2, profile.KEEP_RUNS + 2))
    assert [run["profile8_rate"] for run in runs] == [float(n) for n in kept]
    assert all(run[profile.MACHINE] == 70_000.0 for run in runs)


def _paired(path: Path, runs: list[tuple[dict[str, float], dict[str, float]]]) -> None:
    kept = [{"at": "2026-11-27T00:00:00", "small": a, "large": b} for a, b in runs]
    path.write_text(json.dumps({"postgres": {"1000000/3000000": {"2": kept}}}))


def test_paired_runs_estimate_from_the_median_of_their_ratios(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # Three runs whose machines differed: the ratios 1.1, 1.2 and 3.0 (one run whose larger
    # size met a slow stretch); the median 1.2 gives 1.2^(log 10 / log 3) = 1.4658 at 10M.
    paired = tmp_path / "profile-paired.json"
    _paired(
        paired,
        [
            (
                {"screen_p99": 100.0, "profile8_rate": 1000.0},
                {"screen_p99": 110.0, "profile8_rate": 900.0},
            ),
            (
                {"screen_p99": 200.0, "profile8_rate": 500.0},
                {"screen_p99": 240.0, "profile8_rate": 450.0},
            ),
            (
                {"screen_p99": 100.0, "profile8_rate": 1000.0},
                {"screen_p99": 300.0, "profile8_rate": 900.0},
            ),
        ],
    )
    monkeypatch.setattr(profile, "PAIRED", paired)
    profile.paired_scale_note()
    out = capsys.readouterr().out
    assert "1,000,000 and 3,000,000 records, 2 worker(s), 3 paired run(s)" in out
    lines = {line.split()[0]: line for line in out.splitlines() if line.startswith("    ")}
    screen = lines["screen_p99"].split()
    # medians at each size, then each run's ratio
    assert screen[1:6] == ["100.00", "240.00", "1.10", "1.20", "3.00"]
    assert "x1.47 worse (met" in lines["screen_p99"]
    # a rate is better higher: 0.9 a run -> 0.9^2.096 = 0.802 of the 1M rate, x1.25 worse
    assert "x1.25 worse (met" in lines["profile8_rate"]


def test_paired_runs_past_the_limit_are_not_met(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    paired = tmp_path / "profile-paired.json"
    _paired(
        paired, [({"miss_p99": 4.0}, {"miss_p99": 5.0}), ({"miss_p99": 4.0}, {"miss_p99": 5.2})]
    )
    monkeypatch.setattr(profile, "PAIRED", paired)
    profile.paired_scale_note()
    line = next(x for x in capsys.readouterr().out.splitlines() if "miss_p99" in x)
    # median ratio 1.275: x1.66 at 10M
    assert "x1.66 worse (NOT met" in line


def test_a_paired_phase_pools_the_turns_of_one_size() -> None:
    def turn(latencies: list[float], wall: float) -> profile.Phase:
        return profile.Phase(
            "p", 1, latencies, wall, Counter({200: len(latencies)}), Counter(), [], {"server": 1.0}
        )

    pooled = profile.merged([turn([0.001, 0.002], 1.0), turn([0.010], 2.0)], "pooled")
    assert pooled.name == "pooled"
    assert pooled.count == 3
    assert pooled.rate == 1.0  # 3 answers in 3 s of turns
    assert pooled.ms(100) == 10.0
    assert pooled.cpu == {"server": 2.0}
