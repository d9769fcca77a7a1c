"""Command `demo`: the web demo (a Gradio page) on the registered model."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from elite.config import load_params
from elite.errors import EliteError


def register(sub: argparse._SubParsersAction) -> None:
    d = sub.add_parser(
        "demo",
        help="web demo: the registered model in a browser page, SAM masks from a click",
        description="Serve a Gradio page on HOST:PORT that loads models:/NAME@champion from the MLflow "
        "registry (MLFLOW_TRACKING_URI, default mlflow.db) and generates the uploaded concept "
        "in new prompts. Scripted use: gradio_client, endpoint /generate (see README).",
    )
    d.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to listen on (default: %(default)s); any other than loopback needs --auth (or --insecure)",
    )
    d.add_argument(
        "--auth",
        action="append",
        metavar="USER:PASSWORD",
        help="a login for the page and its API (repeatable); ELITE_DEMO_AUTH=USER:PASSWORD[,...] or --auth-file "
        "keep the password out of `ps`",
    )
    d.add_argument("--auth-file", metavar="FILE", help="logins, one USER:PASSWORD per line (# comments)")
    d.add_argument(
        "--insecure",
        action="store_true",
        help="serve a non-loopback --host without a login (anyone who reaches the port can use the model)",
    )
    d.add_argument("--port", type=int, default=7860, help="port (default: %(default)s)")
    which = d.add_mutually_exclusive_group()
    which.add_argument("--alias", help="registry alias to load (default: params register.champion_alias)")
    which.add_argument("--version", type=int, help="registry version to load instead of an alias")
    which.add_argument("--model-uri", help="any MLflow model URI (models:/..., runs:/..., a saved model folder)")
    which.add_argument("--weights", help="an ELITE weights folder instead of the registry (with --base)")
    d.add_argument("--model-name", help="registered model name (default: params register.model_name)")
    d.add_argument("--base", help="with --weights: Stable Diffusion folder or hub id (default: <models.dir>/base)")
    d.add_argument("--sam", help="SAM folder for the click masks (default: <models.dir>/sam)")
    d.add_argument(
        "--examples",
        action="append",
        type=Path,
        help="folder of example concepts (<name>.png [+ <name>_mask.png, <name>.txt]); repeatable "
        "(default: examples/concepts when present; DreamBench subjects always when present)",
    )
    d.set_defaults(func=demo_cmd)


def model_source(args, params) -> str:
    from elite.demo.model import registry_uri

    if args.model_uri:
        return args.model_uri
    return registry_uri(
        args.model_name or params.register.model_name, args.alias or params.register.champion_alias, args.version
    )


def log_to_stderr(logger: logging.Logger) -> None:
    """The demo's log (one line per refused input, a stack trace only for our own bugs) on stderr."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s: %(message)s"))
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False


def demo_cmd(args) -> None:
    params = load_params(args.params, args.profile)
    if not 0 < args.port < 65536:
        raise EliteError(f"--port {args.port}: choose a port between 1 and 65535")
    from elite.demo.auth import check_exposure, credentials

    logins = credentials(args.auth, args.auth_file)
    check_exposure(args.host, logins, args.insecure)  # before any model is loaded
    log_to_stderr(logging.getLogger("elite.demo"))
    from elite.demo.app import Demo, launch
    from elite.demo.examples import find_examples
    from elite.demo.model import Defaults, DemoModel
    from elite.demo.segment import Segmenter

    models_dir = Path(params.models.dir)
    examples = find_examples(params, args.examples)
    sam_dir = Path(args.sam) if args.sam else models_dir / "sam"
    if (sam_dir / "sam_config.json").is_file():
        segmenter = Segmenter(sam_dir, params.mask)
    elif args.sam:
        raise EliteError(f"{sam_dir}: no SAM model (sam_config.json); run `elite prepare-models` or fix --sam")
    else:
        segmenter = None
        print(
            f"warning: {sam_dir}: no SAM model, the page offers uploaded masks and the whole image only",
            file=sys.stderr,
        )
    model, error = None, None
    source = args.weights or model_source(args, params)
    print(f"loading {source} ...", file=sys.stderr, flush=True)
    try:
        if args.weights:
            model = DemoModel.from_weights(args.weights, args.base or models_dir / "base", params)
        else:
            model = DemoModel.from_registry(source)
    except EliteError as exc:  # the page still opens and says how to fix it
        error = str(exc)
        print(f"warning: {error}", file=sys.stderr)
    gen = params.generate
    defaults = (
        model.defaults
        if model
        else Defaults(gen.lam, gen.steps, gen.guidance, gen.seed, gen.scheduler, gen.allow_bare_s)
    )
    login = f", {len(logins)} login{'s' * (len(logins) != 1)}" if logins else ""
    print(
        f"ELITE demo on http://{args.host}:{args.port} ({len(examples)} examples{login}); Ctrl-C stops it",
        file=sys.stderr,
        flush=True,
    )
    launch(Demo(model, defaults, segmenter, examples, error), args.host, args.port, auth=logins or None)
