"""``hear-models``: the one command line of the package.

    hear-models list
    hear-models embed FILE... [--model NAME|MODULE] [--weights PATH] [--out DIR] [-v]
    hear-models validate NAME|MODULE [--weights PATH]
    hear-models tag AUDIO... [--whisper PATH] [--head PATH] [--at-time-res 10] [--top-k 5]
    hear-models weights path NAME            a local weights file of a registered model
                                             (for heareval's --model, hear-validator's -m)

    hear-models tasks make|list ...          (hear_models.evaluation.tasks)
    hear-models train CONFIG [key=value ...] (hear_models.training.cli)
    hear-models evaluate MODEL... --tasks DIR|smoke|small|mini [--grid default] ...
                                             (hear_models.evaluation.runner)
    hear-models probe MODEL... --tasks DIR|smoke|mini [--layers all|LIST]
        [--protocol linear|heareval] ...     (hear_models.evaluation.probe)
    hear-models heareval predictions|embeddings ...
                                             heareval's own runners, with today's fixes
                                             (hear_models.evaluation.heareval_runners)

Subsystems own their subcommands: ``DELEGATED`` maps a command to a module whose
``main(argv) -> int`` parses the rest of the command line (imported only when run).
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from pathlib import Path
from typing import List, Optional

from . import registry

DELEGATED = {
    "tasks": ("hear_models.evaluation.tasks", "the offline HEAR task suite: make, list"),
    "train": ("hear_models.training.cli", "pretrain / fine-tune (Lightning): CONFIG key=value, export, configs"),
    "evaluate": ("hear_models.evaluation.runner",
                 "embeddings + heareval's shallow-classifier protocol -> results table"),
    "compare": ("hear_models.evaluation.results", "primary scores of evaluate runs beside a baseline run"),
    "probe": ("hear_models.evaluation.probe",
              "layer-wise probes: score per task x block, best block per class, figures, report"),
    "heareval": ("hear_models.evaluation.heareval_runners",
                 "heareval's own predictions / embeddings runners, with the fixes they need today"),
}

# hearvalidator always warns this, whatever the model: it is advice, not a finding.
VALIDATOR_ADVICE = "IMPORTANT: A common bug we have seen"


def _load(name: str, weights: Optional[str], options: dict):
    module_path, default_weights, spec_options = registry.hear_module(name)
    import importlib

    module = importlib.import_module(module_path)
    model = module.load_model(default_weights if weights is None else weights, **{**spec_options, **options})
    return module, model


def cmd_list(args) -> int:
    for name in registry.list_models():
        spec = registry.get_spec(name)
        print(f"{name:24s} {spec.module:28s} {spec.description}")
    return 0


def cmd_embed(args) -> int:
    import numpy as np
    import torch

    from .audio import load_audio

    module, model = _load(args.model, args.weights, json.loads(args.model_options))
    verbose = args.verbose and hasattr(model, "precision_for")  # our HearModel
    if verbose:
        print(f"{args.model}: {model.name or type(model).__name__}; {model.precision_text()}", file=sys.stderr)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for f in args.files:
        audio = torch.from_numpy(load_audio(f, model.sample_rate))[None]
        stem = out / Path(f).stem
        if verbose:
            print(f"{f}: {audio.shape[1] / model.sample_rate:.1f} s, runs in {model.precision_for(audio)}",
                  file=sys.stderr)
        if args.kind in ("scene", "both"):
            emb = module.get_scene_embeddings(audio, model)[0].cpu().numpy()
            np.save(f"{stem}.scene.npy", emb)
            print(f"{f}: scene {emb.shape} -> {stem}.scene.npy")
        if args.kind in ("timestamp", "both"):
            emb, ts = module.get_timestamp_embeddings(audio, model)
            np.save(f"{stem}.timestamp.npy", emb[0].cpu().numpy())
            np.save(f"{stem}.timestamps_ms.npy", ts[0].cpu().numpy())
            print(f"{f}: timestamp {tuple(emb.shape[1:])} every "
                  f"{float(ts[0, 1] - ts[0, 0]) if ts.shape[1] > 1 else 0:.1f} ms -> {stem}.timestamp.npy")
    return 0


def cmd_validate(args) -> int:
    """Run hearvalidator on a module and fail on any warning but its fixed advice."""
    try:
        from hearvalidator.validate import ValidateModel
    except ImportError as e:
        print(f"hearvalidator is not importable ({e}); run scripts/install.sh", file=sys.stderr)
        return 2
    module_path, default_weights, spec_options = registry.hear_module(args.model)
    if spec_options:
        print(f"note: {args.model} options {spec_options} are not passed by hear-validator", file=sys.stderr)
    weights = default_weights if args.weights is None else args.weights
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ValidateModel(module_path, weights, device=args.device)()
    findings = [w for w in caught if VALIDATOR_ADVICE not in str(w.message)
                and w.category is UserWarning and "hearvalidator" in (w.filename or "")]
    for w in findings:
        print(f"validator warning: {w.message}", file=sys.stderr)
    if findings:
        print(f"FAILED: {len(findings)} validator warning(s)", file=sys.stderr)
        return 1
    print(f"{args.model}: hear-validator passed with no warnings")
    return 0


def cmd_tag(args) -> int:
    """Transcription and sound tags per time window, from one encoder pass per 30 s."""
    import torch

    from .audio import load_audio
    from .checkpoints import load_whisper
    from .tagging import builtin_head, load_head, transcribe_and_tag

    model = load_whisper(args.whisper)
    head_path = args.head
    if head_path is None:
        head_path = builtin_head(args.whisper)
        if head_path is not None:
            print(f"note: using the packaged head {head_path.name} (10 sound classes of the offline "
                  "suite's sound_mixtures task; model card: docs/whisper_at.md). Give --head PATH "
                  "for another label set, --head none to transcribe only.", file=sys.stderr)
    elif head_path.lower() == "none":
        head_path = None
    head = load_head(head_path, labels=args.labels) if head_path else None
    if head is None:
        print("note: no tagging head (--head PATH): transcribing only. Audio tags need a "
              "trained Whisper-AT head: train one with `hear-models train` (tagging config) or "
              "use an official {size}_ori.pth / {size}_low.pth file.", file=sys.stderr)
    results = {}
    for f in args.files:
        audio = torch.from_numpy(load_audio(f, 16000))
        r = transcribe_and_tag(model, audio, head, at_time_res=args.at_time_res, top_k=args.top_k,
                               language=args.language, decode=not args.no_text)
        results[f] = r
        if not args.json:
            print(f"== {f}\n{r['text']}")
            for t in r["audio_tag"]:
                names = ", ".join(f"{x['label']} ({x['logit']:+.2f})" for x in t["labels"])
                print(f"  {t['start']:7.1f}-{t['end']:7.1f} s  {names}")
    if args.json:
        print(json.dumps(results, indent=1, ensure_ascii=False))
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=1, ensure_ascii=False))
    return 0


def cmd_weights(args) -> int:
    """``weights path NAME``: a local weights file for heareval's --model."""
    from . import weights

    try:
        path = weights.weights_path(args.name)
    except (KeyError, ValueError) as e:
        print(f"hear-models weights: {e.args[0] if isinstance(e, KeyError) else e}", file=sys.stderr)
        return 2
    print(path)
    spec = registry.get_spec(args.name)
    options = weights.heareval_options(args.name)
    print(f"# {args.name}: HEAR module {spec.module}"
          + (f"; give heareval --model-options '{options}'" if options != "{}" else ""), file=sys.stderr)
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="hear-models", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("list", help="registered models")
    s.set_defaults(func=cmd_list)

    s = sub.add_parser("embed", help="embed audio files, writing .npy files")
    s.add_argument("files", nargs="+")
    s.add_argument("--model", default="whisper_base", help="registry name or HEAR module")
    s.add_argument("--weights", default=None, help="model_file_path for load_model")
    s.add_argument("--model-options", default="{}", help="JSON of load_model options")
    s.add_argument("--kind", choices=["scene", "timestamp", "both"], default="both")
    s.add_argument("--out", default="embeddings")
    s.add_argument("-v", "--verbose", action="store_true",
                   help="say which model and precision run (auto: fp32 or bf16 on this device)")
    s.set_defaults(func=cmd_embed)

    s = sub.add_parser("validate", help="hear-validator, failing on its warnings")
    s.add_argument("model", help="registry name or HEAR module")
    s.add_argument("--weights", "-m", default=None)
    s.add_argument("--device", "-d", default=None)
    s.set_defaults(func=cmd_validate)

    s = sub.add_parser("tag", help="Whisper transcription + Whisper-AT sound tags from one encoder pass")
    s.add_argument("files", nargs="+")
    s.add_argument("--whisper", default="", help="Whisper weights (load_whisper source; default offline base)")
    s.add_argument("--head", default=None, help="tagging head file (ours or official *_ori.pth / *_low.pth); default: the "
                   "packaged head for the offline base backbone; 'none': no tags")
    s.add_argument("--labels", default=None, help="CSV of label names overriding the head's")
    s.add_argument("--at-time-res", type=float, default=10.0, help="seconds per tag window (multiple of 0.4)")
    s.add_argument("--top-k", type=int, default=5)
    s.add_argument("--language", default=None)
    s.add_argument("--no-text", action="store_true", help="tags only, no decoding")
    s.add_argument("--json", action="store_true", help="print JSON instead of a table")
    s.add_argument("--out", default=None, help="also write the JSON here")
    s.set_defaults(func=cmd_tag)

    s = sub.add_parser("weights", help="weights of registered models as local files")
    wsub = s.add_subparsers(dest="weights_command", required=True)
    w = wsub.add_parser("path", help="print a local weights file of a registered model (made in the "
                        "cache on first call), e.g. for heareval's --model")
    w.add_argument("name", help="registry name (hear-models list)")
    w.set_defaults(func=cmd_weights)

    for command, (module, help_text) in DELEGATED.items():
        s = sub.add_parser(command, help=help_text, add_help=False)
        s.add_argument("argv", nargs=argparse.REMAINDER)
        s.set_defaults(func=lambda a, module=module: _delegate(module, a.argv))
    return p


def _delegate(module: str, argv: List[str]) -> int:
    import importlib

    return importlib.import_module(module).main(argv)


def main(argv: Optional[List[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in DELEGATED:  # straight through: argparse's REMAINDER drops a leading --help
        return _delegate(DELEGATED[argv[0]][0], argv[1:])
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
