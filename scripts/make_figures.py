"""Draw the book's front-matter figures: the pipeline diagram and the site icon.

Run `python scripts/make_figures.py` (or `make figures`); it rewrites
book/figures/pipeline.svg and book/figures/favicon.png. The output is byte-identical on
every run (fixed SVG ids, no timestamps), so the committed files show a real change only
when the drawing changes.
"""
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch  # noqa: E402

FIGURES = Path(__file__).resolve().parent.parent / "book" / "figures"

# Colours of the three kinds of step: building blocks, training, using the model.
BUILD, TRAIN, USE = "#dbe9f6", "#fde7c8", "#d8f0d8"
EDGE = "#3b4a5a"

# (label, chapter, centre x, centre y, colour); the page is 12.9 × 6.6 units, three rows.
STAGES = {
    "data": ("Data preparation\nclean · dedup · convert", "Ch. 10", 1.3, 5.5, BUILD),
    "tokenizer": ("Tokenizer\nbyte-level BPE", "Ch. 1", 3.85, 5.5, BUILD),
    "model": ("Transformer\nattention · RoPE · GQA · MoE", "Ch. 2", 6.4, 5.5, BUILD),
    "pretrain": ("Pretraining\nnext-token prediction", "Ch. 3", 8.95, 5.5, TRAIN),
    "sft": ("Supervised\nfine-tuning (SFT)", "Ch. 4", 11.5, 5.5, TRAIN),
    "dpo": ("DPO\npreferences", "Ch. 5", 3.85, 3.2, TRAIN),
    "lora": ("LoRA\nadapters", "Ch. 6", 6.4, 3.2, TRAIN),
    "reason": ("Reasoning\n<think>…<answer>", "Ch. 7", 8.95, 3.2, TRAIN),
    "distill": ("Distillation\nteacher → student", "Ch. 8", 11.5, 3.2, TRAIN),
    "serve": ("Inference & serving\nchat · OpenAI API · web · export", "Ch. 9", 7.675, 0.8, USE),
}
CHAIN = ["data", "tokenizer", "model", "pretrain", "sft"]
POST_TRAINING = ["dpo", "lora", "reason", "distill"]
BOX_W, BOX_H = 2.3, 1.3
SERVE_W = 3.6


def _box(ax, key):
    label, chapter, x, y, colour = STAGES[key]
    width = SERVE_W if key == "serve" else BOX_W
    ax.add_patch(FancyBboxPatch((x - width / 2, y - BOX_H / 2), width, BOX_H,
                                boxstyle="round,pad=0.02,rounding_size=0.12",
                                facecolor=colour, edgecolor=EDGE, linewidth=1.5))
    title, detail = label.split("\n")
    ax.text(x, y + 0.27, title, ha="center", va="center", fontsize=15, fontweight="bold")
    ax.text(x, y - 0.13, detail, ha="center", va="center", fontsize=10.8, color="#333333")
    ax.text(x, y - 0.45, chapter, ha="center", va="center", fontsize=11, color="#555555", style="italic")


def _arrow(ax, start, end):
    ax.add_patch(FancyArrowPatch(start, end, arrowstyle="-|>", mutation_scale=18, linewidth=1.5,
                                 color=EDGE, shrinkA=0, shrinkB=1))


def _line(ax, xs, ys):
    ax.plot(xs, ys, color=EDGE, linewidth=1.5, solid_capstyle="butt")


def draw_pipeline(path: Path) -> None:
    fig, ax = plt.subplots(figsize=(12.9, 6.6))
    ax.set_xlim(0.05, 12.75)
    ax.set_ylim(0.0, 6.3)
    ax.axis("off")
    for key in STAGES:
        _box(ax, key)
    half = BOX_H / 2
    for left, right in zip(CHAIN, CHAIN[1:]):  # the main chain, left to right
        _arrow(ax, (STAGES[left][2] + BOX_W / 2, 5.5), (STAGES[right][2] - BOX_W / 2, 5.5))
    # SFT feeds the four post-training stages through a bus line between the rows.
    bus_top = (5.5 - half + 3.2 + half) / 2
    _line(ax, [STAGES["sft"][2]] * 2, [5.5 - half, bus_top])
    _line(ax, [STAGES["dpo"][2], STAGES["distill"][2]], [bus_top] * 2)
    for key in POST_TRAINING:
        _arrow(ax, (STAGES[key][2], bus_top), (STAGES[key][2], 3.2 + half))
    # ... and each of them can be served.
    bus_bottom = (3.2 - half + 0.8 + half) / 2
    for key in POST_TRAINING:
        _line(ax, [STAGES[key][2]] * 2, [3.2 - half, bus_bottom])
    _line(ax, [STAGES["dpo"][2], STAGES["distill"][2]], [bus_bottom] * 2)
    _arrow(ax, (STAGES["serve"][2], bus_bottom), (STAGES["serve"][2], 0.8 + half))
    legend = [(BUILD, "building blocks"), (TRAIN, "training stages"), (USE, "using the model")]
    for i, (colour, text) in enumerate(legend):
        y = 3.75 - 0.55 * i
        ax.add_patch(FancyBboxPatch((0.25, y - 0.16), 0.4, 0.32, boxstyle="round,pad=0.02",
                                    facecolor=colour, edgecolor=EDGE, linewidth=1))
        ax.text(0.8, y, text, va="center", fontsize=12)
    fig.tight_layout(pad=0.2)
    fig.savefig(path, format="svg", metadata={"Date": None})
    plt.close(fig)


def draw_favicon(path: Path) -> None:
    fig = plt.figure(figsize=(0.64, 0.64), dpi=100)  # 64 × 64 pixels
    fig.patch.set_facecolor(TRAIN)
    fig.text(0.5, 0.5, "M", ha="center", va="center", fontsize=34, fontweight="bold", color=EDGE)
    fig.savefig(path, format="png", metadata={"Software": None}, facecolor=fig.get_facecolor())
    plt.close(fig)


def main() -> None:
    plt.rcParams["svg.hashsalt"] = "minimind-book"  # fixed ids inside the SVG
    plt.rcParams["svg.fonttype"] = "path"  # glyphs as paths: the figure needs no font
    FIGURES.mkdir(parents=True, exist_ok=True)
    draw_pipeline(FIGURES / "pipeline.svg")
    draw_favicon(FIGURES / "favicon.png")
    print(f"wrote {FIGURES / 'pipeline.svg'} and {FIGURES / 'favicon.png'}")


if __name__ == "__main__":
    main()
