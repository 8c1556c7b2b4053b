"""The README's first command, `styleavatar-jax demo`, end to end at a tiny budget: data,
a few training steps of configs/demo.py, the SWD metric, the grid and the turntable."""

import re

from PIL import Image

from styleavatar_jax import cli


def test_demo_runs_end_to_end(tmp_path, capsys, fast_compile):
    out = tmp_path / "demo"
    # 2 training steps of batch 4.
    argv = ["demo", "--out", str(out), "--train-ids", "4", "--heldout-ids", "2",
            "--config.train.total_kimg=0.008"]  # fmt: skip
    rc = cli.main(argv)
    assert rc == 0
    text = capsys.readouterr().out
    assert "[data] train: 32 mannequin images at 64² (4 ids × 8 views, 360° yaw)" in text
    assert re.search(r"\[demo\] 2 steps, 0\.01 kimg in [\d.]+ min \(finished\)", text), text
    m = re.search(r"start ([\d.]+) -> end ([\d.]+) \(([\d.]+)× lower\); floor ([\d.]+)", text)
    start, end, _, floor = map(float, m.groups())
    assert start > 0 and end > 0 and floor > 0
    assert Image.open(out / "grid.png").size == (8 * 64, 8 * 64)  # 8 seeds × 8 yaws
    gif = Image.open(out / "turntable.gif")
    assert gif.n_frames == 36 and gif.size[1] == 64
    assert Image.open(out / "heldout_real.png").size[1] == 64
    assert [p.name for p in (out / "run" / "checkpoints").iterdir()] == ["2"]
