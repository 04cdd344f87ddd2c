"""The vLLM backend's own cost per streamed token, with an engine that costs nothing.

WHY: vLLM itself needs a GPU (not on this machine), but the Python between the gateway and
vLLM (the engine's asyncio loop thread, one queue per request, decoding the cumulative token
ids, the stop-sequence sink) runs on the CPU for every token of every request. If that bridge
were slower than a GPU's aggregate decode rate (a few thousand tokens/s for an 8B model on
one H100), it would be the bottleneck. This runs ``VllmBackend`` against an engine that
yields tokens instantly and reports tokens/s and CPU microseconds per token, single stream
and with N concurrent gateway workers, using SmolLM2's real BPE tokenizer for decoding.

    nice -n 10 .venv/bin/python bench/vllm_bridge.py --tokens 256 --requests 8 --workers 1,4,16
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import resource
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")


class InstantEngine:
    """vLLM's ``generate`` surface; every step yields at once (the GPU is free here)."""

    def __init__(self, vocab: list[int], seed: int = 0) -> None:
        self.vocab = vocab
        self.rng = random.Random(seed)

    async def generate(self, prompt: dict[str, Any], sampling: Any, request_id: str, *,
                       lora_request: Any = None) -> Any:
        out: list[int] = []
        for i in range(sampling.max_tokens):
            out.append(self.rng.choice(self.vocab))
            last = i + 1 == sampling.max_tokens
            yield SimpleNamespace(finished=last, outputs=[SimpleNamespace(
                token_ids=tuple(out), finish_reason="length" if last else None)])
            await asyncio.sleep(0)

    def shutdown(self) -> None:
        pass


def cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tokens", type=int, default=256, help="tokens per answer")
    ap.add_argument("--requests", type=int, default=8, help="requests per worker")
    ap.add_argument("--workers", default="1,4,16", help="concurrent gateway workers to try")
    ap.add_argument("--stream", action="store_true", help="pass an on_text callback")
    ap.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = ap.parse_args()

    import torch
    from transformers import AutoTokenizer

    from strongroom.serving.backends.base import GenParams
    from strongroom.serving.backends.vllm_backend import VllmBackend, _LoopThread
    from strongroom.training import resolve_base

    torch.set_num_threads(1)
    spec = resolve_base("smollm2-135m-instruct")
    tok = AutoTokenizer.from_pretrained(spec.path, gguf_file=spec.gguf_file, local_files_only=True)
    special = set(tok.all_special_ids)
    vocab = [i for i in range(min(len(tok), 32000)) if i not in special]
    fake_vllm = SimpleNamespace(SamplingParams=lambda **kw: SimpleNamespace(**kw))
    backend = VllmBackend(InstantEngine(vocab), _LoopThread(), tok, {"m": None},
                          max_model_len=8192, vllm=fake_vllm)
    messages = [{"role": "user", "content": "What is the overdraft fee on a basic account?"}]
    results = []
    try:
        backend.chat("m", messages, GenParams(max_new_tokens=8))  # warm-up
        for workers in [int(w) for w in args.workers.split(",")]:
            done = [0]
            lock = threading.Lock()

            def work() -> None:
                for _ in range(args.requests):
                    g = backend.chat("m", messages, GenParams(max_new_tokens=args.tokens),
                                     on_text=(lambda _p: None) if args.stream else None)
                    with lock:
                        done[0] += g.completion_tokens

            threads = [threading.Thread(target=work) for _ in range(workers)]
            c0, t0 = cpu_s(), time.perf_counter()
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            wall, cpu = time.perf_counter() - t0, cpu_s() - c0
            row = {"workers": workers, "tokens": done[0], "wall_s": round(wall, 3),
                   "cpu_s": round(cpu, 3), "tokens_per_s": round(done[0] / wall, 1),
                   "cpu_us_per_token": round(1e6 * cpu / done[0], 1)}
            results.append(row)
            print(json.dumps(row))
    finally:
        backend.close()
    load = os.getloadavg()
    summary = {"tokens_per_answer": args.tokens, "stream": args.stream,
               "load_average": [round(x, 2) for x in load], "results": results}
    print(json.dumps({"load_average": summary["load_average"]}))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
