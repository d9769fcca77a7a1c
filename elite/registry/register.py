"""The register stage: log the trained ELITE as an MLflow pyfunc model, register it, gate the champion.

1. Check the inputs (weights, the image encoder they name, base model, metrics and every gate's metric)
   before anything is logged.
2. In an MLflow run `register` (nested under $ELITE_PARENT_RUN_ID when set): log the params, the
   DreamBench metrics (numbers as `dreambench.<dotted path>`, the file as an artifact) and the pyfunc
   model (weights + image encoder + base copy or reference, signature, input example, the `elite`
   package as code, pinned pip requirements); optionally load it back and run the input example.
3. Register it as a new version of `register.model_name` (one registered model per profile: elite-toy,
   elite-smoke, elite-paper; the version is tagged with its profile), give it the candidate alias, and move
   the champion alias to it only when every gate passes against the current champion's metrics and the
   profile's fixed floor (`register.floor`). A champion of another profile under the same name is an error.
4. Write the decision to `register.report` (and to the run, and as tags on the version).
"""

from __future__ import annotations

import json
import shutil
import tempfile
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from tqdm.auto import tqdm

from elite.config import Params
from elite.config.register import RegisterConfig
from elite.errors import EliteError
from elite.io import write_json
from elite.registry.gates import decide, load_metrics, lookup, metric_key, numeric_leaves

MODEL_ARTIFACT = "model"
PIP_PACKAGES = [
    "mlflow",
    "torch",
    "diffusers",
    "transformers",
    "safetensors",
    "scipy",
    "pillow",
    "numpy",
    "pandas",
    "pydantic",
]


def pip_requirements() -> list[str]:
    """The model's runtime requirements, pinned to what is installed here (local version labels dropped)."""
    reqs = []
    for name in PIP_PACKAGES:
        try:
            reqs.append(f"{name}=={version(name).split('+')[0]}")
        except PackageNotFoundError:
            continue
    return reqs


def package_code(tmp: Path) -> Path:
    """A clean copy of the `elite` package: the model carries the code that matches its weights."""
    import elite

    dst = tmp / "elite"
    shutil.copytree(Path(elite.__file__).parent, dst, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    return dst


def model_inputs(cfg: RegisterConfig, serving: dict) -> tuple[dict[str, str], dict]:
    """(pyfunc artifacts, model_config = `serving` + where the image encoder and base are), checked: the
    weights, the image encoder they name, the base."""
    from elite.models.elite_model import CONFIG_NAME, WEIGHTS_NAME
    from elite.pipeline import resolve_image_encoder

    weights = Path(cfg.weights)
    if not (weights / CONFIG_NAME).is_file() or not (weights / WEIGHTS_NAME).is_file():
        raise EliteError(
            f"{weights}: no ELITE weights ({CONFIG_NAME} + {WEIGHTS_NAME}); train them (`dvc repro`) "
            "or set register.weights in params.yaml"
        )
    try:
        encoder_name = json.loads((weights / CONFIG_NAME).read_text())["image_encoder"]
    except (json.JSONDecodeError, KeyError, TypeError):
        raise EliteError(f"{weights / CONFIG_NAME}: unreadable ELITE config (no image_encoder entry)") from None
    artifacts = {"elite_weights": str(weights.resolve())}
    config = dict(serving)
    encoder = resolve_image_encoder(weights, encoder_name)
    if Path(encoder).is_dir():
        artifacts["image_encoder"] = encoder
    else:  # a hub id: stored as a reference
        config["image_encoder"] = encoder
    base = Path(cfg.base)
    if (cfg.copy_base or cfg.base_reference is None) and not (base / "model_index.json").is_file():
        raise EliteError(
            f"{base}: not a Stable Diffusion folder (no model_index.json); run `elite prepare-models` "
            "or set register.base in params.yaml"
        )
    if cfg.copy_base:
        artifacts["base"] = str(base.resolve())
    else:
        config["base"] = cfg.base_reference or str(base.resolve())
    return artifacts, config


PROFILE_TAG = "profile"  # on every registered version: the params profile its weights were trained on


def champion_metrics(
    client, name: str, alias: str, profile: str | None = None
) -> tuple[object | None, dict[str, float] | None]:
    """The version holding `alias` and the metrics of the run that registered it (None, None if none).
    With `profile`: a one-line error when that version was trained on another profile (gates compare like
    with like; one registered model per profile, params register.model_name)."""
    from mlflow.exceptions import MlflowException

    try:
        champion = client.get_model_version_by_alias(name, alias)
    except MlflowException as exc:
        if exc.error_code == "RESOURCE_DOES_NOT_EXIST" or "alias" in exc.message and "not found" in exc.message:
            return None, None  # no such model, or no version holds the alias yet
        # anything else (a store that fails) must not look like "no champion": that would promote blindly
        raise EliteError(
            f"cannot read {name}@{alias} from the model registry: {exc.message.splitlines()[0]}"
        ) from None
    metrics: dict[str, float] = {}
    their_profile = champion.tags.get(PROFILE_TAG)
    if champion.run_id:
        try:
            data = client.get_run(champion.run_id).data
            metrics = dict(data.metrics)
            their_profile = their_profile or data.params.get("profile")
        except MlflowException:
            metrics = {}
    if profile is not None and their_profile is not None and their_profile != profile:
        raise EliteError(
            f"register.model_name {name!r}: its {alias} (version {champion.version}) was trained on the "
            f"{their_profile} profile, this model on {profile}; gates compare like with like: give each profile "
            f"its own name (params.yaml register.{profile}.model_name, e.g. elite-{profile})"
        )
    return champion, metrics


def verify_model(model_uri: str, example) -> None:
    """Load the logged model from the store and run its input example: every row must give a PNG."""
    import mlflow

    from elite.registry.codec import decode_png

    try:
        predictions = mlflow.pyfunc.load_model(model_uri).predict(example)
    except Exception as exc:  # any failure here means the model must not be registered
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise EliteError(
            f"{model_uri}: the logged model failed to load or to run its input example "
            f"({type(exc).__name__}: {first[:300]}); nothing was registered"
        ) from None
    if list(predictions.columns) != ["image"] or len(predictions) != len(example):
        raise EliteError(f"{model_uri}: the logged model answered its input example with {list(predictions.columns)}")
    for value in predictions["image"]:
        if decode_png(value).format != "PNG":
            raise EliteError(f"{model_uri}: the logged model did not return PNG images")


def pyfunc_spec(cfg: RegisterConfig, serving: dict, code_dir: Path, profile: str) -> dict:
    """Keyword arguments for `mlflow.pyfunc.log_model` / `save_model`: the model as models-from-code,
    its artifacts, config (serving defaults), signature, input example, code and requirements."""
    from elite.registry import model_code
    from elite.registry.pyfunc import input_example, signature

    artifacts, model_config = model_inputs(cfg, serving)
    return {
        "python_model": str(Path(model_code.__file__)),
        "artifacts": artifacts,
        "model_config": model_config,
        "signature": signature(serving["scheduler"]),
        "input_example": input_example(
            cfg.example_prompt, cfg.example_steps, serving["lam"], serving["guidance"], serving["seed"]
        ),
        "pip_requirements": pip_requirements(),
        "code_paths": [str(package_code(code_dir))],
        "metadata": {"elite": {"weights": cfg.weights, "metrics": cfg.metrics, "profile": profile}},
    }


MODEL_DESCRIPTION = (
    "ELITE (Wei et al. 2023): one image of a concept (and optionally its mask) becomes the pseudo-word S* that "
    "Stable Diffusion composes into new prompts, in one forward pass. Request rows: `image`, `mask`, `prompt` (with "
    "S*), optional `lam`, `steps`, `guidance`, `seed`; answer: a PNG per row. Versions come from the `register` "
    "stage of the DVC pipeline (each names its data, params and evaluation run); `@champion` moves only when the "
    "gates of params.yaml `register.gates` pass against the previous champion, `@candidate` is the newest version."
)


def evaluation_run(client, metrics_path: str):
    """The evaluate run that wrote this metrics file (its SHA-256 tag), newest first; None if none logged it."""
    from elite.tracking import EXPERIMENT, METRICS_DIGEST_TAG, file_digest

    experiment = client.get_experiment_by_name(EXPERIMENT)
    runs = client.search_runs(
        [experiment.experiment_id],
        order_by=["attributes.start_time DESC"],
        max_results=1,
        filter_string=f"tags.`{METRICS_DIGEST_TAG}` = '{file_digest(metrics_path)}'",
    )
    return runs[0] if runs else None


def version_description(params: Params, metrics: dict, evaluation, record: dict) -> str:
    """Markdown for a model version: what it is, the data and params it came from, its scores and the gate."""
    from elite.tracking import dvc_experiment

    cfg, g, loc = params.register, params.train_global, params.train_local
    origin = [f"{params.profile} profile"]
    if dvc_experiment():
        origin.append(f"DVC experiment `{dvc_experiment()}`")
    commit = _git_commit()
    if commit:
        origin.append(f"git commit `{commit}`")
    lines = [
        f"ELITE weights `{cfg.weights}` ({', '.join(origin)}).",
        f"Trained: stage 1 on `{g.manifest}` ({g.max_steps} steps, learning rate {g.learning_rate:g}), stage 2 on "
        f"`{loc.manifest}` ({loc.max_steps} steps, learning rate {loc.learning_rate:g}); base `{cfg.base}`.",
    ]
    overall = metrics.get("overall", {})
    scores = ", ".join(
        f"{k.upper().replace('_', '-')} {overall[k]:.4f}"
        for k in ("clip_t", "clip_i", "dino_i")
        if isinstance(overall.get(k), (int, float))
    )
    link = (
        f"; evaluation run [{evaluation.info.run_name}]({_run_link(evaluation)})"
        if evaluation is not None
        else "; no evaluation run found in this store"
    )
    lines.append(f"DreamBench (`{cfg.metrics}`): {scores or 'no overall scores'}{link}.")
    lines.append(f"Gate: {record['decision']}: {record['reason']}")
    return "\n\n".join(lines)


def _run_link(run) -> str:
    return f"#/experiments/{run.info.experiment_id}/runs/{run.info.run_id}"


def _git_commit() -> str | None:
    import os
    import subprocess

    baseline = os.environ.get("DVC_EXP_BASELINE_REV")  # a DVC experiment: the commit it started from
    if baseline:
        return baseline[:12]
    try:
        out = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def register_model(params: Params, cfg: RegisterConfig | None = None) -> dict:
    """Run the register stage; returns (and writes to cfg.report) the decision record."""
    from elite.registry.pyfunc import serving_defaults

    cfg = cfg or params.register
    serving = serving_defaults(params.generate, cfg.cuda_dtype)
    model_inputs(cfg, serving)  # fail on missing models before anything is logged
    metrics = load_metrics(cfg.metrics)
    for gate in cfg.gates:  # ... and on a misnamed gate
        lookup(metrics, gate.metric, cfg.metrics)

    from mlflow import MlflowClient

    from elite.tracking import setup_mlflow, stage_run

    setup_mlflow()  # ... and on a champion of another profile, before any run is opened
    champion_metrics(MlflowClient(), cfg.model_name, cfg.champion_alias, params.profile)

    bar = tqdm(total=5, desc="register", unit="step")
    with stage_run("register", params.flat()) as run, tempfile.TemporaryDirectory(prefix="elite-code-") as tmp:
        import mlflow

        client = MlflowClient()
        champion, champ_metrics = champion_metrics(client, cfg.model_name, cfg.champion_alias, params.profile)
        info = _log_model(cfg, pyfunc_spec(cfg, serving, Path(tmp), params.profile), metrics, bar)

        bar.set_postfix_str("registering")
        mv = mlflow.register_model(info.model_uri, cfg.model_name)
        client.set_model_version_tag(cfg.model_name, mv.version, PROFILE_TAG, params.profile)
        client.set_registered_model_alias(cfg.model_name, cfg.candidate_alias, mv.version)
        bar.update()
        decision, verdict = _judge(client, cfg, mv.version, metrics, champion, champ_metrics)
        previous = int(champion.version) if champion is not None else None
        record = {
            "model_name": cfg.model_name,
            "profile": params.profile,
            "version": int(mv.version),
            "model_uri": f"models:/{cfg.model_name}/{mv.version}",
            "logged_model_uri": info.model_uri,
            "run_id": run.info.run_id,
            "aliases": sorted(client.get_model_version(cfg.model_name, mv.version).aliases),
            "decision": verdict,
            "reason": decision.reason,
            "previous_champion": previous,
            "champion": int(mv.version) if decision.promote else previous,
            "gates": decision.as_dict()["gates"],
        }
        _describe(client, params, cfg, metrics, mv.version, record)
        mlflow.set_tags({"register.decision": verdict, "register.version": mv.version})
        mlflow.log_dict(record, "register.json")
        bar.update()
    bar.close()
    write_json(Path(cfg.report), record)
    return record


def _log_model(cfg: RegisterConfig, spec: dict, metrics: dict, bar):
    """The pyfunc model into the active run, with the evaluation's metrics on it; loaded back and run on its input
    example when `cfg.verify`. Returns MLflow's ModelInfo."""
    import mlflow

    bar.set_postfix_str("logging the pyfunc model")
    info = mlflow.pyfunc.log_model(name=MODEL_ARTIFACT, **spec)
    bar.update()
    items = [(metric_key(k), v) for k, v in numeric_leaves(metrics).items()]
    for i in range(0, len(items), 500):
        mlflow.log_metrics(dict(items[i : i + 500]), model_id=info.model_id)
    mlflow.log_artifact(cfg.metrics, artifact_path="metrics")
    bar.update()
    if cfg.verify:
        bar.set_postfix_str("loading it back to run the input example")
        verify_model(info.model_uri, spec["input_example"])
    bar.update()
    return info


def _judge(client, cfg: RegisterConfig, version: str, metrics: dict, champion, champ_metrics):
    """The gates against the champion (or the floor): moves the champion alias when they pass, tags the version
    with the decision. Returns (decision, "promoted" | "rejected")."""
    label = f"champion v{champion.version}" if champion is not None else "champion"
    decision = decide(
        cfg.gates,
        metrics,
        champ_metrics if champion is not None else None,
        label,
        cfg.metrics,
        cfg.floor,
        cfg.floor_tolerance,
    )
    if decision.promote:
        client.set_registered_model_alias(cfg.model_name, cfg.champion_alias, version)
    verdict = "promoted" if decision.promote else "rejected"
    client.set_model_version_tag(cfg.model_name, version, "gate.decision", verdict)
    client.set_model_version_tag(cfg.model_name, version, "gate.reason", decision.reason[:5000])
    return decision, verdict


def _describe(client, params: Params, cfg: RegisterConfig, metrics: dict, version: str, record: dict) -> None:
    """Links the version to its evaluation run (tag, and `record`) and writes the model's and the version's
    descriptions."""
    import mlflow

    evaluation = evaluation_run(client, cfg.metrics)
    if evaluation is not None:
        mlflow.set_tag("evaluation_run_id", evaluation.info.run_id)
        client.set_model_version_tag(cfg.model_name, version, "evaluation_run_id", evaluation.info.run_id)
        record["evaluation_run_id"] = evaluation.info.run_id
    client.update_registered_model(cfg.model_name, description=MODEL_DESCRIPTION)
    client.update_model_version(
        cfg.model_name, version, description=version_description(params, metrics, evaluation, record)
    )
