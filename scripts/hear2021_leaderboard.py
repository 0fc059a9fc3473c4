"""Rewrite evaluation/data/hear2021_leaderboard.csv from the published leaderboard.

    git clone https://github.com/hearbenchmark/hearbenchmark.com && git -C hearbenchmark.com checkout 3af3234
    python scripts/hear2021_leaderboard.py hearbenchmark.com/docs/leaderboard.csv 3af3234

The published file is wide (one row per system, one column per task variant, primary
metric); ours is long (one row per system x task variant) and names the task variant as
heareval's task folders do (task_name + mode), with the source of every value.
"""

import csv
import sys
from pathlib import Path

# leaderboard column -> [(task_name, mode), ...] of the hear-2021.0.6 task folders it scores
COLUMNS = {
    "Beehive": [("beehive_states_fold0", "full"), ("beehive_states_fold1", "full")],
    "Beijing Opera": [("beijing_opera", "full")],
    "CREMA-D": [("tfds_crema_d", "full")],
    "DCASE 2016": [("dcase2016_task2", "full")],
    "ESC-50": [("esc50", "full")],
    "FSD50K": [("fsd50k", "full")],
    "GTZAN Genre": [("tfds_gtzan", "full")],
    "GTZAN Music/Speech": [("tfds_gtzan_music_speech", "full")],
    "Gunshot": [("gunshot_triangulation", "full")],
    "Libricount": [("libricount", "full")],
    "Maestro 5h": [("maestro", "5h")],
    "Mridangam Stroke": [("mridangam_stroke", "full")],
    "Mridangam Tonic": [("mridangam_tonic", "full")],
    "NSynth Pitch 50h": [("nsynth_pitch", "50h")],
    "NSynth Pitch 5h": [("nsynth_pitch", "5h")],
    "Speech commands 5h": [("speech_commands", "5h")],
    "Speech commands full": [("speech_commands", "full")],
    "Vocal Imitation": [("vocal_imitation", "full")],
    "VoxLingua107 top 10": [("vox_lingua_top10", "full")],
}


def main(src: str, commit: str) -> None:
    rows = list(csv.DictReader(open(src, newline="")))
    unknown = set(rows[0]) - set(COLUMNS) - {"Model", "URL", "Submission Date"}
    if unknown:
        raise SystemExit(f"columns not mapped to task folders: {sorted(unknown)}")
    out = Path(__file__).resolve().parents[1] / "evaluation" / "data" / "hear2021_leaderboard.csv"
    source = f"hearbenchmark.com docs/leaderboard.csv @{commit}"
    with open(out, "w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(["system", "task_name", "mode", "leaderboard_column", "score", "submitted", "source"])
        for r in rows:
            for column, tasks in COLUMNS.items():
                value = r[column].strip()
                if value:
                    for task_name, mode in tasks:
                        w.writerow([r["Model"], task_name, mode, column, value, r["Submission Date"], source])
    print(f"{out}: {len(rows)} systems")


if __name__ == "__main__":
    main(*sys.argv[1:3])
