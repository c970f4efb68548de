"""``radcheck model ...``: convert, create, run and serve model checkpoints (issue 4)."""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Callable
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import typer
from numpy.typing import NDArray

from app.settings import ALL_INTERFACES, LOOPBACK, ModelServerSettings
from app.settings import MODEL_SERVER_API_KEY_ENV as API_KEY_ENV
from medvlm.runtime.config import DEFAULT_TOKEN_BUDGET

model_cli = typer.Typer(
    help="Convert, create, run and serve model checkpoints.", no_args_is_help=True
)

AI_LABEL = "UNVERIFIED AI OUTPUT (research model, not for clinical use without review)"
_LOG = logging.getLogger(__name__)


class OnOff(StrEnum):
    ON = "on"
    OFF = "off"


ModelDir = Annotated[
    Path, typer.Option("--model", help="Local checkpoint folder (never downloaded).")
]
Device = Annotated[str, typer.Option(help="auto, cpu, cuda or cuda:N.")]
DTypeOpt = Annotated[str, typer.Option("--dtype", help="auto, float16, bfloat16 or float32.")]
Slices = Annotated[OnOff, typer.Option("--slices", help="LLaVA-UHD slicing under the budget.")]
Policy = Annotated[str, typer.Option("--policy", help="Budget policy: none, pool or attention.")]
Budget = Annotated[int, typer.Option("--budget", help="Visual tokens per study when slicing.")]
Quant = Annotated[
    str,
    typer.Option(
        "--quantization", help="none, or nf4 (4-bit weights; CUDA and bitsandbytes needed)."
    ),
]


def _load_image(path: Path) -> NDArray[np.uint8]:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            return np.asarray(img.convert("L"), dtype=np.uint8).copy()
    except (OSError, UnidentifiedImageError) as exc:
        raise typer.BadParameter(
            f"cannot read image {str(path)!r}: {exc}", param_hint="--image"
        ) from exc


def _build_runtime(
    model: Path,
    device: str,
    dtype: str,
    slices: OnOff,
    policy: str,
    budget: int,
    quantization: str = "none",
) -> Any:
    """The transformers runtime for ``model`` (config errors become ``RuntimeConfigError``)."""
    from medvlm.runtime import Backend, RuntimeConfig, build_runtime

    config = RuntimeConfig(
        backend=Backend.TRANSFORMERS,
        model_dir=model,
        device=device,
        dtype=dtype,  # type: ignore[arg-type]
        quantization=quantization,  # type: ignore[arg-type]
        slicing=slices is OnOff.ON,
        budget_policy=policy,  # type: ignore[arg-type]
        token_budget=budget,
    )
    return build_runtime(config)


def _quiet_transformers() -> None:
    """No weight-loading progress bars on the terminal (entry point: allowed to configure)."""
    from transformers.utils import logging as hf_logging

    hf: Any = hf_logging
    hf.disable_progress_bar()


def _fail(exc: Exception) -> typer.Exit:
    typer.echo(f"error: {exc}", err=True)
    return typer.Exit(code=2)


@model_cli.command("init-tiny")
def init_tiny(
    out_dir: Annotated[Path, typer.Argument(help="Folder to write the tiny checkpoint to.")],
    seed: Annotated[int, typer.Option(help="Random seed of the weights.")] = 0,
) -> None:
    """Write a tiny random LLaVA-Rad-shaped checkpoint (for tests and demos; output is noise)."""
    from medvlm.tiny import init_tiny_checkpoint

    _quiet_transformers()
    path = init_tiny_checkpoint(out_dir, seed=seed)
    typer.echo(f"tiny checkpoint written to {path}")


@model_cli.command("run")
def run(
    model: ModelDir,
    image: Annotated[Path, typer.Option("--image", help="PNG/JPEG display image of the film.")],
    reason: Annotated[str | None, typer.Option(help="Reason for exam (indication).")] = None,
    slices: Slices = OnOff.OFF,
    policy: Policy = "pool",
    budget: Budget = DEFAULT_TOKEN_BUDGET,
    device: Device = "auto",
    dtype: DTypeOpt = "auto",
    quantization: Quant = "none",
    max_new_tokens: Annotated[int, typer.Option(help="Greedy tokens at most.")] = 256,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
    timings: Annotated[bool, typer.Option(help="Stage timings on stderr.")] = True,
) -> None:
    """Write the FINDINGS for one frontal chest film (LLaVA-Rad prompt; greedy, deterministic).

    Standard output is deterministic (text, token counts, slicing plan); stage timings go to
    standard error.
    """
    from medvlm.errors import MedVLMError
    from medvlm.prompts.conversation import findings_instruction

    pixels = _load_image(image)
    _quiet_transformers()
    start = time.perf_counter()
    try:
        runtime = _build_runtime(model, device, dtype, slices, policy, budget, quantization)
        load_ms = round((time.perf_counter() - start) * 1000.0, 3)
        result = runtime.generate(
            pixels, findings_instruction(reason), max_new_tokens=max_new_tokens
        )
    except MedVLMError as exc:
        raise _fail(exc) from exc
    image_info = result.details.get("image")
    plan = image_info.get("plan") if isinstance(image_info, dict) else None
    budget_info = result.details.get("budget")
    provenance = runtime.provenance()
    stage_ms = {"load_ms": load_ms, **result.timings_ms}
    if as_json:
        payload = {
            "label": AI_LABEL,
            "text": result.text,
            "prompt_tokens": result.prompt_tokens,
            "visual_tokens": result.visual_tokens,
            "output_tokens": result.output_tokens,
            "slicing_plan": plan,
            "budget": budget_info,
            "provenance": provenance,
        }
        typer.echo(json.dumps(payload, indent=2, sort_keys=True))
    else:
        typer.echo(f"[{AI_LABEL}]")
        typer.echo(result.text)
        typer.echo("")
        typer.echo(
            f"tokens: prompt {result.prompt_tokens} (visual {result.visual_tokens}), "
            f"output {result.output_tokens}"
        )
        typer.echo(f"slicing: {_describe_plan(plan, budget_info)}")
        typer.echo(
            f"model: {provenance['model_id']} weights sha256 {provenance['weights_sha256'][:16]}"
            f" template {provenance['prompt_template_id']}@"
            f"{provenance['prompt_template_version']}"
        )
    if timings:
        typer.echo(
            "timings (ms): " + ", ".join(f"{k} {v:.1f}" for k, v in stage_ms.items()), err=True
        )


def _describe_plan(plan: object, budget_info: object) -> str:
    if not isinstance(plan, dict):
        return "off (one 518 px image: shortest side resized, centre crop)"
    if not plan.get("sliced"):
        return f"on, not sliced: overview {plan.get('overview_size')}"
    text = (
        f"on, grid {plan.get('grid')} (cols, rows), slice {plan.get('slice_size')}, "
        f"overview {plan.get('overview_size')}"
    )
    if isinstance(budget_info, dict):
        text += (
            f"; budget {budget_info.get('budget')} policy {budget_info.get('policy')}: "
            f"{budget_info.get('tokens_before')} -> {budget_info.get('visual_tokens')} tokens"
        )
    return text


@model_cli.command("convert-llava-rad")
def convert_llava_rad_cmd(
    vicuna: Annotated[Path, typer.Option("--vicuna", help="Local lmsys/vicuna-7b-v1.5 folder.")],
    llava_rad: Annotated[
        Path, typer.Option("--llava-rad", help="Local microsoft/llava-rad folder.")
    ],
    out: Annotated[Path, typer.Option("--out", help="Output checkpoint folder.")],
) -> None:
    """Convert the published LLaVA-Rad checkpoint (LoRA over Vicuna) into our checkpoint."""
    from medvlm.convert import convert_llava_rad
    from medvlm.errors import MedVLMError

    logging.basicConfig(level=logging.INFO, stream=sys.stderr)
    try:
        receipt = convert_llava_rad(vicuna, llava_rad, out)
    except MedVLMError as exc:
        raise _fail(exc) from exc
    typer.echo(f"converted checkpoint written to {out} (receipt: {receipt})")


def serve_security(
    host: str | None, port: int, api_key_env: str | None, radcheck_keys: bool = False
) -> tuple[str, str | None]:
    """The interface to bind and the API key of ``serve`` (``ValueError`` when unusable).

    The rule (key length, no unauthenticated non-loopback bind) is
    :class:`app.settings.ModelServerSettings`; this logs what it decided.
    """
    server = ModelServerSettings.from_environment(host, port, api_key_env, radcheck_keys)
    if server.unauthenticated:
        _LOG.warning(
            "model server on %s:%d is UNAUTHENTICATED: anyone who can reach it on this host can "
            "use the model. Set %s (or --api-key-env VAR) to require a Bearer key",
            server.bind,
            port,
            API_KEY_ENV,
        )
    elif server.api_key is None:
        _LOG.info("model server on %s:%d requires an active RadCheck API key", server.bind, port)
    else:
        _LOG.info("model server on %s:%d requires a Bearer API key", server.bind, port)
    return server.bind, None if server.api_key is None else server.api_key.get_secret_value()


def run_model_server(app: Any, bind: str, port: int, log_level: str) -> None:
    """Run ``app`` under uvicorn without uvicorn's access log, which writes query strings (a key
    sent as ``?api_key=`` would land in the log); the app logs each request's path without it.
    """
    import uvicorn

    uvicorn.run(app, host=bind, port=port, log_level=log_level.lower(), access_log=False)


def radcheck_key_authorizer() -> Callable[[str], bool]:
    """A check of RadCheck API keys against the configured database (uncached, so immediate)."""
    from app.db.models import Role
    from app.db.session import Database
    from app.services.auth import authenticate, credential_is_well_formed
    from app.settings import load_settings

    db = Database(load_settings().database_url, pool_size=2)
    allowed = {Role.ADMIN, Role.INTEGRATION}

    def authorize(token: str) -> bool:
        if not credential_is_well_formed(token):
            return False
        principal = db.run(lambda session: authenticate(session, token), immediate=False)
        return principal is not None and principal.role in allowed

    return authorize


@model_cli.command("serve")
def serve(
    model: ModelDir,
    host: Annotated[
        str | None,
        typer.Option(
            help=f"Interface to bind. Default: {ALL_INTERFACES} with an API key, {LOOPBACK} "
            "without one (without a key, any other interface is refused)."
        ),
    ] = None,
    port: Annotated[int, typer.Option(help="TCP port.")] = 8001,
    api_key_env: Annotated[
        str | None,
        typer.Option(
            "--api-key-env",
            metavar="VAR",
            help=f"Environment variable holding the API key (default: {API_KEY_ENV} if set). "
            "With a key, every route but /health needs 'Authorization: Bearer <key>'.",
        ),
    ] = None,
    served_model_name: Annotated[
        str,
        typer.Option(
            help="The model name clients send (RadCheck workers: RADCHECK_MODEL__OPENAI_MODEL)."
        ),
    ] = "llava-rad",
    slices: Slices = OnOff.OFF,
    policy: Policy = "pool",
    budget: Budget = DEFAULT_TOKEN_BUDGET,
    device: Device = "auto",
    dtype: DTypeOpt = "auto",
    quantization: Quant = "none",
    log_level: Annotated[
        str, typer.Option(help="DEBUG, INFO, WARNING or ERROR (logs never carry image or text)")
    ] = "INFO",
    radcheck_keys: Annotated[
        bool,
        typer.Option(
            "--radcheck-keys",
            help="Also accept RadCheck API keys (role integration or admin) from RadCheck's "
            "database, checked on every request (a revoked key is refused at once).",
        ),
    ] = False,
) -> None:
    """Serve the model as an OpenAI-compatible endpoint (POST /v1/chat/completions)."""
    from app.model_server import create_model_server
    from medvlm.errors import MedVLMError

    logging.basicConfig(level=log_level.upper(), stream=sys.stderr)
    try:
        bind, api_key = serve_security(host, port, api_key_env, radcheck_keys)
    except ValueError as exc:
        raise _fail(exc) from exc
    _quiet_transformers()
    try:
        runtime = _build_runtime(model, device, dtype, slices, policy, budget, quantization)
        app = create_model_server(
            runtime,
            api_key=api_key,
            served_model_name=served_model_name,
            authorize=radcheck_key_authorizer() if radcheck_keys else None,
        )
    except (MedVLMError, ValueError) as exc:
        raise _fail(exc) from exc
    run_model_server(app, bind, port, log_level)
