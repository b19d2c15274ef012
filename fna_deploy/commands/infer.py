"""``fna-deploy infer``: one request to a Triton server, optionally checked against PyTorch."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, Optional

import click

from ..cli import EXIT_FAILED, CliError, user_errors
from .common import (FiniteFloatRange, FNA_OPTION_NAMES, config_from_options, load_cli_model, recorded_seed, result_console,
                     served_fna_options, weights_seed_for)
from .options import MAX_BATCH, MAX_COUNT, MAX_REQUESTS, MAX_RESOLUTION, MAX_SEED, count, deprecated, quiet_option, renamed, verbose_option


def _input_shape(config: dict, batch: int, resolution: Optional[int], batch_flag: str = "--batch") -> tuple[str, list[int]]:
    """The served input's name and the request shape; ``batch_flag``: the flag that set ``batch``."""
    inputs = config.get("input", [])
    if len(inputs) != 1:
        raise CliError(f"the model has {len(inputs)} inputs; infer sends one image batch to a one-input model")
    spec = inputs[0]
    dims = [int(d) for d in spec["dims"]]
    if int(config.get("max_batch_size", 0)) > 0:
        if batch > int(config["max_batch_size"]):
            raise CliError(f"{batch_flag} {batch} exceeds the model's max_batch_size {config['max_batch_size']}; "
                           f"give at most {config['max_batch_size']}")
        dims = [batch, *dims]
    elif dims[0] not in (-1, batch):
        raise CliError(f"the model has a static batch of {dims[0]}; pass {batch_flag} {dims[0]}")
    else:
        dims[0] = batch
    if len(dims) != 4:
        raise CliError(f"input {spec['name']!r} has shape {dims}; infer sends images [N, C, H, W]")
    if any(d == -1 for d in dims[1:]):
        if resolution is None or dims[1] == -1:
            raise CliError("the model's input size is dynamic; give --resolution")
        dims[2] = dims[3] = resolution
    elif resolution is not None and (dims[2], dims[3]) != (resolution, resolution):
        raise CliError(f"--resolution {resolution} does not match the served model's input {dims[2]}x{dims[3]}; "
                       "drop --resolution (the served size is used)")
    return spec["name"], dims


def _image_path(image: str) -> Path:
    """--image as a path that is an image file or a folder, else the sentence that says what it is."""
    path = Path(image)
    if path.is_dir() or path.is_file():
        return path
    if path.exists():
        raise ValueError(f"--image {image!r} is not a regular file or folder (a device or pipe); give an image file or a folder of images")
    raise FileNotFoundError(2, "no such image file or folder", str(path))


def _images(image: Optional[str], shape: list[int], model: Any, seed: int, recipe: Optional[dict] = None):
    from ..images import load_images, random_images

    size = (shape[2], shape[3])
    if image is None:
        return random_images(shape[0], model, img_size=size, seed=seed)
    path = _image_path(image)  # checked before either way of reading it
    if recipe is not None and recipe["size"] == [shape[2], shape[3]]:  # the preprocessing the export recorded (fna_preprocess)
        import torch

        from ..triton.ensemble import preprocess_files, read_image_files

        return torch.from_numpy(preprocess_files(read_image_files(path, shape[0]), recipe))
    if path.is_dir():
        pixels = load_images(path, model, img_size=size, limit=shape[0])
    else:  # a regular file
        with tempfile.TemporaryDirectory() as tmp:  # load_images reads folders
            os.symlink(path.resolve(), Path(tmp) / path.name)
            try:
                pixels = load_images(tmp, model, img_size=size)
            except ValueError as exc:  # its message names the temporary folder: name the user's file instead
                detail = (str(exc).replace(str(Path(tmp) / path.name), str(path)).strip().splitlines() or [""])[0]
                if detail.startswith("no images ("):  # the one file was skipped: not an image suffix
                    detail = "not an image file " + detail[len("no images "):].split(")")[0] + ")"
                raise ValueError(f"--image {image!r}: {detail.replace(tmp, str(path.parent))}") from None
    if pixels.shape[1] != shape[1]:
        raise CliError(f"the images have {pixels.shape[1]} channels, the model takes {shape[1]}")
    return pixels


def _encoded_request(client: Any, config: dict, image: Optional[str], batch: int, resolution: Optional[int]):
    """For a model that takes encoded images (an ensemble from triton --image-ensemble): the config of the
    model it ends in, the input, the pixel shape, the files and their preprocessed pixels."""
    import torch

    from ..triton.ensemble import encoded_payload, is_image_model, preprocess_files, read_image_files, served_recipe, served_step

    if image is None:
        raise CliError(f"{config.get('name')!r} takes encoded images (JPEG, PNG, WebP): give --image FILE or --image DIR")
    step = served_step(config)
    served = client.model_config(step) if step else config
    recipe = served_recipe(served)
    if recipe is None:
        raise CliError(f"{config.get('name')!r} takes encoded images but its model {step!r} records no preprocessing; "
                       "rewrite the repository with fna-deploy triton --image-ensemble")
    if resolution is not None and recipe["size"] != [resolution, resolution]:
        raise CliError(f"--resolution {resolution} does not match the served preprocessing's {recipe['size']}; drop --resolution")
    files = read_image_files(_image_path(image), batch)
    if int(config.get("max_batch_size", 0)) and len(files) > int(config["max_batch_size"]):
        raise CliError(f"{len(files)} images exceed the model's max_batch_size {config['max_batch_size']}; lower --batch")
    pixels = torch.from_numpy(preprocess_files(files, recipe))
    return served, is_image_model(config), list(pixels.shape), encoded_payload(files), pixels, files


def _reference_outputs(model: Any, arrays: list) -> list:
    """The --compare model's first output on each input array, through the PyTorch runner of
    fna_deploy.runtimes (the one place a module is run for a comparison: verify uses it too)."""
    from ..runtimes.pytorch import TorchRunner

    runner = TorchRunner(model, "pytorch", list(arrays[0].shape))
    return [runner.infer({runner.input_name: a})[0] for a in arrays]


def _served_fna_config(config: dict) -> Optional[str]:
    params = config.get("parameters", {}) or {}
    value = params.get("fna_config", {})
    return value.get("string_value") if isinstance(value, dict) else None


@click.command()
@click.argument("url")
@click.argument("model_name")
@click.option("--image", type=click.Path(), help="An image file, or a folder of images (up to --batch of them): its bytes to a model that takes encoded images (triton --image-ensemble), else pixels preprocessed as the export recorded.")
@click.option("--random", "random_count", type=count(0, MAX_COUNT), is_flag=False, flag_value=0, default=None, metavar="N",
              help="N random images, normalised like images (random inputs are the default; N sets the batch).")
@click.option("--batch", type=count(1, MAX_BATCH), default=1, show_default=True, help="Batch size of the request (random inputs).")
@click.option("--seed", type=count(0, MAX_SEED), default=0, show_default=True, help="Seed of the random inputs.")
@click.option("--compare", "compare_model", metavar="MODEL", help="Check the answer against this PyTorch model (timm:NAME, hf:DIR, .pt2, .pt), patched with the served FNA config.")
@click.option("--checkpoint", type=click.Path(dir_okay=False), help="Weights for --compare timm:NAME / hf:DIR.")
@click.option("--arch", metavar="timm:NAME", help="Architecture when --compare is a bare weights file.")
@click.option("--weights-seed", type=click.IntRange(min=0), default=None, metavar="N",
              help="Seed of a --compare timm:NAME model's random weights (default: the seed the served export recorded, else 0).")
@click.option("--allow-pickle", is_flag=True, help="Allow a pickled .pt module for --compare (runs code from the file).")
@click.option("--resolution", type=count(1, MAX_RESOLUTION), help="Input resolution (default: the served model's input size).")
@served_fna_options
@click.option("--dense", is_flag=True, help="Compare against the unpatched model (for a dense export).")
@click.option("--allow-degenerate", is_flag=True, help="Judge outputs without signal (all equal, e.g. all zero) instead of failing.")
@click.option("--concurrency", type=click.IntRange(1, 256), default=None, metavar="N",
              help="Load mode: N concurrent clients send distinct inputs for --duration seconds; every answer is checked against its own input's reference.")
@click.option("--duration", type=FiniteFloatRange(min=0.1, max=86400), default=None, metavar="S", help="Load mode: seconds to run (default 10).")
@click.option("--requests", "max_requests", type=count(1, MAX_REQUESTS), default=None, metavar="N", help="Load mode: stop after N requests.")
@click.option("--top-k", type=count(0, 1000), default=5, show_default=True, help="Classes to print for the first image.")
@click.option("--metrics-url", metavar="HOST:PORT", help="Triton's metrics endpoint, for the server's queue and compute times (default: the HTTP port + 2, as serve's 8000/8002).")
@click.option("--report", "json_path", type=click.Path(dir_okay=False), metavar="FILE", help="Write the result (and comparison) as JSON to FILE.")
@renamed("--json", "--report FILE", "json_path", type=click.Path(dir_okay=False))
@quiet_option("Print only the answer line and the comparison verdict.")
@verbose_option("Also print the served model's config (backend, batching, FNA config).")
@click.pass_context
@user_errors
def infer(ctx: click.Context, url: str, model_name: str, image: Optional[str], random_count: Optional[int], batch: int, seed: int,
          compare_model: Optional[str], checkpoint: Optional[str], arch: Optional[str], weights_seed: Optional[int], allow_pickle: bool,
          resolution: Optional[int], dense: bool, allow_degenerate: bool, concurrency: Optional[int], duration: Optional[float],
          max_requests: Optional[int], top_k: int, metrics_url: Optional[str], json_path: Optional[str], quiet: bool, verbose: bool,
          **fna: Any) -> None:
    """Send one request to MODEL_NAME on the Triton server at URL (host:port, HTTP) and print the answer.

    With --compare MODEL the same input runs through PyTorch and the outputs are compared
    (fp32: max abs error <= 1e-4 relative to outputs above 1; fp16: cosine >= 0.999); a failed
    comparison exits 1. The FNA config defaults to the one the repository recorded from the
    export (config.pbtxt parameter fna_config); FNA flags given here override it.

    Load mode (--concurrency N, --duration S, --requests N): after the first request, N clients
    send 8 distinct inputs (the input, then rolled and flipped copies) in turn until S seconds
    pass or N requests were sent; every answer is checked against its own input's --compare
    output (else against the server's answer to that input, asked alone first), so an answer
    delivered to the wrong request counts as a mismatch; requests, errors,
    mismatches, p50/p90/p99 latency and throughput are printed (and written with --report).
    Errors exit 2, mismatches 1.

    An images-in ensemble (fna-deploy triton --image-ensemble, NAME_images) gets the --image
    files' bytes; its answer is compared with PyTorch on the files preprocessed by the recipe
    recorded at export. After the answer, the server's own queue and compute times per model are
    printed, read from its metrics endpoint before and after the requests (--metrics-url).

    \b
    Example:
      fna-deploy infer 127.0.0.1:8000 vit_fna --random 4 --compare timm:vit_base_patch16_224
      fna-deploy infer 127.0.0.1:8000 vit_fna --concurrency 8 --duration 30 --report load.json
    """
    import numpy as np
    import torch

    from ..triton import TritonHttpClient

    if image is not None and random_count is not None:
        raise CliError("give --image or --random, not both")
    if random_count == 0:
        deprecated("--random without N", "--random N (N random images; the batch)")
    elif random_count is not None:
        if ctx.get_parameter_source("batch") not in (None, click.core.ParameterSource.DEFAULT) and batch != random_count:
            raise CliError(f"--random {random_count} and --batch {batch} disagree on the batch size; give one of them")
        batch = random_count
    if compare_model is None and (checkpoint or arch or allow_pickle or dense or weights_seed is not None):
        raise CliError("--checkpoint, --arch, --weights-seed, --allow-pickle and --dense describe the --compare model; add --compare MODEL")
    explicit_fna = {
        n for n in FNA_OPTION_NAMES if ctx.get_parameter_source(n) not in (None, click.core.ParameterSource.DEFAULT)
    }
    if dense and explicit_fna:
        raise CliError("--dense compares against the unpatched model; drop the FNA flags")
    if json_path:
        from ..export.graph import check_writable

        check_writable(Path(json_path))
    from ..triton.metrics import default_metrics_url, metrics_url as full_metrics_url, scrape

    scrape_url = full_metrics_url(metrics_url) if metrics_url else default_metrics_url(url)
    console = result_console()  # one comparison line, not cut or wrapped at 80 columns in a log
    with TritonHttpClient(url) as client:
        config = client.model_config(model_name)
        from ..triton.ensemble import is_image_model, served_recipe

        served = config  # the config that records the FNA config, fp16 and preprocessing (an ensemble's last model's)
        encoded, encoded_files = None, None
        if is_image_model(config) is not None:
            served, input_name, shape, encoded, pixels, encoded_files = _encoded_request(client, config, image, batch, resolution)
        else:
            input_name, shape = _input_shape(config, batch, resolution, "--random" if random_count else "--batch")
        reference_model = None
        fna_config = None
        weights = None
        if compare_model is not None:
            # timm/HF architectures are built at the served resolution; finished modules keep their own
            buildable = arch is not None or compare_model.startswith(("timm:", "hf:"))
            size = resolution if resolution is not None else (shape[2] if buildable else None)
            served_seed = recorded_seed({k[len("fna_"):]: v.get("string_value") for k, v in (config.get("parameters") or {}).items()
                                         if k.startswith("fna_") and isinstance(v, dict)})
            weights = weights_seed_for(compare_model, checkpoint, arch, weights_seed, served_seed, f"served model {model_name!r}")
            reference_model = load_cli_model(compare_model, checkpoint, arch, allow_pickle, size, weights)
            if not dense:
                served_fna = _served_fna_config(served)
                if explicit_fna or not served_fna:
                    fna_config = config_from_options(fna)
                else:
                    from ..config import FNAConfig

                    fna_config = FNAConfig.from_json(served_fna)
                from ..patching import patch

                patch(reference_model, fna_config)
        if encoded is None:
            pixels = _images(image, shape, reference_model, seed, served_recipe(config))
        sent = {input_name: encoded if encoded is not None else pixels.numpy()}
        try:  # the server's own counters before the first request: its queue and compute times come from the difference
            metrics_before, metrics_note = scrape(scrape_url), None
        except ValueError as exc:
            metrics_before, metrics_note = None, str(exc)
        result = client.infer(model_name, sent)
    outputs = result.outputs
    first = next(iter(outputs))
    answer = outputs[first]
    if verbose:
        shown = {k: config.get(k) for k in ("backend", "platform", "max_batch_size", "dynamic_batching") if config.get(k) not in (None, "")}
        shown["fna_config"] = _served_fna_config(served) or "none (dense or not recorded)"
        console.print("served config: " + ", ".join(f"{k} {v}" for k, v in shown.items()), highlight=False)
    console.print(f"{model_name} at {client.url}: {first} {list(answer.shape)} {answer.dtype}, {result.seconds * 1000:.1f} ms", highlight=False)
    record: dict[str, Any] = {
        "url": client.url, "model": model_name, "input": input_name, "input_shape": list(pixels.shape),
        "outputs": {k: list(v.shape) for k, v in outputs.items()}, "seconds": result.seconds,
    }
    if encoded is not None:
        record["images"] = [str(f) for f, _ in encoded_files]  # sent as encoded bytes; input_shape is the pixels the server made of them
    if top_k and answer.ndim == 2 and np.issubdtype(answer.dtype, np.floating):
        scores = torch.from_numpy(answer[0].astype(np.float32)).softmax(-1)
        values, indices = scores.topk(min(top_k, scores.numel()))
        record["top_k"] = [[int(i), float(v)] for v, i in zip(values, indices)]
        if not quiet:
            console.print("top-%d of the first image: %s" % (len(indices), ", ".join(f"{int(i)} ({float(v):.3f})" for v, i in zip(values, indices))), highlight=False)
    failed = False
    if reference_model is not None:
        from ..export.check import compare
        from ..loading import RANDOM_FAIL_HINT, weights_label

        reference = _reference_outputs(reference_model, [pixels.numpy()])[0]
        params = served.get("parameters", {}) or {}
        fp16 = answer.dtype == np.float16 or params.get("fna_fp16", {}).get("string_value") == "true"
        if reference.shape != answer.shape:
            raise CliError(f"PyTorch gives {list(reference.shape)} but the server gave {list(answer.shape)}; is --compare the served model?",
                           exit_code=EXIT_FAILED)
        parity = compare(reference, answer, batch=shape[0], output=first, fp16=fp16, allow_degenerate=allow_degenerate)
        record["compare"] = {"model": compare_model, "weights": weights_label(weights), "fna_config": fna_config.to_dict() if fna_config else None, **parity.to_dict()}
        verdict = "[green]ok[/green]" if parity.passed else "[red]FAILED[/red]"
        source = "dense attention" if dense else ("FNA from the flags" if explicit_fna or not _served_fna_config(served) else "FNA served config")
        console.print(f"vs PyTorch {compare_model}, {weights_label(weights)} ({source}): {verdict} max abs {parity.max_abs:.2e}, "
                      f"cosine {parity.cosine:.6f} ({parity.criterion})")
        failed = not parity.passed
        if failed:
            record["failure"] = parity.describe() + (f"; {RANDOM_FAIL_HINT}" if weights is not None else "")
    load = None
    if (concurrency or duration or max_requests) and not failed:
        load = _load_mode(url, model_name, input_name, pixels, reference_model,
                          encoded_files=encoded_files, recipe=served_recipe(served) if encoded_files else None,
                          output=first, fp16=answer.dtype == np.float16 or (served.get("parameters", {}) or {}).get("fna_fp16", {}).get("string_value") == "true",
                          allow_degenerate=allow_degenerate or reference_model is None,
                          reference_label=f"PyTorch {compare_model}" if reference_model is not None else "the server's lone answer",
                          concurrency=concurrency or 1, duration=duration or 10.0, max_requests=max_requests)
        record["load"] = load.to_dict()
        console.print(load.summary(), highlight=False)
        for note in load.notes:
            console.print(f"note: {note}", highlight=False)
    record["server"] = _server_side(console, scrape_url, metrics_before, metrics_note, model_name,
                                    1 + (load.requests if load is not None else 0), quiet)
    if json_path:
        from ..utils import write_text_atomic

        write_text_atomic(json_path, json.dumps(record, indent=2) + "\n")
    if failed:
        raise CliError(f"the server's answer does not match PyTorch: {record['failure']}", exit_code=EXIT_FAILED)
    if load is not None and load.errors:
        raise CliError(f"{load.errors} of {load.requests} requests to {model_name!r} failed under load (first: {load.first_error}); "
                       "see the server's log, or lower --concurrency")
    if load is not None and load.mismatches:
        raise CliError(f"{load.mismatches} of {load.requests} answers under load differ from {load.reference}: {load.first_mismatch}",
                       exit_code=EXIT_FAILED)


def _server_side(console: Any, scrape_url: str, before: Optional[dict], note: Optional[str], model_name: str, requests: int,
                 quiet: bool) -> dict:
    """The server's queue and compute times per model over this run (metrics endpoint), printed and for the report."""
    from ..triton.metrics import scrape_after, server_times

    if before is not None:
        try:
            models = server_times(before, scrape_after(scrape_url, before, model_name, requests))
        except ValueError as exc:
            before, note = None, str(exc)
    if before is None:
        if not quiet:
            console.print(f"server times: unavailable ({note}; give --metrics-url)", highlight=False)
        return {"metrics_url": scrape_url, "unavailable": note}
    if not quiet:
        for times in models:
            console.print(f"server: {times.line()}", highlight=False)
    return {"metrics_url": scrape_url, "models": [t.to_dict() for t in models],
            "note": "averages per request between two scrapes of the metrics endpoint; other clients' requests count too"}


LOAD_INPUTS = 8  # distinct inputs the load mode cycles through


def _load_mode(url: str, model_name: str, input_name: str, pixels: Any, reference_model: Any, *, output: str, fp16: bool,
               allow_degenerate: bool, reference_label: str, concurrency: int, duration: float, max_requests: Optional[int],
               encoded_files: Optional[list] = None, recipe: Optional[dict] = None):
    """Load with distinct inputs, each answer checked against its own input's reference: the
    --compare model's output, or the server's answer to that input asked alone before the load.
    For an images-in ensemble (``encoded_files``) the distinct inputs are the files and flipped or
    rotated copies of them (lossless PNG), and the references come from the recipe's pixels."""
    from ..export.check import compare
    from ..triton import TritonHttpClient
    from ..triton.load import distinct_inputs, run_load

    if encoded_files is not None:
        from ..triton.ensemble import distinct_image_files, encoded_payload, preprocess_files

        versions = distinct_image_files(encoded_files, LOAD_INPUTS)
        requests = [{input_name: encoded_payload(v)} for v in versions]
        arrays = [preprocess_files(v, recipe) for v in versions]
    else:
        arrays = distinct_inputs(pixels.numpy(), LOAD_INPUTS)
        requests = [{input_name: a} for a in arrays]
    if reference_model is not None:
        references = _reference_outputs(reference_model, arrays)
    else:
        with TritonHttpClient(url) as client:
            references = [client.infer(model_name, request).outputs[output] for request in requests]

    def check_against(reference: Any):
        def check(answer: Any) -> Optional[str]:
            if answer.shape != reference.shape:
                return f"shape {list(answer.shape)}, expected {list(reference.shape)}"
            parity = compare(reference, answer, batch=answer.shape[0], output=output, fp16=fp16, allow_degenerate=allow_degenerate)
            return None if parity.passed else parity.describe()
        return check

    report = run_load(url, model_name, requests, [check_against(r) for r in references],
                      concurrency=concurrency, duration=duration, max_requests=max_requests,
                      reference=f"{reference_label} of each of {len(arrays)} distinct inputs")
    alike = sum(check_against(references[0])(r) is None for r in references[1:])
    if alike:
        report.notes.append(f"{alike} of the other inputs get the same answer as the first within tolerance: "
                            "an answer swapped between those requests would not show")
    return report
