"""scripts/fmnist_ablation_table.py: the ablation summary's ratios and curves come from the
eval.json files."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "fmnist_ablation_table.py"


def load_script():
    spec = importlib.util.spec_from_file_location("fmnist_ablation_table", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def write_eval(
    folder: Path, name: str, rows: list[tuple[int, float, float]], params: float
) -> None:
    folder.mkdir(parents=True)
    folder.joinpath("eval.json").write_text(
        json.dumps(
            {
                "rows": [
                    {
                        "model": name,
                        "loops": loops,
                        "fd_cls": fd,
                        "class_acc": acc,
                        "params_m": params,
                    }
                    for loops, fd, acc in rows
                ]
            }
        )
    )


def test_masked_table_ratio_curve_and_no_single_width_ladder(tmp_path, capsys):
    runs = tmp_path / "masked" / "runs"
    write_eval(runs / "unique12_L1", "unique 12 layers", [(1, 20.0, 0.9)], 8.0)
    write_eval(
        runs / "inject_L1_2_3_4_5",
        "ELT inject",
        [(1, 30.0, 0.8), (2, 25.0, 0.85), (3, 24.0, 0.86), (4, 22.0, 0.88), (5, 23.0, 0.87)],
        2.2,
    )
    write_eval(
        runs / "inject_L6", "ELT inject", [(6, 26.0, 0.85)], 2.2
    )  # past L_max + 1: not in the curve
    write_eval(
        runs / "loopemb_L1_2_3_4_5", "ELT loopemb", [(1, 40.0, 0.7), (2, 35.0, 0.8)], 2.2
    )  # no L_max row
    write_eval(runs / "unique12_guided_L1", "unique 12 layers, guided", [(1, 10.0, 0.95)], 8.0)
    write_eval(
        runs / "inject_guided_L1_2_3_4_5",
        "ELT inject, guided",
        [(1, 14.0, 0.9), (2, 13.0, 0.9), (3, 12.0, 0.9), (4, 12.0, 0.9), (5, 12.5, 0.9)],
        2.2,
    )
    assert load_script().main([str(tmp_path), "--paradigm", "masked"]) == 0
    summary = json.loads((tmp_path / "masked" / "ablations.json").read_text())
    inject = summary["ablations"]["inject"]
    assert inject["ratio_at_lmax"] == 22.0 / 20.0
    assert inject["fd_cls"] == {"1": 30.0, "2": 25.0, "3": 24.0, "4": 22.0, "5": 23.0}
    assert (
        summary["ablations"]["inject_guided"]["ratio_at_lmax"] == 12.0 / 10.0
    )  # against the guided stack
    assert "loopemb" not in summary["ablations"]  # skipped: it was never evaluated at L_max
    assert summary["ladder"]["192"]["with input injection"]["ratio"] == 22.0 / 20.0
    assert not (tmp_path / "masked" / "width_ladder.png").exists()  # one width is not a ladder
    assert (
        "| ELT inject | 2.20 | 4 | 30.0 / 25.0 / 24.0 / 22.0 / 23.0 | 88.0 % | 1.10"
        in capsys.readouterr().out
    )


def test_other_sampling_suffix_pairs_with_the_stack_sampled_the_same_way(tmp_path):
    runs = tmp_path / "masked" / "runs"
    write_eval(runs / "unique12_L1", "unique 12 layers", [(1, 20.0, 0.9)], 8.0)
    write_eval(runs / "unique12_cfg3_L1", "unique 12 layers, CFG 3", [(1, 16.0, 0.95)], 8.0)
    write_eval(runs / "ilsd_cfg3_L1_2_3_4_5", "ELT, CFG 3", [(4, 18.0, 0.9)], 2.2)
    assert load_script().main([str(tmp_path), "--paradigm", "masked", "--suffix", "_cfg3"]) == 0
    summary = json.loads((tmp_path / "masked" / "ablations.json").read_text())
    assert summary["ablations"]["ilsd_cfg3"]["ratio_at_lmax"] == 18.0 / 16.0


def test_missing_runs_folder_is_a_one_line_error(tmp_path, capsys):
    assert load_script().main([str(tmp_path), "--paradigm", "masked"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "no evaluated runs" in err
