"""The figure helpers every report and benchmark draws with: what they put on the axes, and an
atomic write of the figure."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from attnsearch.report.style import labelled_curve, save_quality_figure  # noqa: E402


def test_a_labelled_curve_carries_one_label_per_point_in_its_colour():
    fig, ax = plt.subplots()
    labelled_curve(ax, [1, 2, 3], [4.0, 5.0, 6.0], ["a", "b", "c"], color="C3", marker="o", label="curve")
    (line,) = ax.get_lines()
    assert list(line.get_xdata()) == [1, 2, 3] and list(line.get_ydata()) == [4.0, 5.0, 6.0]
    assert [(t.get_text(), t.xy) for t in ax.texts] == [("a", (1, 4.0)), ("b", (2, 5.0)), ("c", (3, 6.0))]
    assert all(t.get_color() == line.get_color() for t in ax.texts)
    plt.close(fig)


def test_a_quality_figure_labels_both_axes_and_is_written_whole(tmp_path):
    fig, axes = plt.subplots(1, 2)
    for ax in axes:
        ax.plot([0.1, 0.2], [1, 2], label="plan")
    path = save_quality_figure(fig, axes, "mean density", "the title", tmp_path / "f.png")
    assert [ax.get_ylabel() for ax in axes] == ["PSNR vs dense video (dB)", "SSIM vs dense video"]
    assert {ax.get_xlabel() for ax in axes} == {"mean density"} and fig._suptitle.get_text() == "the title"
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and [p.name for p in tmp_path.iterdir()] == ["f.png"]
