"""``hear-models``: the one command line of the package.

    hear-models list
    hear-models embed FILE... [--model NAME|MODULE] [--weights PATH] [--out DIR] [-v]
    hear-models validate NAME|MODULE [--weights PATH]
    hear-models tag AUDIO... [--model NAME | --whisper PATH] [--head PATH] [--at-time-res 10] [--top-k 5]
    hear-models weights path NAME            a local weights file of a registered model or release
                                             (for heareval's --model, hear-validator's -m)
    hear-models weights list [--json]        the official releases: URL, size, sha256, cached or not
    hear-models weights fetch NAME... [--force]
                                             download releases (or a model's files) now, verified
    hear-models install-tools [--dry-run]    openai-whisper, heareval, hear-validator, torchcrepe
                                             into this environment (the recipe of scripts/install.sh)

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

A user error (a typo in a model name, a missing file, a bad option, a missing optional
dependency) ends the command with one line on stderr, ``error: ...``, and exit status 2;
``--debug`` (anywhere on the line) or ``HEAR_MODELS_DEBUG=1`` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import warnings
from pathlib import Path
from typing import Dict, List, Optional, Tuple

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
    return registry.load(name, weights, **options)


def cmd_list(args) -> int:
    for name in registry.list_models():
        spec = registry.get_spec(name)
        print(f"{name:30s} {spec.module:24s} {spec.description}")
    return 0


def _json_object(text: str, option: str) -> dict:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"{option} is not JSON ({e}); e.g. {option} '{{\"layers\": \"all\"}}'") from None
    if not isinstance(value, dict):
        raise ValueError(f"{option} must be a JSON object, e.g. '{{\"layers\": \"all\"}}'")
    return value


def check_inputs(files: List[str], strict: bool) -> Tuple[List[str], Dict[str, str]]:
    """Every audio file checked (header only) before a model loads: (good files, bad file ->
    why). A file given twice is used once; a truncated file is a warning, or bad with
    ``strict``."""
    from .audio import check_audio_file

    good: List[str] = []
    bad: Dict[str, str] = {}
    seen = set()
    for f in files:
        key = os.path.abspath(f)
        if key in seen:
            print(f"note: {f} is given twice; embedding it once", file=sys.stderr)
            continue
        seen.add(key)
        try:
            truncated = check_audio_file(f)
        except (OSError, ValueError) as e:
            bad[f] = str(e)
            continue
        if truncated and strict:
            bad[f] = f"{truncated} (--strict refuses truncated files)"
            continue
        if truncated:
            print(f"warning: {truncated}; using what is there (--strict refuses such files)", file=sys.stderr)
        good.append(f)
    return good, bad


def output_stems(files: List[str], out: Path) -> Dict[str, Path]:
    """Where each input's outputs go: its path relative to the inputs' deepest common
    folder, mirrored under ``out``, without the extension (``a/x.wav``, ``b/x.wav`` ->
    ``out/a/x.*.npy``, ``out/b/x.*.npy``). Two inputs that would share outputs (``x.wav``
    and ``x.flac`` side by side) are refused."""
    if not files:
        return {}
    paths = {f: Path(os.path.abspath(f)) for f in files}
    root = Path(os.path.commonpath([str(p.parent) for p in paths.values()]))
    stems: Dict[str, Path] = {}
    owner: Dict[Path, str] = {}
    for f, p in paths.items():
        stem = out / p.relative_to(root).with_suffix("")
        if stem in owner:
            raise ValueError(f"{owner[stem]} and {f} would write the same outputs {stem}.*.npy; "
                             "embed one of them with another --out")
        owner[stem] = f
        stems[f] = stem
    return stems


def check_out_dir(out: str) -> Path:
    path = Path(out)
    if path.exists() and not path.is_dir():
        raise NotADirectoryError(f"--out {out}: is a file, expected a folder for the .npy files")
    path.mkdir(parents=True, exist_ok=True)
    if not os.access(path, os.W_OK):
        raise PermissionError(f"--out {out}: the folder is not writable")
    return path


def _bad_inputs_message(bad: Dict[str, str], total: int, advice: str = "") -> str:
    if total == 1:
        return next(iter(bad.values()))
    return f"{len(bad)} of {total} input(s) cannot be used: " + "; ".join(bad.values()) + advice


def cmd_embed(args) -> int:
    import numpy as np
    import torch

    from .audio import TruncatedAudioWarning, load_audio

    options = _json_object(args.model_options, "--model-options")
    registry.resolve(args.model)  # an unknown name fails here, before anything is read
    good, bad = check_inputs(args.files, args.strict)
    if bad and not args.keep_going:
        raise ValueError(_bad_inputs_message(bad, len(args.files), " (--keep-going embeds the others)"))
    out = check_out_dir(args.out)
    stems = output_stems(good, out)
    module, model = _load(args.model, args.weights, options) if good else (None, None)
    verbose = args.verbose and hasattr(model, "precision_for")  # our HearModel
    if verbose:
        print(f"{args.model}: {model.name or type(model).__name__}; {model.precision_text()}", file=sys.stderr)
    for f in good:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", TruncatedAudioWarning)  # said by check_inputs
                audio = torch.from_numpy(load_audio(f, model.sample_rate))[None]
        except (OSError, ValueError) as e:  # a file that changed or decodes badly past its header
            if not args.keep_going:
                raise
            bad[f] = str(e)
            continue
        if verbose:
            print(f"{f}: {audio.shape[1] / model.sample_rate:.1f} s, runs in {model.precision_for(audio)}",
                  file=sys.stderr)
        stem = stems[f]
        stem.parent.mkdir(parents=True, exist_ok=True)
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
    if bad:
        print(f"not embedded: {len(bad)} of {len(args.files)} file(s):", file=sys.stderr)
        for why in bad.values():
            print(f"  {why}", file=sys.stderr)
        return 1
    return 0


def cmd_validate(args) -> int:
    """Run hearvalidator on a module and fail on any warning but its fixed advice."""
    from hearvalidator.validate import ValidateModel  # missing: the one-line install advice

    r = registry.resolve(args.model, args.weights)
    module_path, weights = r.module, r.weights
    if r.options:
        print(f"note: {args.model} options {r.options} are not passed by hear-validator", file=sys.stderr)
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


def _check_tag_options(args) -> None:
    """Options and files of ``tag``, before a model loads."""
    from .checkpoints import RELEASE_PREFIX
    from .tagging import check_at_time_res

    if args.top_k < 1:
        raise ValueError(f"--top-k {args.top_k}: must be at least 1")
    if not 0.0 <= args.threshold <= 1.0:
        raise ValueError(f"--threshold {args.threshold}: a probability, between 0 and 1")
    check_at_time_res(args.at_time_res)
    if args.model is not None:  # a registered Whisper (official Whisper-AT rows: backbone + head)
        r = registry.resolve(args.model)
        if r.module != "hear_models.whisper_at":
            raise ValueError(f"--model {args.model}: not a Whisper model ({r.module}); tag takes the "
                             "whisper_* and whisper_at_* rows of hear-models list")
        args.whisper = r.weights if args.whisper is None else args.whisper
        args.head = r.options.get("head") if args.head is None else args.head
    args.whisper = "" if args.whisper is None else args.whisper
    for option, value in (("--head", args.head), ("--labels", args.labels)):
        if value is not None and value.lower() != "none" and not value.startswith(RELEASE_PREFIX) \
                and not Path(value).is_file():
            raise FileNotFoundError(f"{option} {value}: no such file")
    if args.out is not None:
        check_out_dir(str(Path(args.out).parent or "."))
        if Path(args.out).is_dir():
            raise IsADirectoryError(f"--out {args.out}: is a folder, expected the JSON file to write")
    good, bad = check_inputs(args.files, strict=False)
    if bad:
        raise ValueError(_bad_inputs_message(bad, len(args.files)))
    args.files = good


def cmd_tag(args) -> int:
    """Transcription and sound tags per time window, from one encoder pass per 30 s."""
    import torch

    from .audio import TruncatedAudioWarning, load_audio
    from .checkpoints import load_whisper
    from .tagging import builtin_head, load_head, transcribe_and_tag

    _check_tag_options(args)
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
              "trained Whisper-AT head: train one with `hear-models train` (tagging config), give "
              "an official {size}_ori.pth / {size}_low.pth file, or --model whisper_at_{size}_tltr "
              "(downloads the official backbone and head).", file=sys.stderr)
    results = {}
    for f in args.files:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", TruncatedAudioWarning)  # said by the input check
            audio = torch.from_numpy(load_audio(f, 16000))
        r = transcribe_and_tag(model, audio, head, at_time_res=args.at_time_res, top_k=args.top_k,
                               threshold=args.threshold, language=args.language, decode=not args.no_text)
        results[f] = r
        if not args.json:
            print(f"== {f}\n{r['text']}")
            for t in r["audio_tag"]:
                names = ", ".join(f"{x['label']} {x['probability']:.2f}" for x in t["labels"]) or "-"
                print(f"  {t['start']:7.1f}-{t['end']:7.1f} s  {names}")
    if args.json:
        print(json.dumps(results, indent=1, ensure_ascii=False))
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=1, ensure_ascii=False))
    return 0


def cmd_weights(args) -> int:
    """``weights path NAME``: a local weights file for heareval's --model (a registered
    model, or an official release by name; downloaded first if needed)."""
    from . import weights

    path = weights.weights_path(args.name)
    print(path)
    if args.name in registry.list_models():
        spec = registry.get_spec(args.name)
        options = weights.heareval_options(args.name)
        print(f"# {args.name}: HEAR module {spec.module}"
              + (f"; give heareval --model-options '{options}'" if options != "{}" else ""), file=sys.stderr)
    return 0


def _size(n) -> str:
    if n is None:
        return "-"
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024


def cmd_weights_list(args) -> int:
    """``weights list``: every official release, its URL, size and sha256 once known, cached or not."""
    from .checkpoints.releases import cached, releases

    rows = []
    for r in releases().values():
        c = cached(r)
        rows.append({"name": r.name, "family": r.family, "state": c["state"], "size": c["size"],
                     "sha256": c["sha256"] or None, "url": r.urls[0], "mirrors": list(r.urls[1:]),
                     "path": str(r.path()), "what": r.what, "source": r.source})
    if args.json:
        print(json.dumps(rows, indent=1))
        return 0
    print(f"{'name':34s} {'state':8s} {'size':>10s}  {'sha256':16s}  url")
    for row in rows:
        digest = (row["sha256"][:16] if row["sha256"] else "-")
        print(f"{row['name']:34s} {row['state']:8s} {_size(row['size']):>10s}  {digest:16s}  {row['url']}"
              + (f" (+{len(row['mirrors'])} mirror)" if row["mirrors"] else ""))
    print("# sha256: published by openai (Whisper); for the others, recorded at the first download "
          "and checked at every load (the projects publish none). --json: full digests, paths, mirrors.")
    return 0


def cmd_weights_fetch(args) -> int:
    """``weights fetch NAME...``: download releases now (a registered model: every file it needs)."""
    from . import weights
    from .checkpoints.releases import fetch, releases

    table = releases()
    for name in args.names:
        weights.check_name(name)
        needed = [table[name]] if name in table else weights.needed_releases(name)
        if not needed:
            print(f"{name}: nothing to download (its weights come with the package)", file=sys.stderr)
        for r in needed:
            path = fetch(r, force=args.force)
            print(path)
    return 0


def cmd_install_tools(args) -> int:
    from .tools import install_tools

    return install_tools(test=args.test, dry_run=args.dry_run, constraints=args.constraint)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="hear-models", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--debug", action="store_true", help="show the traceback of a failure (also: "
                   "HEAR_MODELS_DEBUG=1); anywhere on the line")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("list", help="registered models")
    s.set_defaults(func=cmd_list)

    s = sub.add_parser("embed", help="embed audio files, writing .npy files")
    s.add_argument("files", nargs="+")
    s.add_argument("--model", default="whisper_base", help="registry name or HEAR module")
    s.add_argument("--weights", default=None, help="model_file_path for load_model")
    s.add_argument("--model-options", default="{}", help="JSON of load_model options")
    s.add_argument("--kind", choices=["scene", "timestamp", "both"], default="both")
    s.add_argument("--out", default="embeddings", help="output folder; the inputs' paths are mirrored "
                   "under it (a/x.wav -> OUT/a/x.scene.npy)")
    s.add_argument("--keep-going", action="store_true", help="embed the good files and list the bad "
                   "ones (exit status 1) instead of stopping before anything is embedded")
    s.add_argument("--strict", action="store_true", help="refuse truncated files (header promises more "
                   "audio than the file holds) instead of warning")
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
    s.add_argument("--model", default=None, help="a registered Whisper: whisper_base, or an official Whisper-AT "
                   "row (whisper_at_large_v2_tltr, ...: its openai backbone and head, downloaded on first use)")
    s.add_argument("--whisper", default=None, help="Whisper weights (load_whisper source; default offline base)")
    s.add_argument("--head", default=None, help="tagging head file (ours or official *_ori.pth / *_low.pth, or "
                   "release:NAME); default: the --model's head, or the packaged head for the offline base "
                   "backbone; 'none': no tags")
    s.add_argument("--labels", default=None, help="CSV of label names overriding the head's")
    s.add_argument("--at-time-res", type=float, default=10.0, help="seconds per tag window (multiple of 0.4)")
    s.add_argument("--top-k", type=int, default=5, help="at most this many labels per window (default 5)")
    s.add_argument("--threshold", type=float, default=0.0,
                   help="only labels with at least this probability (sigmoid of the head's logit; default 0)")
    s.add_argument("--language", default=None, help="spoken language (default: detected; 'en' for "
                   "English-only models)")
    s.add_argument("--no-text", action="store_true", help="tags only, no decoding")
    s.add_argument("--json", action="store_true", help="print JSON instead of a table")
    s.add_argument("--out", default=None, help="also write the JSON here")
    s.set_defaults(func=cmd_tag)

    s = sub.add_parser("weights", help="weights as local files: official releases (list, fetch), "
                       "registered models (path)")
    wsub = s.add_subparsers(dest="weights_command", required=True)
    w = wsub.add_parser("path", help="print a local weights file of a registered model or a release "
                        "(made or downloaded into the cache on first call), e.g. for heareval's --model")
    w.add_argument("name", help="registry name (hear-models list) or release (hear-models weights list)")
    w.set_defaults(func=cmd_weights)
    w = wsub.add_parser("list", help="the official releases: name, state in the cache, size, sha256, URL")
    w.add_argument("--json", action="store_true", help="JSON with full digests, paths and mirrors")
    w.set_defaults(func=cmd_weights_list)
    w = wsub.add_parser("fetch", help="download official releases now (for a registered model: every "
                        "file it needs), verify, print their paths")
    w.add_argument("names", nargs="+", metavar="NAME", help="release or registry name")
    w.add_argument("--force", action="store_true", help="delete the cached file first and download again")
    w.set_defaults(func=cmd_weights_fetch)

    s = sub.add_parser("install-tools", help="install openai-whisper, heareval, hear-validator and "
                       "torchcrepe into this environment, as scripts/install.sh does")
    s.add_argument("--dry-run", action="store_true", help="print the pip commands, run nothing")
    s.add_argument("--test", action="store_true", help="also the tools the test suite compares with")
    s.add_argument("-c", "--constraint", action="append", default=[], metavar="FILE",
                   help="pip constraints file for every pip call (beside the installed torch's version)")
    s.set_defaults(func=cmd_install_tools)

    for command, (module, help_text) in DELEGATED.items():
        s = sub.add_parser(command, help=help_text, add_help=False)
        s.add_argument("argv", nargs=argparse.REMAINDER)
        s.set_defaults(func=lambda a, module=module: _delegate(module, a.argv))
    return p


def _delegate(module: str, argv: List[str]) -> int:
    import importlib

    return importlib.import_module(module).main(argv)


def _run(argv: List[str]) -> int:
    if argv and argv[0] in DELEGATED:  # straight through: argparse's REMAINDER drops a leading --help
        return _delegate(DELEGATED[argv[0]][0], argv[1:])
    args = build_parser().parse_args(argv)
    return args.func(args)


def explain(e: BaseException) -> Tuple[str, int]:
    """(one line for the user, exit status) for an exception that ended a command: 2 for
    a user error (bad input, a missing file or dependency, a message of this package),
    1 for anything else (with the way to see its traceback)."""
    from .tools import missing_dependency_message

    if isinstance(e, ModuleNotFoundError):
        text, status = missing_dependency_message(e.name) or f"{e} (an import failed)", 2
    elif isinstance(e, KeyError) and e.args and " " in str(e.args[0]):  # a sentence, not a bare key
        text, status = str(e.args[0]), 2
    elif isinstance(e, OSError) and e.filename is not None and e.strerror:
        text, status = f"{e.filename}: {e.strerror}", 2
    elif isinstance(e, (OSError, ValueError)) or type(e).__module__.startswith("hear_models"):
        text, status = str(e), 2
    else:
        text, status = (f"{type(e).__name__}: {e} (an unexpected failure: `hear-models --debug ...` "
                        "shows where; please report it)"), 1
    return " ".join(text.split()), status


def main(argv: Optional[List[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv or os.environ.get("HEAR_MODELS_DEBUG", "") not in ("", "0")
    argv = [a for a in argv if a != "--debug"]
    if debug:
        return _run(argv)
    try:
        return _run(argv)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as e:
        text, status = explain(e)
        print(f"error: {text}", file=sys.stderr)
        return status


if __name__ == "__main__":
    sys.exit(main())
